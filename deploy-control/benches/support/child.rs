//! The real `berth-control` binary as a child process on a bench database, configured by its
//! environment as an operator would, so its CPU time and memory are read from `/proc` apart
//! from the simulated clients in the bench's own process.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

use super::{ADMIN_TOKEN, DEPLOY_SECRET, NODE_JOIN_TOKEN, RUNNER_TOKEN};

/// `BERTH_SECRET_KEY` of a child control plane (32 bytes, base64).
const SECRET_KEY: &str = "YmVydGgtYmVuY2gtc2VhbGluZy1rZXktMzItYnl0ZXM=";
/// Clock ticks per second in `/proc/{pid}/stat` (`USER_HZ`, 100 on every Linux architecture
/// the project builds for).
const USER_HZ: f64 = 100.0;

/// A `berth-control` process serving on 127.0.0.1; killed when dropped.
pub struct ControlPlane {
    child: Child,
    pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Where the process writes its log (warnings and errors only).
    pub log: tempfile::NamedTempFile,
}

/// CPU time and memory of a process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    at: Instant,
    cpu_secs: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
}

impl Usage {
    /// CPU used between `earlier` and `self`, as a percentage of one core.
    pub fn cpu_percent_since(&self, earlier: &Usage) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        100.0 * (self.cpu_secs - earlier.cpu_secs) / wall.max(1e-9)
    }
}

impl ControlPlane {
    /// Starts `berth-control` on `database_url` with the bench's secrets and the extra
    /// environment `env` (e.g. `BERTH_NODE_TTL_SECS`); every other setting is the binary's
    /// default. Returns once `/internal/health` answers.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Self::start_on(port, database_url, env).await
    }

    /// Kills the process and starts a new one on the same address, database and environment
    /// (a restart under its clients); returns once the new one answers.
    pub async fn restart(
        &mut self,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let _ = self.child.kill().await;
        let port = self.base.rsplit(':').next().and_then(|p| p.parse().ok());
        let port = port.context("the base address has a port")?;
        *self = Self::start_on(port, database_url, env).await?;
        Ok(())
    }

    async fn start_on(port: u16, database_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let log = tempfile::NamedTempFile::new()?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth-control"));
        command
            .env("BERTH_DATABASE_URL", database_url)
            .env("BERTH_CONTROL_ADDR", format!("127.0.0.1:{port}"))
            .env("BERTH_DEPLOY_SECRET", DEPLOY_SECRET)
            .env("BERTH_RUNNER_TOKEN", RUNNER_TOKEN)
            .env("BERTH_NODE_JOIN_TOKEN", NODE_JOIN_TOKEN)
            .env("BERTH_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("BERTH_SECRET_KEY", SECRET_KEY)
            .env("RUST_LOG", "warn")
            .env_remove("BERTH_AMQP_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?)
            .kill_on_drop(true);
        let child = command.spawn().context("starting berth-control")?;
        let pid = child.id().context("berth-control exited at once")?;
        let plane = Self {
            child,
            pid,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        plane.until_healthy().await?;
        Ok(plane)
    }

    async fn until_healthy(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let res = client
                .get(format!("{}/internal/health", self.base))
                .send()
                .await;
            if res.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
                anyhow::bail!("berth-control did not become healthy in 60 s:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process's CPU time so far and resident memory.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        usage(self.pid)
    }

    /// The value of the sample `name` (with its labels, e.g. `berth_nodes{state="OFFLINE"}`)
    /// in the control plane's `GET /metrics`, 0 when absent.
    pub async fn metric(&self, client: &reqwest::Client, name: &str) -> anyhow::Result<f64> {
        let text = client
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(sample(&text, name))
    }

    /// Stops the process (SIGKILL: the bench's database is dropped next).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Process `pid`'s CPU time so far (`utime + stime` of `/proc/{pid}/stat`) and resident memory
/// (`VmRSS` of `/proc/{pid}/status`).
pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15; `fields` starts at field 3.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i - 3)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    let cpu_secs = (ticks(14)? + ticks(15)?) / USER_HZ;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(Usage {
        at: Instant::now(),
        cpu_secs,
        rss_mib: rss_kib / 1024.0,
    })
}

/// The value of sample `name` in Prometheus text `text`, 0 when absent.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .find_map(|rest| rest.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
