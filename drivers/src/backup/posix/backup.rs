//! The backup data path: read, hash, compress, write, with a few chunks in flight.
//!
//! The image is walked in windows of 256 chunks; each window's allocation map says which
//! chunks hold data and which of their ranges to read (holes are never read). A chunk in
//! flight owns a slot (a chunk-sized read buffer, a compression buffer and a zstd context)
//! from a fixed set, so memory is bounded by `in_flight` slots whatever the image's size.
//! Reads go through the source (async; a local file reads on the blocking pool); hashing,
//! compression and the chunk write run on the blocking pool, so with several chunks in
//! flight both cores work while reads and fsyncs wait.
//!
//! Every finished chunk is a line in the backup's journal (fsynced at most every
//! [`SYNC_EVERY`]); a second call with the same backup id reads it back and goes on
//! with the chunks it does not list. The record is written when every chunk is in, and the
//! journal is removed after it.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use super::store::{
    self, BackupRecord, ChunkRef, EntryKind, Hash, Journal, JournalEntry, Layout, RECORD_FORMAT,
};
use super::{Compression, Inner, backup_not_found, blocking, check_id};
use crate::backup::{BackupOutcome, BackupSpec, Extent, ImageSource, Progress};
use crate::error::{DriverError, Result};

/// Time between two fsyncs of the journal: a crash costs at most this much work again,
/// and an incremental that stores little does not wait on the disk per batch of chunks.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Chunks per allocation-map query.
const WINDOW_CHUNKS: u64 = 256;

/// A chunk to read: its range and the ranges of it that hold data.
#[derive(Debug)]
struct Job {
    offset: u64,
    length: u64,
    data: Vec<(u64, u64)>,
}

impl Job {
    fn data_bytes(&self) -> u64 {
        self.data.iter().map(|(_, l)| l).sum()
    }
}

/// The buffers one chunk in flight uses, reused from chunk to chunk.
struct Slot {
    buf: Vec<u8>,
    out: Vec<u8>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

/// What the blocking stage needs.
#[derive(Clone)]
struct Stage {
    layout: Layout,
    backup_id: String,
    journal: Arc<Journal>,
    compression: Compression,
    level: i32,
    sync: bool,
}

pub(super) async fn run(
    inner: &Inner,
    spec: &BackupSpec,
    source: &dyn ImageSource,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    check_id(&spec.backup_id)?;
    if let Some(parent) = &spec.parent_id {
        check_id(parent)?;
    }
    let layout = inner.layout.clone();
    let id = spec.backup_id.clone();
    let (lock, finished, parent, journal_state) = {
        let layout = layout.clone();
        let parent_id = spec.parent_id.clone();
        blocking("cannot open the backup store", &layout.root.clone(), move || {
            layout.create()?;
            let lock = layout.lock(false)?;
            let finished = layout.read_record(&layout.record(&id))?;
            let parent = match (&finished, parent_id) {
                (None, Some(p)) => Some(layout.read_record(&layout.record(&p))?.ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("parent backup {p} is not in the store"),
                    )
                })?),
                _ => None,
            };
            let journal_path = layout.journal(&id);
            if finished.is_some() {
                // Finished, but the journal outlived a crash right after the record.
                store::remove_if_present(&journal_path)?;
            }
            let journal = Journal::read(&journal_path)?;
            Ok((lock, finished, parent, journal))
        })
        .await
        .map_err(|e| match e {
            DriverError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                backup_not_found(spec.parent_id.as_deref().unwrap_or_default())
            }
            other => other,
        })?
    };
    if let Some(record) = finished {
        return Ok(outcome(&record));
    }
    let (journal_chunk_size, previous) = journal_state;
    let chunk_size = journal_chunk_size.unwrap_or(inner.options.backup_file_size);
    let parent_hashes: HashMap<u64, Hash> = parent
        .as_ref()
        .filter(|p| p.chunk_size == chunk_size)
        .map(|p| p.chunks.iter().filter_map(|c| Some((c.offset, store::parse_hex(&c.sha256)?))).collect())
        .unwrap_or_default();

    let (done, journal) = {
        let layout = layout.clone();
        let path = layout.journal(&spec.backup_id);
        let id = spec.backup_id.clone();
        blocking("cannot open the backup journal", &path.clone(), move || {
            // The chunk writes the earlier run died in left their temporary files.
            layout.remove_chunk_tmps(&id, &previous)?;
            let done = resumable(&layout, previous);
            let journal = Journal::open(&path, chunk_size)?;
            Ok((done, journal))
        })
        .await?
    };
    let stage = Stage {
        layout: layout.clone(),
        backup_id: spec.backup_id.clone(),
        journal: Arc::new(journal),
        compression: inner.options.backup_compression_algorithm,
        level: inner.options.backup_compression_level,
        sync: inner.options.backup_sync,
    };
    let parent_hashes = Arc::new(parent_hashes);
    let mut pipeline = Pipeline {
        stage,
        source,
        progress,
        parent: parent_hashes,
        chunk_size,
        done,
        total: 0,
        done_bytes: 0,
        last_sync: std::time::Instant::now(),
        in_flight: inner.options.in_flight(),
    };
    pipeline.total = data_bytes(source, chunk_size).await?;
    pipeline.run().await?;
    let record = pipeline.record(spec, source.size());
    let journal_path = layout.journal(&spec.backup_id);
    let record_path = layout.record(&spec.backup_id);
    let written = record.clone();
    let sync = inner.options.backup_sync;
    let new_chunks: Vec<Hash> = pipeline
        .done
        .values()
        .filter(|e| e.kind == EntryKind::Stored && e.stored > 0)
        .map(|e| e.hash)
        .collect();
    blocking("cannot write the backup record", &record_path.clone(), move || {
        if sync {
            // The renames of the chunks this backup wrote.
            layout.sync_chunk_dirs(new_chunks.into_iter())?;
        }
        layout.write_record(&record_path, &written)?;
        store::remove_if_present(&journal_path)?;
        drop(lock);
        Ok(())
    })
    .await?;
    Ok(outcome(&record))
}

/// The journal's lines a resumed backup can trust: stored chunks still in the store, and
/// ranges that read as zeros; by offset.
fn resumable(layout: &Layout, entries: Vec<JournalEntry>) -> HashMap<u64, JournalEntry> {
    entries
        .into_iter()
        .filter(|e| match e.kind {
            EntryKind::Stored => layout.find_chunk(&e.hash).is_some(),
            EntryKind::Zero => true,
            EntryKind::Intent => false,
        })
        .map(|e| (e.offset, e))
        .collect()
}

/// Bytes of `source` its allocation map says hold data: the progress's total.
async fn data_bytes(source: &dyn ImageSource, chunk_size: u64) -> Result<u64> {
    let size = source.size();
    let window = chunk_size * WINDOW_CHUNKS;
    let mut total = 0;
    let mut at = 0;
    while at < size {
        let len = window.min(size - at);
        total += source.extents(at, len).await?.iter().filter(|e| e.data).map(|e| e.length).sum::<u64>();
        at += len;
    }
    Ok(total)
}

/// The chunks of `[start, start + len)` that hold data, with their data ranges.
fn jobs(start: u64, len: u64, chunk_size: u64, extents: &[Extent]) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut ext = extents.iter().filter(|e| e.data).peekable();
    let mut at = start;
    while at < start + len {
        let end = (at + chunk_size).min(start + len);
        let mut data = Vec::new();
        while let Some(e) = ext.peek() {
            let (from, to) = (e.offset.max(at), (e.offset + e.length).min(end));
            if from < to {
                data.push((from, to - from));
            }
            if e.offset + e.length <= end {
                ext.next();
            } else {
                break;
            }
        }
        if !data.is_empty() {
            jobs.push(Job { offset: at, length: end - at, data });
        }
        at = end;
    }
    jobs
}

struct Pipeline<'a> {
    stage: Stage,
    source: &'a dyn ImageSource,
    progress: &'a dyn Progress,
    parent: Arc<HashMap<u64, Hash>>,
    chunk_size: u64,
    done: HashMap<u64, JournalEntry>,
    total: u64,
    done_bytes: u64,
    last_sync: std::time::Instant,
    in_flight: usize,
}

impl Pipeline<'_> {
    async fn run(&mut self) -> Result<()> {
        let size = self.source.size();
        let window = self.chunk_size * WINDOW_CHUNKS;
        let mut slots: Vec<Slot> = Vec::new();
        let mut flying = FuturesUnordered::new();
        let mut failure = None;
        let mut at = 0;
        'windows: while at < size {
            let len = window.min(size - at);
            let extents = match self.source.extents(at, len).await {
                Ok(e) => e,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            for job in jobs(at, len, self.chunk_size, &extents) {
                if self.done.contains_key(&job.offset) {
                    self.done_bytes += job.data_bytes();
                    continue;
                }
                if flying.len() >= self.in_flight {
                    let (slot, result) = flying.next().await.expect("a chunk in flight");
                    slots.push(slot);
                    if let Err(e) = self.finish(result).await {
                        failure = Some(e);
                        break 'windows;
                    }
                }
                let slot =
                    slots.pop().unwrap_or_else(|| Slot { buf: Vec::new(), out: Vec::new(), zstd: None });
                flying.push(chunk(self.stage.clone(), self.source, self.parent.clone(), job, slot));
            }
            at += len;
        }
        // Whatever happened, wait for the chunks in flight: each one journals what it
        // stored, so nothing written is left unknown to a resume or a delete.
        while let Some((_, result)) = flying.next().await {
            if let Err(e) = self.finish(result).await
                && failure.is_none()
            {
                failure = Some(e);
            }
        }
        let journal = self.stage.journal.clone();
        blocking("cannot sync the backup journal", &self.stage.layout.root, move || journal.sync()).await?;
        failure.map_or(Ok(()), Err)
    }

    /// Accounts for one finished chunk.
    async fn finish(&mut self, result: Result<(JournalEntry, u64)>) -> Result<()> {
        let (entry, data_bytes) = result?;
        self.done.insert(entry.offset, entry);
        self.done_bytes += data_bytes;
        self.progress.report(self.done_bytes, self.total);
        if self.stage.sync && self.last_sync.elapsed() >= SYNC_EVERY {
            self.last_sync = std::time::Instant::now();
            let journal = self.stage.journal.clone();
            blocking("cannot sync the backup journal", &self.stage.layout.root, move || journal.sync())
                .await?;
        }
        Ok(())
    }

    fn record(&self, spec: &BackupSpec, size_bytes: u64) -> BackupRecord {
        let mut entries: Vec<&JournalEntry> =
            self.done.values().filter(|e| e.kind == EntryKind::Stored).collect();
        entries.sort_by_key(|e| e.offset);
        BackupRecord {
            format: RECORD_FORMAT,
            backup_id: spec.backup_id.clone(),
            volume_id: spec.volume_id.clone(),
            parent_id: spec.parent_id.clone(),
            size_bytes,
            chunk_size: self.chunk_size,
            read_bytes: self.done.values().map(|e| e.read).sum(),
            stored_bytes: self.done.values().map(|e| e.stored).sum(),
            chunks: entries
                .into_iter()
                .map(|e| ChunkRef { offset: e.offset, length: e.length, sha256: store::hex(&e.hash) })
                .collect(),
        }
    }
}

/// One chunk: read its data ranges, then hash, compress and store it on the blocking pool.
/// Answers the slot back with the journal line and the data bytes it covered.
async fn chunk(
    stage: Stage,
    source: &dyn ImageSource,
    parent: Arc<HashMap<u64, Hash>>,
    job: Job,
    mut slot: Slot,
) -> (Slot, Result<(JournalEntry, u64)>) {
    let len = job.length as usize;
    if let Err(e) = read(source, &job, &mut slot.buf).await {
        return (slot, Err(e));
    }
    let root = stage.layout.root.clone();
    let data_bytes = job.data_bytes();
    let parent_hash = parent.get(&job.offset).copied();
    let done = tokio::task::spawn_blocking(move || {
        let result = store_chunk(&stage, &mut slot, &job, len, parent_hash);
        (slot, result)
    })
    .await;
    match done {
        Ok((slot, result)) => (
            slot,
            result.map(|e| (e, data_bytes)).map_err(|e| DriverError::io("cannot store a chunk in", root, e)),
        ),
        Err(e) => (
            Slot { buf: Vec::new(), out: Vec::new(), zstd: None },
            Err(DriverError::Backend(format!("a chunk task failed: {e}"))),
        ),
    }
}

/// Fills `buf` with the chunk: its data ranges read from the source, zeros elsewhere.
async fn read(source: &dyn ImageSource, job: &Job, buf: &mut Vec<u8>) -> Result<()> {
    let len = job.length as usize;
    if let [(offset, length)] = job.data[..]
        && offset == job.offset
        && length == job.length
    {
        buf.resize(len, 0);
        *buf = source.read_at(job.offset, std::mem::take(buf)).await?;
        return Ok(());
    }
    buf.clear();
    buf.resize(len, 0);
    for &(offset, length) in &job.data {
        let part = source.read_at(offset, vec![0u8; length as usize]).await?;
        let at = (offset - job.offset) as usize;
        buf[at..at + part.len()].copy_from_slice(&part);
    }
    Ok(())
}

/// Hashes a chunk read into `slot` and stores it unless the store has it: the blocking stage.
fn store_chunk(
    stage: &Stage,
    slot: &mut Slot,
    job: &Job,
    len: usize,
    parent: Option<Hash>,
) -> std::io::Result<JournalEntry> {
    let data = &slot.buf[..len];
    let mut entry = JournalEntry {
        kind: EntryKind::Zero,
        offset: job.offset,
        length: job.length,
        read: job.data_bytes(),
        stored: 0,
        hash: [0; 32],
    };
    if store::is_zero(data) {
        stage.journal.append(&entry)?;
        return Ok(entry);
    }
    entry.hash = store::sha256(data);
    entry.kind = EntryKind::Stored;
    // The parent's chunks cannot go while this backup holds the store's shared lock.
    if parent != Some(entry.hash) && stage.layout.find_chunk(&entry.hash).is_none() {
        stage.journal.append(&JournalEntry { kind: EntryKind::Intent, ..entry })?;
        let compressed = match stage.compression {
            Compression::None => false,
            Compression::Zstd => compress(slot, len, stage.level)?,
        };
        let bytes = if compressed { &slot.out[..] } else { &slot.buf[..len] };
        let tmp = stage.layout.chunk_tmp(&entry.hash, &stage.backup_id, job.offset);
        stage.layout.write_chunk(&entry.hash, compressed, bytes, stage.sync, &tmp)?;
        entry.stored = bytes.len() as u64;
    }
    stage.journal.append(&entry)?;
    Ok(entry)
}

/// Compresses the chunk into `slot.out`; false when it does not shrink by 1/64 at least
/// (or its first [`SAMPLE`] bytes do not), and the chunk is better stored as it is.
fn compress(slot: &mut Slot, len: usize, level: i32) -> std::io::Result<bool> {
    let zstd = match &mut slot.zstd {
        Some(z) => z,
        none => none.insert(zstd::bulk::Compressor::new(level)?),
    };
    let bound = zstd::zstd_safe::compress_bound(len);
    if slot.out.capacity() < bound {
        slot.out = Vec::with_capacity(bound);
    }
    // A sample first: data that does not shrink (random, already compressed, encrypted)
    // costs one sample's compression instead of a whole chunk's.
    if len >= 4 * SAMPLE {
        slot.out.clear();
        let n = zstd.compress_to_buffer(&slot.buf[..SAMPLE], &mut slot.out)?;
        if n >= SAMPLE - SAMPLE / 64 {
            return Ok(false);
        }
    }
    slot.out.clear();
    let n = zstd.compress_to_buffer(&slot.buf[..len], &mut slot.out)?;
    Ok(n < len - len / 64)
}

/// The head of a chunk compressed to see whether the chunk is worth compressing.
const SAMPLE: usize = 64 << 10;

fn outcome(record: &BackupRecord) -> BackupOutcome {
    BackupOutcome {
        size_bytes: record.size_bytes,
        read_bytes: record.read_bytes,
        stored_bytes: record.stored_bytes,
        object_count: record.chunks.len() as u64,
        service_metadata: serde_json::json!({
            "store": "posix",
            "chunk_size": record.chunk_size,
            "record": format!("backups/{}.json", record.backup_id),
        })
        .to_string(),
    }
}
