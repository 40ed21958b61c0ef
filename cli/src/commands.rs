//! The operator commands: thin calls of the deploy and admin APIs, with a progress display for
//! the ones that wait.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};

use crate::connection::{json, text, Connection};
use crate::output::{cell, say, table};

/// What `berth deploy` asks for: every field a deploy job can carry.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeployArgs {
    /// The app id (a DNS label).
    pub app: String,
    /// A ready image to run.
    #[arg(long, required_unless_present = "repo", conflicts_with = "repo")]
    pub image: Option<String>,
    /// Build from this git repository first (with --image-repo), instead of --image.
    #[arg(long, requires = "image_repo")]
    pub repo: Option<String>,
    /// The commit, branch or tag to build (the repository's default branch).
    #[arg(long, requires = "repo")]
    pub commit: Option<String>,
    /// The Dockerfile's path within the build context (`Dockerfile`).
    #[arg(long, requires = "repo")]
    pub dockerfile: Option<String>,
    /// The folder of the repository used as the build context (`.`).
    #[arg(long = "context", requires = "repo")]
    pub build_context: Option<String>,
    /// Where the built image is pushed, tagged with the commit.
    #[arg(long, requires = "repo")]
    pub image_repo: Option<String>,
    /// The port the app listens on in its container (8080).
    #[arg(long)]
    pub port: Option<u16>,
    /// An environment variable, K=V (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// A secret environment variable, K=V (repeatable): never shown or logged.
    #[arg(long = "secret", value_parser = parse_env)]
    pub secret_env: Vec<(String, String)>,
    /// A path that answers 2xx once the app is ready.
    #[arg(long)]
    pub health_check: Option<String>,
    /// Memory limit, MiB.
    #[arg(long)]
    pub memory: Option<u32>,
    /// CPU limit, cores (0.5 is half a core).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// A named volume, NAME:/mount/path (repeatable).
    #[arg(long = "volume", value_parser = parse_volume)]
    pub volumes: Vec<(String, String)>,
    /// A label, K=V (repeatable; filter jobs with `label=K:V`).
    #[arg(long = "label", value_parser = parse_env)]
    pub labels: Vec<(String, String)>,
    /// Follow the job until it ends and print the app's URL.
    #[arg(long)]
    pub wait: bool,
}

impl DeployArgs {
    /// The `POST /deploy/jobs` body these flags ask for (the control plane validates it).
    pub fn body(&self) -> Value {
        let map = |pairs: &[(String, String)]| -> BTreeMap<String, String> {
            pairs.iter().cloned().collect()
        };
        let mut body = json!({ "appId": self.app, "env": map(&self.env) });
        let optional = [
            ("image", self.image.clone().map(Value::from)),
            ("repoUrl", self.repo.clone().map(Value::from)),
            ("commit", self.commit.clone().map(Value::from)),
            ("dockerfilePath", self.dockerfile.clone().map(Value::from)),
            ("buildContext", self.build_context.clone().map(Value::from)),
            ("imageRepo", self.image_repo.clone().map(Value::from)),
            ("containerPort", self.port.map(Value::from)),
            (
                "healthCheckPath",
                self.health_check.clone().map(Value::from),
            ),
        ];
        for (field, value) in optional {
            if let Some(value) = value {
                body[field] = value;
            }
        }
        if !self.secret_env.is_empty() {
            body["secretEnv"] = json!(map(&self.secret_env));
        }
        if !self.labels.is_empty() {
            body["labels"] = json!(map(&self.labels));
        }
        if self.memory.is_some() || self.cpus.is_some() {
            body["resources"] = json!({ "memoryMb": self.memory, "cpus": self.cpus });
        }
        if !self.volumes.is_empty() {
            body["volumes"] = self
                .volumes
                .iter()
                .map(|(name, path)| json!({ "name": name, "mountPath": path }))
                .collect();
        }
        body
    }
}

/// Parses `K=V`.
pub fn parse_env(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{value:?} is not K=V"))
}

/// Parses `NAME:/mount/path`.
pub fn parse_volume(value: &str) -> Result<(String, String), String> {
    value
        .split_once(':')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{value:?} is not NAME:/mount/path"))
}

/// `berth deploy`: queues a deploy; with `--wait`, follows it and prints the app's URL.
pub async fn deploy(conn: &Connection, args: DeployArgs, as_json: bool) -> anyhow::Result<()> {
    let job = json(
        conn.deploy(Method::POST, "/deploy/jobs")?
            .json(&args.body()),
    )
    .await?;
    finish(conn, job, args.wait, as_json, "deploying").await
}

/// `berth stop`: queues a stop and, unless `no_wait`, waits until the app is stopped.
pub async fn stop(
    conn: &Connection,
    app: &str,
    no_wait: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let job = json(
        conn.deploy(Method::POST, "/deploy/jobs")?
            .json(&json!({ "appId": app, "kind": "STOP" })),
    )
    .await?;
    finish(conn, job, !no_wait, as_json, "stopping").await
}

async fn finish(
    conn: &Connection,
    job: Value,
    wait: bool,
    as_json: bool,
    verb: &str,
) -> anyhow::Result<()> {
    let app = cell(&job["appId"]);
    if !wait {
        if as_json {
            say(&format!("{job:#}"));
        } else {
            say(&format!(
                "queued job {} ({verb} {app})",
                cell(&job["jobId"])
            ));
        }
        return Ok(());
    }
    let done = follow(conn, job, !as_json).await?;
    let run = json(conn.deploy(Method::GET, &format!("/deploy/apps/{app}"))?)
        .await
        .unwrap_or(Value::Null);
    if as_json {
        say(&format!("{:#}", json!({ "job": done, "app": run })));
    } else if done["state"] == "SUCCEEDED" {
        match (done["kind"].as_str(), run["url"].as_str()) {
            (Some("DEPLOY"), Some(url)) => say(&format!("{app} is running: {url}")),
            _ => say(&format!("{app} is stopped")),
        }
    }
    if done["state"] != "SUCCEEDED" {
        anyhow::bail!(
            "job {} ended {}: {}",
            cell(&done["jobId"]),
            cell(&done["state"]),
            cell(&done["error"])
        );
    }
    Ok(())
}

/// Follows a job with `?wait=&version=` until it ends, showing each change on a spinner.
pub async fn follow(conn: &Connection, job: Value, show: bool) -> anyhow::Result<Value> {
    follow_changes(job, show, "job", "jobId", describe_job, |job| {
        let path = format!(
            "/deploy/jobs/{}?wait=30&version={}",
            cell(&job["jobId"]),
            cell(&job["version"])
        );
        conn.deploy(Method::GET, &path)
    })
    .await
}

/// A job's state for the spinner: why it waits, or where it runs.
fn describe_job(job: &Value) -> String {
    match job["state"].as_str() {
        Some("PENDING") => job["waitingReason"]
            .as_str()
            .map(|r| format!(" — {r}"))
            .unwrap_or_default(),
        Some("RUNNING") => format!(
            " on {} (attempt {})",
            cell(&job["nodeId"]),
            cell(&job["attempt"])
        ),
        _ => String::new(),
    }
}

/// Follows anything with a `state` and a `version` (a job, a deployment) until it ends:
/// `next` builds the long poll that answers once the version differs; a spinner shows each
/// change, and the final state is printed.
pub async fn follow_changes(
    mut current: Value,
    show: bool,
    noun: &str,
    id_field: &str,
    describe: impl Fn(&Value) -> String,
    next: impl Fn(&Value) -> anyhow::Result<reqwest::RequestBuilder>,
) -> anyhow::Result<Value> {
    let bar = if show {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    loop {
        let id = cell(&current[id_field]);
        let state = cell(&current["state"]);
        let detail = describe(&current);
        bar.set_message(format!(
            "{} {} {state}{detail}",
            cell(&current["appId"]),
            short(&id)
        ));
        if matches!(state.as_str(), "SUCCEEDED" | "FAILED" | "CANCELLED") {
            bar.finish_and_clear();
            if show {
                say(&format!("{noun} {} {state}{detail}", short(&id)));
            }
            return Ok(current);
        }
        current = json(next(&current)?)
            .await
            .with_context(|| format!("following the {noun}"))?;
    }
}

/// The first 8 characters of an id, as the tables and spinners show it.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `berth jobs`.
pub async fn jobs(
    conn: &Connection,
    app: Option<String>,
    state: Option<String>,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut query = vec![format!("limit={limit}")];
    if let Some(app) = app {
        query.push(format!("appId={app}"));
    }
    if let Some(state) = state {
        query.push(format!("state={state}"));
    }
    let page =
        json(conn.deploy(Method::GET, &format!("/deploy/jobs?{}", query.join("&")))?).await?;
    if as_json {
        say(&format!("{page:#}"));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = page["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|j| {
            vec![
                cell(&j["jobId"]),
                cell(&j["appId"]),
                cell(&j["kind"]),
                cell(&j["state"]),
                format!("{}/{}", cell(&j["attempt"]), cell(&j["maxAttempts"])),
                cell(&j["nodeId"]),
                cell(&j["updatedAt"]),
                j["error"]
                    .as_str()
                    .or(j["waitingReason"].as_str())
                    .unwrap_or_default()
                    .to_owned(),
            ]
        })
        .collect();
    say(&table(
        &[
            "JOB", "APP", "KIND", "STATE", "ATTEMPT", "NODE", "UPDATED", "NOTE",
        ],
        &rows,
    ));
    Ok(())
}

/// `berth job ID [--logs]`.
pub async fn job(conn: &Connection, id: &str, logs: bool, as_json: bool) -> anyhow::Result<()> {
    if logs {
        say(
            text(conn.deploy(Method::GET, &format!("/deploy/jobs/{id}/logs"))?)
                .await?
                .trim_end(),
        );
        return Ok(());
    }
    let job = json(conn.deploy(Method::GET, &format!("/deploy/jobs/{id}"))?).await?;
    if as_json {
        say(&format!("{job:#}"));
        return Ok(());
    }
    let fields = [
        "jobId",
        "appId",
        "kind",
        "state",
        "attempt",
        "maxAttempts",
        "nodeId",
        "runnerId",
        "waitingReason",
        "error",
        "createdAt",
        "startedAt",
        "finishedAt",
    ];
    let mut rows: Vec<Vec<String>> = fields
        .iter()
        .map(|f| vec![(*f).to_owned(), cell(&job[*f])])
        .collect();
    rows.push(vec!["image".into(), cell(&job["payload"]["image"])]);
    rows.push(vec!["url".into(), cell(&job["result"]["url"])]);
    say(&table(&["FIELD", "VALUE"], &rows));
    Ok(())
}

/// `berth nodes`.
pub async fn nodes(conn: &Connection, as_json: bool) -> anyhow::Result<()> {
    let list = json(conn.admin(Method::GET, "/admin/runtime-nodes/list")?).await?;
    if as_json {
        say(&format!("{list:#}"));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|n| {
            let apps = n["apps"]
                .as_array()
                .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![
                cell(&n["nodeId"]),
                cell(&n["state"]),
                cell(&n["scheduling"]),
                cell(&n["lastHeartbeatAt"]),
                format!(
                    "{}/{}",
                    n["apps"].as_array().map_or(0, Vec::len),
                    cell(&n["capacity"]["maxApps"])
                ),
                // Up to maxSleepingApps sleeping apps do not count against maxApps (SPEC §8).
                format!(
                    "{}/{}",
                    cell(&n["sleepingApps"]),
                    cell(&n["capacity"]["maxSleepingApps"])
                ),
                cell(&n["gatewayBaseUrl"]),
                apps,
            ]
        })
        .collect();
    say(&table(
        &[
            "NODE",
            "STATE",
            "SCHEDULING",
            "LAST HEARTBEAT",
            "APPS",
            "ASLEEP",
            "GATEWAY",
            "APP IDS",
        ],
        &rows,
    ));
    Ok(())
}

/// `berth cordon|uncordon|drain NODE`.
pub async fn scheduling(
    conn: &Connection,
    node: &str,
    action: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let res = json(conn.admin(
        Method::POST,
        &format!("/admin/runtime-nodes/{node}/{action}"),
    )?)
    .await?;
    if as_json {
        say(&format!("{res:#}"));
    } else {
        let moved = res["redeployJobIds"].as_array().map_or(0, Vec::len);
        say(&format!(
            "node {node} is {}{}",
            cell(&res["scheduling"]),
            if action == "drain" {
                format!("; {moved} apps queued to move")
            } else {
                String::new()
            }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_flags_become_the_job_body() {
        let args = DeployArgs {
            app: "shop".into(),
            repo: Some("https://git.example.test/shop.git".into()),
            commit: Some("main".into()),
            image_repo: Some("127.0.0.1:5000/shop".into()),
            env: vec![("MODE".into(), "prod".into())],
            secret_env: vec![("TOKEN".into(), "s3cret".into())],
            health_check: Some("/health".into()),
            memory: Some(256),
            volumes: vec![("data".into(), "/var/lib/shop".into())],
            labels: vec![("tenant".into(), "acme".into())],
            ..DeployArgs::default()
        };
        assert_eq!(
            args.body(),
            json!({
                "appId": "shop", "env": {"MODE": "prod"}, "secretEnv": {"TOKEN": "s3cret"},
                "repoUrl": "https://git.example.test/shop.git", "commit": "main",
                "imageRepo": "127.0.0.1:5000/shop", "healthCheckPath": "/health",
                "resources": {"memoryMb": 256, "cpus": null},
                "volumes": [{"name": "data", "mountPath": "/var/lib/shop"}],
                "labels": {"tenant": "acme"}
            })
        );
    }

    #[test]
    fn a_volume_needs_a_name_and_a_path() {
        assert_eq!(
            parse_volume("data:/srv"),
            Ok(("data".into(), "/srv".into()))
        );
        assert!(parse_volume("data").is_err());
    }
}
