//! Berth end to end, across separate processes: the real `berth-control` on PostgreSQL, two
//! `berth-agent`s as two hosts and two `berth-runner`s (see [`harness`]). Four scenarios, each
//! on a cluster of its own, one cluster at a time:
//! 1. [`spread`]: 20 apps deploy, spread over both nodes, and stay on their node when redeployed;
//! 2. [`restart`]: the control plane is killed (SIGKILL) in the middle of a batch of deploys and
//!    restarted on the same database and port: every job still ends `SUCCEEDED`;
//! 3. [`lost_host`]: one agent is killed (SIGKILL): its node is `OFFLINE` within the TTL, and a
//!    redeploy of its apps lands on the other node, which serves them;
//! 4. [`one_version`]: an agent killed while its apps move to the other node comes back, and
//!    removes its old containers: each app has exactly one container across both nodes.

mod harness;
mod lost_host;
mod one_version;
mod restart;
mod spread;
