//! Deployments: one job the api asked the control plane for, as a portal sees it, and how a
//! job's snapshot maps onto one and onto the app's status.

use berth_shared::wire::{Job, JobKind, JobState};
use serde::{Deserialize, Serialize};

use crate::domain::spec::AppSpec;
use crate::storage::DeploymentRecord;

/// What a deployment does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentKind {
    /// Start (or replace) the app's container.
    Deploy,
    /// Stop the app, keeping spec and volumes.
    Stop,
    /// Stop the app and free its id (a `STOP` job upstream).
    Delete,
}

impl DeploymentKind {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "DEPLOY",
            Self::Stop => "STOP",
            Self::Delete => "DELETE",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Deploy, Self::Stop, Self::Delete]
            .into_iter()
            .find(|k| k.as_str() == value)
    }

    /// The control plane's job kind.
    pub fn job_kind(self) -> JobKind {
        match self {
            Self::Deploy => JobKind::Deploy,
            Self::Stop | Self::Delete => JobKind::Stop,
        }
    }
}

/// `GET /v1/deployments/{deploymentId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Its id (UUID).
    pub deployment_id: String,
    /// The app.
    pub app_id: String,
    /// Deploy, stop or delete.
    pub kind: DeploymentKind,
    /// Where its job is.
    pub state: JobState,
    /// The image deployed (for a build, the image it pushed, once known).
    pub image: Option<String>,
    /// Where the app answers after it.
    pub url: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Bumped by every change; `?wait=&version=` waits for it to move.
    pub version: i64,
    /// When it was asked for (RFC 3339).
    pub created_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
}

/// RFC 3339 of a time in milliseconds.
pub fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl DeploymentRecord {
    /// What a portal sees of it.
    pub fn view(&self) -> Deployment {
        Deployment {
            deployment_id: self.deployment_id.clone(),
            app_id: self.app_id.clone(),
            kind: self.kind,
            state: self.state,
            image: self.image.clone(),
            url: self.url.clone(),
            error: self.error.clone(),
            version: self.version,
            created_at: rfc3339(self.created_at),
            finished_at: self.finished_at.map(rfc3339),
        }
    }

    /// This deployment after its job changed to `job`; unchanged when `job` is older.
    pub fn observed(&self, job: &Job) -> Self {
        if job.version < self.version {
            return self.clone();
        }
        let result = job.result.as_ref();
        Self {
            job_id: Some(job.job_id.to_string()),
            state: job.state,
            image: result
                .and_then(|r| r.image.clone())
                .or_else(|| self.image.clone()),
            url: result
                .and_then(|r| r.url.clone())
                .or_else(|| self.url.clone()),
            node_id: job.node_id.clone().or_else(|| self.node_id.clone()),
            error: job.error.clone(),
            version: job.version,
            finished_at: job.finished_at.map(|t| t.timestamp_millis()),
            ..self.clone()
        }
    }
}

/// An app's state as a portal sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppState {
    /// Never deployed.
    New,
    /// A deployment, stop or delete is in flight.
    Deploying,
    /// The last deployment succeeded.
    Running,
    /// Running, but asleep until its next request (SPEC §8).
    Sleeping,
    /// The last deployment failed or was cancelled.
    Failed,
    /// Stopped.
    Stopped,
}

/// `status` of `GET /v1/apps/{appId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// Where the app is.
    pub state: AppState,
    /// Where it answers.
    pub url: Option<String>,
    /// Its node.
    pub node_id: Option<String>,
    /// The image that runs (or last ran).
    pub image: Option<String>,
    /// Its newest deployment.
    pub deployment_id: Option<String>,
    /// Why the newest deployment failed.
    pub error: Option<String>,
}

/// The app's status from its newest deployment; `sleeping` is what the control plane's app
/// run says of a running app.
pub fn app_status(latest: Option<&DeploymentRecord>, sleeping: bool) -> AppStatus {
    let Some(d) = latest else {
        return AppStatus {
            state: AppState::New,
            url: None,
            node_id: None,
            image: None,
            deployment_id: None,
            error: None,
        };
    };
    let state = match (d.state, d.kind) {
        (JobState::Pending | JobState::Running, _) => AppState::Deploying,
        (JobState::Failed | JobState::Cancelled, _) => AppState::Failed,
        (JobState::Succeeded, DeploymentKind::Deploy) if sleeping => AppState::Sleeping,
        (JobState::Succeeded, DeploymentKind::Deploy) => AppState::Running,
        (JobState::Succeeded, _) => AppState::Stopped,
    };
    AppStatus {
        state,
        url: d.url.clone(),
        node_id: d.node_id.clone(),
        image: d.image.clone(),
        deployment_id: Some(d.deployment_id.clone()),
        error: d.error.clone(),
    }
}

/// A new deployment record of `kind` for an app, not yet sent to the control plane.
pub fn new_deployment(
    tenant_id: &str,
    app_id: &str,
    kind: DeploymentKind,
    spec: &AppSpec,
    idempotency_key: Option<String>,
    now: i64,
) -> DeploymentRecord {
    DeploymentRecord {
        deployment_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant_id.to_owned(),
        app_id: app_id.to_owned(),
        kind,
        state: JobState::Pending,
        job_id: None,
        spec: spec.clone(),
        image: if kind == DeploymentKind::Deploy {
            spec.image.clone()
        } else {
            None
        },
        url: None,
        node_id: None,
        error: None,
        version: 0,
        idempotency_key,
        created_at: now,
        finished_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: DeploymentKind, state: JobState) -> DeploymentRecord {
        DeploymentRecord {
            state,
            ..new_deployment("t", "a", kind, &AppSpec::default(), None, 0)
        }
    }

    #[test]
    fn status_follows_the_newest_deployment() {
        assert_eq!(app_status(None, false).state, AppState::New);
        let cases = [
            (
                DeploymentKind::Deploy,
                JobState::Running,
                false,
                AppState::Deploying,
            ),
            (
                DeploymentKind::Deploy,
                JobState::Succeeded,
                false,
                AppState::Running,
            ),
            (
                DeploymentKind::Deploy,
                JobState::Succeeded,
                true,
                AppState::Sleeping,
            ),
            (
                DeploymentKind::Deploy,
                JobState::Failed,
                false,
                AppState::Failed,
            ),
            (
                DeploymentKind::Stop,
                JobState::Succeeded,
                false,
                AppState::Stopped,
            ),
            (
                DeploymentKind::Delete,
                JobState::Pending,
                false,
                AppState::Deploying,
            ),
        ];
        for (kind, state, sleeping, expected) in cases {
            assert_eq!(
                app_status(Some(&record(kind, state)), sleeping).state,
                expected
            );
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            DeploymentKind::Deploy,
            DeploymentKind::Stop,
            DeploymentKind::Delete,
        ] {
            assert_eq!(DeploymentKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(DeploymentKind::Delete.job_kind(), JobKind::Stop);
    }
}
