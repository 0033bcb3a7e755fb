//! The POSIX store's layout on disk and its durable pieces: chunk files, backup records,
//! per-backup journals and the store lock.
//!
//! ```text
//! <backup_posix_path>/
//!   lock                         flock: shared while a backup runs, exclusive while a delete collects
//!   chunks/<2 hex>/<sha256>.zst  a chunk compressed with zstd (one frame)
//!   chunks/<2 hex>/<sha256>.raw  a chunk stored as is (compression off, or incompressible data)
//!   chunks/<2 hex>/<sha256>.<backup id>.<offset>.tmp  a chunk being written
//!   backups/<backup id>.json     a finished backup's record: every chunk it lists, holes not listed
//!   journal/<backup id>.journal  a running backup's append-only journal of chunks
//!   deleting/<backup id>.json    the record of a backup whose delete has started
//! ```
//!
//! Everything here is blocking file-system code; callers run it on the blocking pool.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A chunk's SHA-256.
pub type Hash = [u8; 32];

pub fn hex(hash: &Hash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in hash {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

pub fn parse_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

pub fn sha256(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// True when every byte of `data` is zero (vectorised: OR-folded in blocks).
pub fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096).all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// One chunk a backup lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub offset: u64,
    pub length: u64,
    pub sha256: String,
}

/// A finished backup: everything a restore needs, with no reference to its parent's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub format: u32,
    pub backup_id: String,
    pub volume_id: String,
    pub parent_id: Option<String>,
    pub size_bytes: u64,
    pub chunk_size: u64,
    /// Bytes read from the source over every call that made this backup.
    pub read_bytes: u64,
    /// Bytes this backup added to the store (compressed, after deduplication).
    pub stored_bytes: u64,
    /// Every chunk holding data, in offset order; ranges not listed read as zeros.
    pub chunks: Vec<ChunkRef>,
}

pub const RECORD_FORMAT: u32 = 1;

impl BackupRecord {
    /// Checks what a record read from disk or given to `import_record` promises.
    pub fn check(&self) -> Result<(), String> {
        if self.format != RECORD_FORMAT {
            return Err(format!("unknown record format {}", self.format));
        }
        let mut end = 0;
        for c in &self.chunks {
            if c.offset < end || c.length == 0 || c.offset.saturating_add(c.length) > self.size_bytes {
                return Err(format!("chunk at offset {} overlaps another or the end", c.offset));
            }
            if parse_hex(&c.sha256).is_none() {
                return Err(format!("chunk at offset {} has no valid SHA-256", c.offset));
            }
            end = c.offset + c.length;
        }
        Ok(())
    }

    pub fn hashes(&self) -> impl Iterator<Item = Hash> + '_ {
        self.chunks.iter().filter_map(|c| parse_hex(&c.sha256))
    }
}

/// Paths of one store.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

/// The ids a store accepts in file names.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Layout {
    pub fn chunk_dir(&self, hash: &Hash) -> PathBuf {
        self.root.join("chunks").join(&hex(hash)[..2])
    }
    pub fn chunk(&self, hash: &Hash, compressed: bool) -> PathBuf {
        let ext = if compressed { "zst" } else { "raw" };
        self.chunk_dir(hash).join(format!("{}.{ext}", hex(hash)))
    }
    pub fn record(&self, id: &str) -> PathBuf {
        self.root.join("backups").join(format!("{id}.json"))
    }
    pub fn deleting(&self, id: &str) -> PathBuf {
        self.root.join("deleting").join(format!("{id}.json"))
    }
    pub fn journal(&self, id: &str) -> PathBuf {
        self.root.join("journal").join(format!("{id}.journal"))
    }

    /// Creates the store's directories.
    pub fn create(&self) -> io::Result<()> {
        for dir in ["chunks", "backups", "journal", "deleting"] {
            fs::create_dir_all(self.root.join(dir))?;
        }
        Ok(())
    }

    /// Where the chunk is, if it is stored.
    pub fn find_chunk(&self, hash: &Hash) -> Option<(PathBuf, bool)> {
        [true, false].into_iter().map(|c| (self.chunk(hash, c), c)).find(|(p, _)| p.exists())
    }

    /// The temporary name backup `backup_id` writes its chunk at `offset` under:
    /// `<sha256>.<backup id>.<offset>.tmp`, so a resume or a delete of the backup finds what a
    /// crash left from the chunks its journal has an intent for.
    pub fn chunk_tmp(&self, hash: &Hash, backup_id: &str, offset: u64) -> PathBuf {
        self.chunk_dir(hash).join(format!("{}.{backup_id}.{offset}.tmp", hex(hash)))
    }

    /// Removes what a crash may have left of the chunk writes backup `backup_id`'s journal
    /// announced (`Intent` lines).
    pub fn remove_chunk_tmps(&self, backup_id: &str, entries: &[JournalEntry]) -> io::Result<()> {
        for e in entries.iter().filter(|e| e.kind == EntryKind::Intent) {
            remove_if_present(&self.chunk_tmp(&e.hash, backup_id, e.offset))?;
        }
        Ok(())
    }

    /// Writes a chunk's stored form durably under its final name (temporary name `tmp`,
    /// fsync, rename), so a final name always holds a whole chunk.
    pub fn write_chunk(
        &self,
        hash: &Hash,
        compressed: bool,
        bytes: &[u8],
        sync: bool,
        tmp: &Path,
    ) -> io::Result<()> {
        let dir = self.chunk_dir(hash);
        let tmp = tmp.to_owned();
        let mut file = match File::create(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir)?;
                File::create(&tmp)?
            }
            other => other?,
        };
        let written = file.write_all(bytes).and_then(|()| if sync { file.sync_data() } else { Ok(()) });
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, self.chunk(hash, compressed))) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }

    /// Reads a chunk's stored form into `raw`; `None` when it is missing.
    pub fn read_chunk(&self, hash: &Hash, raw: &mut Vec<u8>) -> io::Result<Option<bool>> {
        for compressed in [true, false] {
            match File::open(self.chunk(hash, compressed)) {
                Ok(mut f) => {
                    raw.clear();
                    f.read_to_end(raw)?;
                    return Ok(Some(compressed));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    pub fn remove_chunk(&self, hash: &Hash) -> io::Result<()> {
        for compressed in [true, false] {
            remove_if_present(&self.chunk(hash, compressed))?;
        }
        Ok(())
    }

    pub fn read_record(&self, path: &Path) -> io::Result<Option<BackupRecord>> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let record: BackupRecord = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("damaged backup record: {e}")))?;
        record
            .check()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("damaged backup record: {e}")))?;
        Ok(Some(record))
    }

    /// Writes a record durably under `path` (temporary name, fsync, rename, fsync of the
    /// directory).
    pub fn write_record(&self, path: &Path, record: &BackupRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_parent(path)
    }

    /// Every record of the store (finished backups), by id.
    pub fn record_ids(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(self.root.join(dir))? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".json").or_else(|| name.strip_suffix(".journal"))
                && valid_id(id)
            {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    /// Every chunk some finished or running backup other than `except` references.
    pub fn referenced(&self, except: &str) -> io::Result<HashSet<Hash>> {
        let mut set = HashSet::new();
        for id in self.record_ids("backups")? {
            if id == except {
                continue;
            }
            if let Some(record) = self.read_record(&self.record(&id))? {
                set.extend(record.hashes());
            }
        }
        for id in self.record_ids("journal")? {
            if id != except {
                set.extend(Journal::read(&self.journal(&id))?.1.iter().filter_map(JournalEntry::hash));
            }
        }
        Ok(set)
    }

    /// Fsyncs the chunk directories of `hashes` (their renames) once each.
    pub fn sync_chunk_dirs(&self, hashes: impl Iterator<Item = Hash>) -> io::Result<()> {
        let mut seen = [false; 256];
        for h in hashes {
            if !std::mem::replace(&mut seen[usize::from(h[0])], true) {
                File::open(self.chunk_dir(&h))?.sync_all()?;
            }
        }
        Ok(())
    }

    /// Takes the store's lock, shared or exclusive, until the returned file is dropped.
    pub fn lock(&self, exclusive: bool) -> io::Result<File> {
        let file =
            OpenOptions::new().create(true).truncate(false).write(true).open(self.root.join("lock"))?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&file, op)?;
        Ok(file)
    }
}

pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// What a journal line says about one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// The chunk is about to be written: a delete of this backup removes it too, should the
    /// backup die before its `Stored` line.
    Intent,
    /// The chunk is in the store (written now, or found there).
    Stored,
    /// The range read as zeros: nothing stored.
    Zero,
}

/// One journal line (64 bytes on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalEntry {
    pub kind: EntryKind,
    pub offset: u64,
    pub length: u64,
    /// Bytes read from the source for this chunk.
    pub read: u64,
    /// Bytes written to the store for this chunk.
    pub stored: u64,
    pub hash: Hash,
}

const LINE: usize = 64;
const MAGIC: &[u8; 8] = b"EMBERJNL";

impl JournalEntry {
    pub fn hash(&self) -> Option<Hash> {
        matches!(self.kind, EntryKind::Intent | EntryKind::Stored).then_some(self.hash)
    }

    fn encode(&self) -> [u8; LINE] {
        let mut line = [0u8; LINE];
        line[0] = match self.kind {
            EntryKind::Intent => 1,
            EntryKind::Stored => 2,
            EntryKind::Zero => 3,
        };
        line[8..16].copy_from_slice(&self.offset.to_le_bytes());
        line[16..20].copy_from_slice(&(self.length as u32).to_le_bytes());
        line[20..24].copy_from_slice(&(self.read as u32).to_le_bytes());
        line[24..28].copy_from_slice(&(self.stored as u32).to_le_bytes());
        line[32..64].copy_from_slice(&self.hash);
        line
    }

    fn decode(line: &[u8]) -> Option<Self> {
        let kind = match line[0] {
            1 => EntryKind::Intent,
            2 => EntryKind::Stored,
            3 => EntryKind::Zero,
            _ => return None,
        };
        let u32_at = |i: usize| u64::from(u32::from_le_bytes(line[i..i + 4].try_into().unwrap_or_default()));
        Some(Self {
            kind,
            offset: u64::from_le_bytes(line[8..16].try_into().ok()?),
            length: u32_at(16),
            read: u32_at(20),
            stored: u32_at(24),
            hash: line[32..64].try_into().ok()?,
        })
    }
}

/// A running backup's append-only journal: a header with the chunk size, then one line per
/// chunk event. Lines are single `write` calls on an O_APPEND file (whole after a process
/// crash); `sync` makes them durable in batches. A torn or unknown line ends the journal.
#[derive(Debug)]
pub struct Journal {
    file: File,
}

impl Journal {
    /// Reads a journal: its chunk size and its lines (none when it does not exist).
    pub fn read(path: &Path) -> io::Result<(Option<u64>, Vec<JournalEntry>)> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, Vec::new())),
            Err(e) => return Err(e),
        };
        if bytes.len() < LINE || &bytes[..8] != MAGIC {
            return Ok((None, Vec::new()));
        }
        let chunk_size = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
        let entries = bytes[LINE..].chunks_exact(LINE).map_while(JournalEntry::decode).collect();
        Ok((Some(chunk_size), entries))
    }

    /// Opens the journal for appending, creating it with its header.
    pub fn open(path: &Path, chunk_size: u64) -> io::Result<Self> {
        let mut file = OpenOptions::new().create(true).append(true).read(true).open(path)?;
        if file.metadata()?.len() < LINE as u64 {
            file.set_len(0)?;
            let mut header = [0u8; LINE];
            header[..8].copy_from_slice(MAGIC);
            header[8..16].copy_from_slice(&chunk_size.to_le_bytes());
            file.write_all(&header)?;
            file.sync_all()?;
            sync_parent(path)?;
        } else {
            // Cut a torn last line so the next ones start on a line boundary.
            let len = file.metadata()?.len();
            let whole = len - len % LINE as u64;
            if whole != len {
                file.set_len(whole)?;
            }
        }
        Ok(Self { file })
    }

    pub fn append(&self, entry: &JournalEntry) -> io::Result<()> {
        // One positional-free write on an O_APPEND file: lines of concurrent writers never mix.
        (&self.file).write_all(&entry.encode())
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}
