//! Server counters and their Prometheus text exposition (`GET /metrics`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every request handler. Gauges that describe stored state (uploads in
/// progress) are computed at scrape time and passed to [`Metrics::render`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// Body bytes sent by the file side (GET responses).
    pub bytes_served: AtomicU64,
    /// Upload bytes accepted and written to staging (PATCH and creation-with-upload bodies).
    pub bytes_received: AtomicU64,
    /// Uploads that reached their full length and landed at their target.
    pub uploads_completed: AtomicU64,
    /// Uploads that ended without landing: terminated or expired before completion, or refused
    /// when landing.
    pub uploads_failed: AtomicU64,
    /// PATCH bodies discarded because their `Upload-Checksum` did not match (status 460).
    pub checksum_mismatches: AtomicU64,
    /// Requests answered, by the file and upload sides together.
    pub requests: AtomicU64,
}

impl Metrics {
    /// Adds `n` to `counter`, one of these metrics' counters (relaxed: counts need no order).
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text format (version 0.0.4) of every counter, plus the number of uploads in
    /// progress.
    pub fn render(&self, uploads_active: u64) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "ferry_bytes_served_total",
            "counter",
            "File body bytes sent.",
            get(&self.bytes_served),
        );
        metric(
            "ferry_bytes_received_total",
            "counter",
            "Upload bytes accepted.",
            get(&self.bytes_received),
        );
        metric(
            "ferry_uploads_active",
            "gauge",
            "Uploads created and not yet complete.",
            uploads_active,
        );
        metric(
            "ferry_uploads_completed_total",
            "counter",
            "Uploads completed and landed at their target.",
            get(&self.uploads_completed),
        );
        metric(
            "ferry_uploads_failed_total",
            "counter",
            "Uploads terminated or expired before completion, or refused when landing.",
            get(&self.uploads_failed),
        );
        metric(
            "ferry_upload_checksum_mismatches_total",
            "counter",
            "Upload chunks discarded for a checksum mismatch.",
            get(&self.checksum_mismatches),
        );
        metric(
            "ferry_requests_total",
            "counter",
            "HTTP requests answered.",
            get(&self.requests),
        );
        out
    }
}
