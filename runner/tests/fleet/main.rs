//! The runner against the real control plane (PostgreSQL), real runtime agents (Docker), the
//! local registry and local git repositories.

mod helpers;

mod build;
mod crash;
mod deploy;
mod failures;
mod sleep;
