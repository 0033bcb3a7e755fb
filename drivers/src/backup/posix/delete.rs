//! Delete: the backup's record goes first (moved to `deleting/`, so a crash mid-delete
//! leaves a mark a second delete finds), then every chunk of it that no other backup
//! references, found by reading every other record and running backup's journal under
//! the store's exclusive lock (a running backup holds it shared, so no chunk it counts on
//! can go), then its journal and the mark.

use std::collections::HashSet;

use super::store::{self, Hash, Journal};
use super::{Inner, blocking, check_id};
use crate::error::Result;

pub(super) async fn run(inner: &Inner, backup_id: &str) -> Result<()> {
    check_id(backup_id)?;
    let layout = inner.layout.clone();
    let id = backup_id.to_owned();
    blocking("cannot delete the backup from", &layout.root.clone(), move || {
        if !layout.root.join("backups").exists() {
            return Ok(());
        }
        layout.create()?;
        let _lock = layout.lock(true)?;
        let record = layout.record(&id);
        let mark = layout.deleting(&id);
        let journal = layout.journal(&id);
        if record.exists() {
            std::fs::rename(&record, &mark)?;
            store::sync_parent(&mark)?;
            store::sync_parent(&record)?;
        }
        let mut doomed: HashSet<Hash> = HashSet::new();
        if let Some(r) = layout.read_record(&mark)? {
            doomed.extend(r.hashes());
        }
        let entries = Journal::read(&journal)?.1;
        layout.remove_chunk_tmps(&id, &entries)?;
        doomed.extend(entries.iter().filter_map(|e| e.hash()));
        if !doomed.is_empty() {
            let referenced = layout.referenced(&id)?;
            for hash in doomed.difference(&referenced) {
                layout.remove_chunk(hash)?;
            }
        }
        store::remove_if_present(&journal)?;
        store::remove_if_present(&mark)?;
        Ok(())
    })
    .await
}
