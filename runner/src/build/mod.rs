//! Build jobs: clone the repository at the commit, `docker build`, push `imageRepo:<sha>`.
//!
//! A build runs code and reads files a stranger chose, so it reads only its own checkout:
//! - [`git`]: only allowed repository URLs, git cut off from the host's configuration;
//! - [`paths`]: the build context and Dockerfile resolved in the checkout, refused outside it;
//! - [`registry`]: the registry login in a folder of its own, away from every clone;
//! - [`command`]: what the tools print goes into the job's log line by line as it happens; the
//!   last lines of a failed step also go into the job's error.
//!
//! Clones and pushes talk to remote servers, so they are retried like any other call; a build
//! is deterministic and is not.

pub mod command;
pub mod git;
pub mod paths;
pub mod registry;

use std::path::Path;

use berth_shared::wire::BuildSpec;
use tokio::process::Command;

use self::command::{permanent, run_logged};
use self::paths::BuildPaths;
use self::registry::DockerConfig;
use crate::config::Settings;
use crate::error::JobError;
use crate::joblog::JobLog;
use crate::retry::{retry, CallError};

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
        git::clone(settings, spec, &src, log).await?;
        let sha = git::checkout(settings, spec, &src, log).await?;
        let paths = paths::resolve(&src, &spec.build_context, &spec.dockerfile_path)?;
        let tag = format!("{}:{sha}", spec.image_repo);
        let docker_config = DockerConfig::write(settings.registry.as_ref())?;
        build(settings, &paths, &tag, docker_config.path(), log).await?;
        push(settings, &tag, docker_config.path(), log).await?;
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

/// The Docker client with the build's own configuration folder.
fn docker(settings: &Settings, config: &Path) -> Command {
    let mut command = Command::new(&settings.docker);
    command.arg("--config").arg(config);
    command
}

async fn build(
    settings: &Settings,
    paths: &BuildPaths,
    tag: &str,
    docker_config: &Path,
    log: &JobLog,
) -> Result<(), JobError> {
    log.line(format!("building {tag}")).await;
    let mut command = docker(settings, docker_config);
    command
        .arg("build")
        .arg("-t")
        .arg(tag)
        .arg("-f")
        .arg(&paths.dockerfile)
        .arg(&paths.context);
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
    docker_config: &Path,
    log: &JobLog,
) -> Result<(), JobError> {
    log.line(format!("pushing {tag}")).await;
    let result = retry(&settings.retry, || async {
        let mut command = docker(settings, docker_config);
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
    result.map_err(JobError::from)?;
    log.line(format!("pushed {tag}")).await;
    Ok(())
}
