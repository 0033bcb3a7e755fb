//! A user-space NBD client (written on tokio, no C bindings), and the backup path's
//! [`ImageSource`](crate::backup::ImageSource) and [`ImageSink`](crate::backup::ImageSink)
//! over it, for a backup host that reads or restores a volume through the NBD export the
//! volume service made (`driver_volume_type: nbd`).
//!
//! - `proto`: the protocol's numbers and wire helpers;
//! - `handshake`: fixed newstyle negotiation (structured replies, `base:allocation`,
//!   `NBD_OPT_GO` with block sizes);
//! - `client`: [`NbdClient`], one connection with many requests in flight;
//! - `connection`: the operations in flight and the connection's writer and reader tasks;
//! - `image`: [`NbdSource`] and [`NbdSink`], a few connections to one export.
//!
//! Tested against qemu-nbd and qemu-storage-daemon (`drivers/tests/nbd_client.rs`).

mod client;
mod connection;
mod handshake;
mod image;
mod proto;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

pub use client::NbdClient;
pub use image::{NbdSink, NbdSource};
pub use proto::{ExportInfo, TransmissionFlags};

use crate::error::{DriverError, Result};
use crate::types::ConnectionInfo;

/// Where an NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdAddress {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl fmt::Display for NbdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NbdAddress::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            NbdAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            NbdAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// How the client talks to a server.
#[derive(Debug, Clone)]
pub struct NbdOptions {
    /// How long connecting and the handshake may take.
    pub handshake_timeout: Duration,
    /// How long one call may wait for its replies; past it the connection is given up
    /// (a request cannot be withdrawn), so a hung server fails the backup instead of
    /// stalling it forever.
    pub request_timeout: Duration,
    /// The largest read or write request sent (the server's maximum block size caps it
    /// too); larger calls are split into several requests in flight.
    pub max_request: u32,
    /// Connections a source or sink opens to the export (requests are spread over them);
    /// each connection has many requests in flight anyway.
    pub connections: usize,
}

impl Default for NbdOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(300),
            max_request: 32 << 20,
            connections: 1,
        }
    }
}

/// An export to connect to: an address and an export name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdTarget {
    pub address: NbdAddress,
    pub export: String,
}

impl NbdTarget {
    /// The target of a Cinder-style `connection_info` of `driver_volume_type: nbd`, as the
    /// file driver returns it: `data.host`, `data.port`, `data.export_name`; or
    /// `data.socket` (a Unix socket's path) with `data.export_name`; or only `data.uri`
    /// (`nbd://host:port/name`, `nbd+unix:///name?socket=path`).
    pub fn from_connection_info(info: &ConnectionInfo) -> Result<Self> {
        if info.driver_volume_type != "nbd" {
            return Err(DriverError::InvalidInput(format!(
                "connection info of driver_volume_type {:?} is not an NBD export",
                info.driver_volume_type
            )));
        }
        let text = |key: &str| info.data.get(key).and_then(Value::as_str).map(str::to_owned);
        let export = text("export_name");
        if let (Some(host), Some(export)) = (text("host"), export.clone()) {
            let port = match info.data.get("port") {
                Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
                Some(Value::String(s)) => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| DriverError::InvalidInput("NBD connection info has no valid port".to_owned()))?;
            return Ok(Self { address: NbdAddress::Tcp { host, port }, export });
        }
        if let (Some(socket), Some(export)) = (text("socket"), export) {
            return Ok(Self { address: NbdAddress::Unix(socket.into()), export });
        }
        match text("uri") {
            Some(uri) => Self::from_uri(&uri),
            None => Err(DriverError::InvalidInput(
                "NBD connection info needs host, port and export_name (or socket, or uri)".to_owned(),
            )),
        }
    }

    /// A target from an NBD URI: `nbd://host[:port]/name` or `nbd+unix:///name?socket=path`.
    pub fn from_uri(uri: &str) -> Result<Self> {
        let bad = || DriverError::InvalidInput(format!("not an NBD URI this client understands: {uri:?}"));
        if let Some(rest) = uri.strip_prefix("nbd+unix://") {
            let (path, query) = rest.split_once('?').ok_or_else(bad)?;
            let export = path.strip_prefix('/').unwrap_or(path).to_owned();
            let socket = query.split('&').find_map(|kv| kv.strip_prefix("socket=")).ok_or_else(bad)?;
            return Ok(Self { address: NbdAddress::Unix(socket.into()), export });
        }
        let rest = uri.strip_prefix("nbd://").ok_or_else(bad)?;
        let (authority, export) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, port.parse::<u16>().map_err(|_| bad())?),
            _ => (authority, 10809),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self { address: NbdAddress::Tcp { host: host.to_owned(), port }, export: export.to_owned() })
    }
}
