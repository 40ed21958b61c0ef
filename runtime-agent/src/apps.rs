//! What the agent does to apps: deploy, stop, status, logs, and adoption after a restart.
//!
//! An app's life on this node, one step at a time:
//! `create → start → ready? → routed → (replaced | stopped)`. Only a routed container is
//! recorded in the route table (and its file); anything else carrying this node's label is a
//! leftover of an interrupted deploy and is removed when the agent starts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_shared::ids::{is_name, truncate, AppId, NodeId};
use berth_shared::wire::agent::Health;
use berth_shared::wire::agent::{
    AgentAppStatus, AgentDeployRequest, AgentDeployResponse, AgentStopResponse, AppState,
};
use berth_shared::wire::job::check_container_user;
use berth_shared::wire::{check_container, ContainerInput, DisplacedApp, NodeApp};
use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum};
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::deployed::{self, DeployedJobs, Verdict};
use crate::docker::{self, ContainerSpec, Engine, LABEL_APP, LABEL_JOB};
use crate::error::{AgentError, ApiResult};
use crate::locks::AppLocks;
use crate::metrics::Metrics;
use crate::readiness::{self, NotReady};
use crate::routes::{RouteRecord, RouteTable};
use crate::sleep::{SleepPolicy, Sleeps};

/// How many log lines a failed deploy quotes.
const FAILURE_LOG_LINES: usize = 30;
/// How long a replaced container may finish the requests it is serving.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// Longest wait for a request that took the old route to register as in flight: that takes
/// microseconds, but an idle holder of the old table would otherwise make every redeploy wait.
const HANDOVER_MAX: Duration = Duration::from_millis(50);

/// The agent's state and its operations on apps.
#[derive(Debug)]
pub struct Runtime {
    /// The Docker engine, scoped to this node.
    pub engine: Engine,
    /// Which container serves which app.
    pub routes: Arc<RouteTable>,
    /// Metrics shared with the API and the gateway.
    pub metrics: Arc<Metrics>,
    /// Wakes the heartbeat loop after a change.
    pub changed: Arc<Notify>,
    /// This node.
    pub node_id: NodeId,
    /// The gateway's public URL, for app URLs.
    pub gateway_url: String,
    /// How long a deploy waits for readiness.
    pub ready_timeout: Duration,
    /// SIGTERM-to-SIGKILL grace of stopped containers.
    pub stop_grace_secs: u32,
    probe: reqwest::Client,
    /// One lock per app: deploys, stops, sleeps and wakes of one app run one at a time.
    locks: Arc<AppLocks>,
    /// Sleeping apps: what their dozes and wakes need (the gateway shares it).
    pub sleeps: Arc<Sleeps>,
    /// Deploys under way, by job id. Each runs in its own task, so a caller that goes away
    /// never cancels one, and a repeated request for the same job waits for the same outcome.
    deploys: std::sync::Mutex<HashMap<String, DeployInFlight>>,
    /// The last jobs routed per app: a request for one that a newer job has replaced is stale
    /// and refused, so a late retry cannot bring an old version back over the current one.
    deployed: DeployedJobs,
}

/// What every request for one job awaits: the outcome of its deploy task.
type DeployOutcome = Result<AgentDeployResponse, Arc<AgentError>>;

/// A deploy task and the app it deploys.
#[derive(Debug)]
struct DeployInFlight {
    app_id: String,
    outcome: Shared<BoxFuture<'static, DeployOutcome>>,
}

/// A deploy request after validation.
#[derive(Debug, Clone)]
struct DeployPlan {
    app_id: AppId,
    job_id: String,
    health_check_path: Option<String>,
    spec: ContainerSpec,
    registry_auth: Option<berth_shared::wire::agent::RegistryAuth>,
    sleep: Option<SleepPolicy>,
}

impl Runtime {
    /// A runtime over `engine` with an empty route table (call [`Runtime::adopt`] next).
    /// Fails only when the readiness probes' HTTP client cannot be built.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: Engine,
        routes: Arc<RouteTable>,
        metrics: Arc<Metrics>,
        node_id: NodeId,
        gateway_url: String,
        ready_timeout: Duration,
        stop_grace_secs: u32,
        wake_timeout: Duration,
    ) -> reqwest::Result<Self> {
        let changed = Arc::<Notify>::default();
        let locks = Arc::<AppLocks>::default();
        let probe = readiness::probe_client()?;
        let sleeps = Arc::new(Sleeps {
            engine: engine.clone(),
            routes: routes.clone(),
            metrics: metrics.clone(),
            changed: changed.clone(),
            locks: locks.clone(),
            probe: probe.clone(),
            node_id: node_id.clone(),
            wake_timeout,
            stop_grace_secs,
        });
        Ok(Self {
            engine,
            routes,
            metrics,
            changed,
            node_id,
            gateway_url: gateway_url.trim_end_matches('/').to_owned(),
            ready_timeout,
            stop_grace_secs,
            probe,
            locks,
            sleeps,
            deploys: std::sync::Mutex::default(),
            deployed: DeployedJobs::default(),
        })
    }

    async fn lock_app(&self, app_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(app_id).await
    }

    fn app_url(&self, app_id: &str) -> String {
        format!("{}/apps/{app_id}/", self.gateway_url)
    }

    fn response(&self, record: &RouteRecord) -> AgentDeployResponse {
        AgentDeployResponse {
            app_id: record.app_id.clone(),
            container_id: record.container_id.clone(),
            host_port: record.host_port,
            url: self.app_url(&record.app_id),
            state: AppState::Running,
        }
    }

    /// Deploys an app: starts a new container, waits until it is ready, routes it, then stops
    /// the container it replaces. Repeating a job id that is already live returns its result;
    /// a job this node deployed before another job of the app replaced it is refused (409).
    ///
    /// The deploy runs in a task of its own: dropping this future (the caller disconnected)
    /// does not cancel it, and a request for a job id whose deploy is under way joins it and
    /// answers with its outcome. Deploys of one app run one after the other.
    pub async fn deploy(
        self: &Arc<Self>,
        request: AgentDeployRequest,
    ) -> ApiResult<AgentDeployResponse> {
        let plan = validate(request)?;
        let outcome = self.deploy_task(plan)?;
        outcome.await.map_err(AgentError::Shared)
    }

    /// The outcome of the job's deploy: the task already under way, or a new one.
    fn deploy_task(
        self: &Arc<Self>,
        plan: DeployPlan,
    ) -> ApiResult<Shared<BoxFuture<'static, DeployOutcome>>> {
        let mut deploys = self.deploys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = deploys.get(&plan.job_id) {
            if running.app_id != plan.app_id.as_str() {
                return Err(AgentError::Conflict(format!(
                    "job {} is already deploying app {} on this node",
                    plan.job_id, running.app_id
                )));
            }
            tracing::info!(app_id = %plan.app_id, job_id = %plan.job_id, "job already deploying; waiting for its outcome");
            return Ok(running.outcome.clone());
        }
        let job_id = plan.job_id.clone();
        let app_id = plan.app_id.to_string();
        let runtime = Arc::clone(self);
        let task = tokio::spawn(async move {
            let job_id = plan.job_id.clone();
            let outcome = runtime.deploy_now(plan).await.map_err(Arc::new);
            // Later requests for this job find its route (or, after a failure, try again).
            let mut deploys = runtime.deploys.lock().unwrap_or_else(|p| p.into_inner());
            deploys.remove(&job_id);
            outcome
        });
        let outcome = async move {
            task.await.unwrap_or_else(|e| {
                Err(Arc::new(AgentError::Internal(anyhow::anyhow!(
                    "the deploy task ended without an outcome: {e}"
                ))))
            })
        }
        .boxed()
        .shared();
        deploys.insert(
            job_id,
            DeployInFlight {
                app_id,
                outcome: outcome.clone(),
            },
        );
        Ok(outcome)
    }

    async fn deploy_now(&self, plan: DeployPlan) -> ApiResult<AgentDeployResponse> {
        let span = tracing::info_span!("deploy", app_id = %plan.app_id, job_id = %plan.job_id, node_id = %self.node_id);
        let started = Instant::now();
        let result = self.deploy_plan(plan).instrument(span).await;
        match &result {
            Ok(_) => {
                self.metrics.deploys_ok.inc();
                self.metrics
                    .deploy_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(AgentError::Superseded { .. }) => {
                self.metrics.deploys_stale.inc();
            }
            Err(_) => {
                self.metrics.deploys_failed.inc();
            }
        }
        result
    }

    async fn deploy_plan(&self, plan: DeployPlan) -> ApiResult<AgentDeployResponse> {
        let app = plan.app_id.as_str();
        let _guard = self.lock_app(app).await;
        // Judged under the app's lock, so a request that waited behind a newer job's deploy
        // sees that job's route.
        let route = self.routes.get(app);
        let routed = route.as_ref().map(|r| r.record.job_id.as_str());
        match deployed::judge(&self.deployed, app, &plan.job_id, routed) {
            Verdict::Current => {
                // A current job whose container is down is deployed again.
                if let Some(route) = route.filter(|r| r.up) {
                    tracing::info!("job already deployed; answering its result again");
                    return Ok(self.response(&route.record));
                }
            }
            Verdict::Superseded { current } => {
                tracing::warn!(current_job_id = %current, "stale deploy refused: a newer job of the app has replaced this one");
                return Err(AgentError::Superseded {
                    job_id: plan.job_id.clone(),
                    app_id: app.to_owned(),
                    current,
                });
            }
            Verdict::New => {}
        }
        self.engine
            .ensure_image(&plan.spec.image, plan.registry_auth.as_ref())
            .await?;
        let container_id = self.engine.create_and_start(&plan.spec).await?;
        tracing::info!(container_id = %container_id, "container started; waiting until it is ready");

        let record = match self.until_ready(&plan, &container_id).await {
            Ok(record) => record,
            Err(e) => {
                // Leave nothing half-made: the failed container goes, the old one keeps serving.
                if let Err(remove) = self.engine.remove(&container_id, 0).await {
                    tracing::warn!(error = %remove, container_id = %container_id, "could not remove a failed container");
                }
                return Err(e);
            }
        };

        let previous = self.routes.get(app);
        let routed = self.routes.update(|map| {
            map.insert(
                app.to_owned(),
                Arc::new(self.sleeps.route(record.clone(), false)),
            );
        });
        if let Err(e) = routed {
            // The route table is unchanged: the old container keeps serving, the new one goes.
            if let Err(remove) = self.engine.remove(&container_id, 0).await {
                tracing::warn!(error = %remove, container_id = %container_id, "could not remove a container that was never routed");
            }
            return Err(e.into());
        }
        self.deployed.record(app, &plan.job_id);
        self.metrics.apps.set(self.routes.snapshot().len() as i64);
        tracing::info!(host_port = record.host_port, "app routed");

        if let Some(old) = previous.filter(|old| old.record.container_id != container_id) {
            // A request that took the old route just before the switch holds it until it has
            // registered in `inflight`: wait until nobody else holds the route — at most
            // HANDOVER_MAX, since a gateway worker's cached route table also holds it until its
            // next request — then until its requests in flight are done.
            let handover = Instant::now() + HANDOVER_MAX;
            while Arc::strong_count(&old) > 1 && Instant::now() < handover {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            old.drain(DRAIN_MAX).await;
            if let Err(e) = self
                .engine
                .remove(
                    &old.record.container_id,
                    old.stop_grace(self.stop_grace_secs),
                )
                .await
            {
                tracing::warn!(error = %e, "could not remove the replaced container");
            }
        }
        self.remove_leftovers(app, Some(&container_id)).await;
        self.changed.notify_one();
        Ok(self.response(&record))
    }

    async fn until_ready(&self, plan: &DeployPlan, container_id: &str) -> ApiResult<RouteRecord> {
        let container = self.engine.inspect(container_id).await?.ok_or_else(|| {
            AgentError::DeployFailed(
                "the app's container disappeared right after it started".into(),
            )
        })?;
        let host_port = match docker::published_port(&container) {
            Some(port) => port,
            None => {
                // No port yet means the container already stopped; say why from its logs.
                let logs = failure_logs(&self.engine, container_id).await;
                return Err(AgentError::DeployFailed(format!(
                    "the app's container exited during start-up{logs}"
                )));
            }
        };
        let outcome = readiness::wait_ready(
            &self.engine,
            &self.probe,
            container_id,
            host_port,
            plan.health_check_path.as_deref(),
            self.ready_timeout,
        )
        .await?;
        if let Err(not_ready) = outcome {
            let logs = failure_logs(&self.engine, container_id).await;
            tracing::warn!(reason = %not_ready, "deploy failed");
            let hint = match not_ready {
                NotReady::Timeout { .. } if plan.health_check_path.is_none() => {
                    format!(
                        " (is it listening on container port {}?)",
                        plan.spec.container_port
                    )
                }
                _ => String::new(),
            };
            return Err(AgentError::DeployFailed(format!("{not_ready}{hint}{logs}")));
        }
        Ok(RouteRecord {
            app_id: plan.app_id.to_string(),
            container_id: container_id.to_owned(),
            job_id: plan.job_id.clone(),
            image: plan.spec.image.clone(),
            host_port,
            health_check_path: plan.health_check_path.clone(),
            sleep: plan.sleep,
        })
    }

    /// Removes this app's containers other than `keep`.
    async fn remove_leftovers(&self, app_id: &str, keep: Option<&str>) -> u32 {
        let mut removed = 0;
        match self.engine.list_mine(Some(app_id)).await {
            Ok(containers) => {
                for id in containers.into_iter().filter_map(|c| c.id) {
                    if Some(id.as_str()) == keep {
                        continue;
                    }
                    match self.engine.remove(&id, self.stop_grace_secs).await {
                        Ok(()) => removed += 1,
                        Err(e) => {
                            tracing::warn!(error = %e, container_id = %id, "could not remove a container")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list the app's containers"),
        }
        removed
    }

    /// Stops an app: unroutes it and removes its containers, keeping its volumes unless
    /// `remove_volumes` (then they are deleted once no container of the app is left).
    /// Idempotent.
    pub async fn stop(&self, app_id: &AppId, remove_volumes: bool) -> ApiResult<AgentStopResponse> {
        let span =
            tracing::info_span!("stop", app_id = %app_id, node_id = %self.node_id, remove_volumes);
        async {
            let app = app_id.as_str();
            let _guard = self.lock_app(app).await;
            self.stop_locked(app, remove_volumes).await
        }
        .instrument(span)
        .await
    }

    /// Removes this node's container of an app the control plane settled on another node or
    /// stopped (SPEC §8: one version per app; a heartbeat's answer names it): unrouted, stopped
    /// and removed, its volumes kept (a lost node's data stays). Nothing happens when the app's
    /// routed container is no longer `displaced.container_id` (a deploy since the heartbeat
    /// knows better). Whether it removed it.
    pub async fn remove_displaced(&self, displaced: &DisplacedApp) -> ApiResult<bool> {
        let span = tracing::info_span!(
            "displace",
            app_id = %displaced.app_id,
            node_id = %self.node_id,
            container_id = %displaced.container_id,
            settled_by_job_id = %displaced.job_id,
            job_id = tracing::field::Empty,
        );
        async {
            let app = AppId::parse(&displaced.app_id)
                .map_err(|e| AgentError::BadRequest(e.to_string()))?;
            let app = app.as_str();
            let _guard = self.lock_app(app).await;
            let Some(route) = self
                .routes
                .get(app)
                .filter(|r| r.record.container_id == displaced.container_id)
            else {
                tracing::info!("the app's container has changed since the heartbeat; kept");
                return Ok(false);
            };
            tracing::Span::current().record("job_id", route.record.job_id.as_str());
            tracing::warn!(reason = %displaced.reason, "removing the container of an app settled elsewhere; its volumes stay");
            drop(route);
            self.stop_locked(app, false).await?;
            self.metrics.displaced.inc();
            Ok(true)
        }
        .instrument(span)
        .await
    }

    /// [`Runtime::stop`] with the app's lock held.
    async fn stop_locked(&self, app: &str, remove_volumes: bool) -> ApiResult<AgentStopResponse> {
        let previous = self.routes.get(app);
        if previous.is_some() {
            self.routes.update(|map| {
                map.remove(app);
            })?;
        }
        self.metrics.apps.set(self.routes.snapshot().len() as i64);
        let grace = match &previous {
            Some(old) => old.stop_grace(self.stop_grace_secs),
            None => self.stop_grace_secs,
        };
        if let Some(old) = previous {
            old.drain(Duration::from_secs(5)).await;
        }
        // List before removing, so a failure of the engine is an error, not "nothing to do".
        let mine = self.engine.list_mine(Some(app)).await?;
        let mut removed = 0;
        for id in mine.into_iter().filter_map(|c| c.id) {
            self.engine.remove(&id, grace).await?;
            removed += 1;
        }
        let volumes_removed = if remove_volumes {
            self.engine.remove_app_volumes(app).await?
        } else {
            0
        };
        self.metrics.stops.inc();
        self.changed.notify_one();
        tracing::info!(removed, volumes_removed, "app stopped");
        Ok(AgentStopResponse {
            app_id: app.to_owned(),
            removed,
            volumes_removed,
            state: AppState::Missing,
        })
    }

    /// The app's container as the engine sees it now.
    pub async fn status(&self, app_id: &AppId) -> ApiResult<AgentAppStatus> {
        let app = app_id.as_str();
        let route = self.routes.get(app);
        let container_id = match &route {
            Some(r) => Some(r.record.container_id.clone()),
            None => self.newest_container(app).await?,
        };
        let inspected = match &container_id {
            Some(id) => self.engine.inspect(id).await?,
            None => None,
        };
        let Some(container) = inspected else {
            return Ok(AgentAppStatus {
                app_id: app.to_owned(),
                state: AppState::Missing,
                container_id: None,
                image: None,
                host_port: None,
                started_at: None,
                restarts: 0,
                health: Health::Unknown,
                job_id: None,
                error: None,
            });
        };
        let state = container.state.clone().unwrap_or_default();
        let sleeper = route.as_ref().and_then(|r| r.sleep.as_ref());
        let app_state = match state.status {
            _ if sleeper.is_some_and(|s| s.is_asleep()) => AppState::Sleeping,
            Some(ContainerStateStatusEnum::RUNNING) => AppState::Running,
            Some(ContainerStateStatusEnum::RESTARTING) => AppState::Restarting,
            _ => AppState::Exited,
        };
        let host_port = docker::published_port(&container);
        let health = match (app_state, host_port) {
            (AppState::Running, Some(port)) => {
                let path = route
                    .as_ref()
                    .and_then(|r| r.record.health_check_path.clone());
                match readiness::probe(&self.probe, port, path.as_deref()).await {
                    Ok(()) => Health::Healthy,
                    Err(_) => Health::Unhealthy,
                }
            }
            _ => Health::Unknown,
        };
        let labels = container
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        Ok(AgentAppStatus {
            app_id: app.to_owned(),
            state: app_state,
            container_id: container.id.clone(),
            image: container.config.as_ref().and_then(|c| c.image.clone()),
            host_port,
            started_at: state.started_at.clone(),
            restarts: container
                .restart_count
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX)) as u32,
            health,
            job_id: labels.get(LABEL_JOB).cloned(),
            error: sleeper.and_then(|s| s.error()),
        })
    }

    async fn newest_container(&self, app_id: &str) -> ApiResult<Option<String>> {
        let mut mine = self.engine.list_mine(Some(app_id)).await?;
        mine.sort_by_key(|c| std::cmp::Reverse(c.created.unwrap_or(0)));
        Ok(mine.into_iter().find_map(|c| c.id))
    }

    /// The last `tail` log lines of the app's container.
    pub async fn logs(&self, app_id: &AppId, tail: usize) -> ApiResult<String> {
        let app = app_id.as_str();
        let container_id = match self.routes.get(app) {
            Some(r) => Some(r.record.container_id.clone()),
            None => self.newest_container(app).await?,
        };
        let id = container_id.ok_or_else(|| {
            AgentError::NotFound(format!("app {app} has no container on this node"))
        })?;
        Ok(self.engine.logs_tail(&id, tail).await?)
    }

    /// After a restart: routes the containers the route file names again and removes every
    /// other container carrying this node's label (leftovers of interrupted deploys).
    pub async fn adopt(&self) -> anyhow::Result<()> {
        let records = self.routes.load_records()?;
        let containers = self.engine.list_mine(None).await?;
        let by_id: HashMap<String, _> = containers
            .into_iter()
            .filter_map(|c| Some((c.id.clone()?, c)))
            .collect();
        let mut live = HashSet::new();
        let mut routes = Vec::new();
        for mut record in records {
            let Some(container) = by_id.get(&record.container_id) else {
                tracing::warn!(app_id = %record.app_id, "the app's container is gone; unrouting it");
                continue;
            };
            let up = container.state == Some(ContainerSummaryStateEnum::RUNNING);
            if let Some(port) = docker::summary_port(container) {
                record.host_port = port;
            }
            live.insert(record.container_id.clone());
            self.deployed.record(&record.app_id, &record.job_id);
            // A sleeping app's container is stopped or paused on purpose: asleep, still routed.
            let asleep = record.sleep.is_some() && !up;
            tracing::info!(app_id = %record.app_id, container_id = %record.container_id, up, asleep, "adopted");
            let mut route = self.sleeps.route(record, asleep);
            route.up = up || asleep;
            routes.push(route);
        }
        for (id, container) in &by_id {
            if !live.contains(id) {
                let app = container
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_APP))
                    .cloned()
                    .unwrap_or_default();
                tracing::info!(app_id = %app, container_id = %id, "removing a container no route names");
                self.engine.remove(id, 0).await?;
            }
        }
        self.routes.update(|map| {
            map.clear();
            for route in routes {
                map.insert(route.record.app_id.clone(), Arc::new(route));
            }
        })?;
        self.metrics.apps.set(self.routes.snapshot().len() as i64);
        self.sleeps.count_asleep();
        Ok(())
    }

    /// Brings the route table in line with the engine (a container that died is marked down,
    /// one the engine restarted may have a new port) and lists the apps for a heartbeat.
    pub async fn sync(&self) -> anyhow::Result<Vec<NodeApp>> {
        let listed_at = Instant::now();
        let containers = self.engine.list_mine(None).await?;
        let by_id: HashMap<&str, _> = containers
            .iter()
            .filter_map(|c| Some((c.id.as_deref()?, c)))
            .collect();
        let snapshot = self.routes.snapshot();
        let mut apps = Vec::new();
        let mut changes = Vec::new();
        for route in snapshot.values() {
            let record = &route.record;
            let container = by_id.get(record.container_id.as_str());
            let sleeper = route.sleep.as_ref();
            let resting = matches!(
                container.and_then(|c| c.state),
                Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::PAUSED)
            );
            if sleeper.is_some_and(|s| s.is_asleep() || (resting && s.found_resting(listed_at))) {
                // Stopped or paused on purpose; its wake takes care of the route.
                apps.push(NodeApp {
                    app_id: record.app_id.clone(),
                    container_id: record.container_id.clone(),
                    image: record.image.clone(),
                    state: AppState::Sleeping,
                    error: sleeper.and_then(|s| s.error()),
                    job_id: Some(record.job_id.clone()),
                });
                continue;
            }
            let state = match container.and_then(|c| c.state) {
                Some(ContainerSummaryStateEnum::RUNNING) => AppState::Running,
                Some(ContainerSummaryStateEnum::RESTARTING) => AppState::Restarting,
                Some(_) => AppState::Exited,
                None => AppState::Missing,
            };
            let up = state == AppState::Running;
            let port = container
                .and_then(|c| docker::summary_port(c))
                .unwrap_or(record.host_port);
            if up != route.up || port != record.host_port {
                if !up {
                    tracing::warn!(app_id = %record.app_id, state = state.as_str(), "the app's container is not running");
                }
                changes.push((route.clone(), port, up));
            }
            apps.push(NodeApp {
                app_id: record.app_id.clone(),
                container_id: record.container_id.clone(),
                image: record.image.clone(),
                state,
                error: None,
                job_id: Some(record.job_id.clone()),
            });
        }
        if !changes.is_empty() {
            self.routes.update(|map| {
                for (seen, port, up) in changes {
                    let app = &seen.record.app_id;
                    // Only the route this pass looked at: a deploy or a wake since knows better.
                    if let Some(old) = map.get(app).filter(|now| Arc::ptr_eq(now, &seen)) {
                        let mut record = old.record.clone();
                        record.host_port = port;
                        let route = old.carry(record, up);
                        map.insert(app.clone(), Arc::new(route));
                    }
                }
            })?;
        }
        self.sleeps.count_asleep();
        apps.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        Ok(apps)
    }
}

/// What a failed start says about its container: its last log lines.
pub(crate) async fn failure_logs(engine: &Engine, container_id: &str) -> String {
    match engine.logs_tail(container_id, FAILURE_LOG_LINES).await {
        Ok(logs) if logs.trim().is_empty() => "; the container wrote no log lines".to_owned(),
        Ok(logs) => format!("; its last log lines:\n{}", logs.trim_end()),
        Err(e) => format!(
            "; its logs could not be read: {}",
            docker::docker_message(&e)
        ),
    }
}

/// Checks a deploy request; every refusal says what is wrong.
fn validate(request: AgentDeployRequest) -> ApiResult<DeployPlan> {
    let bad = |detail: String| Err(AgentError::BadRequest(detail));
    let app_id =
        AppId::parse(&request.app_id).map_err(|e| AgentError::BadRequest(e.to_string()))?;
    let sleep = SleepPolicy::from_fields(
        request.sleep_after_secs,
        request.sleep_mode,
        request.sleep_waiting_page,
    )
    .map_err(AgentError::BadRequest)?;
    if !is_name(&request.job_id) {
        return bad(format!(
            "jobId {:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
            truncate(&request.job_id)
        ));
    }
    check_container(&ContainerInput {
        image: Some(&request.image),
        env: &[&request.env],
        container_port: request.container_port,
        health_check_path: request.health_check_path.as_deref(),
        resources: &request.resources,
        volumes: &request.volumes,
    })
    .map_err(AgentError::BadRequest)?;
    if let Some(user) = &request.user {
        check_container_user(user).map_err(AgentError::BadRequest)?;
    }
    let env = request
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let memory_bytes = request
        .resources
        .memory_mb
        .map(|mb| i64::from(mb) * 1024 * 1024);
    let nano_cpus = request.resources.cpus.map(|c| (c * 1e9).round() as i64);
    Ok(DeployPlan {
        job_id: request.job_id.clone(),
        health_check_path: request.health_check_path.clone(),
        spec: ContainerSpec {
            app_id: app_id.to_string(),
            job_id: request.job_id,
            image: request.image,
            env,
            container_port: request.container_port,
            memory_bytes,
            nano_cpus,
            volumes: request
                .volumes
                .into_iter()
                .map(|v| (v.name, v.mount_path))
                .collect(),
            read_only_rootfs: request.read_only_rootfs,
            user: request.user,
        },
        registry_auth: request.registry_auth,
        app_id,
        sleep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AgentDeployRequest {
        serde_json::from_value(serde_json::json!({
            "jobId": "0192-abc", "appId": "shop", "image": "berth-test/app:latest",
            "env": {"A": "1"}, "resources": {"memoryMb": 64, "cpus": 0.5},
            "volumes": [{"name": "data", "mountPath": "/data"}]
        }))
        .unwrap()
    }

    #[test]
    fn a_good_request_becomes_a_plan() {
        let plan = validate(request()).unwrap();
        assert_eq!(plan.spec.env, vec!["A=1".to_owned()]);
        assert_eq!(plan.spec.container_port, 8080);
        assert_eq!(plan.spec.memory_bytes, Some(64 * 1024 * 1024));
        assert_eq!(plan.spec.nano_cpus, Some(500_000_000));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        type Change = fn(&mut AgentDeployRequest);
        let cases: Vec<(Change, &str)> = vec![
            (|r| r.app_id = "Bad_App".into(), "DNS label"),
            (|r| r.image = "Nope//x".into(), "not a valid reference"),
            (|r| r.job_id = "a/b".into(), "jobId"),
            (|r| r.container_port = 0, "containerPort"),
            (
                |r| r.health_check_path = Some("health".into()),
                "healthCheckPath",
            ),
            (
                |r| {
                    r.env.insert("A=B".into(), "x".into());
                },
                "environment variable name",
            ),
            (|r| r.resources.memory_mb = Some(1), "memoryMb"),
            (|r| r.resources.cpus = Some(-1.0), "cpus"),
            (|r| r.volumes[0].mount_path = "/".into(), "mountPath"),
            (|r| r.volumes.push(r.volumes[0].clone()), "declared twice"),
            (|r| r.user = Some("0:0:0".into()), "user[:group]"),
        ];
        for (change, expected) in cases {
            let mut r = request();
            change(&mut r);
            let err = validate(r).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn debug_hides_env_values() {
        let mut r = request();
        r.env.insert("SECRET".into(), "hunter2".into());
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
