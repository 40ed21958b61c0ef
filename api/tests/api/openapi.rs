//! `/openapi.json` names every route, declares every path parameter, and resolves its refs.

use crate::common::spawn_api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_complete() {
    let app = spawn_api().await;
    let doc = app.document().await;
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/v1/tenants", &["post", "get"][..]),
        ("/v1/tenants/{tenantId}", &["get", "patch"]),
        ("/v1/tenants/{tenantId}/keys", &["post", "get"]),
        ("/v1/tenants/{tenantId}/keys/{keyId}", &["delete"]),
        ("/v1/apps", &["get"]),
        ("/v1/apps/{appId}", &["put", "get", "delete"]),
        ("/v1/apps/{appId}/deployments", &["post", "get"]),
        ("/v1/apps/{appId}/rollback", &["post"]),
        ("/v1/apps/{appId}/config", &["patch"]),
        ("/v1/apps/{appId}/stop", &["post"]),
        ("/v1/deployments/{deploymentId}", &["get"]),
        ("/v1/deployments/{deploymentId}/events", &["get"]),
        ("/v1/deployments/{deploymentId}/logs", &["get"]),
        ("/v1/templates/{templateId}", &["put", "get"]),
        ("/v1/instances", &["post"]),
        ("/v1/instances/{slug}", &["get"]),
        ("/v1/usage", &["get"]),
        ("/internal/health", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
    ] {
        for m in methods {
            let op = &paths[path][*m];
            assert!(op.is_object(), "{m} {path} is missing");
            for name in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            {
                let declared = op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path");
                assert!(declared, "{m} {path} does not declare {name}");
            }
        }
    }
    assert_eq!(
        paths.len(),
        20,
        "no undocumented extras: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
    app.stop().await;
}

/// schemathesis (scripts/schemathesis.sh, as for every service) against the real api in front
/// of a real control plane, with the operator's token and a tenant's key: no schema error, no
/// 5xx, every answer as documented and every 4xx a problem+json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_with_both_credentials() {
    let app = spawn_api().await;
    let quotas = serde_json::json!({
        "quotas": {"maxApps": 10000, "maxConcurrentDeploys": 10000, "deploysPerDay": 100000, "deploysPerMonth": 1000000},
        "rateLimitPerMinute": 100000
    });
    let tenant = app.tenant_with("fuzzed", quotas).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/schemathesis.sh");
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .arg(&app.base)
        .arg("-H")
        .arg(format!("X-Admin-Token: {}", crate::common::ADMIN_TOKEN))
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", tenant.key))
        .output()
        .await
        .expect("running scripts/schemathesis.sh");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}
