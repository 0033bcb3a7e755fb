//! Attachments' exports of the file driver: the backend's `target_protocol` picks NBD
//! ([`nbd`]) or iSCSI ([`iscsi`]); every call holds the volume's exclusive lock.
//!
//! NBD exports are always stopped and listed, which costs nothing when no NBD daemon runs
//! (a backend switched to iSCSI still cleans up its old NBD exports); tgt is only asked
//! when the protocol is iSCSI, so an NBD backend needs no tgt.

use crate::error::{DriverError, Result};
use crate::file::{FileDriver, Setup, TargetProtocol, image, iscsi};
use crate::types::{AccessMode, ConnectionInfo, Connector, DriverVolume};

impl FileDriver {
    /// Checks that the configured protocol can work: its tool is installed and, for iSCSI,
    /// the volumes are raw and tgtd answers.
    pub(super) async fn check_target(&self) -> Result<()> {
        match self.options.target_protocol {
            TargetProtocol::Nbd => image::run("qemu-storage-daemon", &["--version"]).await.map(drop),
            TargetProtocol::Iscsi => {
                if self.options.format != image::ImageFormat::Raw {
                    return Err(DriverError::InvalidInput(
                        "target_protocol iscsi needs volume format raw: tgt serves a file's bytes \
                         as the disk, and a qcow2 file's bytes are its container, not the data"
                            .to_owned(),
                    ));
                }
                self.iscsi.tgt.probe().await
            }
        }
    }

    /// `initialize_connection`: the export of the volume in `mode`, the connector admitted.
    pub(super) async fn connect(
        &self,
        volume: &DriverVolume,
        connector: &Connector,
        mode: AccessMode,
    ) -> Result<ConnectionInfo> {
        let setup = self.setup()?;
        let _guard = self.lock_volume(&volume.id).await;
        match self.options.target_protocol {
            TargetProtocol::Nbd => self.nbd.start(&setup.dir, setup.qemu, &volume.id, mode).await,
            TargetProtocol::Iscsi => {
                let initiator = initiator(connector)?;
                self.iscsi.connect(&setup.dir, &volume.id, initiator, mode).await
            }
        }
    }

    /// `terminate_connection`: the connector's admission withdrawn. NBD has no access
    /// list (an export admits whoever reaches it), so there it does nothing and the export
    /// goes with `remove_export`.
    pub(super) async fn disconnect(
        &self,
        volume: &DriverVolume,
        connector: &Connector,
        mode: AccessMode,
    ) -> Result<()> {
        self.setup()?;
        let _guard = self.lock_volume(&volume.id).await;
        match self.options.target_protocol {
            TargetProtocol::Nbd => Ok(()),
            TargetProtocol::Iscsi => {
                // A connector without an initiator was never admitted.
                let Ok(initiator) = initiator(connector) else { return Ok(()) };
                self.iscsi.disconnect(&volume.id, initiator, mode).await
            }
        }
    }

    /// `remove_export`: every export of the volume, in both modes, removed.
    pub(super) async fn unexport(&self, volume: &DriverVolume) -> Result<()> {
        let setup = self.setup()?;
        let _guard = self.lock_volume(&volume.id).await;
        self.stop_exports(setup, &volume.id, false).await
    }

    /// `list_exports`: the volumes with a live export.
    pub(super) async fn exported_ids(&self) -> Result<Vec<String>> {
        let setup = self.setup()?;
        let mut ids = self.nbd.list(&setup.dir).await?;
        if self.options.target_protocol == TargetProtocol::Iscsi {
            ids.extend(self.iscsi.list(&setup.dir).await?);
            ids.sort();
            ids.dedup();
        }
        Ok(ids)
    }

    /// Stops the volume's exports; `forget` also drops its CHAP credentials (the volume is
    /// being deleted). The caller holds the volume's exclusive lock.
    pub(super) async fn stop_exports(&self, setup: &Setup, id: &str, forget: bool) -> Result<()> {
        self.nbd.stop(&setup.dir, id).await?;
        match (self.options.target_protocol, forget) {
            (TargetProtocol::Nbd, _) => Ok(()),
            (TargetProtocol::Iscsi, false) => self.iscsi.remove(&setup.dir, id).await,
            (TargetProtocol::Iscsi, true) => self.iscsi.forget(&setup.dir, id).await,
        }
    }

    /// Refuses what needs the volume unexported: an extend (an initiator would go on
    /// seeing the old size), a snapshot or a clone (a copy of a file being written is no
    /// point in time). The caller holds the volume's lock, so no export starts meanwhile.
    pub(super) async fn check_unexported(&self, setup: &Setup, id: &str) -> Result<()> {
        let exported = self.nbd.is_exported(&setup.dir, id).await?
            || (self.options.target_protocol == TargetProtocol::Iscsi
                && self.iscsi.is_exported(&setup.dir, id).await?);
        if exported {
            return Err(DriverError::Busy(format!("volume {id} is exported; detach it first")));
        }
        Ok(())
    }
}

/// The connector's iSCSI initiator name, which an iSCSI export needs for its ACL.
fn initiator(connector: &Connector) -> Result<&str> {
    let name = connector.extra.get("initiator").and_then(|v| v.as_str()).ok_or_else(|| {
        DriverError::InvalidInput("an iSCSI connection needs the connector's initiator name".to_owned())
    })?;
    iscsi::check_initiator(name)?;
    Ok(name)
}
