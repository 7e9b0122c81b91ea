//! Kill-resume soak: `ferry get` against a real nginx behind a fault-injecting proxy
//! (connection resets, or stalls), SIGKILLed at random instants (once or twice) and rerun to
//! completion, many times. Every result must be byte-identical with nothing left behind, and the
//! bytes fetched twice must stay a small fraction of the whole.
//!
//! Random choices (file contents and sizes, kill points, fault plans) come from a seed printed
//! at the start and in every failure message; rerun a failure with
//! `FERRY_SOAK_SEED=<seed> cargo test --release -p ferry --test soak -- --nocapture`. The
//! reset points inside the proxy and the scheduling of ferry's connections are not seeded, so
//! a rerun repeats the scenario, not every byte of it.
//! `FERRY_SOAK_TRIALS=<n>` changes the number of trials of the reset soak (default 24).
//! Timing never decides the outcome: waits poll with generous deadlines, kill instants are
//! random (by bytes through the proxy, or by time since the start).

use ferry_testkit::nginx::Nginx;
use ferry_testkit::proxy::{FaultProxy, ProxyFaults};
use ferry_testkit::util::{files_equal, write_random_file};
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// Longest a single ferry run may take before the trial is declared hung.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// SplitMix64: small, seedable, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }
}

fn base_seed() -> u64 {
    match std::env::var("FERRY_SOAK_SEED") {
        Ok(s) => s.trim().parse().expect("FERRY_SOAK_SEED must be a number"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_secs() ^ u64::from(t.subsec_nanos()) << 20
        }
    }
}

/// When to SIGKILL a run.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// Once the proxy forwarded this many more bytes downstream than when the run started.
    Bytes(u64),
    /// This long after the run started (may be before the first request or after the end).
    After(Duration),
}

/// What happened to one ferry run.
#[derive(Debug)]
enum RunEnd {
    Killed { bytes_in_run: u64, after: Duration },
    Exited(ExitStatus),
}

/// One trial's settings and what happened, printed in full when it fails.
struct Trial {
    name: String,
    seed: u64,
    len: u64,
    dir: tempfile::TempDir,
    url: String,
    args: Vec<String>,
    log: String,
    runs: usize,
}

impl Trial {
    fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn stderr_path(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("stderr-{run}.txt"))
    }

    fn spawn(&mut self) -> (Child, usize) {
        self.runs += 1;
        let run = self.runs;
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(&self.args)
            .current_dir(self.out_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(self.stderr_path(run)).unwrap())
            .spawn()
            .expect("spawn ferry");
        (child, run)
    }

    /// Runs ferry and SIGKILLs it at `kill` (unless it exits first).
    fn run_and_kill(&mut self, proxy: &FaultProxy, kill: KillAt) -> RunEnd {
        let (mut child, run) = self.spawn();
        let start = Instant::now();
        let (down0, resets0, stalls0) = (proxy.bytes_down(), proxy.resets(), proxy.stalls());
        let failed0 = proxy.failed();
        let end = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break RunEnd::Exited(status);
            }
            let in_run = proxy.bytes_down() - down0;
            let due = match kill {
                KillAt::Bytes(b) => in_run >= b,
                KillAt::After(d) => start.elapsed() >= d,
            };
            if due {
                // Child::kill is SIGKILL to this child's PID.
                child.kill().unwrap();
                child.wait().unwrap();
                break RunEnd::Killed {
                    bytes_in_run: in_run,
                    after: start.elapsed(),
                };
            }
            if start.elapsed() > RUN_DEADLINE {
                child.kill().unwrap();
                child.wait().unwrap();
                self.fail(&format!(
                    "run {run} (to be killed at {kill:?}) still running after {RUN_DEADLINE:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let what = match &end {
            RunEnd::Killed {
                bytes_in_run,
                after,
            } => format!("killed after {after:.2?} and {bytes_in_run} bytes through the proxy"),
            RunEnd::Exited(status) => format!("exited before the kill: {status}"),
        };
        let _ = writeln!(
            self.log,
            "run {run}: kill at {kill:?}: {what}; proxy bytes_down {} resets {} stalls {} \
             failed {}",
            proxy.bytes_down() - down0,
            proxy.resets() - resets0,
            proxy.stalls() - stalls0,
            proxy.failed() - failed0
        );
        if let RunEnd::Exited(status) = &end
            && !status.success()
        {
            self.fail(&format!("run {run} failed before it was killed: {status}"));
        }
        end
    }

    /// Runs ferry to completion and checks the result.
    fn run_to_end(&mut self, proxy: &FaultProxy, src: &Path) {
        let (mut child, run) = self.spawn();
        let start = Instant::now();
        let (down0, resets0, stalls0) = (proxy.bytes_down(), proxy.resets(), proxy.stalls());
        let failed0 = proxy.failed();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > RUN_DEADLINE {
                child.kill().unwrap();
                child.wait().unwrap();
                self.fail(&format!(
                    "final run {run} did not finish in {RUN_DEADLINE:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = writeln!(
            self.log,
            "run {run} (to the end): {status} after {:.2?}; proxy bytes_down {} resets {} \
             stalls {} failed {}",
            start.elapsed(),
            proxy.bytes_down() - down0,
            proxy.resets() - resets0,
            proxy.stalls() - stalls0,
            proxy.failed() - failed0
        );
        if !status.success() {
            self.fail(&format!("the final run exited with {status}"));
        }
        let out = self.out_dir().join("out.bin");
        if !files_equal(src, &out) {
            self.fail("the downloaded file differs from the source");
        }
        let mut names: Vec<String> = std::fs::read_dir(self.out_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        if names != ["out.bin"] {
            self.fail(&format!("files left in the output directory: {names:?}"));
        }
    }

    /// Panics with everything needed to reproduce the trial.
    fn fail(&self, what: &str) -> ! {
        let mut msg = format!(
            "{}: {what}\n  trial seed {} (file of {} bytes, content seed = trial seed)\n  \
             command: ferry {}\n  url {}\n{}",
            self.name,
            self.seed,
            self.len,
            self.args.join(" "),
            self.url,
            self.log
        );
        for run in 1..=self.runs {
            let text = std::fs::read_to_string(self.stderr_path(run)).unwrap_or_default();
            let _ = writeln!(msg, "--- stderr of run {run} ---\n{}", text.trim_end());
        }
        if let Ok(entries) = std::fs::read_dir(self.out_dir()) {
            let mut listing: Vec<String> = entries
                .map(|e| {
                    let e = e.unwrap();
                    format!("{} ({} bytes)", e.file_name().to_string_lossy(), {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    })
                })
                .collect();
            listing.sort();
            let _ = writeln!(msg, "--- output directory ---\n{}", listing.join("\n"));
        }
        panic!("{msg}");
    }
}

/// A random kill instant for a run that has about `remaining` bytes left to fetch: mostly by
/// bytes through the proxy (anywhere in the transfer, up to its last bytes, so also during the
/// final sync and rename), sometimes by time (which also hits the start-up: probe, journal
/// creation). A run that finishes before its kill instant is fine too.
fn pick_kill(rng: &mut Rng, remaining: u64) -> KillAt {
    if rng.chance(1, 4) {
        KillAt::After(Duration::from_millis(rng.range(0, 1500)))
    } else {
        KillAt::Bytes(rng.range(64 * 1024, remaining.max(128 * 1024)))
    }
}

/// Per-trial extra bytes: (min, median, max) in MiB.
fn stats(extra: &[i64]) -> (f64, f64, f64) {
    let mut v = extra.to_vec();
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_unstable();
    let mib = |x: i64| x as f64 / MIB as f64;
    (mib(v[0]), mib(v[v.len() / 2]), mib(v[v.len() - 1]))
}

struct SoakConfig {
    name: &'static str,
    trials: u64,
    /// The faults for a trial's first run and for every later run, with the trial's RNG.
    faults: fn(&mut Rng) -> ProxyFaults,
    read_timeout: &'static str,
}

/// Runs the trials; returns (total file bytes, extra bytes per trial).
fn soak(cfg: &SoakConfig) -> (u64, Vec<i64>) {
    let base = base_seed();
    eprintln!(
        "{}: {} trials, base seed {base} (rerun with FERRY_SOAK_SEED={base})",
        cfg.name, cfg.trials
    );
    let root = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(root.path());
    let proxy = FaultProxy::start_blocking(nginx.addr(), ProxyFaults::default());
    let started = Instant::now();
    let mut extras = Vec::new();
    let mut total = 0;
    for t in 0..cfg.trials {
        let seed = Rng(base ^ (t + 1).wrapping_mul(0xA24B_AED4_963E_E407)).next();
        let mut rng = Rng(seed);
        let len = 48 * MIB + rng.range(0, MIB);
        let file = format!("t{t}-{seed}.bin");
        let src = root.path().join(&file);
        write_random_file(&src, len, seed).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let url = proxy.url(&file);
        let args = [
            "get",
            "-q",
            "-x",
            "4",
            "--read-timeout",
            cfg.read_timeout,
            "-o",
            "out.bin",
            &url,
        ]
        .map(String::from)
        .to_vec();
        let mut trial = Trial {
            name: format!(
                "{} trial {t} (base seed {base}; rerun with FERRY_SOAK_SEED={base})",
                cfg.name
            ),
            seed,
            len,
            dir,
            url,
            args,
            log: String::new(),
            runs: 0,
        };
        let down0 = proxy.bytes_down();

        proxy.set_faults((cfg.faults)(&mut rng));
        let kill = pick_kill(&mut rng, len);
        let first = trial.run_and_kill(&proxy, kill);
        if matches!(first, RunEnd::Killed { .. }) && rng.chance(1, 3) {
            // Kill the resume too.
            proxy.set_faults((cfg.faults)(&mut rng));
            let fetched = proxy.bytes_down() - down0;
            let kill = pick_kill(&mut rng, len.saturating_sub(fetched).max(MIB));
            trial.run_and_kill(&proxy, kill);
        }
        proxy.set_faults((cfg.faults)(&mut rng));
        trial.run_to_end(&proxy, &src);

        let fetched = proxy.bytes_down() - down0;
        let extra = fetched as i64 - len as i64;
        eprintln!(
            "{} trial {t}: {} runs, extra {:.2} MiB, {}",
            cfg.name,
            trial.runs,
            extra as f64 / MIB as f64,
            trial.log.trim_end().replace('\n', "; ")
        );
        extras.push(extra);
        total += len;
        std::fs::remove_file(&src).unwrap();
    }
    let (min, median, max) = stats(&extras);
    let sum: i64 = extras.iter().sum();
    eprintln!(
        "{}: {} trials in {:.1?}; extra bytes per trial min {min:.2} / median {median:.2} / \
         max {max:.2} MiB, total {:.2} MiB of {:.0} MiB ({:.2} %); proxy resets {} stalls {} \
         connections {}",
        cfg.name,
        cfg.trials,
        started.elapsed(),
        sum as f64 / MIB as f64,
        total as f64 / MIB as f64,
        100.0 * sum as f64 / total as f64,
        proxy.resets(),
        proxy.stalls(),
        proxy.connections()
    );
    (total, extras)
}

/// Resets every 1–6 MiB per connection, 12 MiB/s per connection (about a second per
/// 48 MiB file at 4 connections), in a third of the runs the first one or two requests
/// answered with 503 or 429, SIGKILL once or twice per trial.
#[test]
fn kill_resume_soak_with_resets() {
    let trials = std::env::var("FERRY_SOAK_TRIALS")
        .ok()
        .map(|s| s.parse().expect("FERRY_SOAK_TRIALS must be a number"))
        .unwrap_or(24);
    let (total, extras) = soak(&SoakConfig {
        name: "resets",
        trials,
        faults: |rng| {
            // Now and then a burst of 503/429 answers first (the probe's or a connection's).
            let burst = rng.chance(1, 3);
            ProxyFaults {
                reset_after: Some((MIB, 6 * MIB)),
                rate_per_conn: Some(12 * MIB),
                fail_first: if burst { rng.range(1, 2) as u32 } else { 0 },
                fail_status: if rng.chance(1, 2) { 503 } else { 429 },
                ..Default::default()
            }
        },
        read_timeout: "2",
    });
    let sum: i64 = extras.iter().sum();
    assert!(
        sum < (total / 4) as i64,
        "refetched {sum} bytes in total for {total} bytes of files (more than 25 %): {extras:?}"
    );
}

/// Stalls (the first one or two connections of each run stop after 2–8 MiB and stay open),
/// `--read-timeout 1`, SIGKILL once or twice per trial.
#[test]
fn kill_resume_soak_with_stalls() {
    let (total, extras) = soak(&SoakConfig {
        name: "stalls",
        trials: 6,
        faults: |rng| ProxyFaults {
            stall_after: Some(rng.range(2 * MIB, 8 * MIB)),
            stall_first_n: rng.range(1, 2),
            rate_per_conn: Some(12 * MIB),
            ..Default::default()
        },
        read_timeout: "1",
    });
    let sum: i64 = extras.iter().sum();
    assert!(
        sum < (total / 4) as i64,
        "refetched {sum} bytes in total for {total} bytes of files (more than 25 %): {extras:?}"
    );
}

/// `ferry put` into `ferry serve` through a proxy that resets upload connections after a few
/// MiB: SIGKILLed at a random point (sometimes twice), rerun to completion, 20 times (or
/// `FERRY_SOAK_TRIALS`). Every stored file must be byte-identical; the bytes sent in all runs
/// beyond the file sizes are reported.
#[test]
fn put_kill_resume_soak_with_resets() {
    let base = base_seed();
    let trials: u64 = std::env::var("FERRY_SOAK_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    eprintln!("put soak: base seed {base} (rerun with FERRY_SOAK_SEED={base}), {trials} trials");
    let served = tempfile::tempdir().unwrap();
    let srv = ferry_testkit::serve::FerryServe::start(
        env!("CARGO_BIN_EXE_ferry"),
        served.path(),
        &["--public"],
    );
    let proxy = FaultProxy::start_blocking(
        format!("127.0.0.1:{}", srv.port()).parse().unwrap(),
        ProxyFaults {
            reset_after_up: Some((2 * MIB, 8 * MIB)),
            ..Default::default()
        },
    );
    let endpoint = proxy.url("/uploads/");
    let data = tempfile::tempdir().unwrap();
    let src_dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (mut sizes, mut sent) = (0u64, 0u64);
    for t in 0..trials {
        let seed = Rng(base ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next();
        let mut rng = Rng(seed);
        let len = rng.range(8 * MIB, 40 * MIB);
        let x = rng.range(1, 4).to_string();
        let name = format!("p{t}-{seed}.bin");
        let src = src_dir.path().join(&name);
        write_random_file(&src, len, seed).unwrap();
        let up0 = proxy.bytes_up();
        let put = || {
            Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["put", "-q", "-x", &x, "--retries", "20"])
                .arg(&src)
                .arg(&endpoint)
                .env("FERRY_DATA_DIR", data.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let context = format!("put trial {t} (seed {seed}, {len} bytes, -x {x}; base seed {base})");
        let kills = if rng.chance(1, 3) { 2 } else { 1 };
        let mut completed = false;
        for _ in 0..kills {
            if completed {
                break;
            }
            let at = proxy.bytes_up() + rng.range(MIB, len.max(2 * MIB));
            let mut child = put();
            let deadline = Instant::now() + RUN_DEADLINE;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    let _ =
                        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                    assert!(
                        status.success(),
                        "{context}: a run failed before its kill: {err}"
                    );
                    completed = true;
                    break;
                }
                if proxy.bytes_up() >= at {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    break;
                }
                assert!(Instant::now() < deadline, "{context}: a run hung");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if std::env::var_os("FERRY_SOAK_DEBUG").is_some() {
            for e in std::fs::read_dir(data.path().join("uploads"))
                .into_iter()
                .flatten()
                .flatten()
            {
                eprintln!(
                    "journal {}: {}",
                    e.path().display(),
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                );
            }
            eprintln!("server log:\n{}", srv.log());
        }
        if !completed {
            let out = put().wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{context}: the final run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            files_equal(&src, &served.path().join(&name)),
            "{context}: the stored file differs"
        );
        sizes += len;
        sent += proxy.bytes_up() - up0;
    }
    let staged = std::fs::read_dir(served.path().join(".ferry/uploads"))
        .unwrap()
        .count();
    assert_eq!(staged, 0, "nothing left in staging");
    eprintln!(
        "put soak: {trials} trials in {:.1?}, {} resets; sent {:.1} MiB for {:.1} MiB of files \
         (+{:.1} %)",
        started.elapsed(),
        proxy.resets(),
        sent as f64 / MIB as f64,
        sizes as f64 / MIB as f64,
        (sent as f64 / sizes as f64 - 1.0) * 100.0
    );
}

/// `ferry recv` from `ferry send` through a proxy that resets connections after a few MiB
/// (raw TCP: the transfer is TLS): SIGKILLed at a random point (sometimes twice), rerun to
/// completion, 20 times (or `FERRY_SOAK_TRIALS`). Every result must be byte-identical.
#[test]
fn recv_kill_resume_soak_with_resets() {
    let base = base_seed();
    let trials: u64 = std::env::var("FERRY_SOAK_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    eprintln!("recv soak: base seed {base} (rerun with FERRY_SOAK_SEED={base}), {trials} trials");
    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("shared.bin");
    let len = 40 * MIB + 12345;
    write_random_file(&src, len, base).unwrap();
    let mut sender = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["send", "-q", "--listen", "127.0.0.1:0"])
        .arg(&src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sender.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let direct = ferry_p2p::ticket::Ticket::decode(line.trim()).expect("a ticket");
    let proxy = FaultProxy::start_blocking(
        std::net::SocketAddr::new(direct.addrs[0], direct.port),
        ProxyFaults {
            raw_tcp: true,
            reset_after: Some((2 * MIB, 8 * MIB)),
            ..Default::default()
        },
    );
    // The same ticket, pointing at the proxy.
    let ticket = ferry_p2p::ticket::Ticket {
        addrs: vec![proxy.addr().ip()],
        port: proxy.addr().port(),
        ..direct
    }
    .encode();
    let started = Instant::now();
    let down0 = proxy.bytes_down();
    for t in 0..trials {
        let seed = Rng(base ^ (t + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)).next();
        let mut rng = Rng(seed);
        let out = tempfile::tempdir().unwrap();
        let x = rng.range(1, 8).to_string();
        let recv = || {
            Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["recv", "-q", "-x", &x, "-d"])
                .arg(out.path())
                .arg(&ticket)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let context = format!("recv trial {t} (seed {seed}, -x {x}; base seed {base})");
        let mut completed = false;
        for _ in 0..if rng.chance(1, 3) { 2 } else { 1 } {
            let at = proxy.bytes_down() + rng.range(MIB, len);
            let mut child = recv();
            let deadline = Instant::now() + RUN_DEADLINE;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "{context}: a run failed before its kill");
                    completed = true;
                    break;
                }
                if proxy.bytes_down() >= at {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    break;
                }
                assert!(Instant::now() < deadline, "{context}: a run hung");
                std::thread::sleep(Duration::from_millis(2));
            }
            if completed {
                break;
            }
        }
        if !completed {
            let o = recv().wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "{context}: the final run failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert!(
            files_equal(&src, &out.path().join("shared.bin")),
            "{context}: the received file differs"
        );
    }
    let _ = sender.kill();
    let _ = sender.wait();
    let fetched = proxy.bytes_down() - down0;
    eprintln!(
        "recv soak: {trials} trials in {:.1?}, {} resets; {:.1} MiB through the proxy for {:.1} MiB \
         of results (+{:.1} %, TLS framing included)",
        started.elapsed(),
        proxy.resets(),
        fetched as f64 / MIB as f64,
        (len * trials) as f64 / MIB as f64,
        (fetched as f64 / (len * trials) as f64 - 1.0) * 100.0
    );
}
