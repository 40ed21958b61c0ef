//! `berth`, the operator CLI.
//!
//! - [`dev`]: `berth dev`, every role (control plane, runner, agent and gateway) in one process
//!   on the embedded defaults, with its state and generated secrets under `./.berth/`.
//! - [`connection`]: where the CLI sends its requests — a `berth dev` running in this folder,
//!   else `BERTH_CONTROL_URL` and the secrets in the environment.
//! - [`commands`]: `deploy`, `stop`, `jobs`, `job`, `nodes`, `cordon`, `uncordon`, `drain`.
//! - [`tenants`]: `tenant create|list`, `key create|list|revoke` (the operator, on the public api).
//! - [`apps`]: `apps`, `logs`, `rollback` (a tenant's key, on the public api).
//! - [`output`]: tables for people, JSON for scripts.
#![forbid(unsafe_code)]

pub mod apps;
pub mod commands;
pub mod connection;
pub mod dev;
pub mod output;
pub mod tenants;
