//! `berth`: the operator CLI. See `berth --help`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use berth_cli::commands::{self, parse_env, DeployArgs};
use berth_cli::connection::{Connection, STATE_DIR};
use berth_cli::dev::{self, DevOptions};
use clap::{Parser, Subcommand};

/// Deploy apps with Berth, and operate its nodes.
#[derive(Debug, Parser)]
#[command(name = "berth", version)]
struct Cli {
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// The control plane (default: a `berth dev` in this folder, else BERTH_CONTROL_URL).
    #[arg(long, global = true)]
    control_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every role in one process: control plane (SQLite under ./.berth), runner, agent, gateway.
    Dev {
        /// Control plane address.
        #[arg(long, env = "BERTH_CONTROL_ADDR", default_value = "127.0.0.1:7002")]
        control_addr: SocketAddr,
        /// Agent API address.
        #[arg(long, env = "BERTH_AGENT_ADDR", default_value = "127.0.0.1:7005")]
        agent_addr: SocketAddr,
        /// Gateway address.
        #[arg(long, env = "BERTH_GATEWAY_ADDR", default_value = "127.0.0.1:8088")]
        gateway_addr: SocketAddr,
        /// Apps also answer at `{appId}.{domain}`.
        #[arg(long, env = "BERTH_BASE_DOMAIN", default_value = "localhost")]
        base_domain: String,
    },
    /// Deploy an image as APP.
    Deploy {
        /// The app id (a DNS label).
        app: String,
        /// The image to run.
        #[arg(long)]
        image: String,
        /// The port the app listens on in its container (8080).
        #[arg(long)]
        port: Option<u16>,
        /// An environment variable, K=V (repeatable).
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Follow the job until it ends and print the app's URL.
        #[arg(long)]
        wait: bool,
    },
    /// Stop APP (waits until it is stopped).
    Stop {
        /// The app id.
        app: String,
        /// Return once the stop is queued.
        #[arg(long)]
        no_wait: bool,
    },
    /// List recent jobs.
    Jobs {
        /// Only this app's jobs.
        #[arg(long)]
        app: Option<String>,
        /// Only jobs in this state.
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one job.
    Job {
        /// The job id.
        id: String,
        /// Print its log instead.
        #[arg(long)]
        logs: bool,
    },
    /// List runtime nodes.
    Nodes,
    /// Give NODE no new apps.
    Cordon {
        /// The node id.
        node: String,
    },
    /// Let NODE take new apps again.
    Uncordon {
        /// The node id.
        node: String,
    },
    /// Cordon NODE and move its apps elsewhere.
    Drain {
        /// The node id.
        node: String,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = PathBuf::from(STATE_DIR);
    let as_json = cli.json;
    let command = match cli.command {
        Command::Dev {
            control_addr,
            agent_addr,
            gateway_addr,
            base_domain,
        } => {
            berth_shared::telemetry::init();
            let options = DevOptions {
                dir,
                control_addr,
                agent_addr,
                gateway_addr,
                base_domain,
            };
            return dev::run(options, berth_shared::telemetry::shutdown_signal()).await;
        }
        other => other,
    };
    let conn = Connection::discover(&dir, cli.control_url)?;
    match command {
        Command::Dev { .. } => Ok(()),
        Command::Deploy {
            app,
            image,
            port,
            env,
            wait,
        } => {
            let env: BTreeMap<String, String> = env.into_iter().collect();
            commands::deploy(
                &conn,
                DeployArgs {
                    app,
                    image,
                    port,
                    env,
                    wait,
                },
                as_json,
            )
            .await
        }
        Command::Stop { app, no_wait } => commands::stop(&conn, &app, no_wait, as_json).await,
        Command::Jobs { app, state, limit } => {
            commands::jobs(&conn, app, state, limit, as_json).await
        }
        Command::Job { id, logs } => commands::job(&conn, &id, logs, as_json).await,
        Command::Nodes => commands::nodes(&conn, as_json).await,
        Command::Cordon { node } => commands::scheduling(&conn, &node, "cordon", as_json).await,
        Command::Uncordon { node } => commands::scheduling(&conn, &node, "uncordon", as_json).await,
        Command::Drain { node } => commands::scheduling(&conn, &node, "drain", as_json).await,
    }
}
