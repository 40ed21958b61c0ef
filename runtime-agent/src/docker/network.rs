//! The network apps run on: a bridge the agent makes (`berth-apps` by default) on which
//! containers cannot reach each other (`enable_icc=false`), and, with the host firewall on, not
//! the host either — a rule drops every new connection that enters the host from that bridge, so
//! an app cannot call the agent's API, the control plane or a database on the host's addresses.
//! Replies to connections the host opened (the gateway's requests through published ports)
//! still flow.

use std::collections::HashMap;

use bollard::models::{Network, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptions;
use bollard::Docker;
use tokio::process::Command;

use super::{is_not_found, LABEL_MANAGED};
use crate::error::AgentError;

/// The bridge driver's switch for traffic between containers of one network.
const ICC: &str = "com.docker.network.bridge.enable_icc";
/// The bridge driver's option naming the host interface.
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// Marks the firewall rule as Berth's, so it is found again and never duplicated.
const RULE_COMMENT: &str = "berth-apps-no-host";

/// The apps' network as the agent uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsNetwork {
    /// The network's id, which containers join (names may be ambiguous on old engines).
    pub id: String,
    /// The host's interface of the bridge.
    pub bridge: String,
}

/// Finds or makes the apps' network; refuses one of that name that lets containers talk.
///
/// Engines before API 1.44 accept two networks of one name, so agents starting together may
/// both create one: every agent then keeps the oldest and removes the others.
pub async fn ensure(docker: &Docker, name: &str) -> Result<AppsNetwork, AgentError> {
    let mut found = networks_named(docker, name).await?;
    if found.is_empty() {
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([(ICC.to_owned(), "false".to_owned())])),
            labels: Some(HashMap::from([(
                LABEL_MANAGED.to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => {}
            // Newer engines refuse a second network of one name: another agent was first.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        found = networks_named(docker, name).await?;
    }
    found.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
    let mut networks = found.into_iter();
    let Some(network) = networks.next() else {
        return Err(AgentError::DeployFailed(format!(
            "the network {name} vanished right after it was made"
        )));
    };
    for duplicate in networks.filter_map(|n| n.id) {
        match docker.remove_network(&duplicate).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, network = %duplicate, "could not remove a duplicate apps network")
            }
        }
    }
    let options = network.options.clone().unwrap_or_default();
    if options.get(ICC).map(String::as_str) != Some("false") {
        return Err(AgentError::DeployFailed(format!(
            "the Docker network {name} exists but lets its containers reach each other ({ICC} is not false); \
             remove it (`docker network rm {name}`) so the agent makes it again, or set BERTH_AGENT_NETWORK"
        )));
    }
    let id = network.id.clone().unwrap_or_default();
    let bridge = options
        .get(BRIDGE_NAME)
        .cloned()
        .unwrap_or_else(|| format!("br-{}", id.get(..12).unwrap_or(&id)));
    Ok(AppsNetwork { id, bridge })
}

async fn networks_named(docker: &Docker, name: &str) -> Result<Vec<Network>, AgentError> {
    let options = ListNetworksOptions {
        filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])),
    };
    let all = docker.list_networks(Some(options)).await?;
    // The engine's name filter matches parts of names too.
    Ok(all
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .collect())
}

/// Makes sure the host drops new connections coming in from `bridge` (iptables, `INPUT`).
pub async fn block_host(bridge: &str) -> anyhow::Result<()> {
    let rule = |action: &str| {
        let mut command = Command::new("iptables");
        command
            .args(["-w", action, "INPUT", "-i", bridge])
            .args(["-m", "conntrack", "--ctstate", "NEW"])
            .args(["-m", "comment", "--comment", RULE_COMMENT])
            .args(["-j", "REJECT"]);
        command
    };
    let present = rule("-C").output().await.map_err(|e| {
        anyhow::anyhow!("cannot run iptables ({e}); install it, or set BERTH_AGENT_HOST_FIREWALL=false and firewall the apps' bridge {bridge} yourself")
    })?;
    if present.status.success() {
        return Ok(());
    }
    let added = rule("-I").output().await?;
    anyhow::ensure!(
        added.status.success(),
        "iptables could not add the rule that keeps apps off the host ({}); the agent needs CAP_NET_ADMIN, \
         or set BERTH_AGENT_HOST_FIREWALL=false and firewall the apps' bridge {bridge} yourself",
        String::from_utf8_lossy(&added.stderr).trim()
    );
    tracing::info!(bridge, "apps cannot open connections to this host");
    Ok(())
}
