//! Plain types and the rules on them, with no I/O: tenants and quotas, key text and hashes, app
//! specs and how they merge, deployments and how a job maps onto one, the rate limit.

pub mod deployment;
pub mod keys;
pub mod quota;
pub mod ratelimit;
pub mod spec;
pub mod tenant;
