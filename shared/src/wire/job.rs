//! Deploy jobs: what a portal asks for and what it reads back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::agent::DEFAULT_CONTAINER_PORT;
use super::container::{check_container, ContainerInput};
use crate::ids::{truncate, AppId};
use crate::image::validate_repository_ref;

/// What a job does to its app.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobKind {
    /// Start (or replace) the app's container.
    #[default]
    Deploy,
    /// Stop and remove the app's container, keeping its volumes (unless the job asks
    /// `removeVolumes`).
    Stop,
}

impl JobKind {
    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "DEPLOY",
            Self::Stop => "STOP",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "DEPLOY" => Some(Self::Deploy),
            "STOP" => Some(Self::Stop),
            _ => None,
        }
    }
}

/// How a sleeping app's container rests (SPEC §8).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SleepMode {
    /// The container is stopped: its memory is freed, a wake starts it again (a cold start).
    #[default]
    Stop,
    /// The container is frozen (cgroup freezer): its memory is kept, a wake thaws it at once.
    Pause,
}

/// Longest `sleepAfterSecs`: 30 days.
pub const MAX_SLEEP_AFTER_SECS: u32 = 30 * 24 * 3600;

/// Checks the sleep fields of a job or a deploy (SPEC §8): `sleepAfterSecs` between 1 and
/// [`MAX_SLEEP_AFTER_SECS`], `sleepMode` and `sleepWaitingPage` only beside it.
pub fn validate_sleep(
    after_secs: Option<u32>,
    mode: Option<SleepMode>,
    waiting_page: Option<bool>,
) -> Result<(), String> {
    match after_secs {
        Some(secs) if !(1..=MAX_SLEEP_AFTER_SECS).contains(&secs) => Err(format!(
            "sleepAfterSecs must be between 1 and {MAX_SLEEP_AFTER_SECS}"
        )),
        None if mode.is_some() || waiting_page.is_some() => Err(
            "sleepMode and sleepWaitingPage need sleepAfterSecs (without it the app never sleeps)"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// Where a job is in its life (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Waiting for a runner (and a node).
    Pending,
    /// Claimed by a runner holding a live lease.
    Running,
    /// Done; the app runs (or, for `STOP`, is gone).
    Succeeded,
    /// Gave up; `error` says why.
    Failed,
    /// Cancelled while it was still pending.
    Cancelled,
}

impl JobState {
    /// Every state, in the order metrics list them.
    pub const ALL: [JobState; 5] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses a stored or query-string name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether the job can change no more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Memory and CPU an app asks for; it reserves them on its node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Memory limit in MiB.
    pub memory_mb: Option<u32>,
    /// CPU limit in cores (`0.5` is half a core).
    pub cpus: Option<f64>,
}

impl Resources {
    /// Memory asked, in MiB (0 when none).
    pub fn memory_mb(&self) -> i64 {
        self.memory_mb.map_or(0, i64::from)
    }

    /// CPU asked, in thousandths of a core (0 when none).
    pub fn cpu_millis(&self) -> i64 {
        self.cpus.map_or(0, |c| (c * 1000.0).round() as i64)
    }
}

/// A named volume mounted into the app's container; its data survives redeploys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeSpec {
    /// The volume's name within the app (a DNS label).
    pub name: String,
    /// Absolute path inside the container.
    pub mount_path: String,
}

/// `POST /deploy/jobs`: a deploy of a ready image, a build from git, or a stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateJobRequest {
    /// The app this job acts on.
    pub app_id: String,
    /// `DEPLOY` (default) or `STOP`.
    #[serde(default)]
    pub kind: JobKind,
    /// A ready image to deploy (phase 1).
    pub image: Option<String>,
    /// A git repository to build from (phase 2).
    pub repo_url: Option<String>,
    /// The commit, branch or tag to build (default: the repository's default branch).
    pub commit: Option<String>,
    /// Path of the Dockerfile within the build context (`Dockerfile`).
    pub dockerfile_path: Option<String>,
    /// Folder of the repository used as the build context (`.`).
    pub build_context: Option<String>,
    /// Repository the built image is pushed to, tagged with the commit sha.
    pub image_repo: Option<String>,
    /// Environment variables for the container.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Like `env`, but the values are never returned or logged.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// The port the app listens on inside its container (8080).
    pub container_port: Option<u16>,
    /// A path that answers 2xx once the app is ready.
    pub health_check_path: Option<String>,
    /// Memory and CPU the app reserves.
    pub resources: Option<Resources>,
    /// Named volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// A small string map the caller owns (a tenant, a user); filterable with `label=k:v`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Run the container with a read-only root file system (a small writable `/tmp` is added).
    #[serde(default)]
    pub read_only_rootfs: bool,
    /// Run the container as this user (`uid[:gid]`, or a name the image knows).
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
    /// `STOP` only: also delete the app's named volumes and their data (an app deleted for
    /// good); a stop without it keeps them for the next deploy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_volumes: bool,
}

/// The validated, stored form of a job's request, without its secret values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPayload {
    /// A ready image to deploy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Build source, when the job builds its image first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSpec>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of the secret environment variables (their values are kept apart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env_names: Vec<String>,
    /// Container port (8080 when the request gave none).
    pub container_port: u16,
    /// Readiness path, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    /// Reserved resources.
    #[serde(default)]
    pub resources: Resources,
    /// Named volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// Caller-owned labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Read-only root file system.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_rootfs: bool,
    /// The user the container runs as.
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
    /// `STOP` only: the app's named volumes are deleted too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_volumes: bool,
}

/// Where a build job gets its source and where it pushes the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildSpec {
    /// `http(s)://`, `git://` or `file://` URL of the repository.
    pub repo_url: String,
    /// Commit, branch or tag; `None` builds the default branch.
    pub commit: Option<String>,
    /// Dockerfile path within the context.
    pub dockerfile_path: String,
    /// Build context folder within the repository.
    pub build_context: String,
    /// Repository to push to (`registry/team/app`), tagged with the commit sha.
    pub image_repo: String,
}

/// A request that passed validation: what the control plane stores.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob {
    /// The app.
    pub app_id: AppId,
    /// Deploy or stop.
    pub kind: JobKind,
    /// Everything but secret values.
    pub payload: JobPayload,
    /// Secret environment values, kept apart from the payload.
    pub secret_env: BTreeMap<String, String>,
}

/// Bounds on what a request may carry, the same in the control plane and the agent, so a job
/// the control plane accepts never fails at deploy for its size (docs/control-plane.md).
pub mod limits {
    /// Bytes in a request body, in every Berth service.
    pub const MAX_BODY: usize = 1024 * 1024;
    /// Environment variables (plain and secret together).
    pub const MAX_ENV: usize = 128;
    /// Characters in an environment variable's name.
    pub const MAX_ENV_NAME: usize = 128;
    /// Bytes in one environment value.
    pub const MAX_ENV_VALUE: usize = 32 * 1024;
    /// Bytes of every environment name and value together: with them, the agent's deploy
    /// request (which carries them all, plus registry credentials) stays within [`MAX_BODY`].
    pub const MAX_ENV_BYTES: usize = 512 * 1024;
    /// Smallest memory limit, MiB (the Docker engine's minimum).
    pub const MIN_MEMORY_MB: u32 = 6;
    /// Largest memory limit, MiB (1 TiB).
    pub const MAX_MEMORY_MB: u32 = 1_048_576;
    /// Smallest CPU limit, cores.
    pub const MIN_CPUS: f64 = 0.01;
    /// Largest CPU limit, cores.
    pub const MAX_CPUS: f64 = 512.0;
    /// Labels on a job.
    pub const MAX_LABELS: usize = 16;
    /// Characters in a label key or value.
    pub const MAX_LABEL_LEN: usize = 63;
    /// Volumes on an app.
    pub const MAX_VOLUMES: usize = 16;
    /// Characters in a path or URL.
    pub const MAX_PATH: usize = 1024;
    /// Seconds a long poll (`wait`) may last.
    pub const MAX_WAIT_SECS: u64 = 60;
}

impl CreateJobRequest {
    /// Checks every field and returns the stored form, or a message naming the first problem.
    pub fn validate(self) -> Result<ValidJob, String> {
        let app_id = AppId::parse(&self.app_id).map_err(|e| e.0)?;
        let build = self.build_spec()?;
        match (self.kind, &self.image, &build) {
            (JobKind::Deploy, Some(_), Some(_)) => {
                return Err("give either image (deploy a ready image) or repoUrl and imageRepo (build), not both".into())
            }
            (JobKind::Deploy, None, None) => {
                return Err("a DEPLOY job needs image, or repoUrl and imageRepo to build one".into())
            }
            (JobKind::Stop, Some(_), _) | (JobKind::Stop, _, Some(_)) => {
                return Err("a STOP job takes only appId (and labels, removeVolumes)".into())
            }
            (JobKind::Deploy, _, _) if self.remove_volumes => {
                return Err("removeVolumes is for a STOP job (a deploy keeps the app's volumes)".into())
            }
            _ => {}
        }
        if let Some(name) = self.env.keys().find(|k| self.secret_env.contains_key(*k)) {
            return Err(format!(
                "{:?} is both in env and in secretEnv",
                truncate(name)
            ));
        }
        let resources = self.resources.unwrap_or_default();
        check_container(&ContainerInput {
            image: self.image.as_deref(),
            env: &[&self.env, &self.secret_env],
            container_port: self.container_port.unwrap_or(DEFAULT_CONTAINER_PORT),
            health_check_path: self.health_check_path.as_deref(),
            resources: &resources,
            volumes: &self.volumes,
        })?;
        validate_labels(&self.labels)?;
        if let Some(user) = &self.user {
            check_container_user(user)?;
        }
        validate_sleep(
            self.sleep_after_secs,
            self.sleep_mode,
            self.sleep_waiting_page,
        )?;
        let payload = JobPayload {
            image: self.image,
            build,
            env: self.env,
            secret_env_names: self.secret_env.keys().cloned().collect(),
            container_port: self.container_port.unwrap_or(DEFAULT_CONTAINER_PORT),
            health_check_path: self.health_check_path,
            resources,
            volumes: self.volumes,
            labels: self.labels,
            read_only_rootfs: self.read_only_rootfs,
            user: self.user,
            sleep_after_secs: self.sleep_after_secs,
            sleep_mode: self.sleep_mode,
            sleep_waiting_page: self.sleep_waiting_page,
            remove_volumes: self.remove_volumes,
        };
        Ok(ValidJob {
            app_id,
            kind: self.kind,
            payload,
            secret_env: self.secret_env,
        })
    }

    fn build_spec(&self) -> Result<Option<BuildSpec>, String> {
        let any_build_field = self.repo_url.is_some()
            || self.commit.is_some()
            || self.dockerfile_path.is_some()
            || self.build_context.is_some()
            || self.image_repo.is_some();
        if !any_build_field {
            return Ok(None);
        }
        let (Some(repo_url), Some(image_repo)) = (&self.repo_url, &self.image_repo) else {
            return Err("a build job needs both repoUrl and imageRepo".into());
        };
        let scheme_ok = ["http://", "https://", "git://", "file://"]
            .iter()
            .any(|s| repo_url.starts_with(s));
        if !scheme_ok
            || repo_url.len() > limits::MAX_PATH
            || repo_url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "repoUrl {:?} must be an http(s)://, git:// or file:// URL without spaces",
                truncate(repo_url)
            ));
        }
        validate_repository_ref(image_repo).map_err(|e| format!("imageRepo: {e}"))?;
        if let Some(commit) = &self.commit {
            let ok = !commit.is_empty()
                && commit.len() <= 255
                && !commit.starts_with('-')
                && commit
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
            if !ok {
                return Err(
                    "commit must be a sha, branch or tag name (A-Z, a-z, 0-9, '.', '_', '-', '/')"
                        .into(),
                );
            }
        }
        let dockerfile_path = self
            .dockerfile_path
            .clone()
            .unwrap_or_else(|| "Dockerfile".into());
        let build_context = self.build_context.clone().unwrap_or_else(|| ".".into());
        for (name, path) in [
            ("dockerfilePath", &dockerfile_path),
            ("buildContext", &build_context),
        ] {
            if !is_relative_path(path) {
                return Err(format!(
                    "{name} must be a relative path inside the repository, without '..'"
                ));
            }
        }
        Ok(Some(BuildSpec {
            repo_url: repo_url.clone(),
            commit: self.commit.clone(),
            dockerfile_path,
            build_context,
            image_repo: image_repo.clone(),
        }))
    }
}

fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= limits::MAX_PATH
        && !path.starts_with('/')
        && !path.chars().any(char::is_control)
        && path.split('/').all(|part| part != "..")
}

/// Checks a container user: `user[:group]`, each a uid/gid or a name of 1 to 32 characters of
/// `a-z A-Z 0-9 _ . -` (not starting with `-`), as Docker's `--user` takes it.
pub fn check_container_user(user: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && !p.starts_with('-')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    let mut parts = user.split(':');
    let ok = parts.next().is_some_and(part_ok)
        && parts.next().is_none_or(part_ok)
        && parts.next().is_none();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user {:?} must be user[:group], each a number or a name of up to 32 characters of A-Z, a-z, 0-9, '_', '.' and '-'",
            truncate(user)
        ))
    }
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > limits::MAX_LABELS {
        return Err(format!("at most {} labels", limits::MAX_LABELS));
    }
    for (k, v) in labels {
        if !is_label_part(k) || !(v.is_empty() || is_label_part(v)) {
            return Err(format!(
                "label {:?}: keys and values are up to {} characters of A-Z, a-z, 0-9, '.', '_', '-' and '/'",
                truncate(k),
                limits::MAX_LABEL_LEN
            ));
        }
    }
    Ok(())
}

/// Whether `value` may be a label key or value.
pub fn is_label_part(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= limits::MAX_LABEL_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
}

/// What a runner reports a successful deploy produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobResult {
    /// The container now serving the app.
    pub container_id: Option<String>,
    /// Where end users reach the app.
    pub url: Option<String>,
    /// The image that runs (for a build, the pushed tag: what a rollback deploys again).
    pub image: Option<String>,
}

/// A job as the deploy API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// UUID v7.
    pub job_id: Uuid,
    /// The app.
    pub app_id: String,
    /// Deploy or stop.
    pub kind: JobKind,
    /// Where the job is.
    pub state: JobState,
    /// What was asked, without secret values.
    pub payload: JobPayload,
    /// Claims so far (1 on the first claim).
    pub attempt: i32,
    /// Claims allowed before the job fails.
    pub max_attempts: i32,
    /// The node the app was placed on.
    pub node_id: Option<String>,
    /// The runner holding (or that last held) the job.
    pub runner_id: Option<String>,
    /// Why a pending job is not running yet.
    pub waiting_reason: Option<String>,
    /// Why the job failed (or the last attempt's error).
    pub error: Option<String>,
    /// What a successful job produced.
    pub result: Option<JobResult>,
    /// Bumped by every change; `?wait=&version=` waits for it to move.
    pub version: i64,
    /// Not claimable before this time (retry backoff).
    pub run_after: DateTime<Utc>,
    /// When the job was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When its current attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
}

/// `GET /deploy/jobs`: a page of jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    /// The jobs.
    pub items: Vec<Job>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// How one attempt of a job ended (`GET /admin/jobs/{jobId}/timeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AttemptOutcome {
    /// The runner reported success.
    Succeeded,
    /// The runner reported a failure, and the job failed for good.
    Failed,
    /// The runner reported a retryable failure: the job went back to `PENDING`.
    Retry,
    /// The lease ran out before the runner reported.
    Expired,
    /// The job was cancelled while this attempt ran.
    Cancelled,
}

impl AttemptOutcome {
    /// Every outcome.
    pub const ALL: [AttemptOutcome; 5] = [
        Self::Succeeded,
        Self::Failed,
        Self::Retry,
        Self::Expired,
        Self::Cancelled,
    ];

    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Retry => "RETRY",
            Self::Expired => "EXPIRED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// One claim of a job in its timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobAttempt {
    /// 1 for the first claim.
    pub attempt: i32,
    /// The runner that claimed the job.
    pub runner_id: String,
    /// The node it ran for (absent for a stop of an app never placed).
    pub node_id: Option<String>,
    /// When it was claimed.
    pub claimed_at: DateTime<Utc>,
    /// When it ended; absent while it runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended; absent while it runs.
    pub outcome: Option<AttemptOutcome>,
    /// Why it failed, was retried or expired.
    pub error: Option<String>,
}

/// `GET /admin/jobs/{jobId}/timeline`: a job's life — created, each claim with its runner and
/// node and how it ended, finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobTimeline {
    /// The job.
    pub job_id: Uuid,
    /// Its app.
    pub app_id: String,
    /// Where the job is now.
    pub state: JobState,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its claims, first first.
    pub attempts: Vec<JobAttempt>,
}

/// Where an app is, as its last job left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppRunState {
    /// A deploy job is running.
    Deploying,
    /// The last deploy succeeded and the app answers (or was woken again).
    Running,
    /// The last deploy succeeded and the app is asleep (SPEC §8): its agent stopped or paused its
    /// container after its idle time and keeps its route; the next request wakes it.
    Sleeping,
    /// A stop job is running.
    Stopping,
    /// The last stop succeeded.
    Stopped,
    /// The last job failed.
    Failed,
}

impl AppRunState {
    /// Every state.
    pub const ALL: [AppRunState; 6] = [
        Self::Deploying,
        Self::Running,
        Self::Sleeping,
        Self::Stopping,
        Self::Stopped,
        Self::Failed,
    ];

    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploying => "DEPLOYING",
            Self::Running => "RUNNING",
            Self::Sleeping => "SLEEPING",
            Self::Stopping => "STOPPING",
            Self::Stopped => "STOPPED",
            Self::Failed => "FAILED",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// `GET /deploy/apps/{appId}`: the last known run of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppRun {
    /// The app.
    pub app_id: String,
    /// The last job that acted on it.
    pub last_job_id: Uuid,
    /// Where the app is.
    pub state: AppRunState,
    /// The image that runs (or last ran).
    pub image: Option<String>,
    /// Its node.
    pub node_id: Option<String>,
    /// Where end users reach it.
    pub url: Option<String>,
    /// The last job's error, when it failed.
    pub error: Option<String>,
    /// When this record last changed.
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_job() -> CreateJobRequest {
        CreateJobRequest {
            app_id: "demo".into(),
            image: Some("127.0.0.1:5000/demo:v1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_image_deploy_is_valid() {
        let job = image_job().validate().unwrap();
        assert_eq!(job.payload.container_port, 8080);
        assert_eq!(job.kind, JobKind::Deploy);
    }

    #[test]
    fn secrets_are_kept_apart() {
        let mut req = image_job();
        req.secret_env.insert("TOKEN".into(), "s3cret".into());
        let job = req.validate().unwrap();
        let shown = serde_json::to_string(&job.payload).unwrap();
        assert!(shown.contains("TOKEN") && !shown.contains("s3cret"));
        assert_eq!(job.secret_env["TOKEN"], "s3cret");
    }

    #[test]
    fn build_jobs_need_repo_and_target() {
        let req = CreateJobRequest {
            app_id: "demo".into(),
            repo_url: Some("file:///tmp/repo".into()),
            image_repo: Some("127.0.0.1:5000/demo".into()),
            ..Default::default()
        };
        let build = req.validate().unwrap().payload.build.unwrap();
        assert_eq!(build.dockerfile_path, "Dockerfile");
        let bad = CreateJobRequest {
            app_id: "demo".into(),
            repo_url: Some("ssh://host/repo".into()),
            image_repo: Some("127.0.0.1:5000/demo".into()),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("repoUrl"));
    }

    #[test]
    fn bad_inputs_say_what_is_wrong() {
        let cases: Vec<(CreateJobRequest, &str)> = vec![
            (
                CreateJobRequest {
                    app_id: "Bad".into(),
                    ..image_job()
                },
                "DNS label",
            ),
            (
                CreateJobRequest {
                    image: Some("Bad Image".into()),
                    ..image_job()
                },
                "not a valid reference",
            ),
            (
                CreateJobRequest {
                    image: None,
                    ..image_job()
                },
                "needs image",
            ),
            (
                CreateJobRequest {
                    container_port: Some(0),
                    ..image_job()
                },
                "containerPort",
            ),
            (
                CreateJobRequest {
                    health_check_path: Some("health".into()),
                    ..image_job()
                },
                "healthCheckPath",
            ),
            (
                CreateJobRequest {
                    env: [("1X".to_string(), "v".to_string())].into(),
                    ..image_job()
                },
                "environment variable name",
            ),
            (
                CreateJobRequest {
                    resources: Some(Resources {
                        memory_mb: Some(1),
                        cpus: None,
                    }),
                    ..image_job()
                },
                "memoryMb",
            ),
            (
                CreateJobRequest {
                    volumes: vec![VolumeSpec {
                        name: "data".into(),
                        mount_path: "/".into(),
                    }],
                    ..image_job()
                },
                "mountPath",
            ),
            (
                CreateJobRequest {
                    kind: JobKind::Stop,
                    ..image_job()
                },
                "STOP",
            ),
            (
                CreateJobRequest {
                    remove_volumes: true,
                    ..image_job()
                },
                "removeVolumes is for a STOP job",
            ),
        ];
        for (req, expected) in cases {
            let err = req.validate().unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn a_stop_may_remove_the_volumes_and_the_stored_job_says_so() {
        let stop = CreateJobRequest {
            app_id: "demo".into(),
            kind: JobKind::Stop,
            remove_volumes: true,
            ..Default::default()
        };
        let job = stop.validate().unwrap();
        assert!(job.payload.remove_volumes);
        let stored = serde_json::to_string(&job.payload).unwrap();
        assert!(stored.contains(r#""removeVolumes":true"#), "{stored}");
        let plain = serde_json::to_string(&image_job().validate().unwrap().payload).unwrap();
        assert!(
            !plain.contains("removeVolumes"),
            "absent when false: {plain}"
        );
        let read: JobPayload = serde_json::from_str(r#"{"containerPort":8080}"#).unwrap();
        assert!(
            !read.remove_volumes,
            "payloads stored before the field keep their volumes"
        );
    }

    /// Found by the `env` fuzz target: the name was echoed whole (a 1 MiB body, a 1 MiB message).
    #[test]
    fn a_name_in_env_and_secret_env_is_echoed_cut_short() {
        let name = "\u{3}".repeat(2000);
        let mut req = image_job();
        req.env.insert(name.clone(), "a".into());
        req.secret_env.insert(name, "b".into());
        let err = req.validate().unwrap_err();
        assert!(err.contains("both in env and in secretEnv"), "{err}");
        assert!(
            err.chars().count() < 1100,
            "{} characters",
            err.chars().count()
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            serde_json::from_str::<CreateJobRequest>(r#"{"appId":"a","image":"x","imgae":"y"}"#)
                .unwrap_err();
        assert!(err.to_string().contains("imgae"));
    }
}
