//! JSON bodies that cross between Berth services (SPEC §3), in camelCase.
//!
//! Requests reject unknown fields so a typo in a portal is an error, not a silent default.

pub mod agent;
pub mod container;
pub mod job;
pub mod node;
pub mod runner;

pub use container::{check_container, is_env_name, ContainerInput};
pub use job::*;
pub use node::*;
pub use runner::*;
