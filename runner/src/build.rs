//! Build jobs: clone the repository at the commit, `docker build`, push `imageRepo:<sha>`.
//!
//! Everything the tools print goes into the job's log line by line as it happens; the last lines
//! of a failed step also go into the job's error. Clones and pushes talk to remote servers, so
//! they are retried like any other call; a build is deterministic and is not.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use berth_shared::wire::BuildSpec;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::config::{RegistryCredentials, Settings};
use crate::job::JobError;
use crate::joblog::JobLog;
use crate::retry::{retry, CallError};

/// Lines of a failed step quoted in the job's error.
pub const TAIL_LINES: usize = 20;

/// Output of a command that ran to its end.
struct Ran {
    status: ExitStatus,
    /// Its last [`TAIL_LINES`] lines, stdout and stderr interleaved.
    tail: VecDeque<String>,
}

impl Ran {
    fn tail_text(&self) -> String {
        self.tail
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs `command`, sending each line of its output to `log` with `prefix`.
async fn run_logged(mut command: Command, prefix: &str, log: &JobLog) -> std::io::Result<Ran> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(256);
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward(stdout, tx.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward(stderr, tx.clone()));
    }
    drop(tx);
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    while let Some(line) = rx.recv().await {
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        log.line(format!("{prefix}{line}")).await;
    }
    let status = child.wait().await?;
    Ok(Ran { status, tail })
}

async fn forward(stream: impl AsyncRead + Unpin, tx: tokio::sync::mpsc::Sender<String>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // Progress bars redraw with '\r'; keep what the line finally showed.
        let line = line
            .rsplit('\r')
            .find(|s| !s.trim().is_empty())
            .unwrap_or("")
            .to_owned();
        if tx.send(line).await.is_err() {
            break;
        }
    }
}

/// Whether a failed clone or push said something no retry will change.
fn permanent(output: &str) -> bool {
    let output = output.to_ascii_lowercase();
    [
        "not found",
        "does not exist",
        "does not appear to be a git repository",
        "authentication failed",
        "unauthorized",
        "denied",
        "invalid reference",
        "name unknown",
        "could not read username",
    ]
    .iter()
    .any(|hint| output.contains(hint))
}

/// Builds the job's image and pushes it; returns the pushed tag (`imageRepo:<sha>`).
pub async fn build_and_push(
    settings: &Settings,
    spec: &BuildSpec,
    log: &JobLog,
) -> Result<String, JobError> {
    let dir = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(&settings.work_dir)
        .map_err(|e| {
            JobError::retryable(format!(
                "cannot make a build folder in {}: {e}",
                settings.work_dir.display()
            ))
        })?;
    let work = async {
        let src = dir.path().join("src");
        clone(settings, spec, &src, log).await?;
        let sha = checkout(settings, spec, &src, log).await?;
        let tag = format!("{}:{sha}", spec.image_repo);
        let docker_config = docker_config(dir.path(), settings.registry.as_ref())?;
        build(settings, spec, &src, &tag, log).await?;
        push(settings, &tag, docker_config.as_deref(), log).await?;
        Ok(tag)
    };
    match tokio::time::timeout(settings.build_timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(JobError::retryable(format!(
            "the build took longer than {} s and was stopped",
            settings.build_timeout.as_secs()
        ))),
    }
}

fn git(settings: &Settings) -> Command {
    let mut command = Command::new(&settings.git);
    // Never wait for a password prompt; never read the runner host's git configuration hooks.
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    command
}

async fn clone(
    settings: &Settings,
    spec: &BuildSpec,
    src: &Path,
    log: &JobLog,
) -> Result<(), JobError> {
    log.line(format!("cloning {}", spec.repo_url)).await;
    let result = retry(&settings.retry, || async {
        if src.exists() {
            let _ = tokio::fs::remove_dir_all(src).await;
        }
        let mut command = git(settings);
        command
            .args(["clone", "--no-checkout", "--quiet", "--"])
            .arg(&spec.repo_url)
            .arg(src);
        let ran = run_logged(command, "git: ", log).await.map_err(|e| {
            CallError::command(format!("cannot run {}: {e}", settings.git.display()), false)
        })?;
        if ran.status.success() {
            return Ok(());
        }
        let tail = ran.tail_text();
        Err(CallError::command(
            format!(
                "git clone of {} failed ({}):\n{tail}",
                spec.repo_url, ran.status
            ),
            !permanent(&tail),
        ))
    })
    .await;
    result.map_err(|e| JobError {
        message: e.message,
        retryable: e.transient,
    })
}

/// Resolves the job's commit (a sha, branch or tag; the default branch when none) to a full sha
/// and checks it out.
async fn checkout(
    settings: &Settings,
    spec: &BuildSpec,
    src: &Path,
    log: &JobLog,
) -> Result<String, JobError> {
    let wanted = spec.commit.as_deref().unwrap_or("HEAD");
    let mut sha = None;
    for candidate in [
        format!("{wanted}^{{commit}}"),
        format!("origin/{wanted}^{{commit}}"),
    ] {
        let out = git(settings)
            .current_dir(src)
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &candidate,
            ])
            .output()
            .await
            .map_err(|e| JobError::fatal(format!("cannot run git: {e}")))?;
        if out.status.success() {
            sha = Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            break;
        }
    }
    let Some(sha) = sha else {
        return Err(JobError::fatal(format!(
            "commit {wanted:?} is not in {}",
            spec.repo_url
        )));
    };
    let ran = run_logged(
        {
            let mut c = git(settings);
            c.current_dir(src)
                .args(["checkout", "--quiet", "--detach", &sha]);
            c
        },
        "git: ",
        log,
    )
    .await
    .map_err(|e| JobError::fatal(format!("cannot run git: {e}")))?;
    if !ran.status.success() {
        return Err(JobError::fatal(format!(
            "git checkout of {sha} failed:\n{}",
            ran.tail_text()
        )));
    }
    log.line(format!("checked out {wanted} at {sha}")).await;
    Ok(sha)
}

async fn build(
    settings: &Settings,
    spec: &BuildSpec,
    src: &Path,
    tag: &str,
    log: &JobLog,
) -> Result<(), JobError> {
    let context: PathBuf = src.join(&spec.build_context);
    let dockerfile = context.join(&spec.dockerfile_path);
    if !dockerfile.is_file() {
        return Err(JobError::fatal(format!(
            "there is no Dockerfile at {}/{} in this commit",
            spec.build_context, spec.dockerfile_path
        )));
    }
    log.line(format!("building {tag}")).await;
    let mut command = Command::new(&settings.docker);
    command
        .arg("build")
        .arg("-t")
        .arg(tag)
        .arg("-f")
        .arg(&dockerfile)
        .arg(&context);
    let ran = run_logged(command, "build: ", log)
        .await
        .map_err(|e| JobError::fatal(format!("cannot run {}: {e}", settings.docker.display())))?;
    if !ran.status.success() {
        return Err(JobError::fatal(format!(
            "docker build failed ({}); its last lines:\n{}",
            ran.status,
            ran.tail_text()
        )));
    }
    Ok(())
}

async fn push(
    settings: &Settings,
    tag: &str,
    docker_config: Option<&Path>,
    log: &JobLog,
) -> Result<(), JobError> {
    log.line(format!("pushing {tag}")).await;
    let result = retry(&settings.retry, || async {
        let mut command = Command::new(&settings.docker);
        if let Some(config) = docker_config {
            command.arg("--config").arg(config);
        }
        command.arg("push").arg(tag);
        let ran = run_logged(command, "push: ", log).await.map_err(|e| {
            CallError::command(
                format!("cannot run {}: {e}", settings.docker.display()),
                false,
            )
        })?;
        if ran.status.success() {
            return Ok(());
        }
        let tail = ran.tail_text();
        Err(CallError::command(
            format!("docker push {tag} failed ({}):\n{tail}", ran.status),
            !permanent(&tail),
        ))
    })
    .await;
    result.map_err(|e| JobError {
        message: e.message,
        retryable: e.transient,
    })?;
    log.line(format!("pushed {tag}")).await;
    Ok(())
}

/// With credentials, a private Docker client configuration folder holding only them, so pushes
/// never touch (or depend on) the host's `~/.docker`.
fn docker_config(
    dir: &Path,
    registry: Option<&RegistryCredentials>,
) -> Result<Option<PathBuf>, JobError> {
    let Some(registry) = registry else {
        return Ok(None);
    };
    let folder = dir.join("docker-config");
    let auth = base64(format!("{}:{}", registry.username, registry.password.expose()).as_bytes());
    let config = serde_json::json!({ "auths": { registry.server.as_str(): { "auth": auth } } });
    std::fs::create_dir_all(&folder)
        .and_then(|()| std::fs::write(folder.join("config.json"), config.to_string()))
        .map_err(|e| JobError::retryable(format!("cannot write the registry credentials: {e}")))?;
    Ok(Some(folder))
}

/// Standard base64 with padding (what Docker's `config.json` `auth` holds).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn permanent_failures_are_recognised() {
        assert!(permanent("fatal: repository 'file:///nope' does not exist"));
        assert!(permanent("unauthorized: authentication required"));
        assert!(!permanent("fatal: unable to access: Connection refused"));
    }
}
