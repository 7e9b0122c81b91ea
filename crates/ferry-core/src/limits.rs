//! Limits on a transfer: a shared token-bucket rate limit, and the retry policy (exponential
//! backoff with jitter, honouring Retry-After, a budget spent only by attempts without progress).

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket shared by every connection of a transfer (or of several transfers).
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_sec: u64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter letting `bytes_per_sec` bytes through per second (at least 1), starting with
    /// an empty bucket.
    pub fn new(bytes_per_sec: u64) -> Self {
        let bytes_per_sec = bytes_per_sec.max(1);
        RateLimiter {
            bytes_per_sec,
            state: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    /// The limit in bytes per second.
    pub fn rate(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Waits until `n` bytes may pass. The bucket holds at most 1/8 s of traffic, so bursts stay short.
    pub async fn acquire(&self, n: u64) {
        let wait = {
            let mut b = self.state.lock().expect("rate limiter lock");
            let now = Instant::now();
            let rate = self.bytes_per_sec as f64;
            let burst = (rate / 8.0).max(16384.0);
            b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
            b.last = now;
            b.tokens -= n as f64;
            if b.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-b.tokens / rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Parses a rate such as `500k`, `20M`, `1.5m`, `100KiB`, `2G` (bytes per second; k = 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .trim_end_matches("/s")
        .trim_end_matches('b')
        .trim_end_matches('i');
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let v = num * mult as f64;
    (v.is_finite() && v >= 1.0).then_some(v as u64)
}

/// Retry policy for one connection.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in a row without progress before giving up on this connection's range.
    pub max_attempts: u32,
    /// The delay before the first retry (before jitter); it doubles with each failure in a
    /// row. Default 250 ms.
    pub base_delay: Duration,
    /// The cap on the doubled delay (before jitter). Default 20 s.
    pub max_delay: Duration,
    /// Longest Retry-After honoured; a longer one counts as this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Delay before the retry after `failures` failures in a row (1-based): exponential with full
    /// jitter in [d/2, d], or the server's Retry-After when it gave one.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_retry_after);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let d = exp.min(self.max_delay);
        let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
        d.mul_f64(jitter)
    }
}

/// Parses a Retry-After value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20m"), Some(20 << 20));
        assert_eq!(parse_size("1.5K"), Some(1536));
        assert_eq!(parse_size("100KiB"), Some(102400));
        assert_eq!(parse_size("2G/s"), Some(2 << 30));
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("5q"), None);
    }

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let p = RetryPolicy::default();
        assert!(p.delay(1, None) <= Duration::from_millis(250));
        assert!(p.delay(4, None) >= Duration::from_millis(1000));
        assert!(p.delay(30, None) <= p.max_delay);
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    /// Runs on tokio's paused clock: measures the limiter's arithmetic, not the machine.
    #[tokio::test(start_paused = true)]
    async fn limiter_paces() {
        let l = RateLimiter::new(1 << 20);
        let t = tokio::time::Instant::now();
        for _ in 0..16 {
            l.acquire(64 << 10).await;
        }
        // 1 MiB at 1 MiB/s, starting from an empty bucket: one virtual second.
        let secs = t.elapsed().as_secs_f64();
        assert!((0.99..1.01).contains(&secs), "{secs}");
    }
}
