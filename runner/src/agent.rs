//! The runtime agent's API (SPEC §3, `X-Runtime-Token`): deploy and stop, retried by
//! [`crate::retry`]. Deploys are safe to repeat: the agent answers a job id it already ran with
//! that run's result instead of starting a second container.

use std::time::Duration;

use berth_shared::headers::RUNTIME_TOKEN;
use berth_shared::secret::Secret;
use berth_shared::wire::agent::{AgentDeployRequest, AgentDeployResponse, AgentStopResponse};
use berth_shared::wire::NodeRef;

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
    token: Secret,
    retry: RetryPolicy,
}

fn what(node: &NodeRef) -> String {
    format!(
        "the runtime agent of node {} at {}",
        node.node_id, node.agent_base_url
    )
}

impl AgentClient {
    /// A client presenting `token`.
    pub fn new(http: reqwest::Client, token: Secret, retry: RetryPolicy) -> Self {
        Self { http, token, retry }
    }

    /// Deploys on `node` and waits until the app is ready.
    pub async fn deploy(
        &self,
        node: &NodeRef,
        request: &AgentDeployRequest,
    ) -> Result<AgentDeployResponse, CallError> {
        let what = what(node);
        let url = format!(
            "{}/agent/apps/deploy",
            node.agent_base_url.trim_end_matches('/')
        );
        retry(&self.retry, || async {
            let response = self
                .http
                .post(&url)
                .header(RUNTIME_TOKEN, self.token.expose())
                .timeout(DEPLOY_TIMEOUT)
                .json(request)
                .send()
                .await
                .map_err(|e| CallError::unreachable(&what, &e))?;
            if !response.status().is_success() {
                return Err(CallError::from_response(&what, response).await);
            }
            response
                .json()
                .await
                .map_err(|e| CallError::unreachable(&what, &e))
        })
        .await
    }

    /// Stops the app on `node` (idempotent: stopping a stopped app succeeds).
    pub async fn stop(&self, node: &NodeRef, app_id: &str) -> Result<AgentStopResponse, CallError> {
        let what = what(node);
        let url = format!(
            "{}/agent/apps/{app_id}/stop",
            node.agent_base_url.trim_end_matches('/')
        );
        retry(&self.retry, || async {
            let response = self
                .http
                .post(&url)
                .header(RUNTIME_TOKEN, self.token.expose())
                .timeout(STOP_TIMEOUT)
                .send()
                .await
                .map_err(|e| CallError::unreachable(&what, &e))?;
            if !response.status().is_success() {
                return Err(CallError::from_response(&what, response).await);
            }
            response
                .json()
                .await
                .map_err(|e| CallError::unreachable(&what, &e))
        })
        .await
    }
}
