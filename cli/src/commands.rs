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

/// What `berth deploy` asks for.
#[derive(Debug, Clone)]
pub struct DeployArgs {
    /// The app.
    pub app: String,
    /// The image.
    pub image: String,
    /// Container port.
    pub port: Option<u16>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Follow the job to its end.
    pub wait: bool,
}

/// Parses `K=V`.
pub fn parse_env(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{value:?} is not K=V"))
}

/// `berth deploy`: queues a deploy; with `--wait`, follows it and prints the app's URL.
pub async fn deploy(conn: &Connection, args: DeployArgs, as_json: bool) -> anyhow::Result<()> {
    let mut body = json!({ "appId": args.app, "image": args.image, "env": args.env });
    if let Some(port) = args.port {
        body["containerPort"] = json!(port);
    }
    let job = json(conn.deploy(Method::POST, "/deploy/jobs")?.json(&body)).await?;
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
pub async fn follow(conn: &Connection, mut job: Value, show: bool) -> anyhow::Result<Value> {
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
    let id = cell(&job["jobId"]);
    loop {
        let state = cell(&job["state"]);
        let detail = match state.as_str() {
            "PENDING" => job["waitingReason"]
                .as_str()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default(),
            "RUNNING" => format!(
                " on {} (attempt {})",
                cell(&job["nodeId"]),
                cell(&job["attempt"])
            ),
            _ => String::new(),
        };
        bar.set_message(format!(
            "{} {} {state}{detail}",
            cell(&job["appId"]),
            short(&id)
        ));
        if matches!(state.as_str(), "SUCCEEDED" | "FAILED" | "CANCELLED") {
            bar.finish_and_clear();
            if show {
                say(&format!("job {} {state}{detail}", short(&id)));
            }
            return Ok(job);
        }
        let path = format!(
            "/deploy/jobs/{id}?wait=30&version={}",
            cell(&job["version"])
        );
        job = json(conn.deploy(Method::GET, &path)?)
            .await
            .context("following the job")?;
    }
}

fn short(id: &str) -> &str {
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
