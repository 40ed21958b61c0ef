//! Sleeping apps (SPEC §8): an app deployed with `sleepAfterSecs` is put to sleep after that long
//! without a request and without an open connection through the gateway, and woken by the next
//! request, which the gateway holds (with every one that follows) until the app is ready.
//!
//! Each such route carries a [`Sleeper`]: the app's phase (`awake → dozing → asleep → waking →
//! awake`), how many requests, streams and upgraded connections are open, and when the last one
//! ended. The gateway admits a request with [`Sleeper::admit`]; the idle timer ([`idle`]) is one
//! task per sleeping-capable app that sleeps until the app's own deadline, so no sweep ever walks
//! every app; [`wake`] does the engine's part of falling asleep and waking. A doze or a wake is one
//! task whose outcome every request that arrives meanwhile shares: one start however many wait.
//!
//! - Only requests count as activity while they are open (a long response until its last byte, a
//!   WebSocket until it closes); an idle keep-alive connection does not keep an app awake.
//! - The route (and its file) keep the app's policy, so a restarted agent finds a stopped or paused
//!   container of a sleeping app asleep and routed.

pub mod hold;
pub mod idle;
pub mod wake;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_shared::ids::NodeId;
use berth_shared::wire::{validate_sleep, SleepMode};
use futures::future::{BoxFuture, FutureExt, Shared};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::docker::Engine;
use crate::locks::AppLocks;
use crate::metrics::Metrics;
use crate::routes::{Route, RouteRecord, RouteTable};

/// When and how an app sleeps, as its deploy asked; kept in its route record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SleepPolicy {
    /// Idle seconds before it sleeps.
    pub after_secs: u32,
    /// Stopped or paused while asleep.
    pub mode: SleepMode,
    /// Whether a browser gets a waiting page instead of a held request while it wakes.
    #[serde(default)]
    pub waiting_page: bool,
}

impl SleepPolicy {
    /// The policy a deploy's fields ask for (`None`: the app never sleeps), or why they are wrong.
    pub fn from_fields(
        after_secs: Option<u32>,
        mode: Option<SleepMode>,
        waiting_page: Option<bool>,
    ) -> Result<Option<Self>, String> {
        validate_sleep(after_secs, mode, waiting_page)?;
        Ok(after_secs.map(|after_secs| Self {
            after_secs,
            mode: mode.unwrap_or_default(),
            waiting_page: waiting_page.unwrap_or(false),
        }))
    }

    /// The idle time.
    pub fn after(&self) -> Duration {
        Duration::from_secs(u64::from(self.after_secs))
    }
}

/// What dozes and wakes need of the agent; one per agent, shared by the gateway and the runtime.
#[derive(Debug)]
pub struct Sleeps {
    pub(crate) engine: Engine,
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) metrics: Arc<Metrics>,
    /// Wakes the heartbeat loop, so the control plane learns of a sleep or a wake at once.
    pub(crate) changed: Arc<Notify>,
    pub(crate) locks: Arc<AppLocks>,
    pub(crate) probe: reqwest::Client,
    pub(crate) node_id: NodeId,
    /// How long the gateway holds a request for a sleeping app (`BERTH_WAKE_TIMEOUT_SECS`).
    pub wake_timeout: Duration,
    pub(crate) stop_grace_secs: u32,
}

/// Where one app is between awake and asleep.
#[derive(Debug, Clone)]
enum Phase {
    Awake,
    /// Falling asleep: requests wait for it to finish, then wake the app again.
    Dozing(Transition),
    Asleep,
    /// Waking: every request waits for this one wake.
    Waking(Transition),
}

/// A doze or a wake under way: its task's outcome, shared by everyone who waits for it.
pub type Transition = Shared<BoxFuture<'static, Result<(), Arc<str>>>>;

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Requests, streams and upgraded connections open through the gateway now.
    open: usize,
    /// When the last of them ended (or the app woke).
    last_active: Instant,
    /// The idle timer waits on `idle` for `open` to reach 0.
    watching: bool,
    /// Why the last wake failed, until one succeeds.
    error: Option<Arc<str>>,
}

/// One app's sleep state, carried by its route for as long as the route names its container.
#[derive(Debug)]
pub struct Sleeper {
    /// The app.
    pub app_id: String,
    /// The container that sleeps and wakes.
    pub container_id: String,
    /// As the deploy asked.
    pub policy: SleepPolicy,
    state: Mutex<State>,
    /// Wakes the idle timer when the last open request ends or the app woke.
    idle: Arc<Notify>,
    /// Dozes and wakes run on the agent's runtime, not on a gateway worker's (the engine's
    /// connections belong to the runtime that opened them).
    handle: tokio::runtime::Handle,
    /// Ends the idle timer when the route lets go of this sleeper.
    _timer: DropGuard,
}

/// What the gateway does with a request for a sleeping-capable app.
#[derive(Debug)]
pub enum Admission {
    /// Forward it; the guard counts it open until it drops.
    Go(ActivityGuard),
    /// Wait for the transition, then ask again; `waking` tells a wake from a doze.
    Wait {
        /// The doze or wake under way.
        transition: Transition,
        /// True for a wake (whose failure is the answer), false for a doze.
        waking: bool,
    },
}

impl Sleeps {
    /// A route for `record`: with a sleeper and its idle timer when the record has a policy,
    /// `asleep` when its container is stopped or paused already (adoption after a restart).
    /// Must run inside the agent's runtime.
    pub fn route(self: &Arc<Self>, record: RouteRecord, asleep: bool) -> Route {
        let mut route = Route::new(record, true);
        if let Some(policy) = route.record.sleep {
            let token = CancellationToken::new();
            let sleeper = Arc::new(Sleeper {
                app_id: route.record.app_id.clone(),
                container_id: route.record.container_id.clone(),
                policy,
                state: Mutex::new(State {
                    phase: if asleep { Phase::Asleep } else { Phase::Awake },
                    open: 0,
                    last_active: Instant::now(),
                    watching: false,
                    error: None,
                }),
                idle: Arc::default(),
                handle: tokio::runtime::Handle::current(),
                _timer: token.clone().drop_guard(),
            });
            tokio::spawn(idle::run(
                self.clone(),
                Arc::downgrade(&sleeper),
                sleeper.idle.clone(),
                token,
            ));
            route.sleep = Some(sleeper);
        }
        route
    }

    /// Apps asleep now (the gauge), counted from the route table.
    pub(crate) fn count_asleep(&self) {
        let asleep = self
            .routes
            .snapshot()
            .values()
            .filter(|r| r.sleep.as_ref().is_some_and(|s| s.is_asleep()))
            .count();
        self.metrics.apps_sleeping.set(asleep as i64);
    }
}

impl Sleeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a request in when the app is awake; otherwise starts a wake (when none is under way)
    /// and says what to wait for.
    pub fn admit(self: &Arc<Self>, sleeps: &Arc<Sleeps>) -> Admission {
        let mut state = self.lock();
        match &state.phase {
            Phase::Awake => {
                state.open += 1;
                Admission::Go(ActivityGuard(self.clone()))
            }
            Phase::Dozing(transition) => Admission::Wait {
                transition: transition.clone(),
                waking: false,
            },
            Phase::Waking(transition) => Admission::Wait {
                transition: transition.clone(),
                waking: true,
            },
            Phase::Asleep => {
                let transition = self.spawn(wake::wake(sleeps.clone(), self.clone()));
                state.phase = Phase::Waking(transition.clone());
                Admission::Wait {
                    transition,
                    waking: true,
                }
            }
        }
    }

    /// Whether the app is asleep or waking (its container stopped or paused, or starting).
    pub fn is_asleep(&self) -> bool {
        matches!(self.lock().phase, Phase::Asleep | Phase::Waking(_))
    }

    /// The engine, asked at `listed_at`, found the container stopped or paused: asleep, when no
    /// request is open (an agent killed in the middle of a doze leaves the engine to finish the
    /// stop). False when the app serves requests or woke after `listed_at` (the listing is
    /// stale), so the caller treats the container as down.
    pub fn found_resting(&self, listed_at: Instant) -> bool {
        let mut state = self.lock();
        match state.phase {
            Phase::Awake if state.open == 0 && state.last_active < listed_at => {
                state.phase = Phase::Asleep;
                true
            }
            Phase::Awake => false,
            _ => true,
        }
    }

    /// Why the last wake failed, while no wake has succeeded since.
    pub fn error(&self) -> Option<String> {
        self.lock().error.as_deref().map(str::to_owned)
    }

    /// Runs a doze or wake as a task on the agent's runtime; dropping every waiter never
    /// cancels it.
    fn spawn(
        &self,
        task: impl std::future::Future<Output = Result<(), Arc<str>>> + Send + 'static,
    ) -> Transition {
        let handle = self.handle.spawn(task);
        async move {
            handle
                .await
                .unwrap_or_else(|e| Err(Arc::from(format!("the task ended early: {e}"))))
        }
        .boxed()
        .shared()
    }

    /// Ends a doze or wake: the new phase, and the idle timer told.
    fn settle(&self, asleep: bool, error: Option<Arc<str>>) {
        let mut state = self.lock();
        state.phase = if asleep { Phase::Asleep } else { Phase::Awake };
        state.last_active = Instant::now();
        if !asleep {
            state.error = None;
        } else if error.is_some() {
            state.error = error;
        }
        drop(state);
        self.idle.notify_one();
    }
}

impl Route {
    /// The SIGTERM-to-SIGKILL grace for removing this route's container: none while it sleeps
    /// (nothing is in flight, and a paused container could not act on SIGTERM anyway).
    pub fn stop_grace(&self, grace_secs: u32) -> u32 {
        match &self.sleep {
            Some(sleeper) if sleeper.is_asleep() => 0,
            _ => grace_secs,
        }
    }
}

/// Counts one request, stream or upgraded connection open for as long as it lives.
#[derive(Debug)]
pub struct ActivityGuard(Arc<Sleeper>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.open = state.open.saturating_sub(1);
        state.last_active = Instant::now();
        // The timer is told only when it waits for this: a busy app costs no wake-ups.
        if state.open == 0 && state.watching {
            state.watching = false;
            drop(state);
            self.0.idle.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_make_a_policy_or_say_what_is_wrong() {
        assert_eq!(SleepPolicy::from_fields(None, None, None), Ok(None));
        let policy = SleepPolicy::from_fields(Some(60), Some(SleepMode::Pause), None)
            .unwrap()
            .unwrap();
        assert_eq!(policy.after(), Duration::from_secs(60));
        assert_eq!(policy.mode, SleepMode::Pause);
        assert!(!policy.waiting_page);
        let err = SleepPolicy::from_fields(Some(0), None, None).unwrap_err();
        assert!(err.contains("sleepAfterSecs"), "{err}");
        let err = SleepPolicy::from_fields(None, Some(SleepMode::Stop), None).unwrap_err();
        assert!(err.contains("need sleepAfterSecs"), "{err}");
    }
}
