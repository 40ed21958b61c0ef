//! `deploy-control`, the Berth control plane.
//!
//! - [`queue`]: the job queue's domain — records, the state machine, retries, placement, events.
//! - [`storage`]: the [`storage::Store`] trait and one module per database.
#![forbid(unsafe_code)]

pub mod queue;
pub mod storage;
