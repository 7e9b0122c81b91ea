//! The embedded store: one redb database file under the served directory's state directory.
//! Every write is a durable transaction, so a killed server restarts with every record it
//! acknowledged. Locks live in memory: one server process owns the database file (redb refuses
//! a second opener), so in-process locks are complete. After an I/O error (a full disk) redb
//! refuses all further work until reopened; the store reopens it on the next request.

use super::{
    Created, LocalLocks, StateStore, StoreError, UploadLock, UploadRecord, decode, encode,
};
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

const UPLOADS: TableDefinition<&str, &str> = TableDefinition::new("uploads");
const TARGETS: TableDefinition<&str, &str> = TableDefinition::new("targets");
const OWNERS: TableDefinition<&str, &str> = TableDefinition::new("file_owners");

/// redb-backed [`StateStore`].
pub struct RedbStore {
    path: PathBuf,
    db: Arc<RwLock<Arc<Database>>>,
    locks: LocalLocks,
}

fn backend(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) =>
        {
            StoreError::DiskFull(io)
        }
        redb::Error::PreviousIo => StoreError::Poisoned,
        e => StoreError::Backend(Box::new(e)),
    }
}

fn open_db(path: &Path) -> Result<Database, StoreError> {
    Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::backend(format!(
            "{} is in use by another ferry serve process; stop it, or serve another directory",
            path.display()
        )),
        redb::DatabaseError::Storage(s) => backend(s),
        e => StoreError::backend(format!("cannot open {}: {e}", path.display())),
    })
}

/// Replaces a database that redb poisoned after an I/O error by a freshly opened one. Waits
/// (briefly) for requests still holding the old handle: redb allows one opener at a time.
fn reopen(
    slot: &RwLock<Arc<Database>>,
    failed: Arc<Database>,
    path: &Path,
) -> Result<(), StoreError> {
    let mut current = slot.write().unwrap_or_else(|p| p.into_inner());
    if !Arc::ptr_eq(&current, &failed) {
        return Ok(()); // someone else reopened it already
    }
    drop(failed);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if Arc::strong_count(&current) == 1 {
            // Only the slot holds it now. Close it (a throw-away in-memory database keeps the
            // slot filled meanwhile), then open the file again.
            let fresh = {
                let old = std::mem::replace(&mut *current, Arc::new(in_memory()?));
                drop(old);
                open_db(path)
            };
            match fresh {
                Ok(db) => {
                    *current = Arc::new(db);
                    tracing::info!("reopened the upload state store after an I/O error");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        if Instant::now() > deadline {
            return Err(StoreError::Poisoned);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A throw-away database used only while the real one is being reopened.
fn in_memory() -> Result<Database, StoreError> {
    Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .map_err(|e| StoreError::Backend(Box::new(e)))
}

impl RedbStore {
    /// Opens (or creates) the database at `path`. Fails with a clear message when another
    /// process has it open.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = open_db(path)?;
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(UPLOADS).map_err(backend)?;
        txn.open_table(TARGETS).map_err(backend)?;
        txn.open_table(OWNERS).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(RedbStore {
            path: path.to_path_buf(),
            db: Arc::new(RwLock::new(Arc::new(db))),
            locks: LocalLocks::default(),
        })
    }

    /// Runs `f` on a blocking thread; when redb reports that an earlier I/O error poisoned the
    /// database, reopens it and runs `f` once more.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl Fn(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let slot = self.db.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let db = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
            match f(&db) {
                Err(StoreError::Poisoned) => {
                    reopen(&slot, db, &path)?;
                    let db = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
                    f(&db)
                }
                r => r,
            }
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
}

#[async_trait]
impl StateStore for RedbStore {
    async fn create(&self, rec: &UploadRecord) -> Result<Created, StoreError> {
        let rec = rec.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                if let Some(target) = &rec.target {
                    let mut targets = txn.open_table(TARGETS).map_err(backend)?;
                    let holder = targets
                        .get(target.as_str())
                        .map_err(backend)?
                        .map(|v| v.value().to_owned());
                    if let Some(holder) = holder {
                        return Ok(Created::TargetBusy { holder });
                    }
                    targets
                        .insert(target.as_str(), rec.id.as_str())
                        .map_err(backend)?;
                }
                let mut uploads = txn.open_table(UPLOADS).map_err(backend)?;
                uploads
                    .insert(rec.id.as_str(), encode(&rec).as_str())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)?;
            Ok(Created::Ok)
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<UploadRecord>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let uploads = txn.open_table(UPLOADS).map_err(backend)?;
            match uploads.get(id.as_str()).map_err(backend)? {
                Some(v) => decode(&id, v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn update(&self, rec: &UploadRecord) -> Result<(), StoreError> {
        let rec = rec.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut uploads = txn.open_table(UPLOADS).map_err(backend)?;
                uploads
                    .insert(rec.id.as_str(), encode(&rec).as_str())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut uploads = txn.open_table(UPLOADS).map_err(backend)?;
                let old = uploads
                    .remove(id.as_str())
                    .map_err(backend)?
                    .map(|v| v.value().to_owned());
                if let Some(old) = old
                    && let Some(target) = decode(&id, &old)?.target
                {
                    release(&txn, &target, &id)?;
                }
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn release_target(&self, target: &str, id: &str) -> Result<(), StoreError> {
        let (target, id) = (target.to_owned(), id.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            release(&txn, &target, &id)?;
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn all(&self) -> Result<Vec<UploadRecord>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let uploads = txn.open_table(UPLOADS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in uploads.iter().map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                out.push(decode(k.value(), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn file_owner(&self, path: &str) -> Result<Option<String>, StoreError> {
        let path = path.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let owners = txn.open_table(OWNERS).map_err(backend)?;
            Ok(owners
                .get(path.as_str())
                .map_err(backend)?
                .map(|v| v.value().to_owned()))
        })
        .await
    }

    async fn set_file_owner(&self, path: &str, owner: &str) -> Result<(), StoreError> {
        let (path, owner) = (path.to_owned(), owner.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut owners = txn.open_table(OWNERS).map_err(backend)?;
                owners
                    .insert(path.as_str(), owner.as_str())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn try_lock(&self, id: &str) -> Result<Option<Box<dyn UploadLock>>, StoreError> {
        Ok(self.locks.try_lock(id))
    }

    fn name(&self) -> &'static str {
        "redb"
    }
}

/// Removes the reservation of `target` if `id` holds it.
fn release(txn: &redb::WriteTransaction, target: &str, id: &str) -> Result<(), StoreError> {
    let mut targets = txn.open_table(TARGETS).map_err(backend)?;
    let holder = targets
        .get(target)
        .map_err(backend)?
        .map(|v| v.value().to_owned());
    if holder.as_deref() == Some(id) {
        targets.remove(target).map_err(backend)?;
    }
    Ok(())
}
