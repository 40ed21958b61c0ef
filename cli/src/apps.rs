//! A tenant's commands of the public api (`Authorization: Bearer $BERTH_API_KEY`): its apps,
//! their logs, and rollback to an earlier deployment.

use reqwest::Method;
use serde_json::{json, Value};

use crate::commands::{follow_changes, short};
use crate::connection::{json, text, Connection};
use crate::output::{cell, say, table};
use crate::tenants::items;

/// `berth apps`: every app of the key's tenant, page by page.
pub async fn list_apps(conn: &Connection, as_json: bool) -> anyhow::Result<()> {
    let mut apps = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/apps?limit=100&cursor={c}"),
            None => "/v1/apps?limit=100".to_owned(),
        };
        let page = json(conn.api_tenant(Method::GET, &path)?).await?;
        apps.extend(items(&page).iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => break,
        }
    }
    if as_json {
        say(&format!("{:#}", json!({ "items": apps })));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            let status = &a["status"];
            vec![
                cell(&a["appId"]),
                cell(&status["state"]),
                cell(&status["image"]),
                cell(&status["nodeId"]),
                cell(&status["url"]),
                cell(&status["error"]),
            ]
        })
        .collect();
    say(&table(
        &["APP", "STATE", "IMAGE", "NODE", "URL", "ERROR"],
        &rows,
    ));
    Ok(())
}

/// `berth logs APP [--deployment ID]`: the log of the app's latest deployment, or of the one named.
pub async fn logs(conn: &Connection, app: &str, deployment: Option<String>) -> anyhow::Result<()> {
    let deployment = match deployment {
        Some(id) => id,
        None => {
            let found = json(conn.api_tenant(Method::GET, &format!("/v1/apps/{app}"))?).await?;
            found["status"]["deploymentId"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("app {app} has no deployment yet"))?
        }
    };
    let log =
        text(conn.api_tenant(Method::GET, &format!("/v1/deployments/{deployment}/logs"))?).await?;
    say(log.trim_end());
    Ok(())
}

/// `berth rollback APP [DEPLOYMENT]`: deploys that earlier deployment's image and spec again
/// (by default the last successful deployment before the current one) and follows it.
pub async fn rollback(
    conn: &Connection,
    app: &str,
    deployment: Option<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let target = match deployment {
        Some(id) => id,
        None => {
            let page = json(conn.api_tenant(
                Method::GET,
                &format!("/v1/apps/{app}/deployments?limit=100"),
            )?)
            .await?;
            previous_success(items(&page)).ok_or_else(|| {
                anyhow::anyhow!(
                    "app {app} has no successful deployment before its current one to roll back to"
                )
            })?
        }
    };
    let started = json(
        conn.api_tenant(Method::POST, &format!("/v1/apps/{app}/rollback"))?
            .json(&json!({ "deploymentId": target })),
    )
    .await?;
    let done = follow_changes(
        started,
        !as_json,
        "deployment",
        "deploymentId",
        |_| String::new(),
        |d| {
            let path = format!(
                "/v1/deployments/{}?wait=30&version={}",
                cell(&d["deploymentId"]),
                cell(&d["version"])
            );
            conn.api_tenant(Method::GET, &path)
        },
    )
    .await?;
    if as_json {
        say(&format!("{done:#}"));
    } else if done["state"] == "SUCCEEDED" {
        say(&format!(
            "{app} rolled back to {} ({}): {}",
            short(&target),
            cell(&done["image"]),
            cell(&done["url"])
        ));
    }
    if done["state"] != "SUCCEEDED" {
        anyhow::bail!(
            "the rollback ended {}: {}",
            cell(&done["state"]),
            cell(&done["error"])
        );
    }
    Ok(())
}

/// Of deployments listed newest first, the second successful `DEPLOY`: the one before the
/// version that runs now.
pub fn previous_success(deployments: &[Value]) -> Option<String> {
    deployments
        .iter()
        .filter(|d| d["kind"] == "DEPLOY" && d["state"] == "SUCCEEDED")
        .nth(1)
        .and_then(|d| d["deploymentId"].as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_goes_to_the_success_before_the_current_one() {
        let list = vec![
            json!({"deploymentId": "d4", "kind": "DEPLOY", "state": "FAILED"}),
            json!({"deploymentId": "d3", "kind": "DEPLOY", "state": "SUCCEEDED"}),
            json!({"deploymentId": "d2", "kind": "STOP", "state": "SUCCEEDED"}),
            json!({"deploymentId": "d1", "kind": "DEPLOY", "state": "SUCCEEDED"}),
        ];
        assert_eq!(previous_success(&list), Some("d1".into()));
        assert_eq!(previous_success(&list[..2]), None);
    }
}
