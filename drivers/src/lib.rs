//! Volume drivers behind Cinder's `VolumeDriver` contract: `fake` (in memory) and `file`
//! (qcow2 or raw files in a directory, through qemu-img, exported over NBD or iSCSI); and the
//! backup path's contract (`backup`): sources, sinks and backup stores.

pub mod backup;
pub mod driver;
pub mod error;
pub mod fake;
pub mod file;
mod locks;
pub mod types;

pub use backup::{
    BackupDriver, Compression, ImageSink, ImageSource, LocalSink, LocalSource, PosixBackupDriver,
    PosixBackupOptions,
};
pub use driver::{SharedDriver, VolumeDriver};
pub use error::{DriverError, Result};
pub use fake::{FakeDriver, FakeOp, FakeOptions};
pub use file::{DirectIo, FileDriver, FileOptions, ImageFormat, TargetProtocol};
pub use types::{
    AccessMode, BackupSource, ConnectionInfo, Connector, DriverSnapshot, DriverVolume, ModelUpdate, RawExport,
};

/// One GiB in bytes: Cinder sizes are whole GiB.
pub const GIB: u64 = 1 << 30;
