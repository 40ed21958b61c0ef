//! The outbox relay: publishes `outbox_event` rows to the durable topic exchange
//! [`EXCHANGE`](super::EXCHANGE), persistent, with publisher confirms, and marks a row published
//! only once RabbitMQ confirmed it — at least once, never lost.
//!
//! A pass takes a batch from [`Store::claim_outbox`](crate::storage::Store::claim_outbox)
//! (locked rows on PostgreSQL and MariaDB, so every replica can relay), publishes it on one
//! confirm channel, waits for the confirms, and marks the longest prefix of the batch that was
//! confirmed. What was not confirmed stays unpublished and goes out again, after the events it
//! follows. While RabbitMQ is down the relay reconnects with exponential backoff; jobs are
//! accepted all the same, their events wait in the outbox.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};
use berth_shared::secret::Secret;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::EXCHANGE;
use crate::queue::now_millis;
use crate::state::AppState;
use crate::storage::OutboxRow;

/// AMQP delivery mode of a persistent message.
const PERSISTENT: u8 = 2;

/// The reconnect delays: 100 ms doubling to 5 s, with jitter, for ever.
pub fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Opens a connection named `name` and declares the exchange (durable topic), so publishing
/// and binding work on a broker that never saw Berth.
pub async fn connect(url: &Secret, name: &str) -> anyhow::Result<(Connection, Channel)> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let conn = Connection::connect(url.expose(), props)
        .await
        .context("connecting to RabbitMQ")?;
    let channel = conn.create_channel().await.context("opening a channel")?;
    channel
        .exchange_declare(
            EXCHANGE,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring the exchange {EXCHANGE}"))?;
    Ok((conn, channel))
}

/// Relays until `shutdown` completes, reconnecting while RabbitMQ is away.
pub async fn run(state: AppState, url: Secret, shutdown: impl Future<Output = ()>) {
    reconnecting("outbox relay", shutdown, || async {
        let (conn, channel) = connect(&url, "berth-control relay").await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        tracing::info!("outbox relay connected to RabbitMQ");
        let failed = relay(&state, &channel).await;
        state.metrics().relay_errors.inc();
        // Only a failed pass ends `relay`: drop this connection and open a new one.
        let _ = conn.close(0, "relay reconnects").await;
        Err(failed)
    })
    .await
}

/// Runs `session` again and again until `shutdown` completes, waiting [`reconnect_backoff`]'s
/// growing delays between tries; a session that lasted a while starts the delays over.
pub async fn reconnecting<F, Fut>(what: &str, shutdown: impl Future<Output = ()>, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    tokio::pin!(shutdown);
    let mut delays = reconnect_backoff();
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            _ = &mut shutdown => return,
            done = session() => done,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = format!("{e:#}"), "{what} interrupted; reconnecting");
        }
        if started.elapsed() > Duration::from_secs(10) {
            delays = reconnect_backoff();
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Publishes batches on `channel` until a pass fails, and returns why. A full batch is
/// followed at once by the next; otherwise the relay waits for the doorbell
/// ([`crate::wake::Wake::outbox`]) or the poll interval.
async fn relay(state: &AppState, channel: &Channel) -> anyhow::Error {
    let events = state.events();
    loop {
        // Listen before looking, so an event written during the pass rings again.
        let doorbell = state.wake().outbox();
        tokio::pin!(doorbell);
        doorbell.as_mut().enable();
        match publish_batch(state, channel).await {
            Ok(n) => {
                if n >= events.relay_batch as usize {
                    continue;
                }
            }
            Err(e) => return e,
        }
        tokio::select! {
            _ = &mut doorbell => {}
            _ = tokio::time::sleep(events.relay_poll) => {}
        }
    }
}

/// One pass: claims a batch, publishes it and marks what RabbitMQ confirmed. Returns how many
/// rows the batch had; an error when any row was not confirmed (those stay unpublished).
pub async fn publish_batch(state: &AppState, channel: &Channel) -> anyhow::Result<usize> {
    let events = state.events();
    let batch = state
        .store()
        .claim_outbox(events.relay_batch)
        .await
        .context("reading the outbox")?;
    let rows = batch.events().to_vec();
    if rows.is_empty() {
        batch.mark_published(&[], now_millis()).await?;
        return Ok(0);
    }
    let (confirmed, failure) = publish(channel, &rows, events.confirm_timeout).await;
    let seqs: Vec<i64> = rows[..confirmed].iter().map(|r| r.seq).collect();
    batch
        .mark_published(&seqs, now_millis())
        .await
        .context("marking events published")?;
    state.metrics().events_published.inc_by(confirmed as u64);
    match failure {
        None => Ok(rows.len()),
        Some(e) => Err(e.context(format!("{} of {} events confirmed", confirmed, rows.len()))),
    }
}

/// Publishes `rows` in order and waits for their confirms. Returns how many rows from the
/// start were confirmed (an ack for a later row does not count past a nack, so the events of
/// one job never go out of order) and what stopped it, if anything.
pub async fn publish(
    channel: &Channel,
    rows: &[OutboxRow],
    confirm_timeout: Duration,
) -> (usize, Option<anyhow::Error>) {
    let mut pending = Vec::with_capacity(rows.len());
    let mut failure = None;
    for row in rows {
        let props = BasicProperties::default()
            .with_message_id(row.event_id.as_str().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_type(row.routing_key.as_str().into())
            .with_timestamp((row.created_at / 1000).max(0) as u64);
        match channel
            .basic_publish(
                EXCHANGE,
                &row.routing_key,
                BasicPublishOptions::default(),
                row.body.as_bytes(),
                props,
            )
            .await
        {
            Ok(confirm) => pending.push(confirm),
            Err(e) => {
                failure = Some(anyhow::Error::from(e).context("publishing"));
                break;
            }
        }
    }
    let mut confirmed = 0;
    for confirm in pending {
        match tokio::time::timeout(confirm_timeout, confirm).await {
            Ok(Ok(Confirmation::Ack(_))) => confirmed += 1,
            Ok(Ok(other)) => {
                failure.get_or_insert_with(|| anyhow::anyhow!("RabbitMQ answered {other:?}"));
                break;
            }
            Ok(Err(e)) => {
                failure
                    .get_or_insert_with(|| anyhow::Error::from(e).context("waiting for a confirm"));
                break;
            }
            Err(_) => {
                failure.get_or_insert_with(|| {
                    anyhow::anyhow!("no confirm within {confirm_timeout:?}")
                });
                break;
            }
        }
    }
    (confirmed, failure)
}
