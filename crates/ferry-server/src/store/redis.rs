//! The shared store: upload state in Redis, so several `ferry serve` instances over one
//! directory (behind a load balancer) see the same records, reservations, owners and locks.
//!
//! Keys (all under [`PREFIX`]): `upload:{id}` (the record's JSON, as the embedded stores keep
//! it), `uploads` (the set of ids), `target:{path}` (the id reserving a path), `owner:{path}`
//! (who landed a file), `lock:{id}` (the holder's random token), `fence:{id}` (a counter: the
//! fencing token), `release:{id}` (another request asks the holder to let go), `sweep` (the
//! expiry sweep's lock). Multi-key changes are Lua scripts, so they are atomic.
//!
//! Locks are leases: taken with `SET NX PX`, renewed by a task of the holder every
//! [`RENEW_EVERY`], released by compare-and-delete. A holder whose renewals fail for a whole
//! lease, or that finds another token in its key, has lost the lock: [`UploadLock::check`]
//! then refuses, so it never commits. A holder that sees a release request cancels its
//! [`UploadLock::let_go`] token and ends its request cleanly.
//!
//! A Redis that cannot be reached makes every call fail with [`StoreError::Unavailable`]
//! (answered 503 with Retry-After); the connection manager reconnects by itself. One log line
//! says when Redis went away, one when it is back.

use super::{Created, StateStore, StoreError, UploadLock, UploadRecord, decode, encode};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError, RetryMethod, Script};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The prefix of every key this store writes.
pub const PREFIX: &str = "ferry:";
/// How long a lock lives without renewal: the longest a dead instance's lock blocks others.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// How often a holder renews its lease and looks for a release request.
pub const RENEW_EVERY: Duration = Duration::from_millis(250);
/// Upload ids read per `MGET` when listing every record.
const MGET_BATCH: usize = 500;

/// Reserves the target (unless held) and stores the record. KEYS: upload, uploads[, target].
/// ARGV: id, json. Returns the holder when the target is taken, else nil.
const CREATE: &str = r"
if #KEYS == 3 then
  local holder = redis.call('GET', KEYS[3])
  if holder then return holder end
  redis.call('SET', KEYS[3], ARGV[1])
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return false
";

/// Removes a record and the reservation it holds. KEYS: upload, uploads. ARGV: id, prefix.
const REMOVE: &str = r"
local json = redis.call('GET', KEYS[1])
if json then
  local ok, rec = pcall(cjson.decode, json)
  if ok and type(rec) == 'table' and type(rec.target) == 'string' then
    local tkey = ARGV[2] .. 'target:' .. rec.target
    if redis.call('GET', tkey) == ARGV[1] then redis.call('DEL', tkey) end
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
";

/// Deletes KEYS[1] when it holds ARGV[1] (a reservation, a lock).
const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Takes a lock. KEYS: lock, fence, release. ARGV: token, lease ms. Returns the new fencing
/// token, or 0 when the lock is held.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[3])
  return redis.call('INCR', KEYS[2])
end
return 0
";

/// Renews a held lock. KEYS: lock, release. ARGV: token, lease ms, renew below ms. Returns -1
/// when the lock is no longer this holder's, else whether a release was requested.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  return redis.call('EXISTS', KEYS[2])
end
return -1
";

/// Asks the holder of a lock to let go. KEYS: lock, release. ARGV: lease ms. Returns whether
/// the lock is held.
const REQUEST_RELEASE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  return 1
end
return 0
";

/// Whether the lock still holds this token with more than ARGV[2] ms to live. KEYS: lock.
/// ARGV: token, margin ms.
const CHECK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('PTTL', KEYS[1]) > tonumber(ARGV[2]) then
  return 1
end
return 0
";

struct Scripts {
    create: Script,
    remove: Script,
    compare_and_delete: Script,
    acquire: Script,
    renew: Script,
    request_release: Script,
    check: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            create: Script::new(CREATE),
            remove: Script::new(REMOVE),
            compare_and_delete: Script::new(COMPARE_AND_DELETE),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            request_release: Script::new(REQUEST_RELEASE),
            check: Script::new(CHECK),
        }
    }
}

/// What every call and every lock of one store shares.
struct Shared {
    con: ConnectionManager,
    scripts: Scripts,
    lease: Duration,
    /// `redis://host:port/db` without credentials, for log lines.
    location: String,
    /// Redis was unreachable at the last call (for one log line per outage).
    down: AtomicBool,
    /// Locks of this store whose compare-and-delete is still on its way (id → done), so a
    /// request of this instance that follows a release finds the lock free.
    releasing: Mutex<HashMap<String, watch::Receiver<bool>>>,
}

/// [`StateStore`] in Redis, shared by every instance that names the same server and database.
pub struct RedisStore {
    shared: Arc<Shared>,
}

/// `url` without its password (`redis://user:***@host:port/db`), for logs and start-up lines.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Whether a Redis error means "cannot reach it now" (rather than a broken request).
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(
            e.retry_method(),
            RetryMethod::Reconnect
                | RetryMethod::ReconnectFromInitialConnections
                | RetryMethod::WaitAndRetry
                | RetryMethod::RetryImmediately
        )
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://[user:password@]host:port/db` or `rediss://…`)
    /// with locks leased for [`DEFAULT_LEASE`]. Connects lazily: a Redis that is down now only
    /// makes requests answer 503 until it is up.
    pub fn open(url: &str) -> Result<RedisStore, StoreError> {
        RedisStore::open_with_lease(url, DEFAULT_LEASE)
    }

    /// Like [`RedisStore::open`], with locks that live `lease` without renewal (at least a
    /// second). Every instance sharing the Redis should use the same lease.
    pub fn open_with_lease(url: &str, lease: Duration) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::backend(format!("--store {}: {e}", redacted(url))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let con = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::backend(format!("--store {}: {e}", redacted(url))))?;
        Ok(RedisStore {
            shared: Arc::new(Shared {
                con,
                scripts: Scripts::new(),
                lease: lease.max(Duration::from_secs(1)),
                location: redacted(url),
                down: AtomicBool::new(false),
                releasing: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Where the store is (`redis://host:port/db`, no password).
    pub fn location(&self) -> &str {
        &self.shared.location
    }

    fn key(kind: &str, name: &str) -> String {
        format!("{PREFIX}{kind}:{name}")
    }
}

impl Shared {
    /// Maps a Redis error, and says once per outage that Redis is unreachable.
    fn fail(&self, e: RedisError) -> StoreError {
        if unreachable(&e) {
            if !self.down.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    "Redis at {} is unreachable ({e}); requests that need upload state answer 503 until it is back",
                    self.location
                );
            }
            StoreError::Unavailable(Box::new(e))
        } else {
            StoreError::Backend(Box::new(e))
        }
    }

    /// Notes a successful call (one log line when Redis is back).
    fn ok<T>(&self, value: T) -> T {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            tracing::warn!("Redis at {} is reachable again", self.location);
        }
        value
    }

    fn con(&self) -> ConnectionManager {
        self.con.clone()
    }

    fn lease_ms(&self) -> u64 {
        self.lease.as_millis() as u64
    }
}

/// Runs one Redis call through `shared`'s error mapping. A call refused a connection (it never
/// reached Redis) is made once more: the first call after an outage finds the connection
/// manager's failed attempt, and the second its fresh reconnection.
macro_rules! call {
    ($shared:expr, $fut:expr) => {
        match $fut.await {
            Ok(v) => Ok($shared.ok(v)),
            Err(e) if e.is_connection_refusal() => match $fut.await {
                Ok(v) => Ok($shared.ok(v)),
                Err(e) => Err($shared.fail(e)),
            },
            Err(e) => Err($shared.fail(e)),
        }
    };
}

#[async_trait]
impl StateStore for RedisStore {
    async fn create(&self, rec: &UploadRecord) -> Result<Created, StoreError> {
        let s = &self.shared;
        let mut inv = s.scripts.create.prepare_invoke();
        inv.key(Self::key("upload", &rec.id))
            .key(format!("{PREFIX}uploads"));
        if let Some(target) = &rec.target {
            inv.key(Self::key("target", target));
        }
        inv.arg(&rec.id).arg(encode(rec));
        let holder: Option<String> = call!(s, inv.invoke_async(&mut s.con()))?;
        Ok(match holder {
            Some(holder) => Created::TargetBusy { holder },
            None => Created::Ok,
        })
    }

    async fn get(&self, id: &str) -> Result<Option<UploadRecord>, StoreError> {
        let s = &self.shared;
        let json: Option<String> = call!(s, s.con().get(Self::key("upload", id)))?;
        json.map(|j| decode(id, &j)).transpose()
    }

    async fn update(&self, rec: &UploadRecord) -> Result<(), StoreError> {
        let s = &self.shared;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set(Self::key("upload", &rec.id), encode(rec))
            .ignore()
            .sadd(format!("{PREFIX}uploads"), &rec.id)
            .ignore();
        call!(s, pipe.query_async::<()>(&mut s.con()))
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        let s = &self.shared;
        let mut inv = s.scripts.remove.prepare_invoke();
        inv.key(Self::key("upload", id))
            .key(format!("{PREFIX}uploads"))
            .arg(id)
            .arg(PREFIX);
        call!(s, inv.invoke_async::<i64>(&mut s.con())).map(drop)
    }

    async fn release_target(&self, target: &str, id: &str) -> Result<(), StoreError> {
        let s = &self.shared;
        let mut inv = s.scripts.compare_and_delete.prepare_invoke();
        inv.key(Self::key("target", target)).arg(id);
        call!(s, inv.invoke_async::<i64>(&mut s.con())).map(drop)
    }

    async fn all(&self) -> Result<Vec<UploadRecord>, StoreError> {
        let s = &self.shared;
        let mut ids: Vec<String> = call!(s, s.con().smembers(format!("{PREFIX}uploads")))?;
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(MGET_BATCH) {
            let keys: Vec<String> = batch.iter().map(|id| Self::key("upload", id)).collect();
            let jsons: Vec<Option<String>> =
                call!(s, redis::cmd("MGET").arg(&keys).query_async(&mut s.con()))?;
            for (id, json) in batch.iter().zip(jsons) {
                // Gone between the two calls: removed meanwhile.
                if let Some(json) = json {
                    out.push(decode(id, &json)?);
                }
            }
        }
        Ok(out)
    }

    async fn file_owner(&self, path: &str) -> Result<Option<String>, StoreError> {
        let s = &self.shared;
        call!(s, s.con().get(Self::key("owner", path)))
    }

    async fn set_file_owner(&self, path: &str, owner: &str) -> Result<(), StoreError> {
        let s = &self.shared;
        call!(s, s.con().set::<_, _, ()>(Self::key("owner", path), owner))
    }

    async fn try_lock(&self, id: &str) -> Result<Option<Box<dyn UploadLock>>, StoreError> {
        // A lock this instance just dropped is released first.
        let pending = self
            .shared
            .releasing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        if let Some(mut done) = pending {
            let _ = tokio::time::timeout(Duration::from_secs(3), done.wait_for(|d| *d)).await;
        }
        Ok(RedisLock::acquire(&self.shared, id, "lock")
            .await?
            .map(|l| Box::new(l) as Box<dyn UploadLock>))
    }

    async fn request_release(&self, id: &str) -> Result<Option<Duration>, StoreError> {
        let s = &self.shared;
        let mut inv = s.scripts.request_release.prepare_invoke();
        inv.key(Self::key("lock", id))
            .key(Self::key("release", id))
            .arg(s.lease_ms());
        call!(s, inv.invoke_async::<i64>(&mut s.con()))?;
        Ok(Some(s.lease))
    }

    async fn sweep_lock(&self) -> Result<Option<Box<dyn UploadLock>>, StoreError> {
        Ok(RedisLock::acquire(&self.shared, "", "sweep")
            .await?
            .map(|l| Box::new(l) as Box<dyn UploadLock>))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let s = &self.shared;
        call!(s, redis::cmd("PING").query_async::<String>(&mut s.con())).map(drop)
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// A held lease: its renewal task runs until the lock is dropped or lost.
struct RedisLock {
    shared: Arc<Shared>,
    id: String,
    lock_key: String,
    token: String,
    fence: u64,
    state: Arc<LeaseState>,
    renewal: tokio::task::JoinHandle<()>,
}

/// What the renewal task tells the holder.
struct LeaseState {
    /// Another holder has the lock, or renewals failed for a whole lease.
    lost: AtomicBool,
    /// Until when the lease is certainly ours (send time of the last good renewal + lease).
    until: Mutex<Instant>,
    /// Cancelled when another request asks for the lock, or the lock is lost.
    let_go: CancellationToken,
}

impl LeaseState {
    fn lose(&self) {
        self.lost.store(true, Ordering::Relaxed);
        self.let_go.cancel();
    }
}

impl RedisLock {
    /// Takes the lock of upload `id` (`kind` "lock"), or the sweep lock (`kind` "sweep", id
    /// empty). `None` when it is held.
    async fn acquire(
        shared: &Arc<Shared>,
        id: &str,
        kind: &str,
    ) -> Result<Option<RedisLock>, StoreError> {
        let (lock_key, fence_key, release_key) = if kind == "sweep" {
            let k = format!("{PREFIX}sweep");
            (k.clone(), format!("{k}:fence"), format!("{k}:release"))
        } else {
            (
                RedisStore::key("lock", id),
                RedisStore::key("fence", id),
                RedisStore::key("release", id),
            )
        };
        let token = hex::encode(rand::random::<[u8; 16]>());
        let sent = Instant::now();
        let mut inv = shared.scripts.acquire.prepare_invoke();
        inv.key(&lock_key)
            .key(&fence_key)
            .key(&release_key)
            .arg(&token)
            .arg(shared.lease_ms());
        let fence: u64 = call!(shared, inv.invoke_async(&mut shared.con()))?;
        if fence == 0 {
            return Ok(None);
        }
        let state = Arc::new(LeaseState {
            lost: AtomicBool::new(false),
            until: Mutex::new(sent + shared.lease),
            let_go: CancellationToken::new(),
        });
        let renewal = tokio::spawn(renew(
            shared.clone(),
            lock_key.clone(),
            release_key,
            token.clone(),
            state.clone(),
        ));
        Ok(Some(RedisLock {
            shared: shared.clone(),
            id: id.to_owned(),
            lock_key,
            token,
            fence,
            state,
            renewal,
        }))
    }
}

/// The renewal task of one held lock: renews it every [`RENEW_EVERY`], cancels `let_go` when a
/// release is requested, and marks the lock lost when it is taken or cannot be renewed within
/// its lease.
async fn renew(
    shared: Arc<Shared>,
    lock_key: String,
    release_key: String,
    token: String,
    state: Arc<LeaseState>,
) {
    let lease_ms = shared.lease_ms();
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let sent = Instant::now();
        let mut inv = shared.scripts.renew.prepare_invoke();
        inv.key(&lock_key)
            .key(&release_key)
            .arg(&token)
            .arg(lease_ms)
            .arg(lease_ms * 2 / 3);
        let answer: Result<i64, StoreError> = call!(shared, inv.invoke_async(&mut shared.con()));
        match answer {
            Ok(-1) => {
                tracing::warn!("lost the lock {lock_key}: another holder has it");
                state.lose();
                return;
            }
            Ok(requested) => {
                *state.until.lock().unwrap_or_else(|p| p.into_inner()) = sent + shared.lease;
                if requested == 1 && !state.let_go.is_cancelled() {
                    tracing::debug!("{lock_key}: another request asks for it; letting go");
                    state.let_go.cancel();
                }
            }
            Err(e) => {
                let until = *state.until.lock().unwrap_or_else(|p| p.into_inner());
                if Instant::now() >= until {
                    tracing::warn!("lost the lock {lock_key}: its lease ran out ({e})");
                    state.lose();
                    return;
                }
            }
        }
    }
}

#[async_trait]
impl UploadLock for RedisLock {
    fn fence(&self) -> u64 {
        self.fence
    }

    async fn check(&self) -> Result<(), StoreError> {
        let lost = || StoreError::LockLost(self.id.clone());
        let until = *self.state.until.lock().unwrap_or_else(|p| p.into_inner());
        if self.state.lost.load(Ordering::Relaxed) || Instant::now() + RENEW_EVERY >= until {
            return Err(lost());
        }
        // Ask Redis itself: the key must still hold our token, with time to spare.
        let s = &self.shared;
        let mut inv = s.scripts.check.prepare_invoke();
        inv.key(&self.lock_key)
            .arg(&self.token)
            .arg(RENEW_EVERY.as_millis() as u64);
        match call!(s, inv.invoke_async::<i64>(&mut s.con()))? {
            1 => Ok(()),
            _ => {
                self.state.lose();
                Err(lost())
            }
        }
    }

    fn let_go(&self) -> CancellationToken {
        self.state.let_go.clone()
    }
}

impl Drop for RedisLock {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.state.lost.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime left: the lease runs out by itself
        };
        let (done_tx, done_rx) = watch::channel(false);
        self.shared
            .releasing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.id.clone(), done_rx.clone());
        let shared = self.shared.clone();
        let (id, key, token) = (self.id.clone(), self.lock_key.clone(), self.token.clone());
        runtime.spawn(async move {
            let mut inv = shared.scripts.compare_and_delete.prepare_invoke();
            inv.key(&key).arg(&token);
            if let Err(e) = call!(shared, inv.invoke_async::<i64>(&mut shared.con())) {
                tracing::debug!("releasing {key}: {e} (its lease runs out by itself)");
            }
            let _ = done_tx.send(true);
            let mut releasing = shared.releasing.lock().unwrap_or_else(|p| p.into_inner());
            if releasing
                .get(&id)
                .is_some_and(|rx| rx.same_channel(&done_rx))
            {
                releasing.remove(&id);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://ann:secret@db.example:6379/2"),
            "redis://ann:***@db.example:6379/2"
        );
        assert_eq!(redacted("rediss://:secret@h/0"), "rediss://:***@h/0");
        assert_eq!(
            redacted("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redacted("not a url"), "not a url");
    }
}
