//! Handing jobs to runners: a claim that waits (long poll) until a job is claimable or the
//! wait is over, woken at once by a new job rather than by polling; claims made at the same
//! moment share one transaction ([`batch`]).

pub mod batch;

use std::time::Duration;

use berth_shared::secret::Secret;
use tokio::time::Instant;

use crate::state::AppState;
use crate::storage::{Claimed, Claimer, StoreResult};

/// Claims a job for `runner_id`, waiting up to `wait` for one.
pub async fn claim(
    state: &AppState,
    runner_id: &str,
    wait: Duration,
) -> StoreResult<Option<Claimed>> {
    let started = Instant::now();
    let deadline = started + wait;
    loop {
        // Listen before looking, so a job created while we look wakes us.
        let woken = state.wake().work();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Some(claimed) = try_claim(state, runner_id).await? {
            state.metrics().claims.inc();
            state
                .metrics()
                .claim_wait
                .observe(started.elapsed().as_secs_f64());
            state.wake().job_changed();
            return Ok(Some(claimed));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        // Jobs also become claimable with time (a retry's backoff ends, a node's TTL, another
        // replica's insert): look again at least every second.
        let recheck = (now + Duration::from_secs(1)).min(deadline);
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep_until(recheck) => {}
        }
    }
}

async fn try_claim(state: &AppState, runner_id: &str) -> StoreResult<Option<Claimed>> {
    let claimer = Claimer {
        runner_id: runner_id.to_owned(),
        lease_token: new_lease_token(),
    };
    state.claims().claim(claimer).await
}

/// A fresh fencing token: 32 lowercase hex characters.
pub fn new_lease_token() -> String {
    Secret::generate().expose()[..32].to_owned()
}

/// Whether `token` has the shape of a lease token (anything else is a 400, not a 409).
pub fn is_lease_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
