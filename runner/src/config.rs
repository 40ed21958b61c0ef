//! Configuration: every setting is a flag with an environment variable of the same meaning
//! (SPEC §1). `--help` shows these doc comments.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use berth_shared::ids::NodeId;
use berth_shared::secret::{check_role_secrets, Secret};

use crate::build::git::RepoPolicy;
use crate::retry::RetryPolicy;

/// `berth-runner` flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "berth-runner",
    version,
    about = "A Berth runner: claims deploy jobs, builds images, drives runtime agents."
)]
pub struct Config {
    /// Where the control plane's runner API is (`http://127.0.0.1:7002`).
    #[arg(
        long,
        env = "BERTH_CONTROL_URL",
        default_value = "http://127.0.0.1:7002"
    )]
    pub control_url: String,
    /// Token the control plane checks as `X-Runner-Token`.
    #[arg(long, env = "BERTH_RUNNER_TOKEN", hide_env_values = true)]
    pub runner_token: Option<Secret>,
    /// This runner's id (default: `{hostname}-{pid}`).
    #[arg(long, env = "BERTH_RUNNER_ID")]
    pub runner_id: Option<String>,
    /// Jobs this runner works on at once.
    #[arg(long, env = "BERTH_RUNNER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Seconds one claim waits for a job before asking again (long poll, 1 to 60).
    #[arg(long, env = "BERTH_RUNNER_CLAIM_WAIT_SECS", default_value_t = 20)]
    pub claim_wait_secs: u64,
    /// On SIGTERM, how long running jobs may take to finish before the runner leaves them to
    /// their lease (another runner picks them up).
    #[arg(long, env = "BERTH_RUNNER_SHUTDOWN_GRACE_SECS", default_value_t = 60)]
    pub shutdown_grace_secs: u64,
    /// Folder for build checkouts (one temporary folder per build, removed afterwards).
    #[arg(long, env = "BERTH_RUNNER_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// The Docker client used for builds and pushes (Debian's, which builds with the daemon's builder).
    #[arg(long, env = "BERTH_RUNNER_DOCKER", default_value = "/usr/bin/docker")]
    pub docker: PathBuf,
    /// Repository URL prefixes builds may clone, comma-separated (`https://`, `file://`,
    /// `https://git.internal.example/`). A loopback or private address is cloned only when a
    /// prefix names its host.
    #[arg(long, env = "BERTH_RUNNER_REPO_ALLOW", default_value = "https://")]
    pub repo_allow: String,
    /// The git client used to clone build sources.
    #[arg(long, env = "BERTH_RUNNER_GIT", default_value = "git")]
    pub git: PathBuf,
    /// Longest a clone + build + push may take.
    #[arg(long, env = "BERTH_RUNNER_BUILD_TIMEOUT_SECS", default_value_t = 1800)]
    pub build_timeout_secs: u64,
    /// Registry host the credentials below are for (`registry.example.com:5000`).
    #[arg(long, env = "BERTH_REGISTRY_SERVER")]
    pub registry_server: Option<String>,
    /// Registry user for pushes (and for the agents' pulls).
    #[arg(long, env = "BERTH_REGISTRY_USERNAME")]
    pub registry_username: Option<String>,
    /// Registry password or token.
    #[arg(long, env = "BERTH_REGISTRY_PASSWORD", hide_env_values = true)]
    pub registry_password: Option<Secret>,
    /// First delay between retries of a failed call (milliseconds); doubles each try, with jitter.
    #[arg(long, env = "BERTH_RUNNER_RETRY_MIN_MS", default_value_t = 250)]
    pub retry_min_ms: u64,
    /// Longest delay between retries (milliseconds).
    #[arg(long, env = "BERTH_RUNNER_RETRY_MAX_MS", default_value_t = 8000)]
    pub retry_max_ms: u64,
    /// Retries of one call before it counts as failed.
    #[arg(long, env = "BERTH_RUNNER_RETRY_TIMES", default_value_t = 6)]
    pub retry_times: usize,
    /// Where `GET /metrics` and `GET /internal/health` answer (port 0: any free port, logged).
    #[arg(
        long,
        env = "BERTH_RUNNER_METRICS_ADDR",
        default_value = "127.0.0.1:7007"
    )]
    pub metrics_addr: SocketAddr,
}

/// Registry credentials for pushes and pulls.
#[derive(Debug, Clone)]
pub struct RegistryCredentials {
    /// The registry host they are for.
    pub server: String,
    /// User.
    pub username: String,
    /// Password; never printed.
    pub password: Secret,
}

/// Validated settings the library runs on (tests build them directly).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Control plane base URL, without a trailing slash.
    pub control_url: String,
    /// `X-Runner-Token`.
    pub runner_token: Secret,
    /// This runner's id.
    pub runner_id: String,
    /// Jobs at once.
    pub concurrency: usize,
    /// Long-poll wait of one claim.
    pub claim_wait: Duration,
    /// How long SIGTERM waits for running jobs.
    pub shutdown_grace: Duration,
    /// Where build checkouts go.
    pub work_dir: PathBuf,
    /// Docker client binary.
    pub docker: PathBuf,
    /// git binary.
    pub git: PathBuf,
    /// Which repository URLs builds may clone.
    pub repo_policy: RepoPolicy,
    /// Limit on one build.
    pub build_timeout: Duration,
    /// Registry credentials, when the registry needs them.
    pub registry: Option<RegistryCredentials>,
    /// Retries of calls to the control plane, agents and registries.
    pub retry: RetryPolicy,
    /// Where the metrics endpoint listens; `None` serves none (runners embedded in tests or
    /// `berth dev`, whose process has its own).
    pub metrics_addr: Option<SocketAddr>,
}

impl Config {
    /// Checks the flags and turns them into [`Settings`]; refuses to start without the tokens.
    pub fn settings(self) -> anyhow::Result<Settings> {
        let require = |value: Option<Secret>, var: &str| -> anyhow::Result<Secret> {
            match value {
                Some(s) if !s.expose().is_empty() => Ok(s),
                _ => anyhow::bail!("{var} is not set: the runner refuses to start without it"),
            }
        };
        let runner_token = require(self.runner_token, "BERTH_RUNNER_TOKEN")?;
        check_role_secrets(&[("BERTH_RUNNER_TOKEN", &runner_token)])?;
        let repo_policy = RepoPolicy::parse(&self.repo_allow).map_err(anyhow::Error::msg)?;
        let runner_id = match self.runner_id {
            Some(id) => id,
            None => default_runner_id(),
        };
        NodeId::parse(&runner_id).map_err(|e| anyhow::anyhow!("BERTH_RUNNER_ID: {}", e.0))?;
        anyhow::ensure!(
            self.concurrency >= 1,
            "BERTH_RUNNER_CONCURRENCY must be at least 1"
        );
        anyhow::ensure!(
            (1..=60).contains(&self.claim_wait_secs),
            "BERTH_RUNNER_CLAIM_WAIT_SECS must be between 1 and 60"
        );
        anyhow::ensure!(
            self.control_url.starts_with("http://") || self.control_url.starts_with("https://"),
            "BERTH_CONTROL_URL must be an http(s):// URL"
        );
        let registry = match (self.registry_server, self.registry_username, self.registry_password) {
            (None, None, None) => None,
            (Some(server), Some(username), Some(password)) => Some(RegistryCredentials { server, username, password }),
            _ => anyhow::bail!("set all of BERTH_REGISTRY_SERVER, BERTH_REGISTRY_USERNAME and BERTH_REGISTRY_PASSWORD, or none"),
        };
        let work_dir = self
            .work_dir
            .unwrap_or_else(|| std::env::temp_dir().join("berth-runner"));
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("creating the work folder {}", work_dir.display()))?;
        // Each build's registry login lives in the temp folder; a clone must never sit above it.
        let temp = std::env::temp_dir();
        let below = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a.starts_with(b),
            _ => a.starts_with(b),
        };
        anyhow::ensure!(
            !below(&temp, &work_dir),
            "BERTH_RUNNER_WORK_DIR {} holds the temp folder {}, where builds keep their registry login; choose another folder",
            work_dir.display(),
            temp.display()
        );
        Ok(Settings {
            control_url: self.control_url.trim_end_matches('/').to_owned(),
            runner_token,
            runner_id,
            concurrency: self.concurrency,
            claim_wait: Duration::from_secs(self.claim_wait_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            work_dir,
            docker: self.docker,
            git: self.git,
            repo_policy,
            build_timeout: Duration::from_secs(self.build_timeout_secs.max(1)),
            registry,
            retry: RetryPolicy {
                min_delay: Duration::from_millis(self.retry_min_ms.max(1)),
                max_delay: Duration::from_millis(self.retry_max_ms.max(self.retry_min_ms).max(1)),
                max_times: self.retry_times,
            },
            metrics_addr: Some(self.metrics_addr),
        })
    }
}

impl Settings {
    /// Settings for tests and embedding: every default, the given control plane and token,
    /// and no metrics endpoint of its own.
    pub fn new(control_url: &str, runner_token: &str, runner_id: &str) -> anyhow::Result<Self> {
        use clap::Parser;
        let mut config = Config::parse_from(["berth-runner"]);
        config.control_url = control_url.to_owned();
        config.runner_token = Some(Secret::new(runner_token));
        config.runner_id = Some(runner_id.to_owned());
        let mut settings = config.settings()?;
        settings.metrics_addr = None;
        Ok(settings)
    }
}

/// `{hostname}-{pid}`, cut to a valid id: stable enough to read in logs, unique per process.
fn default_runner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "runner".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let host = if host.is_empty() {
        "runner".to_owned()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const RUNNER: &str = "runner-token-0123456789";

    #[test]
    fn refuses_to_start_without_a_long_runner_token() {
        let err = Config::parse_from(["berth-runner"])
            .settings()
            .unwrap_err()
            .to_string();
        assert!(err.contains("BERTH_RUNNER_TOKEN"), "{err}");
        let err = Settings::new("http://x", "short", "r-1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("BERTH_RUNNER_TOKEN is too short"), "{err}");
    }

    #[test]
    fn the_work_dir_must_not_hold_the_temp_folder() {
        let mut config = Config::parse_from(["berth-runner", "--runner-token", RUNNER]);
        config.work_dir = Some(PathBuf::from("/"));
        let err = config.settings().unwrap_err().to_string();
        assert!(err.contains("registry login"), "{err}");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = Settings::new("http://127.0.0.1:7002/", RUNNER, "r-1").unwrap();
        assert_eq!(s.concurrency, 4);
        assert_eq!(s.control_url, "http://127.0.0.1:7002");
        assert!(s.registry.is_none());
        assert_eq!(s.repo_policy, RepoPolicy::parse("https://").unwrap());
        assert!(NodeId::parse(&default_runner_id()).is_ok());
    }

    #[test]
    fn runner_ids_are_checked() {
        assert!(Settings::new("http://x", RUNNER, "bad id").is_err());
    }
}
