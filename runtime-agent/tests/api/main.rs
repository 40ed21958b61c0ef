//! Integration tests of the runtime agent and gateway, on the real Docker engine with images
//! the tests build themselves (`scripts/test-images/build.sh`). One binary, many tests in
//! parallel: each test runs its own agent (own node id, own state folder) and app ids.

mod helpers;

mod auth_matrix;
mod control;
mod control_plane;
mod deploy;
mod gateway;
mod isolation;
mod lifecycle;
mod registry;
mod sleep;
mod validation;
