//! Restore and verify: chunks read from the store, decompressed and checked against their
//! SHA-256 on the blocking pool, a few in flight.
//!
//! A restore first zeroes every range of the sink the backup holds no data for (the
//! sink's `zero`: a punched hole on a local file, cheap on a fresh sparse file; the sink
//! may also be an existing volume, whose old data must not show through), then writes
//! the chunks. It is idempotent: a restore interrupted by a crash is simply run again.

use std::collections::HashSet;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use super::store::{self, Hash, Layout};
use super::{Inner, backup_not_found, blocking, check_id};
use crate::backup::{ImageSink, Progress, RestoreOutcome, VerifyReport};
use crate::error::{DriverError, Result};

/// Why a chunk could not be used.
enum Bad {
    Missing,
    Damaged(String),
    Io(std::io::Error),
}

/// Reads chunk `hash` into `out` (its `len` bytes) and checks its hash.
fn load(layout: &Layout, hash: &Hash, len: usize, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), Bad> {
    let compressed = match layout.read_chunk(hash, raw) {
        Ok(Some(c)) => c,
        Ok(None) => return Err(Bad::Missing),
        Err(e) => return Err(Bad::Io(e)),
    };
    if compressed {
        out.clear();
        if out.capacity() < len {
            out.reserve(len);
        }
        let decompressed =
            zstd::bulk::Decompressor::new().and_then(|mut d| d.decompress_to_buffer(&raw[..], out));
        match decompressed {
            Ok(n) if n == len => {}
            Ok(n) => return Err(Bad::Damaged(format!("it holds {n} bytes, not {len}"))),
            Err(e) => return Err(Bad::Damaged(format!("it does not decompress: {e}"))),
        }
    } else {
        if raw.len() != len {
            return Err(Bad::Damaged(format!("it holds {} bytes, not {len}", raw.len())));
        }
        std::mem::swap(raw, out);
    }
    let actual = store::sha256(out);
    if actual != *hash {
        return Err(Bad::Damaged(format!("its content's SHA-256 is {}", store::hex(&actual))));
    }
    Ok(())
}

async fn record(inner: &Inner, backup_id: &str) -> Result<store::BackupRecord> {
    check_id(backup_id)?;
    let layout = inner.layout.clone();
    let path = layout.record(backup_id);
    blocking("cannot read the backup record", &path.clone(), move || layout.read_record(&path))
        .await?
        .ok_or_else(|| backup_not_found(backup_id))
}

pub(super) async fn restore(
    inner: &Inner,
    backup_id: &str,
    sink: &dyn ImageSink,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    let record = record(inner, backup_id).await?;
    if sink.size() < record.size_bytes {
        return Err(DriverError::InvalidInput(format!(
            "backup {backup_id} holds {} bytes, more than the {} bytes of the volume to restore into",
            record.size_bytes,
            sink.size()
        )));
    }
    // The holes first: ranges between the listed chunks, and past the last one.
    let mut at = 0;
    for c in &record.chunks {
        if c.offset > at {
            sink.zero(at, c.offset - at).await?;
        }
        at = c.offset + c.length;
    }
    if sink.size() > at {
        sink.zero(at, sink.size() - at).await?;
    }
    let total: u64 = record.chunks.iter().map(|c| c.length).sum();
    let mut done = 0;
    let mut buffers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut flying = FuturesUnordered::new();
    let in_flight = inner.options.in_flight();
    let mut chunks = record.chunks.iter();
    loop {
        while flying.len() < in_flight {
            let Some(c) = chunks.next() else { break };
            let hash = store::parse_hex(&c.sha256).unwrap_or_default();
            let (raw, out) = buffers.pop().unwrap_or_default();
            flying.push(write_chunk(
                inner.layout.clone(),
                sink,
                backup_id,
                c.offset,
                c.length,
                hash,
                raw,
                out,
            ));
        }
        let Some(result) = flying.next().await else { break };
        // On a failure, the chunks in flight are dropped: a restore is run again whole.
        let (length, bufs) = result?;
        buffers.push(bufs);
        done += length;
        progress.report(done, total);
    }
    sink.flush().await?;
    Ok(RestoreOutcome { written_bytes: total })
}

/// Loads one chunk (checked) and writes it into the sink at `offset`.
#[allow(clippy::too_many_arguments)]
async fn write_chunk(
    layout: Layout,
    sink: &dyn ImageSink,
    backup_id: &str,
    offset: u64,
    length: u64,
    hash: Hash,
    mut raw: Vec<u8>,
    mut out: Vec<u8>,
) -> Result<(u64, (Vec<u8>, Vec<u8>))> {
    let loaded = tokio::task::spawn_blocking(move || {
        let result = load(&layout, &hash, length as usize, &mut raw, &mut out);
        (result, raw, out)
    })
    .await
    .map_err(|e| DriverError::Backend(format!("a chunk task failed: {e}")))?;
    let (result, raw, out) = loaded;
    let name = store::hex(&hash);
    match result {
        Ok(()) => {}
        Err(Bad::Missing) => {
            return Err(DriverError::Backend(format!(
                "chunk {name} at offset {offset} of backup {backup_id} is missing from the store"
            )));
        }
        Err(Bad::Damaged(why)) => {
            return Err(DriverError::Backend(format!(
                "chunk {name} at offset {offset} of backup {backup_id} is damaged: {why}"
            )));
        }
        Err(Bad::Io(e)) => return Err(DriverError::io("cannot read chunk", name, e)),
    }
    let out = sink.write_at(offset, out).await?;
    Ok((length, (raw, out)))
}

pub(super) async fn verify(inner: &Inner, backup_id: &str) -> Result<VerifyReport> {
    let record = record(inner, backup_id).await?;
    let mut seen = HashSet::new();
    let mut todo = record.chunks.iter().filter(|c| seen.insert(c.sha256.clone()));
    let mut report = VerifyReport::default();
    let mut flying = FuturesUnordered::new();
    let in_flight = inner.options.in_flight();
    loop {
        while flying.len() < in_flight {
            let Some(c) = todo.next() else { break };
            let hash = store::parse_hex(&c.sha256).unwrap_or_default();
            let layout = inner.layout.clone();
            let length = c.length as usize;
            flying.push(tokio::task::spawn_blocking(move || {
                let (mut raw, mut out) = (Vec::new(), Vec::new());
                (hash, load(&layout, &hash, length, &mut raw, &mut out))
            }));
        }
        let Some(joined) = flying.next().await else { break };
        let (hash, result) = joined.map_err(|e| DriverError::Backend(format!("a chunk task failed: {e}")))?;
        report.chunks_checked += 1;
        match result {
            Ok(()) => {}
            Err(Bad::Missing | Bad::Damaged(_)) => report.bad_chunks.push(store::hex(&hash)),
            Err(Bad::Io(e)) => return Err(DriverError::io("cannot read chunk", store::hex(&hash), e)),
        }
    }
    report.bad_chunks.sort();
    Ok(report)
}
