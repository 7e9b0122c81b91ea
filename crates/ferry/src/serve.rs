//! `ferry serve`: turns the command line into a server configuration, binds, prints where the
//! server is and how to authenticate, and runs until Ctrl-C or SIGTERM.

use crate::cli::ServeArgs;
use crate::outcome::{Ending, exit_code};
use ferry_core::limits::parse_size;
use ferry_server::app::{DataChoice, StateChoice};
use ferry_server::data::s3::Location;
use ferry_server::data::s3::schedule::MAX_OBJECT;
use ferry_server::store::redis::redacted;
use ferry_server::{Auth, Server, ServerConfig};
use std::time::Duration;

pub async fn run(args: ServeArgs) -> u8 {
    raise_open_file_limit();
    let (config, generated) = match config(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("ferry serve: {msg}");
            return exit_code(Ending::Usage);
        }
    };
    let bucket = match &config.data {
        DataChoice::S3(location) => Some(location.to_string()),
        _ => None,
    };
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferry serve: {e}");
            return exit_code(Ending::Failed);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "ferry serve: cannot listen on {}: {e}; pick another address with --listen",
                args.listen
            );
            return exit_code(Ending::Failed);
        }
    };
    let addr = listener
        .local_addr()
        .map_or(args.listen.clone(), |a| a.to_string());
    let served = bucket
        .clone()
        .unwrap_or_else(|| server.root().display().to_string());
    eprintln!(
        "ferry serve: serving {served} at http://{addr}/  (files: /files/, tus uploads: /uploads/)"
    );
    match &args.store {
        Some(url) => eprintln!(
            "ferry serve: upload state: {} at {} (shared with every instance using it)",
            server.state_store(),
            redacted(url)
        ),
        None => eprintln!(
            "ferry serve: upload state: {} (embedded, in {})",
            server.state_store(),
            if bucket.is_some() {
                server.root().to_path_buf()
            } else {
                server.root().join(".ferry")
            }
            .display()
        ),
    }
    if let Err(e) = server.check_state_store().await {
        eprintln!("ferry serve: warning: {e}; uploads answer 503 until it can be reached");
    }
    if let Some(token) = generated {
        eprintln!("ferry serve: no --token, --users or --public given; generated token: {token}");
        eprintln!("ferry serve: e.g. curl -H 'Authorization: Bearer {token}' http://{addr}/files/");
        eprintln!("ferry serve: upload page: http://{addr}/?token={token}");
    }
    let shutdown = async {
        crate::signals::stop_requested().await;
        eprintln!("ferry serve: stopping; unfinished uploads resume when the server is back");
    };
    match server.run(listener, shutdown).await {
        Ok(()) => exit_code(Ending::Done),
        Err(e) => {
            eprintln!("ferry serve: {e}");
            exit_code(Ending::Failed)
        }
    }
}

/// A server holds two descriptors per connection (the socket, and the duplicate uploads use to
/// tune it), plus open files: lift the soft open-file limit to the hard one, as Go's runtime
/// and most servers do at start-up. Nothing here uses `select`, so high descriptors are fine.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum
        && limit.current.is_some_and(|current| current < max)
    {
        let raised = Rlimit {
            current: Some(max),
            maximum: Some(max),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("could not raise the open-file limit: {e}");
        }
    }
}

/// The configuration, plus the token when one was generated.
fn config(args: &ServeArgs) -> Result<(ServerConfig, Option<String>), String> {
    let mut generated = None;
    let auth = if args.public {
        Auth::Public
    } else if let Some(token) = &args.token {
        Auth::token(token).map_err(|e| e.to_string())?
    } else if let Some(path) = &args.users {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read users file {}: {e}", path.display()))?;
        Auth::parse_users(&text).map_err(|e| format!("users file {}: {e}", path.display()))?
    } else {
        let token = ferry_server::auth::generate_token();
        let auth = Auth::single(&token);
        generated = Some(token);
        auth
    };
    let mut config = ServerConfig::new(&args.dir, auth);
    let dir_text = args.dir.to_string_lossy();
    if dir_text.starts_with("s3://") {
        let location = Location::parse(&dir_text)
            .ok_or_else(|| format!("{dir_text}: expected s3://BUCKET[/PREFIX]"))?;
        config.root = match &args.state_dir {
            Some(d) => d.clone(),
            None => default_state_dir(&location)?,
        };
        // S3 objects hold at most 5 TiB: the limit clients are told (Tus-Max-Size).
        config.max_upload_size = Some(MAX_OBJECT);
        config.data = DataChoice::S3(location);
    } else if args.state_dir.is_some() {
        return Err(
            "--state-dir is for s3://BUCKET only (a directory keeps its state in DIR/.ferry)"
                .into(),
        );
    }
    if let Some(size) = &args.max_upload_size {
        let size = parse_size(size)
            .ok_or_else(|| format!("--max-upload-size {size:?}: expected a size like 10G"))?;
        config.max_upload_size = Some(config.max_upload_size.map_or(size, |m| m.min(size)));
    }
    if let Some(url) = &args.store {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "--store {}: expected redis://[USER:PASSWORD@]HOST:PORT/DB or rediss://…",
                redacted(url)
            ));
        }
        config.state = StateChoice::Redis(url.clone());
    }
    config.upload_expiry = duration_flag("--upload-expiry", &args.upload_expiry)?;
    config.connections.header_timeout = duration_flag("--header-timeout", &args.header_timeout)?;
    config.connections.keepalive_timeout =
        duration_flag("--keepalive-timeout", &args.keepalive_timeout)?;
    if let Some(n) = args.max_connections {
        if n == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        config.connections.max_connections = Some(n);
    }
    config.quota_bytes = off_or(&args.quota, parse_size)
        .ok_or_else(|| format!("--quota {:?}: expected a size like 50G, or off", args.quota))?;
    config.quota_uploads = off_or(&args.quota_uploads, |t| t.parse().ok()).ok_or_else(|| {
        format!(
            "--quota-uploads {:?}: expected a number, or off",
            args.quota_uploads
        )
    })?;
    Ok((config, generated))
}

/// `off` (no limit: `Some(None)`), a value `parse` accepts, or `None` when it accepts nothing.
fn off_or(text: &str, parse: impl Fn(&str) -> Option<u64>) -> Option<Option<u64>> {
    if text.trim().eq_ignore_ascii_case("off") {
        Some(None)
    } else {
        parse(text.trim()).map(Some)
    }
}

/// A duration option's value, or the message that says what was expected.
fn duration_flag(flag: &str, text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .ok_or_else(|| format!("{flag} {text:?}: expected a duration like 90s, 30m, 24h or 7d"))
}

/// The local state directory of a bucket: `$XDG_STATE_HOME/ferry/s3/BUCKET[/PREFIX]`, or
/// `~/.local/state/ferry/s3/…`.
fn default_state_dir(location: &Location) -> Result<std::path::PathBuf, String> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
        })
        .ok_or(
            "no HOME or XDG_STATE_HOME to put the state in: name a directory with --state-dir",
        )?;
    let mut dir = base.join("ferry").join("s3").join(&location.bucket);
    for part in location
        .prefix
        .split('/')
        .filter(|p| !p.is_empty() && *p != "..")
    {
        dir.push(part);
    }
    Ok(dir)
}

/// `90s`, `30m`, `24h`, `7d`, or plain seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::{off_or, parse_duration};
    use ferry_core::limits::parse_size;
    use std::time::Duration;

    #[test]
    fn quotas() {
        assert_eq!(off_or("off", parse_size), Some(None));
        assert_eq!(off_or("2G", parse_size), Some(Some(2 << 30)));
        assert_eq!(off_or("lots", parse_size), None);
        assert_eq!(off_or("12", |t| t.parse().ok()), Some(Some(12)));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604800)));
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("1w"), None);
    }
}
