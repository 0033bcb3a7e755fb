//! The data directory: the only place file paths are made, so none escapes it.
//!
//! Names are Cinder's (`volume-<id>`, `snapshot-<id>`); work in progress goes to
//! `<name>.tmp` and is renamed into place, so a final name always holds a complete image
//! and a leftover `.tmp` marks a crash to redo. Driver-private files (backup exports,
//! NBD export records, CHAP credentials, probes) live under `.ember/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{DriverError, Result};
use crate::types::AccessMode;

/// Longest id accepted; keeps names well under the 255-byte file name limit.
const MAX_ID_LEN: usize = 128;

/// The validated root of a file backend.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    root: PathBuf,
}

/// A file name prefix for the two kinds of image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Volume,
    Snapshot,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Volume => "volume-",
            Kind::Snapshot => "snapshot-",
        }
    }
}

impl DataDir {
    /// Creates the directory and its private subdirectories if needed; blocking.
    pub(crate) fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let dir = DataDir { root };
        fs::create_dir_all(dir.exports_dir())?;
        fs::create_dir_all(dir.nbd_dir())?;
        fs::create_dir_all(dir.iscsi_dir())?;
        Ok(dir)
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `.ember/exports`: raw copies handed to the backup service.
    pub(crate) fn exports_dir(&self) -> PathBuf {
        self.root.join(".ember").join("exports")
    }

    /// `.ember/nbd`: the NBD export daemon's sockets, pid file and record.
    pub(crate) fn nbd_dir(&self) -> PathBuf {
        self.root.join(".ember").join("nbd")
    }

    /// The file name of an image, after checking the id.
    pub(crate) fn name(kind: Kind, id: &str) -> Result<String> {
        check_id(id)?;
        Ok(format!("{}{id}", kind.prefix()))
    }

    /// The final path of an image.
    pub(crate) fn image(&self, kind: Kind, id: &str) -> Result<PathBuf> {
        self.inside(&self.root, Self::name(kind, id)?)
    }

    /// The work-in-progress path of an image.
    pub(crate) fn tmp(&self, kind: Kind, id: &str) -> Result<PathBuf> {
        self.inside(&self.root, format!("{}.tmp", Self::name(kind, id)?))
    }

    /// A fresh path in the exports directory for a copy of image (`kind`, `id`):
    /// `<what>-<image name>.<uuid>.raw` (ids have no dot).
    pub(crate) fn new_export(&self, what: &str, kind: Kind, id: &str) -> Result<PathBuf> {
        let name = Self::name(kind, id)?;
        self.inside(&self.exports_dir(), format!("{what}-{name}.{}.raw", uuid::Uuid::new_v4()))
    }

    /// The paths in the exports directory of the copies of image (`kind`, `id`) made for
    /// any of `whats`.
    pub(crate) fn exports_of(&self, whats: &[&str], kind: Kind, id: &str) -> Result<Vec<PathBuf>> {
        let name = Self::name(kind, id)?;
        let prefixes: Vec<String> = whats.iter().map(|w| format!("{w}-{name}.")).collect();
        let entries = match fs::read_dir(self.exports_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(DriverError::io("cannot list", self.exports_dir(), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| DriverError::io("cannot list", self.exports_dir(), e))?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if prefixes.iter().any(|p| file.starts_with(p.as_str())) {
                out.push(entry.path());
            }
        }
        Ok(out)
    }

    /// The NBD export name (and export id) of a volume in one mode: `volume-<id>` (rw) or
    /// `volume-<id>.ro`. Ids have no dot, so no two (volume, mode) pairs share a name.
    pub(crate) fn nbd_export(id: &str, mode: AccessMode) -> Result<String> {
        Ok(format!("{}{}", Self::name(Kind::Volume, id)?, mode_suffix(mode)))
    }

    /// `.ember/iscsi`: the CHAP credentials of each volume exported over iSCSI.
    pub(crate) fn iscsi_dir(&self) -> PathBuf {
        self.root.join(".ember").join("iscsi")
    }

    /// The CHAP record of a volume, kept for the volume's life so every export of it
    /// answers with the same credentials.
    pub(crate) fn chap_record(&self, id: &str) -> Result<PathBuf> {
        self.inside(&self.iscsi_dir(), format!("{}.json", Self::name(Kind::Volume, id)?))
    }

    /// Joins `name` to `dir` and checks the result is a direct child of it.
    fn inside(&self, dir: &Path, name: String) -> Result<PathBuf> {
        let path = dir.join(&name);
        if !dir.starts_with(&self.root) || path.parent() != Some(dir) {
            return Err(DriverError::InvalidInput(format!("path {name} leaves the data directory")));
        }
        Ok(path)
    }

    /// Checks that a path handed back by a caller is a file directly in the exports dir.
    pub(crate) fn check_export(&self, path: &Path) -> Result<()> {
        let exports = self.exports_dir();
        let name_ok = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.'));
        if path.parent() != Some(exports.as_path()) || !name_ok {
            return Err(DriverError::InvalidInput(format!(
                "{} is not an export of this backend",
                path.display()
            )));
        }
        Ok(())
    }

    /// The ids of the complete images of one kind (no `.tmp`), read from the directory;
    /// blocking.
    pub(crate) fn list(&self, kind: Kind) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_prefix(kind.prefix())) else { continue };
            if check_id(id).is_ok() && entry.file_type()?.is_file() {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }
}

/// The file name suffix of an export in `mode`: none for rw (the names older versions
/// wrote), `.ro` for ro.
fn mode_suffix(mode: AccessMode) -> &'static str {
    match mode {
        AccessMode::Rw => "",
        AccessMode::Ro => ".ro",
    }
}

/// Ids become file names: only ASCII letters, digits, `-` and `_`, so no `/`, `..` or dot.
fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(DriverError::InvalidInput(format!("invalid id {id:?}"))) }
}

/// Whether a regular file (not a symlink, which could point outside) exists at `path`;
/// blocking.
pub(crate) fn is_file(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Ok(true),
        Ok(_) => Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a file; a missing file is fine. Blocking.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a finished `.tmp` durable and moves it to its final name: fsync the file, rename
/// (atomic), fsync the directory, so after a crash the final name is either absent or
/// complete. Blocking.
pub(crate) fn publish(tmp: &Path, target: &Path) -> io::Result<()> {
    fs::File::open(tmp)?.sync_all()?;
    fs::rename(tmp, target)?;
    sync_parent(target)
}

/// Fsyncs the directory holding `path`, making a create, rename or unlink durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_are_refused() {
        for bad in ["", "../x", "a/b", "a.b", ".", "x\0", &"a".repeat(200)] {
            assert!(check_id(bad).is_err(), "{bad:?} accepted");
        }
        check_id("0f6e7c2e-55d1-4a3b-9d7e-1c2b3a4d5e6f").unwrap();
        check_id("vol_1").unwrap();
    }

    #[test]
    fn paths_stay_in_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let path = dir.image(Kind::Volume, "abc").unwrap();
        assert_eq!(path.parent(), Some(dir.root()));
        assert_eq!(path.file_name().unwrap(), "volume-abc");
        assert_eq!(dir.tmp(Kind::Snapshot, "abc").unwrap().file_name().unwrap(), "snapshot-abc.tmp");
        assert!(dir.check_export(&dir.root().join("volume-abc")).is_err());
        assert!(dir.check_export(&dir.exports_dir().join("../../volume-abc")).is_err());
        dir.check_export(&dir.new_export("backup", Kind::Volume, "v1").unwrap()).unwrap();
    }
}
