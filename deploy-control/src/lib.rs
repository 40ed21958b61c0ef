//! `deploy-control`, the Berth control plane: it records deploy jobs, hands them to runners,
//! keeps the registry of runtime nodes and places each app on a node.
//!
//! - [`config`]: flags and environment variables, validated into [`config::Settings`].
//! - [`startup`]: [`startup::Application`] builds the service on a bound listener.
//! - [`routes`]: thin HTTP handlers, one module per API, registered through
//!   `berth_shared::openapi` so `GET /openapi.json` is generated from them; [`auth`] guards
//!   them, [`error`] maps every failure to `application/problem+json`.
//! - [`service`]: the operations the handlers call (create, cancel, claim, report, drain, …):
//!   they check input, call the store, ring the wake-ups and return domain errors.
//! - [`queue`]: the job queue's domain — records, the state machine, retries, placement, events.
//! - [`storage`]: the [`storage::Store`] trait and one module per database.
//! - [`dispatch`]: claim batches and lease tokens.
//! - [`events`]: the outbox relay to RabbitMQ and wake-ups across replicas (SPEC §4);
//!   [`wake`]: wake-ups inside the process; [`background`]: the lease reaper and node watcher;
//!   [`retention`]: finished jobs and their logs deleted after `BERTH_JOB_RETENTION_SECS`;
//!   [`watch`]: how long the control plane has watched, so its own start or a database outage
//!   expires no lease, marks no node `OFFLINE` and moves no app;
//!   [`metrics`]: Prometheus counters and gauges; [`state`]: what handlers share.
#![forbid(unsafe_code)]

pub mod auth;
pub mod background;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod metrics;
pub mod queue;
pub mod retention;
pub mod routes;
pub mod service;
pub mod startup;
pub mod state;
pub mod storage;
pub mod wake;
pub mod watch;
