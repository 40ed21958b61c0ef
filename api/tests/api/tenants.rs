//! Operators' tenants and keys; a tenant's key: unknown, revoked, rate-limited.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{problem, spawn_api, Tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_manage_tenants_and_keys() {
    let app = spawn_api().await;
    let res = app.client.get(app.url("/v1/tenants")).send().await.unwrap();
    problem(res, 401).await;
    let res = app
        .client
        .get(app.url("/v1/tenants"))
        .header("X-Admin-Token", "wrong-token-value")
        .send()
        .await
        .unwrap();
    problem(res, 401).await;

    let body = json!({ "tenantId": "acme", "name": "Acme", "quotas": { "maxApps": 3, "maxConcurrentDeploys": 1, "deploysPerDay": 5, "deploysPerMonth": 50 }, "rateLimitPerMinute": 100 });
    let res = app
        .admin(Method::POST, "/v1/tenants")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["quotas"]["maxApps"], 3);
    let res = app
        .admin(Method::POST, "/v1/tenants")
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(res, 409).await;
    for bad in [
        json!({ "tenantId": "Bad_Id", "name": "x" }),
        json!({ "tenantId": "ok", "name": "x", "extra": 1 }),
        json!({ "tenantId": "ok", "name": "x", "rateLimitPerMinute": 0 }),
    ] {
        let res = app
            .admin(Method::POST, "/v1/tenants")
            .json(&bad)
            .send()
            .await
            .unwrap();
        problem(res, 400).await;
    }
    let res = app
        .admin(Method::PATCH, "/v1/tenants/acme")
        .json(&json!({ "quotas": { "maxApps": 7 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (_, t) = (
        0,
        app.admin(Method::GET, "/v1/tenants/acme")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
    );
    assert_eq!(t["quotas"]["maxApps"], 7);
    assert_eq!(t["quotas"]["deploysPerDay"], 5);
    let list: Value = app
        .admin(Method::GET, "/v1/tenants")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    problem(
        app.admin(Method::GET, "/v1/tenants/nobody")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    let key = app.new_key("acme").await;
    let text = key["key"].as_str().unwrap().to_owned();
    let listed: Value = app
        .admin(Method::GET, "/v1/tenants/acme/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shown = listed.to_string();
    assert!(
        !shown.contains(&text) && !shown.contains(&text[20..]),
        "the key is shown once only"
    );
    assert_eq!(listed["items"][0]["lastUsedAt"], Value::Null);
    let stored = app
        .api
        .store
        .key(key["keyId"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.key_hash.contains(&text[20..]), "stored as a hash");

    // A use shows in lastUsedAt at once, and reaches the table with the next flush.
    let res = app
        .client
        .get(app.url("/v1/apps"))
        .bearer_auth(&text)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let listed: Value = app
        .admin(Method::GET, "/v1/tenants/acme/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["items"][0]["lastUsedAt"].is_string());
    app.api.keys.flush().await.unwrap();
    assert!(app
        .api
        .store
        .key(key["keyId"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap()
        .last_used_at
        .is_some());

    let path = format!("/v1/tenants/acme/keys/{}", key["keyId"].as_str().unwrap());
    assert_eq!(
        app.admin(Method::DELETE, &path)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let res = app
        .client
        .get(app.url("/v1/apps"))
        .bearer_auth(&text)
        .send()
        .await
        .unwrap();
    assert!(problem(res, 401).await.contains("revoked"));
    problem(app.admin(Method::DELETE, &path).send().await.unwrap(), 404).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_are_not_keys_are_refused() {
    let app = spawn_api().await;
    let t = app.tenant("acme").await;
    for header in [
        "",
        "Bearer ",
        "Basic abc",
        "Bearer bk_0123456789abcdef_00",
        &format!("Bearer bk_{}_{}", t.key_id, "0".repeat(64)),
    ] {
        let mut req = app.client.get(app.url("/v1/apps"));
        if !header.is_empty() {
            req = req.header("Authorization", header);
        }
        problem(req.send().await.unwrap(), 401).await;
    }
    app.stop().await;
}

/// The key cache keeps the secret that passed the HMAC check: another secret for the same id
/// (even one character off) is still hashed and refused, and the right one still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_accepted_once_accepts_no_other_secret() {
    let app = spawn_api().await;
    let t = app.tenant("acme").await;
    assert_eq!(app.get(&t, "/v1/apps").await.0, 200);
    let secret = t.key.rsplit('_').next().unwrap();
    let flipped = if secret.ends_with('0') { "1" } else { "0" };
    let near = format!("{}{flipped}", &t.key[..t.key.len() - 1]);
    for key in [format!("bk_{}_{}", t.key_id, "0".repeat(64)), near] {
        let wrong = Tenant { key, ..t.clone() };
        let res = app.as_tenant(&wrong, Method::GET, "/v1/apps").send();
        let detail = problem(res.await.unwrap(), 401).await;
        assert!(detail.contains("not valid"), "{}: {detail}", wrong.key);
    }
    assert_eq!(app.get(&t, "/v1/apps").await.0, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_key() {
    let app = spawn_api().await;
    let t = app
        .tenant_with("acme", json!({ "rateLimitPerMinute": 3 }))
        .await;
    for _ in 0..3 {
        assert_eq!(app.get(&t, "/v1/apps").await.0, 200);
    }
    let res = app
        .as_tenant(&t, Method::GET, "/v1/apps")
        .send()
        .await
        .unwrap();
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry));
    assert!(problem(res, 429).await.contains("rateLimitPerMinute"));
    // A second key of the same tenant has its own bucket.
    let other = app.new_key("acme").await;
    let res = app
        .client
        .get(app.url("/v1/apps"))
        .bearer_auth(other["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A refused change is in the usage log.
    let res = app
        .as_tenant(&t, Method::PUT, "/v1/apps/a1")
        .json(&json!({ "image": "img:1" }))
        .send()
        .await
        .unwrap();
    problem(res, 429).await;
    let usage = app.api.store.usage("acme", None, 10).await.unwrap();
    assert_eq!(usage[0].status, 429);
    assert_eq!(usage[0].action, "app.put");
    app.stop().await;
}
