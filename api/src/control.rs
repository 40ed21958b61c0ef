//! The control plane's deploy API, the only way the api acts (SPEC §6): create a job, read or
//! wait for it, read its logs and the app's last run. `X-DEPLOY-SECRET` goes on every call.

use std::time::Duration;

use axum::http::StatusCode;
use berth_shared::headers::{DEPLOY_SECRET, IDEMPOTENCY_KEY};
use berth_shared::problem::Problem;
use berth_shared::secret::Secret;
use berth_shared::wire::{AppRun, CreateJobRequest, Job};

/// How a call to the control plane failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// It answered with a 4xx; its detail is about the request, so the caller may see it.
    #[error("the control plane refused: {detail}")]
    Refused {
        /// Its status.
        status: u16,
        /// Its problem detail.
        detail: String,
    },
    /// It could not be reached, failed (5xx) or answered nonsense.
    #[error("the control plane is unavailable: {0}")]
    Unavailable(String),
}

impl UpstreamError {
    /// The status and detail the portal gets.
    pub fn answer(&self) -> (StatusCode, String) {
        match self {
            Self::Refused {
                status: 404,
                detail,
            } => (StatusCode::NOT_FOUND, detail.clone()),
            Self::Refused { detail, .. } => (
                StatusCode::BAD_GATEWAY,
                format!("the control plane refused the request: {detail}"),
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the control plane is unreachable or failing; retry later".to_owned(),
            ),
        }
    }
}

/// A client of the deploy API.
#[derive(Debug, Clone)]
pub struct Control {
    http: reqwest::Client,
    base: String,
    secret: Secret,
}

/// Longest `?wait=` the api asks of the control plane per call.
pub const UPSTREAM_WAIT_SECS: u64 = 25;

impl Control {
    /// A client of the deploy API at `base` (no trailing `/`).
    pub fn new(base: &str, secret: Secret) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            base: base.to_owned(),
            secret,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(DEPLOY_SECRET, self.secret.expose())
    }

    async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, UpstreamError> {
        let response = request
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        if status.is_client_error() {
            let detail = serde_json::from_str::<Problem>(&body)
                .map(|p| p.detail)
                .unwrap_or_else(|_| format!("status {status}"));
            return Err(UpstreamError::Refused {
                status: status.as_u16(),
                detail,
            });
        }
        Err(UpstreamError::Unavailable(format!("status {status}")))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        request: reqwest::RequestBuilder,
    ) -> Result<T, UpstreamError> {
        Self::send(request)
            .await?
            .json()
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("unreadable answer: {e}")))
    }

    /// `POST /deploy/jobs` with an `Idempotency-Key`, so a retry of this call creates no
    /// second job.
    pub async fn create_job(
        &self,
        job: &CreateJobRequest,
        idempotency_key: &str,
    ) -> Result<Job, UpstreamError> {
        let request = self
            .request(reqwest::Method::POST, "/deploy/jobs")
            .header(IDEMPOTENCY_KEY, idempotency_key)
            .timeout(Duration::from_secs(30))
            .json(job);
        Self::json(request).await
    }

    /// `GET /deploy/jobs/{id}`; with `changed_from`, it waits up to [`UPSTREAM_WAIT_SECS`] for a
    /// version other than that one.
    pub async fn job(&self, job_id: &str, changed_from: Option<i64>) -> Result<Job, UpstreamError> {
        let path = match changed_from {
            Some(v) => format!("/deploy/jobs/{job_id}?wait={UPSTREAM_WAIT_SECS}&version={v}"),
            None => format!("/deploy/jobs/{job_id}"),
        };
        let request = self
            .request(reqwest::Method::GET, &path)
            .timeout(Duration::from_secs(UPSTREAM_WAIT_SECS + 10));
        Self::json(request).await
    }

    /// `GET /deploy/jobs/{id}/logs` (text).
    pub async fn logs(&self, job_id: &str) -> Result<String, UpstreamError> {
        let request = self
            .request(reqwest::Method::GET, &format!("/deploy/jobs/{job_id}/logs"))
            .timeout(Duration::from_secs(30));
        Self::send(request)
            .await?
            .text()
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("unreadable logs: {e}")))
    }

    /// `GET /deploy/apps/{appId}`; `None` when the app never ran.
    pub async fn app_run(&self, app_id: &str) -> Result<Option<AppRun>, UpstreamError> {
        let request = self
            .request(reqwest::Method::GET, &format!("/deploy/apps/{app_id}"))
            .timeout(Duration::from_secs(10));
        match Self::json(request).await {
            Ok(run) => Ok(Some(run)),
            Err(UpstreamError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
