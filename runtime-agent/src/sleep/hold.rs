//! The gateway's side of a sleeping app: a request for it is held until the app is awake (its
//! wake started by the first one), at most the wake timeout, then let through with a guard that
//! counts it open. Held requests are let through in the order they arrived: they wait on one
//! shared wake, whose waiters are woken in the order they registered.

use std::sync::Arc;

use super::{ActivityGuard, Admission, Sleeps};
use crate::routes::{Route, RouteTable};

/// Why a request is not let through.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No route (never deployed, or stopped while the request waited).
    Unknown,
    /// A browser, and the app asks for the waiting page while it wakes.
    WaitingPage,
    /// The app did not wake: why, for a plain 503.
    Unavailable(String),
}

/// The app's route once it may take the request, and the guard that counts the request open
/// (none for an app that never sleeps).
pub async fn hold(
    sleeps: &Arc<Sleeps>,
    routes: &RouteTable,
    app_id: &str,
    wants_html: bool,
) -> Result<(Arc<Route>, Option<ActivityGuard>), Refusal> {
    let deadline = tokio::time::Instant::now() + sleeps.wake_timeout;
    loop {
        let route = routes.get(app_id).ok_or(Refusal::Unknown)?;
        let Some(sleeper) = route.sleep.clone() else {
            return Ok((route, None));
        };
        let (transition, waking) = match sleeper.admit(sleeps) {
            Admission::Go(guard) => return Ok((route, Some(guard))),
            Admission::Wait { transition, waking } => (transition, waking),
        };
        if wants_html && sleeper.policy.waiting_page {
            return Err(Refusal::WaitingPage);
        }
        match tokio::time::timeout_at(deadline, transition).await {
            Err(_) => {
                return Err(Refusal::Unavailable(format!(
                    "app {app_id} was asleep and did not become ready within {}s",
                    sleeps.wake_timeout.as_secs_f64()
                )))
            }
            Ok(Err(why)) if waking => {
                return Err(Refusal::Unavailable(format!(
                    "app {app_id} was asleep and could not wake: {why}"
                )))
            }
            // Awake now, asleep after a doze (the next turn wakes it), or replaced: look again.
            Ok(_) => {}
        }
    }
}
