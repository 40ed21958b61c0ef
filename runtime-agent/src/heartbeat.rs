//! Heartbeats to the control plane's node registry (`POST /internal/runtime-nodes/heartbeat`,
//! header `X-RT-Node-Token`: the node's own credential, [`crate::credential`]): every few seconds, at once after each deploy or stop, and while
//! the control plane does not answer, again after 1 s, 2 s, … but never later than the
//! interval, so a node that is up never misses the control plane's TTL because of its own
//! retry pause (SPEC §8: the control plane's outage must not make healthy nodes look lost).
//!
//! The answer names the reported containers of apps the control plane has settled on another
//! node or stopped (SPEC §8: one version per app). The agent removes each at once (volumes
//! kept), drops its route, and reports it under `removed` in a heartbeat sent right away. The
//! first heartbeat after a start goes out as soon as the agent serves, so what it adopted is
//! settled within one round trip.

use std::sync::Arc;
use std::time::Duration;

use berth_shared::headers::NODE_TOKEN;
use berth_shared::secret::Secret;
use berth_shared::wire::{DisplacedApp, HeartbeatAnswer, NodeHeartbeat};
use tokio_util::sync::CancellationToken;

use crate::apps::Runtime;
use crate::config::Labels;
use crate::credential::Credentials;

/// Who this node says it is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Stable node id.
    pub node_id: String,
    /// Human name.
    pub name: String,
    /// Where runners reach the agent.
    pub agent_base_url: String,
    /// Where end users reach the gateway.
    pub gateway_base_url: String,
    /// Operator labels.
    pub labels: Labels,
    /// Apps this node may hold.
    pub max_apps: u32,
    /// Sleeping apps this node may hold beyond `max_apps`.
    pub max_sleeping_apps: u32,
}

/// Where heartbeats go, and the node's credential they carry.
#[derive(Debug)]
pub struct Target {
    /// The control plane's base URL.
    pub control_url: String,
    /// The node's own credential (joined for on first use, rotated when old).
    pub credentials: Credentials,
}

/// Builds the heartbeat body from the engine's current view, reporting the containers `removed`
/// since the last answered heartbeat.
pub async fn build(
    runtime: &Runtime,
    identity: &Identity,
    removed: &[DisplacedApp],
) -> anyhow::Result<NodeHeartbeat> {
    let apps = runtime.sync().await?;
    let capacity = runtime
        .engine
        .capacity(identity.max_apps, identity.max_sleeping_apps)
        .await?;
    Ok(NodeHeartbeat {
        node_id: identity.node_id.clone(),
        name: identity.name.clone(),
        agent_base_url: identity.agent_base_url.clone(),
        gateway_base_url: identity.gateway_base_url.clone(),
        labels: identity.labels.clone(),
        capacity,
        apps,
        removed: removed.to_vec(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// Sends one heartbeat with the node's credential (joining first when it has none, rotating
/// it afterwards when it is old); when the control plane answered 2xx, the containers its
/// answer says to remove.
pub async fn send(
    client: &reqwest::Client,
    target: &mut Target,
    body: &NodeHeartbeat,
) -> anyhow::Result<Vec<DisplacedApp>> {
    let credential = target.credentials.get(client, &target.control_url).await?;
    let answer = beat(client, &target.control_url, &credential, body).await?;
    target
        .credentials
        .rotate_if_old(client, &target.control_url)
        .await?;
    Ok(answer)
}

/// One heartbeat with `credential`.
async fn beat(
    client: &reqwest::Client,
    control_url: &str,
    credential: &Secret,
    body: &NodeHeartbeat,
) -> anyhow::Result<Vec<DisplacedApp>> {
    let url = format!("{control_url}/internal/runtime-nodes/heartbeat");
    let response = client
        .post(&url)
        .header(NODE_TOKEN, credential.expose())
        .json(body)
        .send()
        .await?;
    let status = response.status();
    if status.is_success() {
        // The heartbeat counted; an empty answer, or one this agent cannot read, removes nothing.
        let text = response.text().await.unwrap_or_default();
        if text.trim().is_empty() {
            return Ok(vec![]);
        }
        match serde_json::from_str::<HeartbeatAnswer>(&text) {
            Ok(answer) => Ok(answer.remove),
            Err(e) => {
                tracing::warn!(error = %e, "the heartbeat's answer is not one this agent reads; nothing removed");
                Ok(vec![])
            }
        }
    } else {
        let detail = response.text().await.unwrap_or_default();
        anyhow::bail!(
            "the control plane answered {status}: {}",
            detail.chars().take(300).collect::<String>()
        )
    }
}

/// The client heartbeats are sent with (5 s timeout).
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
}

/// Heartbeats until `shutdown`. When no control plane is configured it still syncs the
/// route table with the engine on the same rhythm, so dead containers are noticed.
pub async fn run(
    client: reqwest::Client,
    runtime: Arc<Runtime>,
    identity: Identity,
    mut target: Option<Target>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    // Containers removed at an answer's word, reported until a heartbeat carrying them is answered.
    let mut removed: Vec<DisplacedApp> = Vec::new();
    loop {
        let outcome = match &mut target {
            Some(target) => match build(&runtime, &identity, &removed).await {
                Ok(body) => send(&client, target, &body).await.map(Some),
                Err(e) => Err(e),
            },
            None => runtime.sync().await.map(|_| None),
        };
        let pause = match outcome {
            Ok(answer) => {
                if failures > 0 {
                    tracing::info!(node_id = %identity.node_id, "heartbeats reach the control plane again");
                }
                failures = 0;
                removed.clear();
                let mut pause = interval;
                if let Some(remove) = answer {
                    runtime.metrics.heartbeats_ok.inc();
                    removed = remove_displaced(&runtime, &remove).await;
                    if !removed.is_empty() {
                        // Report the removals at once.
                        pause = Duration::ZERO;
                    }
                }
                pause
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                runtime.metrics.heartbeats_failed.inc();
                let backoff = backoff(interval, failures);
                tracing::warn!(node_id = %identity.node_id, error = %format!("{e:#}"), retry_in = ?backoff, "heartbeat failed");
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = runtime.changed.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Removes the containers an answer names (each only while it is still the app's container
/// here); those removed, to report.
async fn remove_displaced(runtime: &Runtime, remove: &[DisplacedApp]) -> Vec<DisplacedApp> {
    let mut removed = Vec::new();
    for displaced in remove {
        match runtime.remove_displaced(displaced).await {
            Ok(true) => removed.push(displaced.clone()),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(app_id = %displaced.app_id, error = %e, "could not remove the container of an app settled elsewhere; the next heartbeat's answer asks again")
            }
        }
    }
    removed
}

/// The pause after `failures` failed attempts: 1 s doubling, capped at the heartbeat
/// `interval` (an outage costs the control plane no more requests than normal heartbeats do,
/// and the node is seen again within one interval of the control plane's return).
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let base = Duration::from_secs(1).min(interval);
    base.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_interval() {
        let i = Duration::from_secs(10);
        assert_eq!(backoff(i, 1), Duration::from_secs(1));
        assert_eq!(backoff(i, 2), Duration::from_secs(2));
        assert_eq!(backoff(i, 4), Duration::from_secs(8));
        assert_eq!(backoff(i, 5), i);
        assert_eq!(backoff(i, 40), i);
        // The default interval (3 s) stays well below the default TTL (15 s).
        let default = Duration::from_secs(3);
        assert!((1..100).all(|f| backoff(default, f) <= default));
    }
}
