//! Publishing with publisher confirms, retried across connection losses until a deadline.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// The longest pause between two attempts to publish one message.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// The channel all messages of a process are published on, in confirm mode.
pub(super) struct Publisher {
    channel: parking_lot::Mutex<Channel>,
}

impl Publisher {
    pub(super) async fn open(connection: &Connection) -> Result<Self> {
        Ok(Self { channel: parking_lot::Mutex::new(open_confirmed(connection).await?) })
    }

    /// The publishing channel, opened again if it was closed for good (lapin recovers channels
    /// only with their connection, not after a channel error).
    pub(super) async fn channel(&self, connection: &Connection) -> Result<Channel> {
        let current = self.channel.lock().clone();
        let status = current.status();
        if status.connected() || status.initializing() || !connection.status().connected() {
            return Ok(current);
        }
        tracing::warn!("the AMQP publishing channel was closed; opening a new one");
        let fresh = open_confirmed(connection).await?;
        *self.channel.lock() = fresh.clone();
        Ok(fresh)
    }

    /// Publishes one message and waits for the broker's confirmation; a publish that fails
    /// because the connection dropped is made again once lapin has recovered, so the message
    /// may arrive twice but is not lost. Gives up with [`Error::Unavailable`] at `deadline`.
    pub(super) async fn publish(
        &self,
        connection: &Connection,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        deadline: Instant,
    ) -> Result<()> {
        let mut pause = Duration::from_millis(50);
        loop {
            let channel = self.channel(connection).await?;
            let attempt = async {
                let confirm = channel
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        BasicPublishOptions::default(),
                        body,
                        properties.clone(),
                    )
                    .await?;
                confirm.await
            };
            let failure = match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(unavailable(routing_key, "no confirmation before the deadline")),
                Ok(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) => return Ok(()),
                Ok(Ok(Confirmation::Nack(_))) => "the broker refused the message".to_owned(),
                Ok(Err(err)) if !err.can_be_recovered() => return Err(Error::Amqp(err)),
                Ok(Err(err)) => {
                    // Wait for lapin to reconnect: it replays the channel's topology and confirm
                    // mode. An error raised before recovery began has nothing to wait on; then
                    // the pause below paces the next attempt.
                    match tokio::time::timeout_at(deadline, channel.wait_for_recovery(err.clone())).await {
                        Err(_) => return Err(unavailable(routing_key, &err.to_string())),
                        Ok(Ok(())) => continue,
                        Ok(Err(_)) => err.to_string(),
                    }
                }
            };
            tracing::debug!(routing_key, failure, "publish failed; retrying");
            if Instant::now() + pause >= deadline {
                return Err(unavailable(routing_key, &failure));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}

fn unavailable(routing_key: &str, why: &str) -> Error {
    Error::Unavailable(format!("could not publish to {routing_key}: {why}"))
}

async fn open_confirmed(connection: &Connection) -> Result<Channel> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Declares a durable queue and binds it to `exchange` under `routing_key`.
pub(super) async fn declare_queue(
    channel: &Channel,
    name: &str,
    exchange: &str,
    routing_key: &str,
) -> Result<()> {
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(name.into(), options, FieldTable::default()).await?;
    channel
        .queue_bind(
            name.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares a durable exchange.
pub(super) async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> Result<()> {
    let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(name.into(), kind, options, FieldTable::default()).await?;
    Ok(())
}
