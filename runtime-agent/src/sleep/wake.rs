//! Falling asleep and waking: the engine's part, under the app's lock so neither overlaps a deploy
//! or a stop of the same app. Both act only while the route still carries the sleeper they were
//! started for; a route replaced meanwhile is the new container's business.

use std::sync::Arc;
use std::time::Instant;

use berth_shared::wire::SleepMode;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::{StartContainerOptions, StopContainerOptions};
use tracing::Instrument;

use super::{Sleeper, Sleeps};
use crate::apps::failure_logs;
use crate::docker::{self, docker_message};
use crate::readiness::{self, NotReady};
use crate::routes::Route;

/// Whether `route` still carries `sleeper` (not replaced by a deploy since).
fn carries(route: &Route, sleeper: &Arc<Sleeper>) -> bool {
    route
        .sleep
        .as_ref()
        .is_some_and(|s| Arc::ptr_eq(s, sleeper))
}

impl Sleeps {
    /// The app's route while it still carries `sleeper`.
    fn route_of(&self, sleeper: &Arc<Sleeper>) -> Option<Arc<Route>> {
        self.routes
            .get(&sleeper.app_id)
            .filter(|r| carries(r, sleeper))
    }
}

/// Puts the app to sleep: its container stopped (SIGTERM, then SIGKILL after the stop grace) or
/// paused. When that fails the app stays awake and its timer starts over.
pub(crate) async fn doze(sleeps: Arc<Sleeps>, sleeper: Arc<Sleeper>) -> Result<(), Arc<str>> {
    let span = tracing::info_span!("sleep", app_id = %sleeper.app_id, node_id = %sleeps.node_id, container_id = %sleeper.container_id);
    async {
        let _guard = sleeps.locks.lock(&sleeper.app_id).await;
        if sleeps.route_of(&sleeper).is_none() {
            sleeper.settle(false, None);
            return Ok(());
        }
        let docker = sleeps.engine.client();
        let id = sleeper.container_id.as_str();
        let put_down = match sleeper.policy.mode {
            SleepMode::Stop => stop(docker, id, sleeps.stop_grace_secs).await,
            SleepMode::Pause => docker.pause_container(id).await,
        };
        match put_down {
            Ok(()) => {
                sleeper.settle(true, None);
                sleeps.metrics.sleeps.inc();
                tracing::info!(mode = ?sleeper.policy.mode, "app asleep");
            }
            Err(e) => {
                tracing::warn!(error = %docker_message(&e), "the app could not be put to sleep; it stays awake");
                sleeper.settle(false, None);
            }
        }
        sleeps.count_asleep();
        sleeps.changed.notify_one();
        Ok(())
    }
    .instrument(span)
    .await
}

/// Wakes the app: starts (or unpauses) its container, waits until it is ready, at most the wake
/// timeout, and routes its new port. A failure puts it back to sleep with the reason, which every
/// held request gets as its answer and the app's status shows.
pub(crate) async fn wake(sleeps: Arc<Sleeps>, sleeper: Arc<Sleeper>) -> Result<(), Arc<str>> {
    let started = Instant::now();
    let span = tracing::info_span!("wake", app_id = %sleeper.app_id, node_id = %sleeps.node_id, container_id = %sleeper.container_id);
    async {
        let _guard = sleeps.locks.lock(&sleeper.app_id).await;
        let Some(route) = sleeps.route_of(&sleeper) else {
            // Replaced or stopped meanwhile: the held requests look the app up again.
            sleeper.settle(false, None);
            return Ok(());
        };
        let woken = match bring_up(&sleeps, &sleeper, &route, started).await {
            Ok(port) => reroute(&sleeps, &sleeper, port),
            Err(why) => Err(why),
        };
        let outcome = match woken {
            Ok(()) => {
                sleeper.settle(false, None);
                sleeps.metrics.wakes_ok.inc();
                sleeps
                    .metrics
                    .wake_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(seconds = started.elapsed().as_secs_f64(), "app awake");
                Ok(())
            }
            Err(why) => {
                tracing::warn!(reason = %why, "the app could not wake; it stays asleep");
                // Asleep again from a known state: the next request tries a fresh start.
                if let Err(e) = stop(sleeps.engine.client(), &sleeper.container_id, 1).await {
                    tracing::warn!(error = %docker_message(&e), "could not stop the container that failed to wake");
                }
                let why: Arc<str> = why.into();
                sleeper.settle(true, Some(why.clone()));
                sleeps.metrics.wakes_failed.inc();
                Err(why)
            }
        };
        sleeps.count_asleep();
        sleeps.changed.notify_one();
        outcome
    }
    .instrument(span)
    .await
}

/// Starts or unpauses the container and waits for readiness; the port it is published on now
/// (a started container gets a new one), or why it did not come up.
async fn bring_up(
    sleeps: &Sleeps,
    sleeper: &Sleeper,
    route: &Route,
    started: Instant,
) -> Result<u16, String> {
    let engine = &sleeps.engine;
    let id = sleeper.container_id.as_str();
    let inspect = || async {
        engine
            .inspect(id)
            .await
            .map_err(|e| format!("the engine did not answer: {}", docker_message(&e)))?
            .ok_or_else(|| "the app's container is gone".to_owned())
    };
    // As the container is, not as the policy says: a restart may have found it either way.
    let status = inspect().await?.state.and_then(|s| s.status);
    let docker = engine.client();
    let brought = match status {
        Some(ContainerStateStatusEnum::RUNNING) => Ok(()),
        Some(ContainerStateStatusEnum::PAUSED) => docker.unpause_container(id).await,
        _ => {
            docker
                .start_container(id, None::<StartContainerOptions>)
                .await
        }
    };
    brought.map_err(|e| format!("its container could not start: {}", docker_message(&e)))?;
    // A thawed container kept its port and its listening socket: one probe usually finds it
    // ready, without the two engine round trips of the general wait below.
    if status == Some(ContainerStateStatusEnum::PAUSED) {
        let port = route.record.host_port;
        let path = route.record.health_check_path.as_deref();
        if readiness::probe(&sleeps.probe, port, path).await.is_ok() {
            return Ok(port);
        }
    }
    let container = inspect().await?;
    let Some(port) = docker::published_port(&container) else {
        // No port means it stopped already: its exit code and logs say why.
        let logs = failure_logs(engine, id).await;
        let why = match container.state.and_then(|s| s.exit_code) {
            Some(exit_code) if exit_code != 0 => NotReady::Crashed { exit_code }.to_string(),
            // Caught while the engine restarts it, whose new start reset the exit code.
            _ => "the app's container exited during start-up".to_owned(),
        };
        return Err(format!("{why}{logs}"));
    };
    let remaining = sleeps.wake_timeout.saturating_sub(started.elapsed());
    let ready = readiness::wait_ready(
        engine,
        &sleeps.probe,
        id,
        port,
        route.record.health_check_path.as_deref(),
        remaining,
    )
    .await
    .map_err(|e| format!("the engine did not answer: {e:#}"))?;
    if let Err(not_ready) = ready {
        let logs = failure_logs(engine, id).await;
        return Err(format!("{not_ready}{logs}"));
    }
    Ok(port)
}

/// Routes the woken container's port; the route keeps its sleeper and in-flight count.
fn reroute(sleeps: &Sleeps, sleeper: &Arc<Sleeper>, port: u16) -> Result<(), String> {
    sleeps
        .routes
        .update(|map| {
            let current = map.get(&sleeper.app_id).filter(|r| carries(r, sleeper));
            if let Some(current) = current {
                let mut record = current.record.clone();
                record.host_port = port;
                let route = current.carry(record, true);
                map.insert(sleeper.app_id.clone(), Arc::new(route));
            }
        })
        .map_err(|e| format!("its route could not be saved: {e:#}"))
}

/// `docker stop` without removing; a container already stopped is not an error.
async fn stop(docker: &bollard::Docker, id: &str, grace_secs: u32) -> Result<(), DockerError> {
    let options = StopContainerOptions {
        t: Some(grace_secs.min(i32::MAX as u32) as i32),
        ..Default::default()
    };
    match docker.stop_container(id, Some(options)).await {
        Err(e) if docker::is_not_modified(&e) => Ok(()),
        other => other,
    }
}
