//! Wake-ups from other replicas: a job created on replica A wakes the runner long-polling on
//! replica B at once. Through RabbitMQ when it is configured (each replica binds an exclusive,
//! auto-delete queue to the job and node keys), else through PostgreSQL `LISTEN` on the channel
//! the outbox trigger `NOTIFY`s (migration `0002_outbox_notify.sql`; since `0003`, for every key
//! but `job.running`, which only `?wait=` readers care about; since `0008`, naming the job). Both
//! end in [`Wake::remote_event`](crate::wake::Wake::remote_event). While either is down, waiters still
//! re-check every second.

use std::future::Future;

use anyhow::Context;
use berth_shared::secret::Secret;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use sqlx::postgres::PgListener;

use super::relay::{connect, reconnecting};
use super::EXCHANGE;
use crate::state::AppState;
use crate::wake::Wake;

/// The PostgreSQL channel the outbox trigger notifies.
pub const PG_CHANNEL: &str = "berth_events";

/// The keys a replica's wake-up queue is bound to.
const BINDINGS: [&str; 2] = ["job.*", "node.*"];

/// Marks remote wake-ups as flowing while it lives.
struct Connected<'a>(&'a Wake);

impl<'a> Connected<'a> {
    fn new(wake: &'a Wake) -> Self {
        wake.set_remote_connected(true);
        Self(wake)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.set_remote_connected(false);
    }
}

/// Listens on RabbitMQ until `shutdown`, reconnecting with backoff.
pub async fn amqp(state: AppState, url: Secret, shutdown: impl Future<Output = ()>) {
    reconnecting("wake-ups through RabbitMQ", shutdown, || async {
        let (_conn, channel) = connect(&url, "berth-control wake-ups").await?;
        // A server-named queue that lives as long as this connection: no leftovers when a
        // replica goes away, and no message is kept for it while it is gone.
        let queue = channel
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .context("declaring the wake-up queue")?;
        for key in BINDINGS {
            channel
                .queue_bind(
                    queue.name().as_str(),
                    EXCHANGE,
                    key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("binding the wake-up queue to {key}"))?;
        }
        let mut deliveries = channel
            .basic_consume(
                queue.name().as_str(),
                "",
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .context("consuming the wake-up queue")?;
        let _connected = Connected::new(state.wake());
        tracing::info!("receiving wake-ups through RabbitMQ");
        while let Some(delivery) = deliveries.next().await {
            let delivery = delivery.context("receiving a wake-up")?;
            state
                .wake()
                .remote_event(delivery.routing_key.as_str(), event_job_id(&delivery.data));
        }
        anyhow::bail!("the broker ended the wake-up consumer")
    })
    .await
}

/// Listens on PostgreSQL's `berth_events` channel until `shutdown`, reconnecting with backoff.
pub async fn postgres(state: AppState, url: String, shutdown: impl Future<Output = ()>) {
    reconnecting("wake-ups through PostgreSQL", shutdown, || {
        listen(&state, &url)
    })
    .await
}

/// One `LISTEN` session; returns only with an error.
async fn listen(state: &AppState, url: &str) -> anyhow::Result<()> {
    let mut listener = PgListener::connect(url)
        .await
        .context("connecting to PostgreSQL to LISTEN")?;
    listener
        .listen(PG_CHANNEL)
        .await
        .with_context(|| format!("LISTEN {PG_CHANNEL}"))?;
    let mut connected = Some(Connected::new(state.wake()));
    tracing::info!("receiving wake-ups through PostgreSQL LISTEN");
    loop {
        // `try_recv` reports a lost connection as `None` (notifications sent meanwhile are
        // lost) and reconnects on the next call.
        match listener.try_recv().await.context("LISTEN")? {
            Some(note) => {
                connected.get_or_insert_with(|| Connected::new(state.wake()));
                let (key, job_id) = notified(note.payload());
                state.wake().remote_event(key, job_id);
            }
            None => {
                connected = None;
                // Anything may have changed while we were deaf: let every waiter look.
                state.wake().remote_event("job.created", None);
            }
        }
    }
}

/// The routing key and job of a notification's payload (`job.cancelled <jobId>`, or the key
/// alone: a node's event, or a replica from before migration `0008`).
fn notified(payload: &str) -> (&str, Option<uuid::Uuid>) {
    match payload.split_once(' ') {
        Some((key, job)) => (key, job.parse().ok()),
        None => (payload, None),
    }
}

/// The `jobId` of an event body (SPEC §4), when it names one.
fn event_job_id(body: &[u8]) -> Option<uuid::Uuid> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Event {
        job_id: Option<uuid::Uuid>,
    }
    serde_json::from_slice::<Event>(body).ok()?.job_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_names_its_job_when_it_has_one() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(
            notified(&format!("job.cancelled {id}")),
            ("job.cancelled", Some(id))
        );
        assert_eq!(notified("node.online"), ("node.online", None));
        assert_eq!(notified("job.failed junk"), ("job.failed", None));
    }
}
