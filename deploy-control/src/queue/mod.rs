//! The deploy job queue's domain: records, the state machine, retries, placement and events.
//!
//! Everything here is plain data and plain functions. Storage modules load rows, call these
//! functions to decide what changes, and write the result in one transaction, so the rules
//! live in one place whatever the database.

pub mod attempt;
pub mod credential;
pub mod displaced;
pub mod events;
pub mod fleet;
pub mod machine;
pub mod placement;
pub mod record;
pub mod retry;

pub use record::*;
