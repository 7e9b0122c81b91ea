//! How a run reports to people and scripts: live bars on a terminal (indicatif), plain lines
//! when stderr is not a terminal, NDJSON events on stdout with `--json`, or nothing with `-q`.

use ferry_core::{Event, EventSink};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Bars,
    Lines,
    Json,
    Quiet,
}

impl Mode {
    pub fn choose(json: bool, quiet: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// Shared by every job of a run.
#[derive(Clone)]
pub struct Reporter {
    mode: Mode,
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<usize, ProgressBar>>>,
}

impl Reporter {
    pub fn new(mode: Mode) -> Self {
        let multi = MultiProgress::with_draw_target(if mode == Mode::Bars {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        });
        Reporter {
            mode,
            multi,
            bars: Default::default(),
        }
    }

    /// The event sink for job number `job`.
    pub fn sink(&self, job: usize) -> EventSink {
        let me = self.clone();
        EventSink::new(move |e| me.handle(job, e))
    }

    fn handle(&self, job: usize, e: Event) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => json_line(&serde_json::to_value(&e).unwrap_or_default()),
            Mode::Lines => match &e {
                Event::Start {
                    file,
                    total,
                    resumed,
                    connections,
                    ..
                } => {
                    let size =
                        total.map_or("unknown size".to_string(), |t| HumanBytes(t).to_string());
                    let from = if *resumed > 0 {
                        format!(", resuming at {}", HumanBytes(*resumed))
                    } else {
                        String::new()
                    };
                    eprintln!("{file}: {size}, {connections} connection(s){from}");
                }
                // A reconnect after progress (delay 0) is routine; only back-offs are news.
                Event::Retry { delay_ms: 0, .. } => {}
                Event::Retry {
                    file,
                    url,
                    attempt,
                    delay_ms,
                    reason,
                } => {
                    // Before the name is known, the URL names the download.
                    let delay = *delay_ms as f64 / 1000.0;
                    if file.is_empty() {
                        eprintln!("{url}: retry {attempt} in {delay:.1}s: {reason}")
                    } else {
                        eprintln!("{file}: retry {attempt} in {delay:.1}s ({url}): {reason}")
                    }
                }
                Event::Warning { file, message } => eprintln!("{file}: warning: {message}"),
                Event::Done {
                    file,
                    bytes,
                    fetched,
                    secs,
                    verified,
                } => eprintln!("{}", done_line(file, *bytes, *fetched, *secs, verified)),
                Event::Progress { .. } | Event::Verifying { .. } => {}
            },
            Mode::Bars => self.bar_event(job, e),
        }
    }

    fn bar_event(&self, job: usize, e: Event) {
        let mut bars = self.bars.lock().expect("bars lock");
        match e {
            Event::Start {
                file,
                total,
                resumed,
                ..
            } => {
                let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
                let template = if total.is_some() {
                    "{prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {msg} ETA {eta}"
                } else {
                    "{prefix:.bold} {spinner} {bytes} {msg}"
                };
                bar.set_style(
                    ProgressStyle::with_template(template)
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(short_name(&file));
                bar.set_position(resumed);
                bars.insert(job, bar);
            }
            Event::Progress {
                done,
                rate,
                connections,
                ..
            } => {
                if let Some(bar) = bars.get(&job) {
                    bar.set_position(done);
                    bar.set_message(format!("{}/s ×{connections}", HumanBytes(rate)));
                }
            }
            Event::Verifying { .. } => {
                if let Some(bar) = bars.get(&job) {
                    bar.set_message("verifying");
                }
            }
            Event::Retry { delay_ms: 0, .. } => {}
            Event::Retry {
                file,
                url,
                attempt,
                reason,
                ..
            } => {
                let name = if file.is_empty() {
                    url
                } else {
                    short_name(&file)
                };
                let _ = self
                    .multi
                    .println(format!("{name}: retry {attempt}: {reason}"));
            }
            Event::Warning { file, message } => {
                let _ = self
                    .multi
                    .println(format!("{}: warning: {message}", short_name(&file)));
            }
            Event::Done {
                file,
                bytes,
                fetched,
                secs,
                verified,
            } => {
                if let Some(bar) = bars.remove(&job) {
                    bar.finish_and_clear();
                }
                let _ = self
                    .multi
                    .println(done_line(&file, bytes, fetched, secs, &verified));
            }
        }
    }

    /// Reports a job's failure: a JSON `error` event, or a line on stderr (also with -q).
    pub fn error(&self, job: usize, file: &str, message: &str, resumable: bool) {
        if let Some(bar) = self.bars.lock().expect("bars lock").remove(&job) {
            bar.abandon();
        }
        if self.mode == Mode::Json {
            json_line(
                &serde_json::json!({"event": "error", "file": file, "message": message, "resumable": resumable}),
            );
        } else {
            let _ = self
                .multi
                .suspend(|| writeln!(std::io::stderr(), "ferry: {message}"));
        }
    }

    /// A job stopped by Ctrl-C: a JSON `error` event marked resumable; people get one note for
    /// the whole run instead.
    pub fn paused(&self, job: usize, file: &str, message: &str) {
        if self.mode == Mode::Json {
            self.error(job, file, message, true);
        } else if let Some(bar) = self.bars.lock().expect("bars lock").remove(&job) {
            bar.abandon();
        }
    }

    /// A line for people (not in JSON mode, not with -q).
    pub fn note(&self, message: &str) {
        if matches!(self.mode, Mode::Bars | Mode::Lines) {
            self.multi.suspend(|| eprintln!("{message}"));
        }
    }
}

/// The line of a finished file: its size, what this run moved and at what speed (bytes that
/// were already there count for neither), and what was verified.
fn done_line(file: &str, bytes: u64, fetched: u64, secs: f64, verified: &[String]) -> String {
    let check = if verified.is_empty() {
        String::new()
    } else {
        format!(", verified {}", verified.join(", "))
    };
    if fetched == 0 {
        return format!(
            "{file}: done, {} (nothing to transfer){check}",
            HumanBytes(bytes)
        );
    }
    let rate = if secs > 0.0 {
        HumanBytes((fetched as f64 / secs) as u64).to_string()
    } else {
        "-".into()
    };
    let moved = if fetched < bytes {
        format!(", {} of it", HumanBytes(fetched))
    } else {
        String::new()
    };
    format!(
        "{file}: done, {}{moved} in {secs:.1}s ({rate}/s){check}",
        HumanBytes(bytes)
    )
}

fn short_name(file: &str) -> String {
    let name = std::path::Path::new(file)
        .file_name()
        .map_or(file.to_string(), |n| n.to_string_lossy().into_owned());
    if name.chars().count() > 28 {
        format!("{}…", name.chars().take(27).collect::<String>())
    } else {
        name
    }
}

fn json_line(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::done_line;

    #[test]
    fn speeds_count_only_the_bytes_moved() {
        let resumed = done_line("f.bin", 200 << 20, 100 << 20, 5.0, &[]);
        assert_eq!(
            resumed,
            "f.bin: done, 200.00 MiB, 100.00 MiB of it in 5.0s (20.00 MiB/s)"
        );
        let whole = done_line(
            "f.bin",
            100 << 20,
            100 << 20,
            5.0,
            &["md5 (--checksum)".into()],
        );
        assert_eq!(
            whole,
            "f.bin: done, 100.00 MiB in 5.0s (20.00 MiB/s), verified md5 (--checksum)"
        );
        assert_eq!(
            done_line("f.bin", 3, 0, 0.01, &[]),
            "f.bin: done, 3 B (nothing to transfer)"
        );
    }
}
