//! Volume operations of the file driver: create, delete, clone, extend.

use std::path::Path;

use crate::driver::check_not_smaller;
use crate::error::{DriverError, Result};
use crate::file::image::{Header, ImageFormat, blocking, read_header};
use crate::file::paths::{self, DataDir, Kind};
use crate::file::{FileDriver, Setup, bytes, discard_on_error, exists, publish, qcow2, remove};
use crate::types::{DriverVolume, ModelUpdate};

impl FileDriver {
    /// A blank image in `volume-<id>.tmp`, then rename: qcow2 written natively (the bytes
    /// `qemu-img create` writes, see [`qcow2`]) in one trip to the blocking pool, raw
    /// through `qemu-img create`.
    pub(super) async fn create_blank(&self, volume: &DriverVolume) -> Result<ModelUpdate> {
        let setup = self.setup()?;
        let size = bytes(volume.size_gb)?;
        let _guard = self.lock_volume(&volume.id).await;
        let path = setup.dir.image(Kind::Volume, &volume.id)?;
        if self.accept_existing(setup, &path, volume).await? {
            return Ok(self.model_update(setup));
        }
        self.check_space(size).await?;
        let tmp = setup.dir.tmp(Kind::Volume, &volume.id)?;
        let built = match setup.qemu.format {
            ImageFormat::Qcow2 => {
                let (t, p) = (tmp.clone(), path.clone());
                blocking("cannot create", &path, move || {
                    qcow2::write_blank(&t, size)?;
                    paths::publish(&t, &p)
                })
                .await
            }
            ImageFormat::Raw => {
                async {
                    remove(&tmp).await?;
                    setup.qemu.create(&tmp, size, None).await?;
                    publish(&tmp, &path).await
                }
                .await
            }
        };
        discard_on_error(&tmp, built).await?;
        Ok(self.model_update(setup))
    }

    /// Stops any export (and forgets its CHAP credentials), then removes the image and any leftover `.tmp`. Nothing depends
    /// on a volume (only snapshots are backing files), so this never breaks another image.
    pub(super) async fn remove_volume(&self, volume: &DriverVolume) -> Result<()> {
        let setup = self.setup()?;
        let _guard = self.lock_volume(&volume.id).await;
        self.stop_exports(setup, &volume.id, true).await?;
        remove(&setup.dir.tmp(Kind::Volume, &volume.id)?).await?;
        let path = setup.dir.image(Kind::Volume, &volume.id)?;
        remove(&path).await?;
        sync_parent(&path).await
    }

    /// A copy of the source grown to the new size: when the source is an overlay on a
    /// snapshot, a new overlay on that snapshot holding only the source's own clusters
    /// (`qemu-img convert -B`); otherwise a full, flattened copy. Both use O_DIRECT.
    pub(super) async fn copy_volume(
        &self,
        volume: &DriverVolume,
        source: &DriverVolume,
    ) -> Result<ModelUpdate> {
        let setup = self.setup()?;
        let size = bytes(volume.size_gb)?;
        if volume.id == source.id {
            return Err(DriverError::InvalidInput("a volume cannot be cloned onto itself".to_owned()));
        }
        let src = setup.dir.image(Kind::Volume, &source.id)?;
        // Locks go snapshots first, so the backing snapshot is read before the volume
        // locks and checked again under them (it may have been flattened meanwhile).
        let backing = self.backing_snapshot(setup, &src).await?;
        let _snap = match &backing {
            Some(id) => Some(self.read_snapshot(id).await),
            None => None,
        };
        // Two volume locks, always in id order, so two crossing clones cannot deadlock.
        let _volumes = if volume.id < source.id {
            (self.lock_volume(&volume.id).await, self.read_volume(&source.id).await)
        } else {
            (self.read_volume(&source.id).await, self.lock_volume(&volume.id).await)
        };
        if !exists(&src).await? {
            return Err(DriverError::volume_not_found(&source.id));
        }
        let src_header = header(setup, &src).await?;
        check_not_smaller(volume, src_header.virtual_size.div_ceil(crate::GIB))?;
        let path = setup.dir.image(Kind::Volume, &volume.id)?;
        if self.accept_existing(setup, &path, volume).await? {
            return Ok(self.model_update(setup));
        }
        // As for snapshots: no copy of a volume a target is writing.
        self.check_unexported(setup, &source.id).await?;
        self.check_space(size).await?;
        let tmp = setup.dir.tmp(Kind::Volume, &volume.id)?;
        remove(&tmp).await?;
        let shared = backing
            .map(|id| format!("snapshot-{id}"))
            .filter(|b| src_header.backing_file.as_ref() == Some(b));
        let built = async {
            match shared {
                Some(backing) => setup.qemu.convert_onto(&src, &tmp, &backing).await?,
                None => setup.qemu.convert(&src, &tmp, setup.qemu.format).await?,
            }
            if size > src_header.virtual_size {
                setup.qemu.resize(&tmp, size).await?;
            }
            publish(&tmp, &path).await
        }
        .await;
        discard_on_error(&tmp, built).await?;
        Ok(self.model_update(setup))
    }

    /// The id of the snapshot a qcow2 volume is an overlay on, if any.
    async fn backing_snapshot(&self, setup: &Setup, path: &Path) -> Result<Option<String>> {
        if setup.qemu.format != ImageFormat::Qcow2 || !exists(path).await? {
            return Ok(None);
        }
        let backing = header(setup, path).await?.backing_file;
        Ok(backing
            .as_deref()
            .and_then(|name| name.strip_prefix("snapshot-"))
            .filter(|id| DataDir::name(Kind::Snapshot, id).is_ok())
            .map(str::to_owned))
    }

    /// `qemu-img resize` in place; a volume already that large is left alone. A resize
    /// either happened or not (qemu-img updates the header last), so a retry is safe.
    pub(super) async fn grow(&self, volume: &DriverVolume, new_size_gb: u64) -> Result<()> {
        let setup = self.setup()?;
        let size = bytes(new_size_gb)?;
        let _guard = self.lock_volume(&volume.id).await;
        let path = setup.dir.image(Kind::Volume, &volume.id)?;
        if !exists(&path).await? {
            return Err(DriverError::volume_not_found(&volume.id));
        }
        let current = header(setup, &path).await?.virtual_size;
        if current >= size {
            return Ok(());
        }
        self.check_unexported(setup, &volume.id).await?;
        self.check_space(size.saturating_sub(current)).await?;
        setup.qemu.resize(&path, size).await
    }

    /// True when a complete volume of the requested size already exists (a repeated
    /// create); an error when one of another size does.
    pub(super) async fn accept_existing(
        &self,
        setup: &Setup,
        path: &Path,
        volume: &DriverVolume,
    ) -> Result<bool> {
        if !exists(path).await? {
            return Ok(false);
        }
        let found = header(setup, path).await?.virtual_size;
        if found != bytes(volume.size_gb)? {
            return Err(DriverError::AlreadyExists {
                resource: "volume",
                id: volume.id.clone(),
                detail: format!("it has {found} bytes, not {} GiB", volume.size_gb),
            });
        }
        Ok(true)
    }
}

/// Reads an image's header with the backend's format.
pub(super) async fn header(setup: &Setup, path: &Path) -> Result<Header> {
    let (p, format) = (path.to_owned(), setup.qemu.format);
    blocking("cannot read the header of", path, move || read_header(&p, format)).await
}

/// Makes a removal durable.
pub(super) async fn sync_parent(path: &Path) -> Result<()> {
    let p = path.to_owned();
    blocking("cannot sync the directory of", path, move || paths::sync_parent(&p)).await
}
