//! Local raw images for the backup path: [`LocalSource`] reads a raw file (the volume
//! driver's [`RawExport`](crate::RawExport)) and knows its holes from SEEK_DATA/SEEK_HOLE;
//! [`LocalSink`] writes one, deallocating the ranges it zeroes.
//!
//! Every file operation runs on tokio's blocking pool, never on the async runtime.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rustix::fs::{FallocateFlags, SeekFrom};
use rustix::io::Errno;

use crate::backup::{Extent, ImageSink, ImageSource};
use crate::error::{DriverError, Result};

/// Runs `f` on the blocking pool, turning its I/O error into a [`DriverError::Io`] on `path`.
async fn blocking<T, F>(context: &'static str, path: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| DriverError::io(context, path, e)),
        Err(e) => Err(DriverError::Backend(format!("a blocking file task failed: {e}"))),
    }
}

/// A raw file to back up. Its allocation map comes from SEEK_DATA/SEEK_HOLE, so holes are
/// never read; a file system without them answers one data extent (the kernel's default).
#[derive(Debug, Clone)]
pub struct LocalSource {
    file: Arc<File>,
    path: PathBuf,
    size: u64,
}

impl LocalSource {
    /// Opens `path` read-only; its size is the file's length.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let p = path.clone();
        let (file, size) = blocking("cannot open", &path, move || {
            let file = File::open(&p)?;
            let size = file.metadata()?.len();
            Ok((file, size))
        })
        .await?;
        Ok(Self { file: Arc::new(file), path, size })
    }

    /// Opens `path` and reads only its first `size` bytes (a volume's virtual size, where
    /// the file may be longer).
    pub async fn open_with_size(path: impl Into<PathBuf>, size: u64) -> Result<Self> {
        let mut source = Self::open(path).await?;
        source.size = size.min(source.size);
        Ok(source)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Appends `[offset, to)` to `extents`, merged with the last one when it continues it.
fn push(extents: &mut Vec<Extent>, offset: u64, to: u64, data: bool) {
    if to <= offset {
        return;
    }
    match extents.last_mut() {
        Some(last) if last.data == data && last.offset + last.length == offset => last.length += to - offset,
        _ => extents.push(Extent { offset, length: to - offset, data }),
    }
}

/// The extents of `[offset, end)` of `file`, from SEEK_DATA/SEEK_HOLE.
fn seek_extents(file: &File, offset: u64, end: u64) -> std::io::Result<Vec<Extent>> {
    let mut extents = Vec::new();
    let mut pos = offset;
    while pos < end {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d.min(end),
            // No data past `pos`: the rest is a hole.
            Err(Errno::NXIO) => end,
            // SEEK_DATA unsupported: everything is data.
            Err(Errno::INVAL | Errno::OPNOTSUPP) => {
                push(&mut extents, pos, end, true);
                break;
            }
            Err(e) => return Err(e.into()),
        };
        push(&mut extents, pos, data, false);
        if data >= end {
            break;
        }
        let hole = match rustix::fs::seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h.min(end),
            Err(Errno::NXIO) => end,
            Err(e) => return Err(e.into()),
        };
        push(&mut extents, data, hole, true);
        pos = hole;
    }
    Ok(extents)
}

#[async_trait]
impl ImageSource for LocalSource {
    fn size(&self) -> u64 {
        self.size
    }

    async fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        let end = offset.saturating_add(length).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let file = self.file.clone();
        let mut extents =
            blocking("cannot map", &self.path, move || seek_extents(&file, offset, end)).await?;
        // The range asked past the end of the file reads as zeros.
        let asked_end = offset.saturating_add(length);
        if asked_end > end {
            extents.push(Extent { offset: end, length: asked_end - end, data: false });
        }
        Ok(extents)
    }

    async fn read_at(&self, offset: u64, mut buf: Vec<u8>) -> Result<Vec<u8>> {
        let file = self.file.clone();
        let size = self.size;
        blocking("cannot read", &self.path, move || {
            // Past the image's size reads as zeros, as a block device's tail would not exist.
            let inside = usize::try_from(size.saturating_sub(offset)).unwrap_or(usize::MAX).min(buf.len());
            file.read_exact_at(&mut buf[..inside], offset)?;
            buf[inside..].fill(0);
            Ok(buf)
        })
        .await
    }
}

/// A raw file to restore into: writes with pwrite, zeroes by punching holes (falling back
/// to writing zeros where the file system cannot), and makes it durable with fsync.
#[derive(Debug, Clone)]
pub struct LocalSink {
    file: Arc<File>,
    path: PathBuf,
    size: u64,
}

/// Zeros written at once where holes cannot be punched.
const ZERO_BLOCK: usize = 1 << 20;

impl LocalSink {
    /// Opens an existing raw file for writing; its size is the file's length.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let p = path.clone();
        let (file, size) = blocking("cannot open", &path, move || {
            let file = std::fs::OpenOptions::new().write(true).open(&p)?;
            let size = file.metadata()?.len();
            Ok((file, size))
        })
        .await?;
        Ok(Self { file: Arc::new(file), path, size })
    }

    /// Creates (or truncates) a sparse raw file of `size` bytes.
    pub async fn create(path: impl Into<PathBuf>, size: u64) -> Result<Self> {
        let path = path.into();
        let p = path.clone();
        let file = blocking("cannot create", &path, move || {
            let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&p)?;
            file.set_len(size)?;
            Ok(file)
        })
        .await?;
        Ok(Self { file: Arc::new(file), path, size })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn zero_range(file: &File, offset: u64, length: u64) -> std::io::Result<()> {
    match rustix::fs::fallocate(file, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, offset, length)
    {
        Ok(()) => return Ok(()),
        Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    let zeros = vec![0u8; ZERO_BLOCK.min(usize::try_from(length).unwrap_or(ZERO_BLOCK))];
    let mut pos = offset;
    let end = offset + length;
    while pos < end {
        let n = usize::try_from(end - pos).unwrap_or(usize::MAX).min(zeros.len());
        file.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[async_trait]
impl ImageSink for LocalSink {
    fn size(&self) -> u64 {
        self.size
    }

    async fn write_at(&self, offset: u64, buf: Vec<u8>) -> Result<Vec<u8>> {
        if offset.saturating_add(buf.len() as u64) > self.size {
            return Err(DriverError::InvalidInput(format!(
                "a write of {} bytes at {offset} goes past the end of {} ({} bytes)",
                buf.len(),
                self.path.display(),
                self.size
            )));
        }
        let file = self.file.clone();
        blocking("cannot write", &self.path, move || {
            file.write_all_at(&buf, offset)?;
            Ok(buf)
        })
        .await
    }

    async fn zero(&self, offset: u64, length: u64) -> Result<()> {
        let end = offset.saturating_add(length).min(self.size);
        if offset >= end {
            return Ok(());
        }
        let file = self.file.clone();
        blocking("cannot zero", &self.path, move || zero_range(&file, offset, end - offset)).await
    }

    async fn flush(&self) -> Result<()> {
        let file = self.file.clone();
        blocking("cannot sync", &self.path, move || file.sync_all()).await
    }
}
