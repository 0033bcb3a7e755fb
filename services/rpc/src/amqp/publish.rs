//! Publishing with publisher confirms, retried across connection losses until a deadline.

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use tokio::time::Instant;

use super::session::{MAX_PAUSE, MIN_PAUSE, Session};
use crate::error::{Error, Result};

/// Publishes one message and waits for the broker's confirmation. A publish that fails because
/// the connection dropped is made again on the next connection, so the message may arrive
/// twice but is not lost. Gives up with [`Error::Unavailable`] at `deadline`; a refusal by the
/// broker (an AMQP channel error, such as a missing exchange) fails at once.
pub(super) async fn publish(
    session: &Session,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    deadline: Instant,
) -> Result<()> {
    let mut pause = MIN_PAUSE;
    loop {
        let attempt = async {
            let channel = session.live().await?.publisher().await?;
            let options = BasicPublishOptions::default();
            let confirm = channel
                .basic_publish(exchange.into(), routing_key.into(), options, body, properties.clone())
                .await?;
            Ok::<_, Error>(confirm.await?)
        };
        let failure = match tokio::time::timeout_at(deadline, attempt).await {
            Err(_) => return Err(unavailable(routing_key, "no confirmation before the deadline")),
            Ok(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) => return Ok(()),
            Ok(Ok(Confirmation::Nack(_))) => "the broker refused the message".to_owned(),
            Ok(Err(Error::Amqp(err))) if err.is_amqp_soft_error() => return Err(Error::Amqp(err)),
            Ok(Err(Error::Closed)) => return Err(Error::Closed),
            Ok(Err(err)) => err.to_string(),
        };
        tracing::debug!(routing_key, failure, "publish failed; retrying");
        if Instant::now() + pause >= deadline {
            return Err(unavailable(routing_key, &failure));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

fn unavailable(routing_key: &str, why: &str) -> Error {
    Error::Unavailable(format!("could not publish to {routing_key}: {why}"))
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
