//! The process's RabbitMQ connection, replaced by a new one whenever it dies.
//!
//! lapin 4 has a recovery of its own (`enable_auto_recover`), and it rides out a connection the
//! broker closes; but across a broker restart it sometimes stops for good (when the socket
//! error and the broker's `Connection.Close` arrive together, the IO loop exits instead of
//! reconnecting), leaving every channel dead. So Ember keeps recovery in one place it controls:
//! whoever finds the connection dead asks [`Session::live`] for a new one, which is made once,
//! with backoff, and each user declares again what it needs on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// The first pause before connecting again; it doubles up to [`MAX_PAUSE`].
pub(super) const MIN_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two attempts to connect (or to publish).
pub(super) const MAX_PAUSE: Duration = Duration::from_secs(2);

/// One connection and its publishing channel (in confirm mode).
pub(super) struct Live {
    pub(super) connection: Connection,
    publisher: Mutex<Channel>,
    /// Counts connections, so users can tell that what they declared belongs to an older one.
    pub(super) generation: u64,
}

impl Live {
    async fn open(url: &str, name: &str, generation: u64) -> Result<Self> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connection = Connection::connect(url, properties).await?;
        let publisher = Mutex::new(open_confirmed(&connection).await?);
        Ok(Self { connection, publisher, generation })
    }

    /// Whether the connection still works.
    pub(super) fn healthy(&self) -> bool {
        self.connection.status().connected()
    }

    /// The publishing channel, opened again if a channel error closed it.
    pub(super) async fn publisher(&self) -> Result<Channel> {
        let current = self.publisher.lock().clone();
        if current.status().connected() || !self.healthy() {
            return Ok(current);
        }
        tracing::warn!("the AMQP publishing channel was closed; opening a new one");
        let fresh = open_confirmed(&self.connection).await?;
        *self.publisher.lock() = fresh.clone();
        Ok(fresh)
    }
}

async fn open_confirmed(connection: &Connection) -> Result<Channel> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Hands out the live connection and replaces a dead one.
pub(super) struct Session {
    url: String,
    name: String,
    current: Mutex<Arc<Live>>,
    /// Held while connecting, so that a dead connection is replaced once, not once per user.
    reconnect: tokio::sync::Mutex<()>,
    generations: AtomicU64,
    closed: AtomicBool,
}

impl Session {
    /// Connects once; an unreachable broker or a wrong password fails here rather than being
    /// retried, so a misconfigured process says so at start.
    pub(super) async fn connect(url: &str, name: &str) -> Result<Self> {
        let live = Live::open(url, name, 0).await?;
        Ok(Self {
            url: url.to_owned(),
            name: name.to_owned(),
            current: Mutex::new(Arc::new(live)),
            reconnect: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// The current connection, whether or not it still works.
    pub(super) fn current(&self) -> Arc<Live> {
        self.current.lock().clone()
    }

    /// A working connection: the current one, or a new one if it died. Retries with backoff
    /// for as long as the caller waits (callers bound it with their own deadline); fails only
    /// once the session was closed.
    pub(super) async fn live(&self) -> Result<Arc<Live>> {
        let current = self.current();
        if current.healthy() {
            return Ok(current);
        }
        let _reconnecting = self.reconnect.lock().await;
        let mut pause = MIN_PAUSE;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let current = self.current();
            if current.healthy() {
                return Ok(current);
            }
            let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
            match Live::open(&self.url, &self.name, generation).await {
                Ok(live) => {
                    tracing::info!(generation, "reconnected to RabbitMQ");
                    let live = Arc::new(live);
                    *self.current.lock() = live.clone();
                    return Ok(live);
                }
                Err(err) => tracing::warn!(%err, ?pause, "could not reconnect to RabbitMQ; retrying"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Closes the connection and stops reconnecting.
    pub(super) async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let live = self.current();
        if live.healthy() {
            live.connection.close(200, "closing".into()).await?;
        }
        Ok(())
    }
}
