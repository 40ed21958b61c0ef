//! Configuration: every setting is a flag with an environment variable of the same meaning
//! (SPEC §1). `--help` shows these doc comments.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use berth_shared::sealed::SealingKeys;
use berth_shared::secret::{check_role_secrets, Secret};

use crate::queue::retry::RetryPolicy;

// The flags' defaults, which `Settings::with_defaults` shares.
const DEFAULT_JOB_LEASE_SECS: u64 = 30;
const DEFAULT_JOB_MAX_ATTEMPTS: u16 = 3;
const DEFAULT_JOB_BACKOFF_SECS: u64 = 5;
const DEFAULT_JOB_BACKOFF_MAX_SECS: u64 = 300;
const DEFAULT_NODE_TTL_SECS: u64 = 15;
const DEFAULT_NODE_LOST_SECS: u64 = 30;
const DEFAULT_JOB_RETENTION_SECS: u64 = 2_592_000;
/// How often the lease reaper and the node watcher run (not a flag).
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Well-known role secrets, the ones [`Settings::for_tests`] checks. They are public: only
/// tests and benches use them, never a control plane anyone else can reach.
pub mod test_secrets {
    /// `X-DEPLOY-SECRET`.
    pub const DEPLOY_SECRET: &str = "deploy-secret-for-tests";
    /// `X-Runner-Token`.
    pub const RUNNER_TOKEN: &str = "runner-token-for-tests";
    /// `X-RT-Join-Token`.
    pub const NODE_JOIN_TOKEN: &str = "node-join-token-for-tests";
    /// `X-Admin-Token`.
    pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
}

/// `berth-control` flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "berth-control",
    version,
    about = "The Berth control plane: deploy jobs, node registry, placement."
)]
pub struct Config {
    /// `postgres://…`, `mysql://…` or `sqlite://…` (an SQLite file; `?mode=rwc` creates it).
    #[arg(
        long,
        env = "BERTH_DATABASE_URL",
        default_value = "sqlite://.berth/berth.db?mode=rwc"
    )]
    pub database_url: String,
    /// Address to listen on.
    #[arg(long, env = "BERTH_CONTROL_ADDR", default_value = "0.0.0.0:7002")]
    pub addr: SocketAddr,
    /// Secret portals and `berth-api` send as `X-DEPLOY-SECRET`.
    #[arg(long, env = "BERTH_DEPLOY_SECRET", hide_env_values = true)]
    pub deploy_secret: Option<Secret>,
    /// Token runners send as `X-Runner-Token`.
    #[arg(long, env = "BERTH_RUNNER_TOKEN", hide_env_values = true)]
    pub runner_token: Option<Secret>,
    /// Token a new runtime agent shows once, as `X-RT-Join-Token`, to join and get a
    /// credential of its own (SPEC §7).
    #[arg(long, env = "BERTH_NODE_JOIN_TOKEN", hide_env_values = true)]
    pub node_join_token: Option<Secret>,
    /// Token operators send as `X-Admin-Token`.
    #[arg(long, env = "BERTH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// The key that seals `secretEnv` in the database: 32 random bytes in base64
    /// (`openssl rand -base64 32`). Several, comma-separated, rotate it: the first seals, all open.
    #[arg(long, env = "BERTH_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<Secret>,
    /// Seconds a claim's lease lasts unless the runner renews it.
    #[arg(long, env = "BERTH_JOB_LEASE_SECS", default_value_t = DEFAULT_JOB_LEASE_SECS)]
    pub job_lease_secs: u64,
    /// Claims a job gets before it fails.
    #[arg(long, env = "BERTH_JOB_MAX_ATTEMPTS", default_value_t = DEFAULT_JOB_MAX_ATTEMPTS)]
    pub job_max_attempts: u16,
    /// Delay before the second attempt; doubles with each further attempt.
    #[arg(long, env = "BERTH_JOB_BACKOFF_SECS", default_value_t = DEFAULT_JOB_BACKOFF_SECS)]
    pub job_backoff_secs: u64,
    /// Longest delay between attempts.
    #[arg(long, env = "BERTH_JOB_BACKOFF_MAX_SECS", default_value_t = DEFAULT_JOB_BACKOFF_MAX_SECS)]
    pub job_backoff_max_secs: u64,
    /// A node is `OFFLINE` when its last heartbeat is older than this.
    #[arg(long, env = "BERTH_NODE_TTL_SECS", default_value_t = DEFAULT_NODE_TTL_SECS)]
    pub node_ttl_secs: u64,
    /// A node silent this long is lost (SPEC §8): a `STOP` of an app placed there fails with
    /// the reason instead of blocking the app's later jobs. Judged only from what the control
    /// plane watched itself (never within this long of its start or a database outage).
    #[arg(long, env = "BERTH_NODE_LOST_SECS", default_value_t = DEFAULT_NODE_LOST_SECS)]
    pub node_lost_secs: u64,
    /// RabbitMQ (`amqp://user:pass@host:5672/vhost`): the outbox relay publishes events to the
    /// exchange `berth.events` and replicas wake each other through it. Unset: events stay
    /// in-process (replicas on PostgreSQL wake each other with `LISTEN/NOTIFY`).
    #[arg(long, env = "BERTH_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<Secret>,
    /// Seconds outbox events are kept after they were published (or, without a broker, after
    /// they were written).
    #[arg(long, env = "BERTH_OUTBOX_RETENTION_SECS", default_value_t = 86_400)]
    pub outbox_retention_secs: u64,
    /// Seconds finished jobs and their logs are kept after they finished (30 days); 0 keeps them
    /// for ever. Each app's last run and last successful deploy are kept whatever their age.
    #[arg(long, env = "BERTH_JOB_RETENTION_SECS", default_value_t = DEFAULT_JOB_RETENTION_SECS)]
    pub job_retention_secs: u64,
}

/// Settings of the events of SPEC §4: the relay to RabbitMQ and the outbox's retention. Apart
/// from [`Settings`] so embedders that build `Settings` by hand keep compiling; the default is
/// in-process events.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// RabbitMQ's URL (it may hold a password); `None` keeps events in-process.
    pub amqp_url: Option<Secret>,
    /// How long published events stay in `outbox_event`.
    pub outbox_retention: Duration,
    /// Most events the relay publishes per batch (one transaction, one wait for confirms).
    pub relay_batch: u32,
    /// How often the relay looks for events it was not told about (written by a replica whose
    /// relay is down, or left by a failed pass).
    pub relay_poll: Duration,
    /// How long the relay waits for the broker's confirms before it gives up on a batch.
    pub confirm_timeout: Duration,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            amqp_url: None,
            outbox_retention: Duration::from_secs(86_400),
            relay_batch: 200,
            relay_poll: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(10),
        }
    }
}

/// The role secrets the control plane checks; it refuses to start without all four, or with
/// one shorter than 16 characters or equal to another.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// `X-DEPLOY-SECRET`.
    pub deploy: Secret,
    /// `X-Runner-Token`.
    pub runner: Secret,
    /// `X-RT-Join-Token`: joins a new node (each node then has its own credential).
    pub node_join: Secret,
    /// `X-Admin-Token`.
    pub admin: Secret,
    /// `BERTH_SECRET_KEY`: seals jobs' `secretEnv` at rest.
    pub secret_key: Arc<SealingKeys>,
}

/// Validated settings the library runs on: from the flags ([`Config::settings`]), or built
/// directly — `berth dev` starts from [`Settings::with_defaults`], tests and benches from
/// [`Settings::for_tests`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the database is.
    pub database_url: String,
    /// Role secrets.
    pub secrets: Secrets,
    /// Lease length.
    pub lease: Duration,
    /// Retry rules.
    pub retry: RetryPolicy,
    /// Node heartbeat TTL.
    pub node_ttl: Duration,
    /// How long a node may be silent before it is lost.
    pub node_lost: Duration,
    /// How often the lease reaper and the node watcher run.
    pub sweep_interval: Duration,
    /// How long finished jobs and their logs are kept; `None` keeps them for ever.
    pub job_retention: Option<Duration>,
}

impl Config {
    /// The event settings of these flags.
    pub fn event_settings(&self) -> anyhow::Result<EventSettings> {
        if let Some(url) = &self.amqp_url {
            let url = url.expose();
            anyhow::ensure!(
                url.starts_with("amqp://") || url.starts_with("amqps://"),
                "BERTH_AMQP_URL must start with amqp:// or amqps://"
            );
        }
        anyhow::ensure!(
            self.outbox_retention_secs >= 1,
            "BERTH_OUTBOX_RETENTION_SECS must be at least 1"
        );
        Ok(EventSettings {
            amqp_url: self.amqp_url.clone(),
            outbox_retention: Duration::from_secs(self.outbox_retention_secs),
            ..EventSettings::default()
        })
    }

    /// Checks the flags and turns them into [`Settings`].
    pub fn settings(self) -> anyhow::Result<Settings> {
        let require = |value: Option<Secret>, var: &str| -> anyhow::Result<Secret> {
            match value {
                Some(s) => Ok(s),
                None => {
                    anyhow::bail!("{var} is not set: the control plane refuses to start without it")
                }
            }
        };
        anyhow::ensure!(
            self.job_lease_secs >= 1,
            "BERTH_JOB_LEASE_SECS must be at least 1"
        );
        anyhow::ensure!(
            self.job_max_attempts >= 1,
            "BERTH_JOB_MAX_ATTEMPTS must be at least 1"
        );
        anyhow::ensure!(
            self.node_ttl_secs >= 1,
            "BERTH_NODE_TTL_SECS must be at least 1"
        );
        anyhow::ensure!(
            self.node_lost_secs >= self.node_ttl_secs,
            "BERTH_NODE_LOST_SECS must be at least BERTH_NODE_TTL_SECS: a node is lost only once it is OFFLINE"
        );
        let secrets = Secrets {
            deploy: require(self.deploy_secret, "BERTH_DEPLOY_SECRET")?,
            runner: require(self.runner_token, "BERTH_RUNNER_TOKEN")?,
            node_join: require(self.node_join_token, "BERTH_NODE_JOIN_TOKEN")?,
            admin: require(self.admin_token, "BERTH_ADMIN_TOKEN")?,
            secret_key: Arc::new(
                SealingKeys::parse(require(self.secret_key, "BERTH_SECRET_KEY")?.expose())
                    .map_err(anyhow::Error::msg)?,
            ),
        };
        check_role_secrets(&[
            ("BERTH_DEPLOY_SECRET", &secrets.deploy),
            ("BERTH_RUNNER_TOKEN", &secrets.runner),
            ("BERTH_NODE_JOIN_TOKEN", &secrets.node_join),
            ("BERTH_ADMIN_TOKEN", &secrets.admin),
        ])?;
        Ok(Settings {
            database_url: self.database_url,
            secrets,
            lease: Duration::from_secs(self.job_lease_secs),
            retry: retry_policy(
                self.job_max_attempts,
                self.job_backoff_secs,
                self.job_backoff_max_secs,
            ),
            node_ttl: Duration::from_secs(self.node_ttl_secs),
            node_lost: Duration::from_secs(self.node_lost_secs),
            sweep_interval: SWEEP_INTERVAL,
            job_retention: job_retention(self.job_retention_secs),
        })
    }
}

/// The retry rules of `BERTH_JOB_MAX_ATTEMPTS`, `BERTH_JOB_BACKOFF_SECS` and
/// `BERTH_JOB_BACKOFF_MAX_SECS` (a cap below the first delay is the first delay).
fn retry_policy(max_attempts: u16, backoff_secs: u64, backoff_max_secs: u64) -> RetryPolicy {
    RetryPolicy {
        max_attempts: i32::from(max_attempts),
        base_ms: (backoff_secs * 1000) as i64,
        cap_ms: (backoff_max_secs.max(backoff_secs) * 1000) as i64,
    }
}

/// `BERTH_JOB_RETENTION_SECS`: 0 keeps finished jobs for ever.
fn job_retention(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

impl Settings {
    /// What `berth-control` runs with when only the database and the secrets are given: every
    /// other flag at its default. `berth dev` runs on these.
    pub fn with_defaults(database_url: String, secrets: Secrets) -> Settings {
        Settings {
            database_url,
            secrets,
            lease: Duration::from_secs(DEFAULT_JOB_LEASE_SECS),
            retry: retry_policy(
                DEFAULT_JOB_MAX_ATTEMPTS,
                DEFAULT_JOB_BACKOFF_SECS,
                DEFAULT_JOB_BACKOFF_MAX_SECS,
            ),
            node_ttl: Duration::from_secs(DEFAULT_NODE_TTL_SECS),
            node_lost: Duration::from_secs(DEFAULT_NODE_LOST_SECS),
            sweep_interval: SWEEP_INTERVAL,
            job_retention: job_retention(DEFAULT_JOB_RETENTION_SECS),
        }
    }

    /// The settings a test or a bench starts from: [`Settings::with_defaults`] on
    /// `database_url` with the well-known [`test_secrets`] and a fresh sealing key, quicker
    /// retries (1 s doubling to 10 s), a 100 ms sweep so lease and node timeouts show soon, and
    /// finished jobs kept for ever.
    pub fn for_tests(database_url: &str) -> Settings {
        let secrets = Secrets {
            deploy: Secret::new(test_secrets::DEPLOY_SECRET),
            runner: Secret::new(test_secrets::RUNNER_TOKEN),
            node_join: Secret::new(test_secrets::NODE_JOIN_TOKEN),
            admin: Secret::new(test_secrets::ADMIN_TOKEN),
            secret_key: Arc::new(SealingKeys::generate()),
        };
        Settings {
            retry: RetryPolicy {
                max_attempts: 3,
                base_ms: 1000,
                cap_ms: 10_000,
            },
            sweep_interval: Duration::from_millis(100),
            job_retention: None,
            ..Settings::with_defaults(database_url.to_owned(), secrets)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn with_tokens(tokens: [&str; 4]) -> anyhow::Result<Settings> {
        with_key(tokens, &SealingKeys::generate_text())
    }

    fn with_key(tokens: [&str; 4], key: &str) -> anyhow::Result<Settings> {
        let [deploy, runner, node, admin] = tokens;
        Config::try_parse_from([
            "berth-control",
            "--secret-key",
            key,
            "--deploy-secret",
            deploy,
            "--runner-token",
            runner,
            "--node-join-token",
            node,
            "--admin-token",
            admin,
        ])?
        .settings()
    }

    #[test]
    fn role_secrets_must_differ_and_be_long() {
        let ok = with_tokens([
            "deploy-0123456789",
            "runner-0123456789",
            "node-0123456789ab",
            "admin-0123456789a",
        ]);
        assert!(ok.is_ok(), "{ok:?}");
        let err = with_tokens([
            "deploy-0123456789",
            "runner-0123456789",
            "deploy-0123456789",
            "admin-0123456789a",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("BERTH_DEPLOY_SECRET and BERTH_NODE_JOIN_TOKEN are the same"),
            "{err}"
        );
        let err = with_tokens([
            "deploy-0123456789",
            "short",
            "node-0123456789ab",
            "admin-0123456789a",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("BERTH_RUNNER_TOKEN is too short"), "{err}");
    }

    #[test]
    fn with_defaults_is_what_the_flags_default_to() {
        let flags = with_tokens([
            "deploy-0123456789",
            "runner-0123456789",
            "node-0123456789ab",
            "admin-0123456789a",
        ])
        .unwrap();
        let defaults = Settings::with_defaults(flags.database_url.clone(), flags.secrets.clone());
        assert_eq!(defaults.lease, flags.lease);
        assert_eq!(defaults.retry, flags.retry);
        assert_eq!(defaults.node_ttl, flags.node_ttl);
        assert_eq!(defaults.node_lost, flags.node_lost);
        assert_eq!(defaults.sweep_interval, flags.sweep_interval);
        assert_eq!(defaults.job_retention, flags.job_retention);
    }

    #[test]
    fn the_secret_key_must_be_32_bytes_of_base64() {
        let tokens = [
            "deploy-0123456789",
            "runner-0123456789",
            "node-0123456789ab",
            "admin-0123456789a",
        ];
        let missing = Config::try_parse_from([
            "berth-control",
            "--deploy-secret",
            tokens[0],
            "--runner-token",
            tokens[1],
            "--node-join-token",
            tokens[2],
            "--admin-token",
            tokens[3],
        ])
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
        assert!(missing.contains("BERTH_SECRET_KEY is not set"), "{missing}");
        let err = with_key(tokens, "too-short").unwrap_err().to_string();
        assert!(err.contains("BERTH_SECRET_KEY"), "{err}");
        let old = SealingKeys::generate_text();
        let two = format!("{},{old}", SealingKeys::generate_text());
        assert!(with_key(tokens, &two).is_ok());
    }
}
