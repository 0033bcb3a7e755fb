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
    retry_until(deadline, routing_key, || async {
        let channel = session.live().await?.publisher().await?;
        let options = BasicPublishOptions::default();
        let confirm = channel
            .basic_publish(exchange.into(), routing_key.into(), options, body, properties.clone())
            .await?;
        match confirm.await? {
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            Confirmation::Nack(_) => Err(Error::Unavailable("the broker refused the message".to_owned())),
        }
    })
    .await
}

/// Runs `op` until it succeeds, again after each transient failure (a lost connection, a
/// refused publish), pausing with backoff, until `deadline`; then fails with
/// [`Error::Unavailable`]. AMQP channel errors (the broker refused the request itself) and a
/// closed transport fail at once.
pub(super) async fn retry_until<T, F, Fut>(deadline: Instant, what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut pause = MIN_PAUSE;
    loop {
        let failure = match tokio::time::timeout_at(deadline, op()).await {
            Err(_) => return Err(unavailable(what, "the deadline passed")),
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err @ (Error::Refused(_) | Error::Closed))) => return Err(err),
            Ok(Err(err)) => err,
        };
        tracing::debug!(what, %failure, "AMQP operation failed; retrying");
        if Instant::now() + pause >= deadline {
            return Err(unavailable(what, &failure.to_string()));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

fn unavailable(what: &str, why: &str) -> Error {
    Error::Unavailable(format!("{what}: {why}"))
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
