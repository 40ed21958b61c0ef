//! berth-api's tests: its storage contract on the three databases, and HTTP tests against the
//! real api in front of the real control plane.

mod apps;
mod auth_matrix;
mod common;
mod openapi;
mod status;
mod store;
mod tenants;
