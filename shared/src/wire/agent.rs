//! The runtime agent's API (runner → agent, header `X-Runtime-Token`, SPEC §3).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::job::{Resources, SleepMode, VolumeSpec};

/// The container port an app listens on when the request names none.
pub const DEFAULT_CONTAINER_PORT: u16 = 8080;

fn default_container_port() -> u16 {
    DEFAULT_CONTAINER_PORT
}

/// Credentials for pulling the image from a private registry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryAuth {
    /// Registry user.
    pub username: String,
    /// Registry password or token; never printed.
    pub password: String,
    /// The registry host (`127.0.0.1:5000`); taken from the image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_address: Option<String>,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("server_address", &self.server_address)
            .finish()
    }
}

/// `POST /agent/apps/deploy`: start (or replace) an app's container.
#[derive(Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentDeployRequest {
    /// The deploy job; a repeated request with the same job id returns the first result.
    pub job_id: String,
    /// The app (a DNS label).
    pub app_id: String,
    /// The image reference to run.
    pub image: String,
    /// Environment variables (secret ones included, so their values are never printed).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The port the app listens on inside its container (8080).
    #[serde(default = "default_container_port")]
    pub container_port: u16,
    /// A path that answers 2xx once the app is ready; without it any HTTP answer counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    /// Memory and CPU limits.
    #[serde(default)]
    pub resources: Resources,
    /// Named volumes; their data survives redeploys and stops.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// Credentials for a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<RegistryAuth>,
    /// Mount the image read-only (the container gets a small writable `/tmp`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_rootfs: bool,
    /// Run as this user (`uid[:gid]`, or a name the image knows) instead of the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Seconds without a request and without an open connection before the app sleeps
    /// (SPEC §8); unset, it never sleeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_after_secs: Option<u32>,
    /// How it sleeps: `stop` (default; memory freed) or `pause` (memory kept, faster wake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_mode: Option<SleepMode>,
    /// While it wakes, a browser (`Accept: text/html`) gets a small page that reloads itself
    /// instead of a held request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_waiting_page: Option<bool>,
}

impl fmt::Debug for AgentDeployRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Env values may be secrets: show the names only.
        f.debug_struct("AgentDeployRequest")
            .field("job_id", &self.job_id)
            .field("app_id", &self.app_id)
            .field("image", &self.image)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("container_port", &self.container_port)
            .field("health_check_path", &self.health_check_path)
            .field("resources", &self.resources)
            .field("volumes", &self.volumes)
            .field("registry_auth", &self.registry_auth)
            .field("read_only_rootfs", &self.read_only_rootfs)
            .field("user", &self.user)
            .field("sleep_after_secs", &self.sleep_after_secs)
            .field("sleep_mode", &self.sleep_mode)
            .field("sleep_waiting_page", &self.sleep_waiting_page)
            .finish()
    }
}

/// What `POST /agent/apps/deploy` answers once the app is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentDeployResponse {
    /// The app.
    pub app_id: String,
    /// The container now serving it.
    pub container_id: String,
    /// The port on 127.0.0.1 its container port is published on.
    pub host_port: u16,
    /// Where end users reach it through the gateway.
    pub url: String,
    /// The container's state (`running`).
    pub state: AppState,
}

/// An app's container as its agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppState {
    /// Running.
    Running,
    /// Stopped or dead.
    Exited,
    /// Being restarted by the engine after a crash.
    Restarting,
    /// No container.
    Missing,
    /// Asleep after its idle time (SPEC §8): its container stopped or paused, its route kept;
    /// the next request wakes it.
    Sleeping,
}

impl AppState {
    /// The name shown in the API and in heartbeats.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Restarting => "restarting",
            Self::Missing => "missing",
            Self::Sleeping => "sleeping",
        }
    }
}

/// `GET /agent/apps/{appId}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentAppStatus {
    /// The app.
    pub app_id: String,
    /// Its container's state.
    pub state: AppState,
    /// Its container, when there is one.
    pub container_id: Option<String>,
    /// The image it runs.
    pub image: Option<String>,
    /// The port on 127.0.0.1 it is published on.
    pub host_port: Option<u16>,
    /// When the container last started (RFC 3339).
    pub started_at: Option<String>,
    /// How often the engine restarted it.
    pub restarts: u32,
    /// Whether it answers its readiness check now.
    pub health: Health,
    /// The deploy job that made the container.
    pub job_id: Option<String>,
    /// Why the last wake of a sleeping app failed (it stays asleep; the next request tries again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether an app answers its readiness check (its health check path, or any HTTP answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// It answered just now.
    Healthy,
    /// It runs but did not answer.
    Unhealthy,
    /// It does not run, so it was not asked.
    Unknown,
}

/// `POST /agent/apps/{appId}/stop?removeVolumes=true`: what a stop removes besides the
/// containers. Without it (and from runners older than the field) the volumes stay.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentStopQuery {
    /// Also delete the app's named volumes (`berth-{app}_{name}`, labelled `berth.app`) and
    /// their data: the app is deleted for good (`false`).
    #[serde(default)]
    pub remove_volumes: bool,
}

/// `POST /agent/apps/{appId}/stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStopResponse {
    /// The app.
    pub app_id: String,
    /// Containers removed by this call (0 when it was already stopped).
    pub removed: u32,
    /// Named volumes deleted by this call (0 unless `removeVolumes` was asked; absent from
    /// agents older than the field).
    #[serde(default)]
    pub volumes_removed: u32,
    /// Always `missing` afterwards.
    pub state: AppState,
}
