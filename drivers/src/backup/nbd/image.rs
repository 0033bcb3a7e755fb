//! [`NbdSource`] and [`NbdSink`]: the backup path's images over a few NBD connections to
//! one export (one by default: each connection already has many requests in flight).

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::{NbdAddress, NbdClient, NbdOptions, NbdTarget};
use crate::backup::{Extent, ImageSink, ImageSource};
use crate::error::{DriverError, Result};
use crate::types::ConnectionInfo;

/// Connections to one export, used in turn.
#[derive(Debug)]
struct Pool {
    clients: Vec<NbdClient>,
    next: AtomicUsize,
}

impl Pool {
    async fn open(address: &NbdAddress, export: &str, options: &NbdOptions) -> Result<Self> {
        let mut clients = Vec::new();
        for _ in 0..options.connections.max(1) {
            let client = NbdClient::connect(address, export, options).await?;
            if let Some(first) = clients.first().map(NbdClient::size)
                && first != client.size()
            {
                return Err(DriverError::Backend(format!(
                    "NBD export {export:?} on {address} changed size from {first} to {} between connections",
                    client.size()
                )));
            }
            clients.push(client);
        }
        Ok(Self { clients, next: AtomicUsize::new(0) })
    }

    fn pick(&self) -> &NbdClient {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    fn first(&self) -> &NbdClient {
        &self.clients[0]
    }

    async fn close(self) -> Result<()> {
        for client in self.clients {
            client.close().await?;
        }
        Ok(())
    }
}

/// A volume read through its NBD export, for a backup.
#[derive(Debug)]
pub struct NbdSource {
    pool: Pool,
}

impl NbdSource {
    /// Connects to `export` at `address`.
    pub async fn connect(address: &NbdAddress, export: &str, options: &NbdOptions) -> Result<Self> {
        Ok(Self { pool: Pool::open(address, export, options).await? })
    }

    /// Connects to the export a volume service's `connection_info` describes.
    pub async fn from_connection_info(info: &ConnectionInfo, options: &NbdOptions) -> Result<Self> {
        let target = NbdTarget::from_connection_info(info)?;
        Self::connect(&target.address, &target.export, options).await
    }

    /// The first connection (for the export's details).
    pub fn client(&self) -> &NbdClient {
        self.pool.first()
    }

    /// Disconnects every connection cleanly.
    pub async fn close(self) -> Result<()> {
        self.pool.close().await
    }
}

#[async_trait]
impl ImageSource for NbdSource {
    fn size(&self) -> u64 {
        self.pool.first().size()
    }

    async fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        self.pool.pick().block_status(offset, length).await
    }

    async fn read_at(&self, offset: u64, buf: Vec<u8>) -> Result<Vec<u8>> {
        self.pool.pick().read(offset, buf).await
    }
}

/// A volume written through its NBD export, for a restore.
#[derive(Debug)]
pub struct NbdSink {
    pool: Pool,
}

impl NbdSink {
    /// Connects to `export` at `address`; a read-only export is refused here, before any
    /// data moves.
    pub async fn connect(address: &NbdAddress, export: &str, options: &NbdOptions) -> Result<Self> {
        let pool = Pool::open(address, export, options).await?;
        if pool.first().info().flags.read_only() {
            pool.close().await?;
            return Err(DriverError::NotSupported(format!(
                "NBD export {export:?} on {address} is read-only: a restore cannot write into it"
            )));
        }
        Ok(Self { pool })
    }

    /// Connects to the export a volume service's `connection_info` describes.
    pub async fn from_connection_info(info: &ConnectionInfo, options: &NbdOptions) -> Result<Self> {
        let target = NbdTarget::from_connection_info(info)?;
        Self::connect(&target.address, &target.export, options).await
    }

    /// The first connection (for the export's details).
    pub fn client(&self) -> &NbdClient {
        self.pool.first()
    }

    /// Disconnects every connection cleanly (after [`ImageSink::flush`], if wanted).
    pub async fn close(self) -> Result<()> {
        self.pool.close().await
    }
}

#[async_trait]
impl ImageSink for NbdSink {
    fn size(&self) -> u64 {
        self.pool.first().size()
    }

    async fn write_at(&self, offset: u64, buf: Vec<u8>) -> Result<Vec<u8>> {
        self.pool.pick().write(offset, buf).await
    }

    async fn zero(&self, offset: u64, length: u64) -> Result<()> {
        self.pool.pick().write_zeroes(offset, length, true, false).await
    }

    /// Flushes every connection: a flush covers only the writes of its own connection
    /// unless the server advertises multi-conn consistency.
    async fn flush(&self) -> Result<()> {
        for client in &self.pool.clients {
            client.flush().await?;
            if client.info().flags.can_multi_conn() {
                break;
            }
        }
        Ok(())
    }
}
