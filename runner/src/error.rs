//! Why a job failed: the message the job's `error` shows and whether another attempt could
//! succeed. Apart from [`crate::job`] so the steps a job runs ([`crate::build`]) can fail with
//! it without depending on the job loop that calls them.

use crate::retry::CallError;

/// Why a job failed, and whether another attempt could succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// A clear message for the job's `error`.
    pub message: String,
    /// Whether the control plane should try again (a lost agent, a registry hiccup).
    pub retryable: bool,
}

impl JobError {
    /// A failure another attempt could fix.
    pub fn retryable(message: String) -> Self {
        Self {
            message,
            retryable: true,
        }
    }

    /// A failure that will happen again (a broken build, an app that crashes).
    pub fn fatal(message: String) -> Self {
        Self {
            message,
            retryable: false,
        }
    }
}

impl From<CallError> for JobError {
    fn from(e: CallError) -> Self {
        Self {
            message: e.message,
            retryable: e.transient,
        }
    }
}
