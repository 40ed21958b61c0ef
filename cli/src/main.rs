//! `berth`: the operator CLI. See `berth --help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use berth_cli::apps;
use berth_cli::commands::{self, DeployArgs};
use berth_cli::connection::{Connection, STATE_DIR};
use berth_cli::dev::{self, DevOptions};
use berth_cli::tenants::{self, TenantArgs};
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
    /// The public api (default: BERTH_API_URL, else the one `berth dev` serves).
    #[arg(long, global = true)]
    api_url: Option<String>,
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
        /// The public api's address.
        #[arg(long, env = "BERTH_API_ADDR", default_value = "127.0.0.1:7000")]
        api_addr: SocketAddr,
        /// Apps also answer at `{appId}.{domain}`.
        #[arg(long, env = "BERTH_BASE_DOMAIN", default_value = "localhost")]
        base_domain: String,
    },
    /// Deploy APP: a ready image (--image), or a build from git (--repo … --image-repo).
    Deploy(DeployArgs),
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
    /// Tenants of the public api (operator, X-Admin-Token).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// API keys of a tenant (operator, X-Admin-Token).
    #[command(subcommand)]
    Key(KeyCommand),
    /// The apps of BERTH_API_KEY's tenant.
    Apps,
    /// The log of APP's latest deployment (BERTH_API_KEY).
    Logs {
        /// The app id.
        app: String,
        /// This deployment's log instead.
        #[arg(long)]
        deployment: Option<String>,
    },
    /// Deploy an earlier deployment of APP again: its image (no rebuild) and spec (BERTH_API_KEY).
    Rollback {
        /// The app id.
        app: String,
        /// The deployment to go back to (default: the last success before the current one).
        deployment: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant with its quotas.
    Create(TenantArgs),
    /// List tenants.
    List,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a key for TENANT; it is printed this once only.
    Create {
        /// The tenant id.
        tenant: String,
        /// What the key is for.
        #[arg(long)]
        name: String,
    },
    /// List TENANT's keys (never their values).
    List {
        /// The tenant id.
        tenant: String,
    },
    /// Revoke a key: refused from the next request on.
    Revoke {
        /// The tenant id.
        tenant: String,
        /// The key's id (`berth key list`).
        key_id: String,
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
            api_addr,
            base_domain,
        } => {
            berth_shared::telemetry::init();
            let options = DevOptions {
                dir,
                control_addr,
                agent_addr,
                gateway_addr,
                api_addr,
                base_domain,
            };
            return dev::run(options, berth_shared::telemetry::shutdown_signal()).await;
        }
        other => other,
    };
    let conn = Connection::discover(&dir, cli.control_url, cli.api_url)?;
    match command {
        Command::Dev { .. } => Ok(()),
        Command::Deploy(args) => commands::deploy(&conn, args, as_json).await,
        Command::Stop { app, no_wait } => commands::stop(&conn, &app, no_wait, as_json).await,
        Command::Jobs { app, state, limit } => {
            commands::jobs(&conn, app, state, limit, as_json).await
        }
        Command::Job { id, logs } => commands::job(&conn, &id, logs, as_json).await,
        Command::Nodes => commands::nodes(&conn, as_json).await,
        Command::Cordon { node } => commands::scheduling(&conn, &node, "cordon", as_json).await,
        Command::Uncordon { node } => commands::scheduling(&conn, &node, "uncordon", as_json).await,
        Command::Drain { node } => commands::scheduling(&conn, &node, "drain", as_json).await,
        Command::Tenant(TenantCommand::Create(args)) => {
            tenants::create_tenant(&conn, &args, as_json).await
        }
        Command::Tenant(TenantCommand::List) => tenants::list_tenants(&conn, as_json).await,
        Command::Key(KeyCommand::Create { tenant, name }) => {
            tenants::create_key(&conn, &tenant, &name, as_json).await
        }
        Command::Key(KeyCommand::List { tenant }) => {
            tenants::list_keys(&conn, &tenant, as_json).await
        }
        Command::Key(KeyCommand::Revoke { tenant, key_id }) => {
            tenants::revoke_key(&conn, &tenant, &key_id, as_json).await
        }
        Command::Apps => apps::list_apps(&conn, as_json).await,
        Command::Logs { app, deployment } => apps::logs(&conn, &app, deployment).await,
        Command::Rollback { app, deployment } => {
            apps::rollback(&conn, &app, deployment, as_json).await
        }
    }
}
