//! Building and running the agent from bound listeners, so tests run the real thing on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_shared::ids::NodeId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::{self, ApiState};
use crate::apps::Runtime;
use crate::config::Settings;
use crate::credential::Credentials;
use crate::docker::{network, Engine};
use crate::gateway::Gateway;
use crate::grants::Grants;
use crate::heartbeat::{self, Identity};
use crate::metrics::Metrics;
use crate::routes::RouteTable;
use crate::state;

/// A built agent: connected to Docker, its containers adopted, listeners bound, not yet serving.
#[derive(Debug)]
pub struct Application {
    settings: Settings,
    agent_listener: TcpListener,
    gateway_listener: TcpListener,
    agent_addr: SocketAddr,
    gateway_addr: SocketAddr,
    runtime: Arc<Runtime>,
    identity: Identity,
    /// Where heartbeats go and the node's credential (none without a control plane).
    heartbeat_target: Option<heartbeat::Target>,
    /// The grants runners must present.
    grants: Arc<Grants>,
}

impl Application {
    /// Connects to the Docker engine, reads the state folder and adopts this node's containers.
    pub async fn build(
        settings: Settings,
        agent_listener: TcpListener,
        gateway_listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let config = &settings.config;
        let node_id = state::node_id(config.node_id.as_ref(), &config.state_dir)?;
        // A node that cannot join (no kept credential, no join token) refuses to start.
        let heartbeat_target = match &settings.control {
            Some(control_url) => Some(heartbeat::Target {
                control_url: control_url.clone(),
                credentials: Credentials::load(
                    node_id.as_str(),
                    &config.state_dir,
                    config.node_join_token.clone(),
                    Duration::from_secs(config.node_credential_rotate_secs),
                )?,
            }),
            None => None,
        };
        let grants = Arc::new(Grants::load(
            node_id.as_str(),
            &config.state_dir,
            config.grant_keys.as_deref(),
        )?);
        let engine = Engine::connect(node_id.as_str(), settings.isolation()).await?;
        if config.host_firewall {
            network::block_host(&engine.network().bridge).await?;
        }
        let agent_addr = agent_listener.local_addr()?;
        let gateway_addr = gateway_listener.local_addr()?;
        let agent_url = config
            .agent_public_url
            .clone()
            .unwrap_or_else(|| local_url(agent_addr));
        let gateway_url = config
            .gateway_public_url
            .clone()
            .unwrap_or_else(|| local_url(gateway_addr));
        let routes = Arc::new(RouteTable::new(&config.state_dir));
        let runtime = Arc::new(
            Runtime::new(
                engine,
                routes,
                Arc::new(Metrics::new()),
                node_id.clone(),
                gateway_url.clone(),
                settings.ready_timeout(),
                config.stop_grace_secs,
                settings.wake_timeout(),
            )
            .context("building the readiness probes' HTTP client")?,
        );
        runtime
            .adopt()
            .instrument(tracing::info_span!("adopt", node_id = %node_id))
            .await
            .context("adopting this node's containers")?;
        let identity = Identity {
            node_id: node_id.to_string(),
            name: config
                .node_name
                .clone()
                .unwrap_or_else(|| node_id.to_string()),
            agent_base_url: agent_url.trim_end_matches('/').to_owned(),
            gateway_base_url: gateway_url.trim_end_matches('/').to_owned(),
            labels: config.node_labels.clone(),
            max_apps: config.max_apps,
            max_sleeping_apps: config.max_sleeping_apps,
        };
        Ok(Self {
            settings,
            agent_listener,
            gateway_listener,
            agent_addr,
            gateway_addr,
            runtime,
            identity,
            heartbeat_target,
            grants,
        })
    }

    /// Where the agent API listens.
    pub fn agent_addr(&self) -> SocketAddr {
        self.agent_addr
    }

    /// Where the gateway listens.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.runtime.node_id
    }

    /// The runtime (for embedding, e.g. `berth dev`).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.clone()
    }

    /// Serves the agent API, the gateway and heartbeats until `shutdown` completes, then stops
    /// taking connections and lets open ones finish. Containers keep running.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        let node_id = self.identity.node_id.clone();
        tracing::info!(
            node_id = %node_id,
            agent = %self.agent_addr,
            gateway = %self.gateway_addr,
            "berth-agent serving"
        );

        let heartbeat_target = self.heartbeat_target.take();
        if heartbeat_target.is_none() {
            tracing::warn!("no BERTH_CONTROL_URL: running alone, sending no heartbeats");
        }
        let client = heartbeat::client().context("building the heartbeat HTTP client")?;
        let heartbeats = tokio::spawn(
            heartbeat::run(
                client,
                self.runtime.clone(),
                self.identity.clone(),
                heartbeat_target,
                self.grants.clone(),
                self.settings.heartbeat_interval(),
                token.clone(),
            )
            .instrument(tracing::info_span!("heartbeat", node_id = %node_id)),
        );

        let gateway = Arc::new(Gateway::new(
            self.runtime.routes.clone(),
            &self.settings.config.base_domain,
            self.runtime.metrics.clone(),
            self.runtime.sleeps.clone(),
        ));
        let (listener, workers, stop) = (
            self.gateway_listener,
            self.settings.gateway_workers(),
            token.clone(),
        );
        let gateway = tokio::spawn(
            async move {
                let served = gateway.serve(listener, workers, stop.clone()).await;
                if served.is_err() {
                    // No gateway, no agent: stop everything and say why.
                    stop.cancel();
                }
                served
            }
            .instrument(tracing::info_span!("gateway", node_id = %node_id)),
        );

        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        let router = api::router(ApiState {
            runtime: self.runtime.clone(),
            grants: self.grants.clone(),
        });
        let served = axum::serve(self.agent_listener, router.into_make_service())
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .await;
        token.cancel();
        let _ = heartbeats.await;
        let gateway = gateway.await.context("the gateway task")?;
        served.context("serving the agent API")?;
        gateway.context("starting the gateway's worker threads")
    }
}

/// `http://addr`, with an unspecified address (0.0.0.0) replaced by loopback.
fn local_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}
