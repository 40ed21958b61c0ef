//! The runtime agent's API (SPEC §3; each call carries the claim's grant for that node as
//! `X-Runtime-Grant`, SPEC §7): deploy and stop, retried by [`crate::retry`]. Deploys are safe to repeat: the agent answers a job id it already ran with
//! that run's result instead of starting a second container.

use std::time::Duration;

use berth_shared::headers::RUNTIME_GRANT;
use berth_shared::wire::agent::{AgentDeployRequest, AgentDeployResponse, AgentStopResponse};
use berth_shared::wire::NodeRef;
use prometheus_client::metrics::counter::Counter;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::grants::JobGrants;
use crate::retry::{retry, CallError, RetryPolicy};

/// A deploy waits for the app to be ready (the agent's own limit is 60 s by default), so its
/// call may take long; anything beyond this is a lost agent.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);
/// A stop waits for the container's grace period.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// A client of every agent, sharing one connection pool.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    retry: RetryPolicy,
    /// Bumped by every failed attempt (`berth_runner_call_errors_total{target="agent"}`).
    errors: Counter,
}

fn what(node: &NodeRef) -> String {
    format!(
        "the runtime agent of node {} at {}",
        node.node_id, node.agent_base_url
    )
}

impl AgentClient {
    /// A client that counts each failed attempt in `errors`.
    pub fn new(http: reqwest::Client, retry: RetryPolicy, errors: Counter) -> Self {
        Self {
            http,
            retry,
            errors,
        }
    }

    /// Deploys on `node` with the job's grant for it and waits until the app is ready.
    pub async fn deploy(
        &self,
        node: &NodeRef,
        grants: &JobGrants,
        request: &AgentDeployRequest,
    ) -> Result<AgentDeployResponse, CallError> {
        self.post(
            node,
            grants,
            "/agent/apps/deploy",
            Some(request),
            DEPLOY_TIMEOUT,
        )
        .await
    }

    /// Stops the app on `node` (idempotent: stopping a stopped app succeeds); with
    /// `remove_volumes` its named volumes are deleted too.
    pub async fn stop(
        &self,
        node: &NodeRef,
        grants: &JobGrants,
        app_id: &str,
        remove_volumes: bool,
    ) -> Result<AgentStopResponse, CallError> {
        let query = if remove_volumes {
            "?removeVolumes=true"
        } else {
            ""
        };
        self.post(
            node,
            grants,
            &format!("/agent/apps/{app_id}/stop{query}"),
            None::<&()>,
            STOP_TIMEOUT,
        )
        .await
    }

    /// `POST {agent}{path}` with retries, each with the job's latest grant for `node` (a
    /// heartbeat may have renewed it since the last try); the JSON answer.
    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        node: &NodeRef,
        grants: &JobGrants,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let what = what(node);
        let url = format!("{}{path}", node.agent_base_url.trim_end_matches('/'));
        retry(&self.retry, || async {
            let grant = grants.for_node(node);
            self.attempt(&what, &url, &grant, body, timeout)
                .await
                .inspect_err(|_| {
                    self.errors.inc();
                })
        })
        .await
    }

    /// One try of [`AgentClient::post`].
    async fn attempt<B: Serialize, T: DeserializeOwned>(
        &self,
        what: &str,
        url: &str,
        grant: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let mut request = self
            .http
            .post(url)
            .header(RUNTIME_GRANT, grant)
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| CallError::unreachable(what, &e))?;
        if !response.status().is_success() {
            return Err(CallError::from_response(what, response).await);
        }
        response
            .json()
            .await
            .map_err(|e| CallError::unreachable(what, &e))
    }
}
