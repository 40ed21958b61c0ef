//! Every operation of the api's `/openapi.json` × every credential, as an attacker would try
//! them: no credential, a wrong value, the operator's token where a tenant's key is expected and
//! the other way round, a key in the wrong header, a revoked key, a well-formed key with a wrong
//! secret — each `401` problem+json; another tenant's key on a tenant's apps, deployments,
//! templates and instances — `404` (never `403`: another tenant's things are exactly as missing);
//! and only then the right credential, which gets past (neither `401`, `403` nor `404`). The
//! operations come from the document itself, so a route added without its guard, or with the
//! wrong one, fails here, and so does a path parameter this test has no value for.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{problem, spawn_api, Tenant, TestApi, ADMIN_TOKEN};

const IMAGE: &str = "127.0.0.1:5000/demo:v1";
/// What the other tenant writes, to tell its writes from the owner's.
const OTHER_IMAGE: &str = "127.0.0.1:5000/other:v2";

/// Limits high enough for the matrix's requests.
fn roomy() -> Value {
    json!({
        "quotas": {"maxApps": 100, "maxConcurrentDeploys": 100, "deploysPerDay": 1000, "deploysPerMonth": 1000},
        "rateLimitPerMinute": 10000
    })
}

/// The owner's things every path parameter names.
struct Fixture {
    owner: Tenant,
    deployment: String,
    revoked_key_id: String,
}

impl Fixture {
    fn fill(&self, path: &str) -> String {
        let out = path
            .replace("{tenantId}", &self.owner.id)
            .replace("{keyId}", &self.revoked_key_id)
            .replace("{appId}", "shop")
            .replace("{deploymentId}", &self.deployment)
            .replace("{templateId}", "tpl")
            .replace("{slug}", "alice");
        assert!(
            !out.contains('{'),
            "{path}: a path parameter this test has no value for; add one"
        );
        out
    }
}

/// A body each operation accepts, so a request that gets past the guard reaches the ownership
/// check (a change with a body it refuses would stop at `422` before it).
fn body(method: &Method, path: &str, fixture: &Fixture) -> Value {
    match (method.as_str(), path) {
        ("POST", "/v1/tenants") => json!({ "tenantId": "gamma", "name": "Tenant gamma" }),
        ("PATCH", "/v1/tenants/{tenantId}") => json!({ "name": "Renamed" }),
        ("POST", "/v1/tenants/{tenantId}/keys") => json!({ "name": "another" }),
        ("PUT", "/v1/apps/{appId}") | ("PUT", "/v1/templates/{templateId}") => {
            json!({ "image": IMAGE })
        }
        ("POST", "/v1/apps/{appId}/rollback") => json!({ "deploymentId": fixture.deployment }),
        ("PATCH", "/v1/apps/{appId}/config") => json!({ "env": { "X": "1" } }),
        ("POST", "/v1/instances") => json!({ "template": "tpl", "slug": "carol" }),
        _ => json!({}),
    }
}

/// One credential as a request carries it.
#[derive(Clone)]
enum Credential {
    None,
    Header(&'static str, String),
}

impl Credential {
    fn bearer(key: &str) -> Self {
        Self::Header("authorization", format!("Bearer {key}"))
    }
}

async fn send(
    app: &TestApi,
    method: &Method,
    url: &str,
    body: &Value,
    credential: &Credential,
) -> reqwest::Response {
    let mut req = app.client.request(method.clone(), url).json(body);
    if let Credential::Header(name, value) = credential {
        req = req.header(*name, value);
    }
    req.send().await.expect("request")
}

/// `res` is a problem+json of `want` that does not name the owner.
async fn assert_problem(res: reqwest::Response, want: StatusCode, what: &str) {
    // Shown with a failure (the test's output is captured): which request it was.
    println!("{what}: {}", res.status());
    let detail = problem(res, want.as_u16()).await;
    assert!(
        !detail.contains("alpha"),
        "{what} names the owner: {detail}"
    );
}

/// An operation of the document: method, templated path, the scheme guarding it.
struct Operation {
    method: Method,
    path: String,
    scheme: Option<String>,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        for (method, op) in methods.as_object().expect("operations") {
            let scheme = op["security"][0]
                .as_object()
                .and_then(|o| o.keys().next().cloned());
            ops.push(Operation {
                method: Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method"),
                path: path.clone(),
                scheme,
            });
        }
    }
    // Deletions last: the right credential's pass must not remove what later ones act on.
    ops.sort_by_key(|o| o.method == Method::DELETE);
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_takes_only_its_own_credential() {
    let app = spawn_api().await;
    let owner = app.tenant_with("alpha", roomy()).await;
    let other = app.tenant_with("beta", roomy()).await;
    let revoked = app.new_key("alpha").await;
    let revoked_key = revoked["key"].as_str().expect("key").to_owned();
    let revoked_key_id = revoked["keyId"].as_str().expect("id").to_owned();
    let res = app
        .admin(
            Method::DELETE,
            &format!("/v1/tenants/alpha/keys/{revoked_key_id}"),
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "revoke: {}", res.status());

    let deployment = app.own_one_of_each(&owner, "shop", IMAGE).await;
    let fixture = Fixture {
        owner: owner.clone(),
        deployment,
        revoked_key_id,
    };

    let doc = app.document().await;
    let schemes: BTreeSet<&str> = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(schemes, BTreeSet::from(["adminToken", "apiKey"]));

    let wrong_secret = Credential::bearer(&format!("bk_{}_{}", owner.key_id, "0".repeat(64)));
    let common = [
        ("no credential", Credential::None),
        ("a revoked key", Credential::bearer(&revoked_key)),
        ("a key with a wrong secret", wrong_secret),
    ];
    let for_admin = [
        (
            "a wrong X-Admin-Token",
            Credential::Header("x-admin-token", "a-wrong-but-long-enough-token".into()),
        ),
        ("a tenant's key", Credential::bearer(&owner.key)),
        (
            "a tenant's key as X-Admin-Token",
            Credential::Header("x-admin-token", owner.key.clone()),
        ),
        ("the admin token as a key", Credential::bearer(ADMIN_TOKEN)),
    ];
    let for_tenant = [
        (
            "a wrong key",
            Credential::bearer("a-wrong-but-long-enough-key"),
        ),
        ("the admin token as a key", Credential::bearer(ADMIN_TOKEN)),
        (
            "the admin token",
            Credential::Header("x-admin-token", ADMIN_TOKEN.into()),
        ),
        (
            "a key without Bearer",
            Credential::Header("authorization", owner.key.clone()),
        ),
    ];

    let ops = operations(&doc);
    let mut open = BTreeSet::new();
    // First every refusal (nothing changes), then every right credential.
    for op in &ops {
        let url = app.url(&fixture.fill(&op.path));
        let body = body(&op.method, &op.path, &fixture);
        let extra: &[(&str, Credential)] = match op.scheme.as_deref() {
            Some("adminToken") => &for_admin,
            Some("apiKey") => &for_tenant,
            Some(other) => panic!("{} {}: unknown scheme {other}", op.method, op.path),
            None => {
                open.insert(op.path.as_str());
                continue;
            }
        };
        for (what, credential) in common.iter().chain(extra) {
            let res = send(&app, &op.method, &url, &body, credential).await;
            let what = format!("{} {} with {what}", op.method, op.path);
            assert_problem(res, StatusCode::UNAUTHORIZED, &what).await;
        }
        if op.scheme.as_deref() == Some("apiKey") {
            let other_body = match op.method {
                Method::PUT => json!({ "image": OTHER_IMAGE }),
                _ => body.clone(),
            };
            let key = Credential::bearer(&other.key);
            let res = send(&app, &op.method, &url, &other_body, &key).await;
            let status = res.status();
            let what = format!("{} {} with another tenant's key", op.method, op.path);
            match (op.method.as_str(), op.path.as_str()) {
                // App ids are host names, one namespace for every tenant: taken, not shown.
                ("PUT", "/v1/apps/{appId}") => {
                    assert_problem(res, StatusCode::CONFLICT, &what).await
                }
                // Template ids are the tenant's own: the other writes its own `tpl`.
                ("PUT", "/v1/templates/{templateId}") => {
                    assert_eq!(status, StatusCode::CREATED, "{what}")
                }
                // No path names the owner's things: the answer is the caller's own.
                ("GET", "/v1/apps") => {
                    let list: Value = res.json().await.unwrap();
                    assert_eq!(list["items"], json!([]), "{what}");
                }
                ("GET", "/v1/usage") => {
                    let list: Value = res.json().await.unwrap();
                    let items = list["items"].as_array().expect("items");
                    assert!(
                        items.iter().all(|u| u["keyId"] == other.key_id.as_str()),
                        "{what} shows another key's: {list}"
                    );
                }
                // An instance of the template `tpl`: the other tenant has none (404) or, once
                // it wrote its own, it gets an instance of its own.
                ("POST", "/v1/instances") => assert!(
                    status == StatusCode::NOT_FOUND || status == StatusCode::CREATED,
                    "{what}: {status}"
                ),
                _ => assert_problem(res, StatusCode::NOT_FOUND, &what).await,
            }
        }
    }
    // The other tenant's `tpl` did not touch the owner's.
    let (status, tpl) = app.get(&owner, "/v1/templates/tpl").await;
    assert_eq!(status, 200);
    assert_eq!(tpl["spec"]["image"], IMAGE, "{tpl}");

    let mut tried = 0;
    for op in ops.iter().filter(|o| o.scheme.is_some()) {
        let url = app.url(&fixture.fill(&op.path));
        let body = body(&op.method, &op.path, &fixture);
        let own = match op.scheme.as_deref() {
            Some("adminToken") => Credential::Header("x-admin-token", ADMIN_TOKEN.into()),
            _ => Credential::bearer(&owner.key),
        };
        let res = send(&app, &op.method, &url, &body, &own).await;
        let status = res.status();
        // The revoked key's id is the one `{keyId}` names: revoking it again finds nothing.
        let gone_by_design = op.path == "/v1/tenants/{tenantId}/keys/{keyId}";
        assert!(
            status != StatusCode::UNAUTHORIZED
                && status != StatusCode::FORBIDDEN
                && (status != StatusCode::NOT_FOUND || gone_by_design),
            "{} {} with its own credential: {status} {}",
            op.method,
            op.path,
            res.text().await.unwrap_or_default()
        );
        tried += 1;
    }
    assert_eq!(
        open,
        BTreeSet::from(["/internal/health", "/metrics", "/openapi.json"]),
        "only these answer without a credential"
    );
    assert!(
        tried >= 20,
        "only {tried} secured operations in the document"
    );
    app.stop().await;
}
