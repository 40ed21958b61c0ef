//! Settings: every one a flag with an environment variable of the same meaning (SPEC §1).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_shared::ids::NodeId;
use berth_shared::secret::Secret;
use clap::Parser;

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
    /// The control plane; unset, the agent runs alone and sends no heartbeats.
    #[arg(long, env = "BERTH_CONTROL_URL")]
    pub control_url: Option<String>,
    /// The token the control plane's node registry checks (`X-RT-Node-Token`); needed with a control URL.
    #[arg(long, env = "BERTH_NODE_TOKEN", hide_env_values = true)]
    pub node_token: Option<Secret>,
    /// The token runners present to this agent (`X-Runtime-Token`).
    #[arg(long, env = "BERTH_RUNTIME_TOKEN", hide_env_values = true)]
    pub runtime_token: Option<Secret>,
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
}

/// Operator labels of a node.
pub type Labels = BTreeMap<String, String>;

/// The settings after the checks `Config` alone cannot express.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Everything as given.
    pub config: Config,
    /// The runtime token, present.
    pub runtime_token: Secret,
    /// The control plane and its node token, when heartbeats are on.
    pub control: Option<(String, Secret)>,
}

impl Config {
    /// Checks the settings a service must refuse to start without.
    pub fn validate(self) -> anyhow::Result<Settings> {
        let runtime_token = match &self.runtime_token {
            Some(t) if !t.expose().is_empty() => t.clone(),
            _ => anyhow::bail!(
                "BERTH_RUNTIME_TOKEN is not set: the agent refuses to start without the token runners must present"
            ),
        };
        let control = match (&self.control_url, &self.node_token) {
            (None, _) => None,
            (Some(url), Some(token)) if !token.expose().is_empty() => {
                Some((url.trim_end_matches('/').to_owned(), token.clone()))
            }
            (Some(_), _) => anyhow::bail!(
                "BERTH_CONTROL_URL is set but BERTH_NODE_TOKEN is not: heartbeats need the node registry's token"
            ),
        };
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
            runtime_token,
            control,
        })
    }

    /// A configuration for tests and embedding: every default, the given runtime token.
    pub fn for_tests(runtime_token: &str, state_dir: PathBuf) -> Self {
        let mut config = Self::parse_from(["berth-agent"]);
        config.runtime_token = Some(Secret::new(runtime_token));
        config.state_dir = state_dir;
        config.control_url = None;
        config.node_token = None;
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

    #[test]
    fn refuses_to_start_without_tokens() {
        let mut config = Config::for_tests("t", PathBuf::from("/tmp/x"));
        config.runtime_token = None;
        let err = config.clone().validate().unwrap_err().to_string();
        assert!(err.contains("BERTH_RUNTIME_TOKEN"), "{err}");

        config.runtime_token = Some(Secret::new("t"));
        config.control_url = Some("http://127.0.0.1:7002".into());
        let err = config.clone().validate().unwrap_err().to_string();
        assert!(err.contains("BERTH_NODE_TOKEN"), "{err}");

        config.node_token = Some(Secret::new("n"));
        assert!(config.validate().unwrap().control.is_some());
    }

    #[test]
    fn gateway_workers_default_to_one_per_core() {
        let config = Config::for_tests("t", PathBuf::from("/tmp/x"));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.clone().validate().unwrap().gateway_workers(), cores);
        let mut three = config;
        three.gateway_workers = 3;
        assert_eq!(three.validate().unwrap().gateway_workers(), 3);
    }
}
