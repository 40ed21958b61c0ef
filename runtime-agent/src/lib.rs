//! `berth-agent`: the runtime agent and the gateway of one Berth host (SPEC §3).
//!
//! Runners ask the agent to deploy or stop apps; the agent runs each app in a container through
//! the local Docker engine and the gateway routes end users to it.
//!
//! - [`config`]: flags and environment variables; refuses to start with weak or bad settings.
//! - [`startup`]: [`startup::Application`] builds the agent from bound listeners and runs it
//!   until a shutdown future completes (tests run it on port 0).
//! - [`api`]: the agent API (`/agent/apps/…`, grant-checked), `/internal/health`, `/metrics`.
//! - [`grants`]: which runner may act on which app: job-scoped grants signed by the control plane.
//! - [`apps`]: what the API does: deploy (zero-downtime replace), stop, status, logs, adoption.
//! - [`locks`]: one lock per app, so deploys, stops, sleeps and wakes of an app take turns.
//! - [`sleep`]: sleeping apps: the idle timers, falling asleep, waking on the first request.
//! - [`deployed`]: the jobs deployed per app, so a stale request for a replaced job is refused.
//! - [`docker`]: the Docker engine calls, through bollard, scoped to this node's label.
//! - [`readiness`]: when a new container may take traffic.
//! - [`routes`]: the route table the gateway reads, persisted in the state folder.
//! - [`gateway`]: the reverse proxy (hyper / hyper-util), by path and by host, with upgrades.
//! - [`heartbeat`]: announcing the node and its apps to the control plane.
//! - [`credential`]: the node's own credential: joined for once, kept in the state folder, rotated.
//! - [`state`]: the node id kept in the state folder, and private files written whole.
//! - [`metrics`]: Prometheus counters.
//! - [`error`]: the one API error type and its problem+json mapping.
#![forbid(unsafe_code)]

pub mod api;
pub mod apps;
pub mod config;
pub mod credential;
pub mod deployed;
pub mod docker;
pub mod error;
pub mod gateway;
pub mod grants;
pub mod heartbeat;
pub mod locks;
pub mod metrics;
pub mod readiness;
pub mod routes;
pub mod sleep;
pub mod startup;
pub mod state;
