//! Retries with exponential backoff and jitter (the `backon` crate) for every call to the
//! control plane, an agent or a registry, and the one error type those calls return.
//!
//! A call is retried when it failed in a way that may pass: the peer could not be reached, the
//! request timed out, or the peer answered 5xx, 408 or 429. Any other 4xx is an answer about the
//! request itself, so the call gives up at once.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;

/// How calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubles with each further one.
    pub min_delay: Duration,
    /// Longest delay between two tries.
    pub max_delay: Duration,
    /// Retries after the first try.
    pub max_times: usize,
}

impl RetryPolicy {
    /// The backoff: `min_delay × 2^n`, capped at `max_delay`, with full jitter added on top.
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_times)
            .with_jitter()
    }
}

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// The peer's status, when it answered.
    pub status: Option<StatusCode>,
    /// Whether trying again may help.
    pub transient: bool,
    /// What happened, naming the peer.
    pub message: String,
}

impl CallError {
    /// A call that got no answer (connection refused, reset, timed out).
    pub fn unreachable(what: &str, error: &reqwest::Error) -> Self {
        let why = if error.is_timeout() {
            "timed out".to_owned()
        } else if error.is_connect() {
            format!("cannot be reached ({})", root_cause(error))
        } else {
            format!("failed ({})", root_cause(error))
        };
        Self {
            status: None,
            transient: true,
            message: format!("{what} {why}"),
        }
    }

    /// A call the peer answered with a non-success status; `detail` is its problem `detail` or body.
    pub fn answered(what: &str, status: StatusCode, detail: &str) -> Self {
        let transient = status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS;
        let detail = detail.trim();
        let message = if detail.is_empty() {
            format!("{what} answered {status}")
        } else {
            format!("{what} answered {status}: {detail}")
        };
        Self {
            status: Some(status),
            transient,
            message,
        }
    }

    /// A failure of a local command talking to a registry or a git server.
    pub fn command(message: String, transient: bool) -> Self {
        Self {
            status: None,
            transient,
            message,
        }
    }

    /// Turns a non-success response into an error, reading the problem `detail` when there is one.
    pub async fn from_response(what: &str, response: reqwest::Response) -> Self {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(2000).collect());
        Self::answered(what, status, &detail)
    }

    /// Whether the peer said the lease is no longer ours (`409`) or the job is gone (`404`).
    pub fn lease_lost(&self) -> bool {
        matches!(
            self.status,
            Some(StatusCode::CONFLICT) | Some(StatusCode::NOT_FOUND)
        )
    }
}

/// The innermost cause, which names what actually went wrong ("Connection refused").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Runs `call` until it succeeds, fails for good, or the retries run out. A transient failure
/// that used up the retries says how many tries it took.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut retries = 0usize;
    let result = call
        .retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(|e: &CallError| e.transient)
        .notify(|e: &CallError, delay: Duration| {
            retries += 1;
            tracing::debug!(error = %e, ?delay, "transient failure; retrying");
        })
        .await;
    result.map_err(|mut e| {
        if e.transient && retries > 0 {
            e.message = format!("{} (gave up after {} tries)", e.message, retries + 1);
        }
        e
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_times: 3,
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_then_gives_up_saying_so() {
        let tries = AtomicUsize::new(0);
        let err = retry(&fast(), || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(CallError::answered(
                "the agent",
                StatusCode::BAD_GATEWAY,
                "engine down",
            ))
        })
        .await
        .unwrap_err();
        assert_eq!(tries.load(Ordering::SeqCst), 4);
        assert!(err.message.contains("gave up after 4 tries"), "{err}");
    }

    #[tokio::test]
    async fn gives_up_at_once_on_a_4xx() {
        let tries = AtomicUsize::new(0);
        let err = retry(&fast(), || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(CallError::answered(
                "the agent",
                StatusCode::UNPROCESSABLE_ENTITY,
                "app crashed",
            ))
        })
        .await
        .unwrap_err();
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        assert_eq!(
            err.message,
            "the agent answered 422 Unprocessable Entity: app crashed"
        );
    }

    #[tokio::test]
    async fn a_later_success_wins() {
        let tries = AtomicUsize::new(0);
        let value = retry(&fast(), || async {
            if tries.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(CallError::answered("x", StatusCode::TOO_MANY_REQUESTS, ""))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 7);
    }
}
