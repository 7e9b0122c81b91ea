//! The in-memory [`StateStore`]: maps behind one mutex, gone with the process. For tests (the
//! tus conformance tests run the server in-process on it) and throw-away servers. Records are
//! kept in their JSON form, as the embedded store keeps them, so a record that does not
//! round-trip fails here too.

use super::{
    Created, LocalLocks, StateStore, StoreError, UploadLock, UploadRecord, decode, encode,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// [`StateStore`] in memory.
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    locks: LocalLocks,
}

#[derive(Default)]
struct Tables {
    /// Upload id → record (JSON).
    uploads: BTreeMap<String, String>,
    /// Target path → the upload id reserving it.
    targets: HashMap<String, String>,
    /// Landed path → the user who landed it.
    owners: HashMap<String, String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tables {
    fn release(&mut self, target: &str, id: &str) {
        if self.targets.get(target).is_some_and(|holder| holder == id) {
            self.targets.remove(target);
        }
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn create(&self, rec: &UploadRecord) -> Result<Created, StoreError> {
        let mut t = self.tables();
        if let Some(target) = &rec.target {
            if let Some(holder) = t.targets.get(target) {
                return Ok(Created::TargetBusy {
                    holder: holder.clone(),
                });
            }
            t.targets.insert(target.clone(), rec.id.clone());
        }
        t.uploads.insert(rec.id.clone(), encode(rec));
        Ok(Created::Ok)
    }

    async fn get(&self, id: &str) -> Result<Option<UploadRecord>, StoreError> {
        self.tables()
            .uploads
            .get(id)
            .map(|json| decode(id, json))
            .transpose()
    }

    async fn update(&self, rec: &UploadRecord) -> Result<(), StoreError> {
        self.tables().uploads.insert(rec.id.clone(), encode(rec));
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        let mut t = self.tables();
        if let Some(old) = t.uploads.remove(id)
            && let Some(target) = decode(id, &old)?.target
        {
            t.release(&target, id);
        }
        Ok(())
    }

    async fn release_target(&self, target: &str, id: &str) -> Result<(), StoreError> {
        self.tables().release(target, id);
        Ok(())
    }

    async fn all(&self) -> Result<Vec<UploadRecord>, StoreError> {
        self.tables()
            .uploads
            .iter()
            .map(|(id, json)| decode(id, json))
            .collect()
    }

    async fn file_owner(&self, path: &str) -> Result<Option<String>, StoreError> {
        Ok(self.tables().owners.get(path).cloned())
    }

    async fn set_file_owner(&self, path: &str, owner: &str) -> Result<(), StoreError> {
        self.tables()
            .owners
            .insert(path.to_owned(), owner.to_owned());
        Ok(())
    }

    async fn try_lock(&self, id: &str) -> Result<Option<Box<dyn UploadLock>>, StoreError> {
        Ok(self.locks.try_lock(id))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
