//! Header names of SPEC §3, one per role, so no service spells them twice.

/// The deploy API's shared secret (portal or `berth-api` → control plane).
pub const DEPLOY_SECRET: &str = "x-deploy-secret";
/// The runner API's token (runner → control plane).
pub const RUNNER_TOKEN: &str = "x-runner-token";
/// The node registry's token (runtime agent → control plane).
pub const NODE_TOKEN: &str = "x-rt-node-token";
/// What a new runtime agent shows once to join the fleet (`BERTH_NODE_JOIN_TOKEN`, SPEC §7).
pub const JOIN_TOKEN: &str = "x-rt-join-token";
/// The agent grant a runner presents to a runtime agent (SPEC §7).
pub const RUNTIME_GRANT: &str = "x-runtime-grant";
/// The admin API's token (operator → control plane).
pub const ADMIN_TOKEN: &str = "x-admin-token";
/// Makes a retried `POST /deploy/jobs` return the job the first call created.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
