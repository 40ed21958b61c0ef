//! The idle timer: one task per sleeping-capable app, asleep itself until that app's deadline
//! (`last activity + sleepAfterSecs`) or, while requests are open or the app sleeps, until it is
//! told. A busy app never wakes its timer: at the deadline the timer finds later activity and
//! sleeps again until the new deadline.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{wake, Phase, Sleeper, Sleeps};

/// What the timer does next.
#[derive(Debug)]
enum Step {
    /// Sleep until the app's deadline.
    Until(Instant),
    /// Wait to be told: requests are open, or the app is not awake.
    Wait,
}

/// The timer of one app; ends when `gone` is cancelled (its route let go of the sleeper). It holds
/// the sleeper weakly between steps, so it never keeps a replaced route's sleeper alive.
pub(crate) async fn run(
    sleeps: Arc<Sleeps>,
    sleeper: Weak<Sleeper>,
    idle: Arc<Notify>,
    gone: CancellationToken,
) {
    loop {
        let step = match sleeper.upgrade() {
            Some(sleeper) => sleeper.step(&sleeps),
            None => return,
        };
        let wait = async {
            match step {
                Step::Until(deadline) => tokio::time::sleep_until(deadline.into()).await,
                Step::Wait => idle.notified().await,
            }
        };
        tokio::select! {
            _ = wait => {}
            _ = gone.cancelled() => return,
        }
    }
}

impl Sleeper {
    /// Decides the timer's next step; at the deadline of an idle, awake app, starts its doze.
    fn step(self: &Arc<Self>, sleeps: &Arc<Sleeps>) -> Step {
        let mut state = self.lock();
        if !matches!(state.phase, Phase::Awake) {
            return Step::Wait;
        }
        if state.open > 0 {
            state.watching = true;
            return Step::Wait;
        }
        let due = state.last_active + self.policy.after();
        if Instant::now() < due {
            return Step::Until(due);
        }
        let transition = self.spawn(wake::doze(sleeps.clone(), self.clone()));
        state.phase = Phase::Dozing(transition);
        Step::Wait
    }
}
