//! `berth-control`: parse the configuration, run the control plane until Ctrl-C or SIGTERM.

use anyhow::Context;
use berth_control::config::Config;
use berth_control::startup::Application;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    berth_shared::telemetry::init();
    let config = Config::parse();
    let addr = config.addr;
    let events = config.event_settings()?;
    let settings = config.settings()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let app = Application::build_with_events(settings, events, listener)
        .await
        .context("opening the database")?;
    app.run(berth_shared::telemetry::shutdown_signal()).await
}
