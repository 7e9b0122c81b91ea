//! How many bytes each PATCH of a part carries. On a short path (loopback, a LAN) every PATCH
//! is the configured chunk: an interrupted checksummed PATCH is discarded by the server, so a
//! kill loses at most one chunk per connection. Over a long path each PATCH waits a round trip
//! for its answer before the next can start, so chunks grow until that wait is a small share
//! of the time: about `PIPE_RTTS` round trips of sending at the rate the last PATCH reached,
//! never more than `MAX_CHUNK_SECS` of sending and never less than the configured chunk.

use std::time::Duration;

/// Below this round trip the path is short: chunks keep their configured size.
pub(crate) const LONG_PATH_RTT: Duration = Duration::from_millis(5);
/// A PATCH sends for this many round trips (the wait for its answer is then ~6 % of it).
const PIPE_RTTS: f64 = 16.0;
/// At most this much sending per PATCH (what a kill can cost a connection).
const MAX_CHUNK_SECS: f64 = 2.0;
/// The sending rate assumed before the first PATCH of a part has shown one (bytes/s).
const ASSUMED_RATE: f64 = 25e6;

/// Chunk sizes for one part.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    base: u64,
    rtt: Duration,
    rate: Option<f64>,
}

impl Pacer {
    /// Chunks of `base` bytes at least, on a path with round trip `rtt`.
    pub(crate) fn new(base: u64, rtt: Duration) -> Pacer {
        Pacer {
            base,
            rtt,
            rate: None,
        }
    }

    /// The size of the next chunk.
    pub(crate) fn size(&self) -> u64 {
        if self.rtt < LONG_PATH_RTT {
            return self.base;
        }
        let rate = self.rate.unwrap_or(ASSUMED_RATE);
        let fill = rate * self.rtt.as_secs_f64() * PIPE_RTTS;
        let cap = rate * MAX_CHUNK_SECS;
        (fill.min(cap) as u64).max(self.base)
    }

    /// A PATCH of `bytes` took `took` from its start to its answer.
    pub(crate) fn sent(&mut self, bytes: u64, took: Duration) {
        let sending = took.saturating_sub(self.rtt).max(Duration::from_millis(1));
        self.rate = Some(bytes as f64 / sending.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_paths_keep_the_chunk_and_long_ones_fill_the_pipe() {
        let mut p = Pacer::new(1 << 20, Duration::from_micros(300));
        p.sent(1 << 20, Duration::from_millis(2));
        assert_eq!(p.size(), 1 << 20);
        let mut p = Pacer::new(1 << 20, Duration::from_millis(40));
        assert_eq!(p.size(), 16_000_000); // 25 MB/s × 40 ms × 16
        // 100 MB in 1 s of sending: 16 round trips of it.
        p.sent(100_000_000, Duration::from_millis(1040));
        assert_eq!(p.size(), 64_000_000);
        // A slow path: never below the configured chunk.
        p.sent(1 << 20, Duration::from_secs(10));
        assert_eq!(p.size(), 1 << 20);
        // A very long round trip: at most 2 s of sending.
        let mut p = Pacer::new(1 << 20, Duration::from_millis(500));
        p.sent(10_000_000, Duration::from_millis(1500));
        assert_eq!(p.size(), 20_000_000);
    }
}
