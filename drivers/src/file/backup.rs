//! Raw images for the backup service: exports to read and restore targets to write.
//!
//! Raw volumes are handed over as they are. A qcow2 image is converted to a sparse raw
//! copy under `.ember/exports/` (O_DIRECT, holes kept; named after the image, so the copies
//! a crash or a lost result left can be found and removed) and a restore is converted back
//! into `volume-<id>.tmp` and renamed over the volume, so a crashed restore leaves the
//! old volume intact.
//!
//! For a backup service on another host the export (or restore target) is also served
//! over NBD by the backend's export daemon ([`nbd`](super::nbd)), read-only for a backup
//! and writable for a restore, under a name derived from the file's path, so serving and
//! stopping are idempotent.

use crate::error::{DriverError, Result};
use crate::file::image::{ImageFormat, blocking};
use crate::file::paths::Kind;
use crate::file::volumes::header;
use crate::file::{FileDriver, Setup, exists, publish, remove};
use crate::types::{BackupSource, ConnectionInfo, DriverVolume, RawExport};

impl FileDriver {
    pub(super) async fn export(&self, source: BackupSource<'_>) -> Result<RawExport> {
        let setup = self.setup()?;
        let (kind, id) = match source {
            BackupSource::Volume(v) => (Kind::Volume, v.id.as_str()),
            BackupSource::Snapshot(s) => (Kind::Snapshot, s.id.as_str()),
        };
        let path = setup.dir.image(kind, id)?;
        if !exists(&path).await? {
            return Err(match kind {
                Kind::Volume => DriverError::volume_not_found(id),
                Kind::Snapshot => DriverError::snapshot_not_found(id),
            });
        }
        let size_bytes = header(setup, &path).await?.virtual_size;
        if setup.qemu.format == ImageFormat::Raw {
            return Ok(RawExport { path, size_bytes, temporary: false });
        }
        let out = setup.dir.new_export("backup", kind, id)?;
        if let Err(e) = setup.qemu.convert(&path, &out, ImageFormat::Raw).await {
            remove(&out).await?;
            return Err(e);
        }
        Ok(RawExport { path: out, size_bytes, temporary: true })
    }

    pub(super) async fn release(&self, export: RawExport) -> Result<()> {
        let setup = self.setup()?;
        if !export.temporary {
            return Ok(());
        }
        setup.dir.check_export(&export.path)?;
        remove(&export.path).await
    }

    /// Removes every copy made for a backup of `source` (and, of a volume, for a restore
    /// into it) that was not released.
    pub(super) async fn release_all(&self, source: BackupSource<'_>) -> Result<()> {
        let setup = self.setup()?;
        let (kind, id, whats): (Kind, &str, &[&str]) = match source {
            BackupSource::Volume(v) => (Kind::Volume, v.id.as_str(), &["backup", "restore"]),
            BackupSource::Snapshot(s) => (Kind::Snapshot, s.id.as_str(), &["backup"]),
        };
        for path in setup.dir.exports_of(whats, kind, id)? {
            remove(&path).await?;
        }
        Ok(())
    }

    /// Serves `export` over NBD (the file must be one of this backend's: a raw volume's own
    /// image or a file under `.ember/exports/`).
    pub(super) async fn serve_backup_export(
        &self,
        export: &RawExport,
        writable: bool,
    ) -> Result<ConnectionInfo> {
        let setup = self.setup()?;
        self.check_raw_export(setup, export)?;
        self.nbd.serve_file(&setup.dir, setup.qemu, &export.path, writable).await
    }

    /// Stops serving `export` over NBD; one not served is done.
    pub(super) async fn unserve_backup_export(&self, export: &RawExport) -> Result<()> {
        let setup = self.setup()?;
        self.check_raw_export(setup, export)?;
        self.nbd.unserve_file(&setup.dir, &export.path).await
    }

    /// Refuses a path that is not an export this backend hands out.
    fn check_raw_export(&self, setup: &Setup, export: &RawExport) -> Result<()> {
        if export.temporary {
            return setup.dir.check_export(&export.path);
        }
        let volume_image = export.path.parent() == Some(setup.dir.root())
            && export.path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("volume-"));
        if !volume_image {
            return Err(DriverError::InvalidInput(format!(
                "{} is not a volume image of this backend",
                export.path.display()
            )));
        }
        Ok(())
    }

    pub(super) async fn restore_target(&self, volume: &DriverVolume) -> Result<RawExport> {
        let setup = self.setup()?;
        let path = setup.dir.image(Kind::Volume, &volume.id)?;
        if !exists(&path).await? {
            return Err(DriverError::volume_not_found(&volume.id));
        }
        let size_bytes = header(setup, &path).await?.virtual_size;
        if setup.qemu.format == ImageFormat::Raw {
            return Ok(RawExport { path, size_bytes, temporary: false });
        }
        let out = setup.dir.new_export("restore", Kind::Volume, &volume.id)?;
        let target = out.clone();
        blocking("cannot create", &out, move || std::fs::File::create(&target)?.set_len(size_bytes)).await?;
        Ok(RawExport { path: out, size_bytes, temporary: true })
    }

    pub(super) async fn restore_into(&self, volume: &DriverVolume, export: RawExport) -> Result<()> {
        let setup = self.setup()?;
        let _guard = self.lock_volume(&volume.id).await;
        let path = setup.dir.image(Kind::Volume, &volume.id)?;
        if !export.temporary {
            if export.path != path {
                return Err(DriverError::InvalidInput("the restore target is not this volume".to_owned()));
            }
            let p = path.clone();
            return blocking("cannot sync", &path, move || std::fs::File::open(&p)?.sync_all()).await;
        }
        setup.dir.check_export(&export.path)?;
        if !exists(&path).await? {
            return Err(DriverError::volume_not_found(&volume.id));
        }
        let tmp = setup.dir.tmp(Kind::Volume, &volume.id)?;
        remove(&tmp).await?;
        setup.qemu.import_raw(&export.path, &tmp).await?;
        publish(&tmp, &path).await?;
        remove(&export.path).await?;
        Ok(())
    }
}
