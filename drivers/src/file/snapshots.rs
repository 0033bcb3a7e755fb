//! Snapshot operations of the file driver: create (full copy), delete (flattening
//! dependents first), and volumes from snapshots (qcow2 overlays).

use crate::driver::check_not_smaller;
use crate::error::{DriverError, Result};
use crate::file::image::{ImageFormat, blocking, read_header};
use crate::file::paths::{DataDir, Kind};
use crate::file::volumes::{header, sync_parent};
use crate::file::{FileDriver, bytes, discard_on_error, exists, publish, remove};
use crate::types::{DriverSnapshot, DriverVolume, ModelUpdate};

impl FileDriver {
    /// `qemu-img convert` of the volume into `snapshot-<id>.tmp`, then rename. The copy is
    /// flattened and stands alone, so the volume and the snapshot can be deleted in any
    /// order. The volume must not be in use (its export holds the image lock: `Busy`).
    pub(super) async fn copy_to_snapshot(&self, snapshot: &DriverSnapshot) -> Result<ModelUpdate> {
        let setup = self.setup()?;
        let _snap = self.lock_snapshot(&snapshot.id).await;
        let _vol = self.read_volume(&snapshot.volume_id).await;
        let path = setup.dir.image(Kind::Snapshot, &snapshot.id)?;
        if exists(&path).await? {
            header(setup, &path).await?;
            return Ok(self.model_update(setup));
        }
        let src = setup.dir.image(Kind::Volume, &snapshot.volume_id)?;
        if !exists(&src).await? {
            return Err(DriverError::volume_not_found(&snapshot.volume_id));
        }
        // A copy of a file a target is writing would not be a point in time: qemu's image
        // lock refuses it under the NBD daemon, and this check does the same under tgt.
        self.check_unexported(setup, &snapshot.volume_id).await?;
        self.check_space(bytes(snapshot.volume_size_gb)?).await?;
        let tmp = setup.dir.tmp(Kind::Snapshot, &snapshot.id)?;
        remove(&tmp).await?;
        let built = async {
            setup.qemu.convert(&src, &tmp, setup.qemu.format).await?;
            publish(&tmp, &path).await
        }
        .await;
        discard_on_error(&tmp, built).await?;
        Ok(self.model_update(setup))
    }

    /// Flattens every volume whose backing file is this snapshot, then removes it.
    pub(super) async fn remove_snapshot(&self, snapshot: &DriverSnapshot) -> Result<()> {
        let setup = self.setup()?;
        let _snap = self.lock_snapshot(&snapshot.id).await;
        remove(&setup.dir.tmp(Kind::Snapshot, &snapshot.id)?).await?;
        let path = setup.dir.image(Kind::Snapshot, &snapshot.id)?;
        if !exists(&path).await? {
            return Ok(());
        }
        if setup.qemu.format == ImageFormat::Qcow2 {
            let name = DataDir::name(Kind::Snapshot, &snapshot.id)?;
            for id in dependents(&setup.dir, name).await? {
                let _vol = self.lock_volume(&id).await;
                let volume = setup.dir.image(Kind::Volume, &id)?;
                tracing::info!(volume = %id, snapshot = %snapshot.id, "flattening a volume before its snapshot goes");
                setup.qemu.flatten(&volume).await?;
            }
        }
        remove(&path).await?;
        sync_parent(&path).await
    }

    /// A qcow2 overlay on the snapshot (instant and thin), or a full copy in raw format;
    /// grown to the volume's size.
    pub(super) async fn overlay_on_snapshot(
        &self,
        volume: &DriverVolume,
        snapshot: &DriverSnapshot,
    ) -> Result<ModelUpdate> {
        let setup = self.setup()?;
        let size = bytes(volume.size_gb)?;
        let _snap = self.read_snapshot(&snapshot.id).await;
        let _vol = self.lock_volume(&volume.id).await;
        let snap = setup.dir.image(Kind::Snapshot, &snapshot.id)?;
        if !exists(&snap).await? {
            return Err(DriverError::snapshot_not_found(&snapshot.id));
        }
        let snap_size = header(setup, &snap).await?.virtual_size;
        check_not_smaller(volume, snap_size.div_ceil(crate::GIB))?;
        let path = setup.dir.image(Kind::Volume, &volume.id)?;
        if self.accept_existing(setup, &path, volume).await? {
            return Ok(self.model_update(setup));
        }
        self.check_space(size).await?;
        let tmp = setup.dir.tmp(Kind::Volume, &volume.id)?;
        remove(&tmp).await?;
        let built = async {
            match setup.qemu.format {
                ImageFormat::Qcow2 => {
                    let backing = DataDir::name(Kind::Snapshot, &snapshot.id)?;
                    setup.qemu.create(&tmp, size, Some(&backing)).await?;
                }
                ImageFormat::Raw => {
                    setup.qemu.convert(&snap, &tmp, ImageFormat::Raw).await?;
                    if size > snap_size {
                        setup.qemu.resize(&tmp, size).await?;
                    }
                }
            }
            publish(&tmp, &path).await
        }
        .await;
        discard_on_error(&tmp, built).await?;
        Ok(self.model_update(setup))
    }
}

/// The ids of the volumes whose backing file is `name`, from their headers.
async fn dependents(dir: &DataDir, name: String) -> Result<Vec<String>> {
    let dir = dir.clone();
    let root = dir.root().to_owned();
    blocking("cannot scan", &root, move || {
        let mut found = Vec::new();
        for id in dir.list(Kind::Volume)? {
            let path = dir.root().join(format!("volume-{id}"));
            match read_header(&path, ImageFormat::Qcow2) {
                Ok(h) if h.backing_file.as_deref() == Some(name.as_str()) => found.push(id),
                Ok(_) => {}
                // A volume deleted since the listing has no dependency to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    })
    .await
}
