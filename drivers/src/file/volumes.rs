//! Volume operations of the file driver: create, delete, clone, extend.

use std::path::Path;

use crate::driver::check_not_smaller;
use crate::error::{DriverError, Result};
use crate::file::image::{Header, blocking, read_header};
use crate::file::paths::Kind;
use crate::file::{FileDriver, Setup, bytes, exists, nbd, publish, remove};
use crate::types::{DriverVolume, ModelUpdate};

impl FileDriver {
    /// `qemu-img create` into `volume-<id>.tmp`, then rename.
    pub(super) async fn create_blank(&self, volume: &DriverVolume) -> Result<ModelUpdate> {
        let setup = self.setup()?;
        let size = bytes(volume.size_gb)?;
        let _guard = self.lock_volume(&volume.id).await;
        let path = setup.dir.image(Kind::Volume, &volume.id)?;
        if self.accept_existing(setup, &path, volume).await? {
            return Ok(self.model_update(setup));
        }
        let tmp = setup.dir.tmp(Kind::Volume, &volume.id)?;
        remove(&tmp).await?;
        setup.qemu.create(&tmp, size, None).await?;
        publish(&tmp, &path).await?;
        Ok(self.model_update(setup))
    }

    /// Stops any export, then removes the image and any leftover `.tmp`. Nothing depends
    /// on a volume (only snapshots are backing files), so this never breaks another image.
    pub(super) async fn remove_volume(&self, volume: &DriverVolume) -> Result<()> {
        let setup = self.setup()?;
        let _guard = self.lock_volume(&volume.id).await;
        nbd::stop(&setup.dir, &volume.id).await?;
        remove(&setup.dir.tmp(Kind::Volume, &volume.id)?).await?;
        let path = setup.dir.image(Kind::Volume, &volume.id)?;
        remove(&path).await?;
        sync_parent(&path).await
    }

    /// A full copy of the source (flattened, O_DIRECT), grown to the new size.
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
        // Two volume locks, always in id order, so two crossing clones cannot deadlock.
        let (first, second) = if volume.id < source.id { (volume, source) } else { (source, volume) };
        let _first = self.lock_volume(&first.id).await;
        let _second = self.lock_volume(&second.id).await;
        let src = setup.dir.image(Kind::Volume, &source.id)?;
        if !exists(&src).await? {
            return Err(DriverError::volume_not_found(&source.id));
        }
        let src_size = header(setup, &src).await?.virtual_size;
        check_not_smaller(volume, src_size.div_ceil(crate::GIB))?;
        let path = setup.dir.image(Kind::Volume, &volume.id)?;
        if self.accept_existing(setup, &path, volume).await? {
            return Ok(self.model_update(setup));
        }
        let tmp = setup.dir.tmp(Kind::Volume, &volume.id)?;
        remove(&tmp).await?;
        setup.qemu.convert(&src, &tmp, setup.qemu.format).await?;
        if size > src_size {
            setup.qemu.resize(&tmp, size).await?;
        }
        publish(&tmp, &path).await?;
        Ok(self.model_update(setup))
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
        if header(setup, &path).await?.virtual_size >= size {
            return Ok(());
        }
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
    blocking("cannot sync the directory of", path, move || crate::file::paths::sync_parent(&p)).await
}
