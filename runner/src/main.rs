//! `berth-runner`: parses its configuration and runs the library until SIGTERM or Ctrl-C.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    berth_shared::telemetry::init();
    let settings = berth_runner::config::Config::parse().settings()?;
    berth_runner::run(settings, berth_shared::telemetry::shutdown_signal()).await
}
