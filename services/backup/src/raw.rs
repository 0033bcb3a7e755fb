//! A raw image file as a backup's source or a restore's sink, with positional reads and
//! writes on the blocking pool. Holes are found with `SEEK_DATA`/`SEEK_HOLE`, so they are
//! never read. (A stand-in until the store's own `LocalSource`/`LocalSink` are merged.)

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use ember_drivers::backup::{Extent, ImageSink, ImageSource};
use ember_drivers::{DriverError, Result};

fn io(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DriverError {
    let path = path.to_owned();
    move |source| DriverError::Io { context, path, source }
}

async fn blocking<T: Send + 'static>(
    context: &'static str,
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let path_owned = path.to_owned();
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(io(context, &path_owned)),
        Err(e) => Err(DriverError::Backend(format!("{context} {}: {e}", path_owned.display()))),
    }
}

/// A raw image to read.
pub struct RawFileSource {
    path: PathBuf,
    file: Arc<File>,
    size: u64,
}

impl RawFileSource {
    /// Opens `path` read-only; `size` is the image's size in bytes.
    pub async fn open(path: &Path, size: u64) -> Result<Self> {
        let p = path.to_owned();
        let file = blocking("cannot open", path, move || File::open(p)).await?;
        Ok(Self { path: path.to_owned(), file: Arc::new(file), size })
    }
}

#[async_trait]
impl ImageSource for RawFileSource {
    fn size(&self) -> u64 {
        self.size
    }

    async fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        let file = self.file.clone();
        let end = offset.saturating_add(length).min(self.size);
        blocking("cannot map", &self.path, move || Ok(map(&file, offset, end))).await
    }

    async fn read_at(&self, offset: u64, mut buf: Vec<u8>) -> Result<Vec<u8>> {
        let file = self.file.clone();
        blocking("cannot read", &self.path, move || {
            // Past the file's end (a shorter file than the image) reads as zeros.
            let mut done = 0;
            while done < buf.len() {
                match file.read_at(&mut buf[done..], offset + done as u64)? {
                    0 => {
                        buf[done..].fill(0);
                        break;
                    }
                    n => done += n,
                }
            }
            Ok(buf)
        })
        .await
    }
}

/// The extents of `[offset, end)` by `SEEK_DATA`/`SEEK_HOLE`; one data extent when the
/// file system cannot tell.
fn map(file: &File, offset: u64, end: u64) -> Vec<Extent> {
    use rustix::fs::{SeekFrom, seek};
    let mut out = Vec::new();
    let mut at = offset;
    while at < end {
        let data = match seek(file, SeekFrom::Data(at)) {
            Ok(d) => d.min(end),
            Err(rustix::io::Errno::NXIO) => end,
            Err(_) => return vec![Extent { offset, length: end - offset, data: true }],
        };
        if data > at {
            out.push(Extent { offset: at, length: data - at, data: false });
        }
        if data >= end {
            break;
        }
        let hole = match seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h.min(end),
            Err(_) => end,
        };
        out.push(Extent { offset: data, length: hole - data, data: true });
        at = hole;
    }
    out
}

/// A raw image to write.
pub struct RawFileSink {
    path: PathBuf,
    file: Arc<File>,
    size: u64,
}

impl RawFileSink {
    /// Opens `path` for writing; `size` is the image's size in bytes.
    pub async fn open(path: &Path, size: u64) -> Result<Self> {
        let p = path.to_owned();
        let file =
            blocking("cannot open", path, move || std::fs::OpenOptions::new().write(true).open(p)).await?;
        Ok(Self { path: path.to_owned(), file: Arc::new(file), size })
    }
}

#[async_trait]
impl ImageSink for RawFileSink {
    fn size(&self) -> u64 {
        self.size
    }

    async fn write_at(&self, offset: u64, buf: Vec<u8>) -> Result<Vec<u8>> {
        let file = self.file.clone();
        blocking("cannot write", &self.path, move || file.write_all_at(&buf, offset).map(|()| buf)).await
    }

    async fn zero(&self, offset: u64, length: u64) -> Result<()> {
        let file = self.file.clone();
        blocking("cannot zero", &self.path, move || {
            use rustix::fs::{FallocateFlags, fallocate};
            let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            if fallocate(&*file, flags, offset, length).is_ok() {
                return Ok(());
            }
            // No hole punching here: write the zeros, a bounded buffer at a time.
            let zeros = vec![0u8; 1 << 20];
            let mut at = offset;
            while at < offset + length {
                let n = (offset + length - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            Ok(())
        })
        .await
    }

    async fn flush(&self) -> Result<()> {
        let file = self.file.clone();
        blocking("cannot sync", &self.path, move || file.sync_all()).await
    }
}
