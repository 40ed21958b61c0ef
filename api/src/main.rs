//! `berth-api`: parses its configuration and serves until Ctrl-C or SIGTERM.

use anyhow::Context;
use berth_api::config::Config;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    berth_shared::telemetry::init();
    let config = Config::parse();
    let addr = config.addr;
    let settings = config.settings()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    berth_api::startup::serve(
        settings,
        listener,
        berth_shared::telemetry::shutdown_signal(),
    )
    .await
}
