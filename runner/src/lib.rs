//! `berth-runner`: claims deploy jobs from the control plane, builds images from git, drives the
//! runtime agents, and reports (SPEC §3). See `docs/runner.md` for how it works.
//!
//! - [`config`]: flags and environment (`BERTH_CONTROL_URL`, the token, concurrency, build settings)
//!   and the validated [`config::Settings`].
//! - [`runner`]: the loop — long-poll claims, up to `concurrency` jobs at once, graceful shutdown;
//!   [`run`] is the library entry tests use to run real runners in-process.
//! - [`job`]: one claimed job — lease heartbeats, deploy / build / stop, report.
//! - [`build`]: git clone at a commit, `docker build`, `docker push imageRepo:<sha>`.
//! - [`error`]: why a job failed and whether a retry could help.
//! - [`joblog`]: a job's log lines, batched to the control plane as they happen.
//! - [`control`], [`agent`]: clients of the runner API and the runtime agents' API.
//! - [`grants`]: the claim's agent grants, renewed with the lease.
//! - [`metrics`]: Prometheus counters and the `/metrics` endpoint (`BERTH_RUNNER_METRICS_ADDR`).
//! - [`retry`]: exponential backoff with jitter (`backon`) around every remote call; gives up at
//!   once on a 4xx.
#![forbid(unsafe_code)]

pub mod agent;
pub mod build;
pub mod config;
pub mod control;
pub mod error;
pub mod grants;
pub mod job;
pub mod joblog;
pub mod metrics;
pub mod retry;
pub mod runner;

pub use runner::run;
