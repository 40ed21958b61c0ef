//! `berth-agent`: parses its settings and runs the agent and gateway until Ctrl-C or SIGTERM.

use anyhow::Context;
use berth_agent::config::Config;
use berth_agent::startup::Application;
use clap::Parser;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    berth_shared::telemetry::init();
    let settings = Config::parse().validate()?;
    let agent = TcpListener::bind(settings.config.agent_addr)
        .await
        .with_context(|| format!("binding the agent API to {}", settings.config.agent_addr))?;
    let gateway = TcpListener::bind(settings.config.gateway_addr)
        .await
        .with_context(|| format!("binding the gateway to {}", settings.config.gateway_addr))?;
    let app = Application::build(settings, agent, gateway).await?;
    app.run(berth_shared::telemetry::shutdown_signal()).await
}
