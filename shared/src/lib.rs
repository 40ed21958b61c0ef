//! Pieces every Berth service shares.
//!
//! - [`ids`]: validated identifiers (`AppId`, `NodeId`) and the checks behind them.
//! - [`image`]: container image references, validated the way the Docker engine reads them.
//! - [`grant`]: signed, job-scoped grants that open one app on one agent (SPEC §7).
//! - [`sealed`]: secrets at rest, sealed under `BERTH_SECRET_KEY`.
//! - [`secret`]: a string that never prints, compared in constant time.
//! - [`problem`]: `application/problem+json` error bodies (RFC 9457).
//! - [`extract`]: axum extractors whose rejections are problems.
//! - [`openapi`]: routers that document every route from its extractors.
//! - [`wire`]: the JSON bodies that cross between services (SPEC §3).
//! - [`headers`]: the names of the role headers.
//! - [`telemetry`]: one way to set up `tracing` for every binary.
#![forbid(unsafe_code)]

pub mod extract;
pub mod grant;
pub mod headers;
pub mod ids;
pub mod image;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod sealed;
pub mod secret;
pub mod telemetry;
pub mod wire;
