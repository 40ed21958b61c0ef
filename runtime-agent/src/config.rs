//! Settings: every one a flag with an environment variable of the same meaning (SPEC §1).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_shared::ids::NodeId;
use berth_shared::secret::{check_role_secrets, Secret};
use clap::Parser;

use crate::docker::Isolation;

/// `berth-agent`: runs app containers through the local Docker engine and routes traffic to them.
#[derive(Debug, Clone, Parser)]
#[command(name = "berth-agent", version, about)]
pub struct Config {
    /// Where the agent API listens (runners call it).
    #[arg(long, env = "BERTH_AGENT_ADDR", default_value = "0.0.0.0:7005")]
    pub agent_addr: SocketAddr,
    /// Where the gateway listens (end users call it).
    #[arg(long, env = "BERTH_GATEWAY_ADDR", default_value = "0.0.0.0:8088")]
    pub gateway_addr: SocketAddr,
    /// The agent's URL as runners reach it, announced in heartbeats (default: from the bound address).
    #[arg(long, env = "BERTH_AGENT_PUBLIC_URL")]
    pub agent_public_url: Option<String>,
    /// The gateway's URL as end users reach it, announced in heartbeats and used in app URLs.
    #[arg(long, env = "BERTH_GATEWAY_PUBLIC_URL")]
    pub gateway_public_url: Option<String>,
    /// Gateway worker threads, each with its own event loop (0: one per core).
    #[arg(long, env = "BERTH_GATEWAY_WORKERS", default_value_t = 0)]
    pub gateway_workers: usize,
    /// Apps also answer at `{appId}.{domain}` on the gateway.
    #[arg(long, env = "BERTH_BASE_DOMAIN", default_value = "localhost")]
    pub base_domain: String,
    /// A stable id for this host; when unset, one is generated once and kept in the state folder.
    #[arg(long, env = "BERTH_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<NodeId>,
    /// A human name for this host (default: the node id).
    #[arg(long, env = "BERTH_NODE_NAME")]
    pub node_name: Option<String>,
    /// Operator labels, `k=v,k=v`.
    #[arg(long, env = "BERTH_NODE_LABELS", default_value = "", value_parser = parse_labels)]
    pub node_labels: Labels,
    /// How many apps this host may hold, announced in heartbeats.
    #[arg(long, env = "BERTH_NODE_MAX_APPS", default_value_t = 50)]
    pub max_apps: u32,
    /// How many sleeping apps this host may hold beyond `BERTH_NODE_MAX_APPS`, announced in
    /// heartbeats: up to this many sleeping apps (SPEC §8) free their slot of `maxApps`, so the
    /// control plane fills the host with idle apps. A stopped container costs disk and a route,
    /// not memory.
    #[arg(long, env = "BERTH_NODE_MAX_SLEEPING_APPS", default_value_t = 1000)]
    pub max_sleeping_apps: u32,
    /// The control plane; unset, the agent runs alone and sends no heartbeats.
    #[arg(long, env = "BERTH_CONTROL_URL")]
    pub control_url: Option<String>,
    /// The token this agent shows once, as `X-RT-Join-Token`, to join the control plane and get
    /// its own credential (kept in the state folder, SPEC §7); needed with a control URL until
    /// the node has joined.
    #[arg(long, env = "BERTH_NODE_JOIN_TOKEN", hide_env_values = true)]
    pub node_join_token: Option<Secret>,
    /// The agent asks for a new credential when its own is older than this (seconds); the old
    /// one stays good until the new one is used, so a rotation never interrupts heartbeats.
    #[arg(
        long,
        env = "BERTH_NODE_CREDENTIAL_ROTATE_SECS",
        default_value_t = 604_800
    )]
    pub node_credential_rotate_secs: u64,
    /// Pins the public keys grants must be signed with (comma-separated base64 Ed25519 keys,
    /// as the control plane's join and heartbeat answers give them); unset, the agent takes the
    /// keys its control plane answers with and keeps them in its state folder.
    #[arg(long, env = "BERTH_GRANT_KEYS", value_delimiter = ',')]
    pub grant_keys: Option<Vec<String>>,
    /// Where the agent keeps its node id and route table across restarts.
    #[arg(long, env = "BERTH_AGENT_STATE_DIR", default_value = ".berth/agent")]
    pub state_dir: PathBuf,
    /// How long a deploy waits for the app to become ready.
    #[arg(long, env = "BERTH_AGENT_READY_TIMEOUT_SECS", default_value_t = 60.0)]
    pub ready_timeout_secs: f64,
    /// How long a stopped container gets between SIGTERM and SIGKILL.
    #[arg(long, env = "BERTH_AGENT_STOP_GRACE_SECS", default_value_t = 10)]
    pub stop_grace_secs: u32,
    /// How long the gateway holds a request for a sleeping app while it wakes (SPEC §8).
    #[arg(long, env = "BERTH_WAKE_TIMEOUT_SECS", default_value_t = 30.0)]
    pub wake_timeout_secs: f64,
    /// Seconds between heartbeats.
    #[arg(long, env = "BERTH_AGENT_HEARTBEAT_SECS", default_value_t = 3.0)]
    pub heartbeat_secs: f64,
    /// The Docker network apps run on; the agent makes it with containers unable to reach each
    /// other, and refuses a network of that name that lets them.
    #[arg(long, env = "BERTH_AGENT_NETWORK", default_value = "berth-apps")]
    pub network: String,
    /// Drop every new connection from the apps' network to this host (an iptables rule), so apps
    /// cannot reach the agent, the control plane or anything else listening on the host.
    #[arg(long, env = "BERTH_AGENT_HOST_FIREWALL", default_value_t = true, action = clap::ArgAction::Set)]
    pub host_firewall: bool,
    /// Memory limit (MiB) of an app whose job asks none; 0 for none.
    #[arg(long, env = "BERTH_AGENT_DEFAULT_MEMORY_MB", default_value_t = 512)]
    pub default_memory_mb: u32,
    /// CPU limit (cores) of an app whose job asks none; 0 for none.
    #[arg(long, env = "BERTH_AGENT_DEFAULT_CPUS", default_value_t = 1.0)]
    pub default_cpus: f64,
    /// Most processes one app container may run; 0 for no limit.
    #[arg(long, env = "BERTH_AGENT_PIDS_LIMIT", default_value_t = 512)]
    pub pids_limit: u32,
    /// Size at which an app's log file is rotated (Docker's `max-size`: `10m`, `512k`).
    #[arg(long, env = "BERTH_AGENT_LOG_MAX_SIZE", default_value = "10m")]
    pub log_max_size: String,
    /// Rotated log files kept per app container.
    #[arg(long, env = "BERTH_AGENT_LOG_MAX_FILES", default_value_t = 3)]
    pub log_max_files: u32,
}

/// Operator labels of a node.
pub type Labels = BTreeMap<String, String>;

/// The settings after the checks `Config` alone cannot express.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Everything as given.
    pub config: Config,
    /// The control plane's URL, when heartbeats are on.
    pub control: Option<String>,
}

impl Config {
    /// Checks the settings a service must refuse to start without.
    pub fn validate(self) -> anyhow::Result<Settings> {
        if let Some(keys) = &self.grant_keys {
            berth_shared::grant::GrantVerifier::from_public_keys(keys)
                .map_err(|e| anyhow::anyhow!("BERTH_GRANT_KEYS: {e}"))?;
        }
        // Whether a node without a kept credential may join is checked at start-up, where the
        // state folder is read (`credential::Credentials::load`).
        let control = self
            .control_url
            .as_ref()
            .map(|url| url.trim_end_matches('/').to_owned());
        if let Some(join_token) = &self.node_join_token {
            check_role_secrets(&[("BERTH_NODE_JOIN_TOKEN", join_token)])?;
        }
        let size_ok = self.log_max_size.len() > 1
            && self.log_max_size[..self.log_max_size.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_digit())
            && self.log_max_size.ends_with(['k', 'm', 'g']);
        anyhow::ensure!(
            size_ok && self.log_max_files >= 1,
            "BERTH_AGENT_LOG_MAX_SIZE must be a size like 10m (k, m or g) and BERTH_AGENT_LOG_MAX_FILES at least 1"
        );
        anyhow::ensure!(
            self.default_cpus.is_finite() && self.default_cpus >= 0.0,
            "BERTH_AGENT_DEFAULT_CPUS must be 0 (no limit) or more"
        );
        anyhow::ensure!(
            self.default_memory_mb == 0 || self.default_memory_mb >= 6,
            "BERTH_AGENT_DEFAULT_MEMORY_MB must be 0 (no limit) or at least 6 (the engine's minimum)"
        );
        if !(self.ready_timeout_secs > 0.0
            && self.heartbeat_secs > 0.0
            && self.wake_timeout_secs > 0.0)
        {
            anyhow::bail!(
                "the ready timeout, the wake timeout and the heartbeat interval must be positive"
            );
        }
        if self.base_domain.is_empty() {
            anyhow::bail!("BERTH_BASE_DOMAIN must not be empty");
        }
        Ok(Settings {
            config: self,
            control,
        })
    }

    /// A configuration for tests and embedding: every default, state in `state_dir`.
    pub fn for_tests(state_dir: PathBuf) -> Self {
        let mut config = Self::parse_from(["berth-agent"]);
        config.state_dir = state_dir;
        config.control_url = None;
        config.node_join_token = None;
        config.node_id = None;
        config
    }
}

impl Settings {
    /// How long a deploy waits for readiness.
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.config.ready_timeout_secs)
    }

    /// How long the gateway holds a request for a sleeping app.
    pub fn wake_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.config.wake_timeout_secs)
    }

    /// Gateway worker threads: as configured, else one per core.
    pub fn gateway_workers(&self) -> usize {
        match self.config.gateway_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// How app containers are fenced in.
    pub fn isolation(&self) -> Isolation {
        let config = &self.config;
        Isolation {
            network: config.network.clone(),
            default_memory_bytes: (config.default_memory_mb > 0)
                .then(|| i64::from(config.default_memory_mb) * 1024 * 1024),
            default_nano_cpus: (config.default_cpus > 0.0)
                .then(|| (config.default_cpus * 1e9).round() as i64),
            pids_limit: (config.pids_limit > 0).then(|| i64::from(config.pids_limit)),
            log_max_size: config.log_max_size.clone(),
            log_max_files: config.log_max_files,
        }
    }

    /// Time between heartbeats.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.config.heartbeat_secs)
    }
}

fn parse_node_id(value: &str) -> Result<NodeId, String> {
    NodeId::parse(value).map_err(|e| e.to_string())
}

/// Parses `k=v,k=v` (empty gives no labels).
pub fn parse_labels(value: &str) -> Result<Labels, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(format!("label {pair:?} is not k=v")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse() {
        let labels = parse_labels("zone=a, disk=ssd").unwrap();
        assert_eq!(labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(labels.len(), 2);
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels("novalue").is_err());
    }

    const NODE: &str = "node-join-token-0123456789";

    #[test]
    fn a_control_url_is_trimmed_and_grant_keys_must_be_keys() {
        let mut config = Config::for_tests(PathBuf::from("/tmp/x"));
        config.control_url = Some("http://127.0.0.1:7002/".into());
        config.node_join_token = Some(Secret::new(NODE));
        let control = config.clone().validate().unwrap().control;
        assert_eq!(control.as_deref(), Some("http://127.0.0.1:7002"));

        config.grant_keys = Some(vec!["not-a-key".into()]);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("BERTH_GRANT_KEYS"), "{err}");
    }

    #[test]
    fn role_secrets_must_be_long() {
        let mut config = Config::for_tests(PathBuf::from("/tmp/x"));
        config.control_url = Some("http://127.0.0.1:7002".into());
        config.node_join_token = Some(Secret::new("short"));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("BERTH_NODE_JOIN_TOKEN is too short"), "{err}");
    }

    #[test]
    fn isolation_defaults_apply_and_zero_turns_a_limit_off() {
        let config = Config::for_tests(PathBuf::from("/tmp/x"));
        let isolation = config.clone().validate().unwrap().isolation();
        assert_eq!(isolation.network, "berth-apps");
        assert_eq!(isolation.default_memory_bytes, Some(512 * 1024 * 1024));
        assert_eq!(isolation.default_nano_cpus, Some(1_000_000_000));
        assert_eq!(isolation.pids_limit, Some(512));
        assert_eq!(
            (isolation.log_max_size.as_str(), isolation.log_max_files),
            ("10m", 3)
        );
        let mut off = config.clone();
        (off.default_memory_mb, off.default_cpus, off.pids_limit) = (0, 0.0, 0);
        let isolation = off.validate().unwrap().isolation();
        assert_eq!(
            (
                isolation.default_memory_bytes,
                isolation.default_nano_cpus,
                isolation.pids_limit
            ),
            (None, None, None)
        );
        let mut bad = config;
        bad.log_max_size = "ten".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("BERTH_AGENT_LOG_MAX_SIZE"));
    }

    #[test]
    fn gateway_workers_default_to_one_per_core() {
        let config = Config::for_tests(PathBuf::from("/tmp/x"));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.clone().validate().unwrap().gateway_workers(), cores);
        let mut three = config;
        three.gateway_workers = 3;
        assert_eq!(three.validate().unwrap().gateway_workers(), 3);
    }
}
