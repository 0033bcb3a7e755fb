//! `FakeBackupDriver`: an in-memory backup store for tests of the backup service and its
//! flows (the real store is the POSIX one). It keeps each backup's non-zero chunks by
//! offset, so a restore gives back the same bytes, and can be told to fail.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::backup::{
    BackupDriver, BackupOutcome, BackupSpec, ImageSink, ImageSource, Progress, RestoreOutcome, VerifyReport,
};
use crate::error::{DriverError, Result};

/// Bytes per chunk of the fake store.
const CHUNK: u64 = 1 << 20;

/// One stored backup: its size and its non-zero chunks by offset.
#[derive(Debug, Default, Clone)]
struct Stored {
    size: u64,
    chunks: BTreeMap<u64, Vec<u8>>,
    complete: bool,
}

/// An in-memory [`BackupDriver`].
#[derive(Debug, Default)]
pub struct FakeBackupDriver {
    backups: Mutex<HashMap<String, Stored>>,
    fail: Mutex<HashSet<&'static str>>,
    calls: Mutex<HashMap<&'static str, u64>>,
}

impl FakeBackupDriver {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call of `op` (`backup`, `restore`, `delete`) fail until [`Self::heal`].
    pub fn fail_always(&self, op: &'static str) {
        self.fail.lock().insert(op);
    }

    /// Stops the failures of `op`.
    pub fn heal(&self, op: &'static str) {
        self.fail.lock().remove(op);
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: &'static str) -> u64 {
        self.calls.lock().get(op).copied().unwrap_or(0)
    }

    /// The ids of the complete backups held.
    pub fn backup_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> =
            self.backups.lock().iter().filter(|(_, b)| b.complete).map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    }

    fn enter(&self, op: &'static str) -> Result<()> {
        *self.calls.lock().entry(op).or_default() += 1;
        if self.fail.lock().contains(op) {
            return Err(DriverError::Backend(format!("injected failure of {op}")));
        }
        Ok(())
    }
}

#[async_trait]
impl BackupDriver for FakeBackupDriver {
    fn name(&self) -> &str {
        "fake"
    }

    async fn check_for_setup_error(&self) -> Result<()> {
        Ok(())
    }

    async fn backup(
        &self,
        spec: &BackupSpec,
        source: &dyn ImageSource,
        progress: &dyn Progress,
    ) -> Result<BackupOutcome> {
        self.enter("backup")?;
        let size = source.size();
        let mut stored = Stored { size, ..Stored::default() };
        let mut read_bytes = 0;
        for extent in source.extents(0, size).await? {
            let end = extent.offset + extent.length;
            let mut offset = extent.offset;
            while extent.data && offset < end {
                let len = (end - offset).min(CHUNK - offset % CHUNK);
                let buf = source.read_at(offset, vec![0; len as usize]).await?;
                read_bytes += len;
                if buf.iter().any(|b| *b != 0) {
                    stored.chunks.insert(offset, buf);
                }
                offset += len;
                progress.report(offset.min(size), size);
            }
        }
        progress.report(size, size);
        stored.complete = true;
        let object_count = stored.chunks.len() as u64;
        let stored_bytes = stored.chunks.values().map(|c| c.len() as u64).sum();
        self.backups.lock().insert(spec.backup_id.clone(), stored);
        let service_metadata = serde_json::json!({"driver": "fake", "chunks": object_count}).to_string();
        Ok(BackupOutcome { size_bytes: size, read_bytes, stored_bytes, object_count, service_metadata })
    }

    async fn restore(
        &self,
        backup_id: &str,
        sink: &dyn ImageSink,
        progress: &dyn Progress,
    ) -> Result<RestoreOutcome> {
        self.enter("restore")?;
        let stored = self.backups.lock().get(backup_id).filter(|b| b.complete).cloned();
        let stored =
            stored.ok_or_else(|| DriverError::NotFound { resource: "backup", id: backup_id.into() })?;
        if sink.size() < stored.size {
            return Err(DriverError::InvalidInput(format!(
                "the target ({} bytes) is smaller than the backup ({} bytes)",
                sink.size(),
                stored.size
            )));
        }
        sink.zero(0, sink.size()).await?;
        let mut written_bytes = 0;
        for (offset, chunk) in stored.chunks {
            written_bytes += chunk.len() as u64;
            sink.write_at(offset, chunk).await?;
            progress.report(written_bytes, stored.size);
        }
        sink.flush().await?;
        progress.report(stored.size, stored.size);
        Ok(RestoreOutcome { written_bytes })
    }

    async fn delete(&self, backup_id: &str) -> Result<()> {
        self.enter("delete")?;
        self.backups.lock().remove(backup_id);
        Ok(())
    }

    async fn verify(&self, backup_id: &str) -> Result<VerifyReport> {
        let n = self.backups.lock().get(backup_id).map(|b| b.chunks.len() as u64);
        let n = n.ok_or_else(|| DriverError::NotFound { resource: "backup", id: backup_id.into() })?;
        Ok(VerifyReport { chunks_checked: n, bad_chunks: Vec::new() })
    }

    async fn export_record(&self, backup_id: &str) -> Result<serde_json::Value> {
        let known = self.backups.lock().contains_key(backup_id);
        if !known {
            return Err(DriverError::NotFound { resource: "backup", id: backup_id.into() });
        }
        Ok(serde_json::json!({"driver": "fake", "backup_id": backup_id}))
    }

    async fn import_record(&self, backup_id: &str, record: &serde_json::Value) -> Result<()> {
        let source = record.get("backup_id").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let mut backups = self.backups.lock();
        let stored = backups.get(&source).cloned().unwrap_or_default();
        backups.insert(backup_id.to_owned(), Stored { complete: true, ..stored });
        Ok(())
    }
}
