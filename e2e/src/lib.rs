//! End-to-end tests of Berth across separate processes; the scenarios live in `tests/`, and
//! this library holds what they share: the workspace's binaries, fresh PostgreSQL databases,
//! free ports, role secrets and child processes that log to files.
//!
//! - `tests/cluster/` starts the real `berth-control` (on a fresh PostgreSQL database), two
//!   `berth-agent`s as two hosts and two `berth-runner`s, and drives them through the HTTP APIs.
//! - `tests/replicas/` runs three `berth-control` replicas on one database behind nginx and kills
//!   one in the middle of a batch.
//!
//! The binaries must be built first: `cargo build --workspace --bins`. Nothing skips: a missing
//! service or binary fails the test with the command that brings it up.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use sqlx::Connection;

/// The workspace's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/debug/`: the parent of the `deps/` folder the running test executable is in.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's folder");
    deps.parent().unwrap_or(deps).to_path_buf()
}

/// The path of one of the workspace's binaries; fails saying how to build it.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: the end-to-end tests run the real binaries; build them first with \
         `cargo build --workspace --bins` (same profile and CARGO_TARGET_DIR as `cargo test`)",
        path.display()
    );
    path
}

/// The PostgreSQL URL tests create their databases through (`BERTH_TEST_POSTGRES_URL`).
fn postgres_admin() -> String {
    std::env::var("BERTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty PostgreSQL database; its name and URL.
pub async fn create_database() -> (String, String) {
    let admin = postgres_admin();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin} ({e}); run scripts/ensure-services.sh \
                 (or scripts/test, which starts it)"
            )
        });
    let name = format!("berth_e2e_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    (name.clone(), format!("{base}/{name}"))
}

/// Drops the database, from a thread of its own (so it can be called from `Drop` inside a
/// runtime).
pub fn drop_database(name: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        });
    })
    .join();
}

/// A port on 127.0.0.1 nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A fresh secret for `role`, long enough for every service's minimum.
pub fn random_secret(role: &str) -> String {
    format!("{role}-{}", uuid::Uuid::new_v4().simple())
}

/// A fresh `BERTH_SECRET_KEY` (32 random bytes in base64).
pub fn random_sealing_key() -> String {
    berth_shared::sealed::SealingKeys::generate_text()
}

/// A child process whose stdout and stderr go to a log file; killed when dropped.
pub struct Proc {
    name: String,
    /// The process, until it is killed.
    pub child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin` with `env` (and no `BERTH_*` variable of the test's own environment).
    pub fn spawn(name: &str, bin: &Path, env: &[(&str, String)], log: PathBuf) -> Proc {
        Proc::spawn_args(name, bin, &[], env, log)
    }

    /// Starts `bin` with `args` and `env` (and no `BERTH_*` variable of the test's own
    /// environment), logging at `info`.
    pub fn spawn_args(
        name: &str,
        bin: &Path,
        args: &[&str],
        env: &[(&str, String)],
        log: PathBuf,
    ) -> Proc {
        let file = File::create(&log).expect("a log file");
        let mut cmd = Command::new(bin);
        // Nothing from the test's own environment decides how a piece runs.
        for (key, _) in std::env::vars() {
            if key.starts_with("BERTH_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file handle"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name} ({}) does not start: {e}", bin.display()));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// SIGKILL, then reap; the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the process runs");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaping the child")
    }

    /// Fails when the process has already exited (it would not come back by itself).
    pub fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited unexpectedly with {status}; its log ends:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
        }
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `lines` lines of the file at `path`.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(file) = File::open(path) else {
        return String::from("(no log)");
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
