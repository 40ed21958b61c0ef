//! `berth-api`, the public api for portals (SPEC §6): tenants and their keys and quotas, apps
//! as desired state, deployments with history, per-user instances from templates. It keeps
//! its own `api_*` tables and acts on the fleet only through the control plane's deploy API.
//!
//! - [`config`]: flags and environment variables, validated into [`config::Settings`].
//! - [`startup`]: [`startup::Application`] builds the service on a bound listener; [`startup::serve`].
//! - [`routes`]: thin handlers and the guards in front of them (admin token; key, rate
//!   limit and usage log); [`extract`] and [`error`] turn every refusal into problem+json.
//! - [`service`]: the rules that need I/O — quotas, the tenant's lock, calls upstream.
//! - [`domain`]: plain types and rules — quotas, key hashes, spec merge, rate limit.
//! - [`storage`]: the api's tables on PostgreSQL, MariaDB or SQLite.
//! - [`control`]: the deploy API client; [`follow`]: one upstream long poll per deployment in
//!   flight, shared by all its watchers; [`auth`]: key checks and their cache.
//! - [`metrics`]: Prometheus; [`openapi`]: `GET /openapi.json`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod control;
pub mod domain;
pub mod error;
pub mod extract;
pub mod follow;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod service;
pub mod startup;
pub mod storage;
