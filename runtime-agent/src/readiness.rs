//! Readiness: when a freshly started container may take traffic.
//!
//! A TCP connect to a published port proves nothing (Docker's port proxy accepts it before the
//! app listens), so readiness needs an HTTP answer: 2xx from the health-check path when one is
//! given, any status from `/` otherwise. Meanwhile the container must keep running: a crash or
//! an engine restart ends the wait at once.

use std::time::Duration;

use bollard::models::ContainerStateStatusEnum;

use crate::docker::Engine;

/// Why a container did not become ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// It stopped (or the engine is restarting it) before it was ready.
    #[error("the app's container exited during start-up (exit code {exit_code})")]
    Crashed {
        /// The container's exit code (-1 when unknown).
        exit_code: i64,
    },
    /// It ran, but did not answer as required within the timeout.
    #[error("the app did not become ready within {timeout:?}: {last}")]
    Timeout {
        /// How long it was given.
        timeout: Duration,
        /// What the last probe saw.
        last: String,
    },
    /// The container disappeared.
    #[error("the app's container disappeared during start-up")]
    Gone,
}

/// One HTTP probe of `127.0.0.1:{port}{path}`; `Ok` when it counts as ready, else what it saw.
pub async fn probe(
    client: &reqwest::Client,
    port: u16,
    health_path: Option<&str>,
) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}{}", health_path.unwrap_or("/"));
    match client.get(&url).send().await {
        Ok(response) if health_path.is_none() || response.status().is_success() => Ok(()),
        Ok(response) => Err(format!(
            "GET {} answered {}",
            health_path.unwrap_or("/"),
            response.status()
        )),
        Err(e) if e.is_timeout() => Err(format!("GET {} timed out", health_path.unwrap_or("/"))),
        Err(_) => Err(format!(
            "GET {} got no HTTP answer",
            health_path.unwrap_or("/")
        )),
    }
}

/// Waits until the container answers as ready, it crashes, or `timeout` passes.
pub async fn wait_ready(
    engine: &Engine,
    client: &reqwest::Client,
    container_id: &str,
    port: u16,
    health_path: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Result<(), NotReady>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(25);
    loop {
        let Some(container) = engine.inspect(container_id).await? else {
            return Ok(Err(NotReady::Gone));
        };
        let state = container.state.unwrap_or_default();
        let restarts = container.restart_count.unwrap_or(0);
        let running = state.status == Some(ContainerStateStatusEnum::RUNNING);
        if !running || restarts > 0 {
            return Ok(Err(NotReady::Crashed {
                exit_code: state.exit_code.unwrap_or(-1),
            }));
        }
        let last = match probe(client, port, health_path).await {
            Ok(()) => return Ok(Ok(())),
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            return Ok(Err(NotReady::Timeout { timeout, last }));
        }
        tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// The client readiness probes use: no proxy, short timeouts, no connection reuse (each probe
/// must see the app as a new client would).
pub fn probe_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
}
