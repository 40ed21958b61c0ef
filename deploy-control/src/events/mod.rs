//! The events of SPEC §4 leaving the process: the outbox relay to RabbitMQ ([`relay`]) and the
//! wake-ups that cross replicas ([`remote`]). `docs/events.md` is the consumer's side.
//!
//! - With `BERTH_AMQP_URL`: every replica relays (the outbox's row locks keep relays apart) and
//!   binds its own exclusive queue to `berth.events` to hear about other replicas' changes.
//! - Without it, on PostgreSQL: an insert trigger `NOTIFY`s `berth_events` and every replica
//!   `LISTEN`s. On MySQL or SQLite: waiters re-check every second.
//!
//! Either way the outbox is pruned after the retention period.

pub mod relay;
pub mod remote;

use std::future::Future;

use crate::queue::now_millis;
use crate::state::AppState;

/// The exchange every event goes to.
pub const EXCHANGE: &str = "berth.events";

/// Starts the background tasks the event settings call for and runs them until `shutdown`.
pub async fn run(state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) {
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    match state.events().amqp_url.clone() {
        Some(url) => {
            tasks.spawn(relay::run(
                state.clone(),
                url.clone(),
                stop.clone().cancelled_owned(),
            ));
            tasks.spawn(remote::amqp(
                state.clone(),
                url,
                stop.clone().cancelled_owned(),
            ));
        }
        None => {
            let url = &state.settings().database_url;
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                tasks.spawn(remote::postgres(
                    state.clone(),
                    url.clone(),
                    stop.clone().cancelled_owned(),
                ));
            }
        }
    }
    tasks.spawn(prune(state, stop.clone().cancelled_owned()));
    shutdown.await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

/// Deletes old outbox rows every minute: published ones after the retention period, and
/// without a broker (nothing publishes them) every one written before it.
async fn prune(state: AppState, shutdown: impl Future<Output = ()>) {
    let period = std::time::Duration::from_secs(60);
    crate::background::every(period, shutdown, || prune_once(&state)).await;
}

/// One pass of [`prune`]: chunks until a short one.
async fn prune_once(state: &AppState) {
    let events = state.events();
    let before = now_millis() - events.outbox_retention.as_millis() as i64;
    let unpublished_too = events.amqp_url.is_none();
    loop {
        match state.store().prune_outbox(before, unpublished_too).await {
            Ok(n) if n >= crate::storage::PRUNE_CHUNK as u64 => continue,
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(deleted = n, "outbox pruned");
                }
                break;
            }
            Err(e) => {
                tracing::warn!(error = ?anyhow::Error::from(e), "outbox prune failed");
                break;
            }
        }
    }
}
