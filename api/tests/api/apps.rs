//! Apps as desired state and their deployments, through the api to the real control plane.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{problem, spawn_api, Tenant, TestApi};

const IMAGE: &str = "127.0.0.1:5000/demo:v1";

async fn job_of(app: &TestApi, tenant: &Tenant, deployment: &Value) -> Value {
    let id = deployment["deploymentId"].as_str().unwrap();
    let d = app
        .api
        .store
        .deployment(&tenant.id, id)
        .await
        .unwrap()
        .unwrap();
    app.control.get_job(d.job_id.as_deref().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_from_spec_to_delete() {
    let app = spawn_api().await;
    let t = app.tenant("acme").await;
    let spec = json!({ "image": IMAGE, "env": { "A": "1", "B": "2" }, "secretEnv": { "TOKEN": "s3cret-value" } });
    let res = app.put_app(&t, "shop", spec.clone()).await;
    assert_eq!(res.status(), 201);
    let body = res.text().await.unwrap();
    assert!(
        !body.contains("s3cret-value"),
        "no secret value in an answer: {body}"
    );
    let res = app.put_app(&t, "shop", spec).await;
    assert_eq!(res.status(), 200);
    let (_, shown) = app.get(&t, "/v1/apps/shop").await;
    assert_eq!(shown["status"]["state"], "NEW");
    assert_eq!(shown["secretEnvNames"], json!(["TOKEN"]));

    let res = app
        .as_tenant(&t, Method::POST, "/v1/apps/shop/deployments")
        .header("Idempotency-Key", "k-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let first: Value = res.json().await.unwrap();
    assert_eq!(first["state"], "PENDING");
    assert_eq!(first["kind"], "DEPLOY");
    let again: Value = app
        .as_tenant(&t, Method::POST, "/v1/apps/shop/deployments")
        .header("Idempotency-Key", "k-1")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["deploymentId"], first["deploymentId"],
        "a retry answers the first deployment"
    );
    let job = job_of(&app, &t, &first).await;
    assert_eq!(job["payload"]["labels"]["berth-tenant"], "acme");
    assert_eq!(job["payload"]["secretEnvNames"], json!(["TOKEN"]));
    app.finish_next_job().await;
    let done = app
        .wait_state(&t, first["deploymentId"].as_str().unwrap(), "SUCCEEDED")
        .await;
    assert_eq!(done["image"], IMAGE);
    assert!(done["url"].is_string());
    let (_, shown) = app.get(&t, "/v1/apps/shop").await;
    assert_eq!(shown["status"]["state"], "RUNNING");

    // Config: merge, null removes, and a deployment follows.
    let res = app
        .as_tenant(&t, Method::PATCH, "/v1/apps/shop/config")
        .json(&json!({ "env": { "A": null, "C": "3" }, "secretEnv": { "TOKEN": "n3w-secret" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let second: Value = res.json().await.unwrap();
    let job = job_of(&app, &t, &second).await;
    assert_eq!(job["payload"]["env"], json!({ "B": "2", "C": "3" }));
    assert!(!job.to_string().contains("n3w-secret"));
    app.finish_next_job().await;
    app.wait_state(&t, second["deploymentId"].as_str().unwrap(), "SUCCEEDED")
        .await;

    // A new image, then a rollback to the first deployment's.
    let res = app
        .as_tenant(&t, Method::POST, "/v1/apps/shop/deployments")
        .json(&json!({ "image": "127.0.0.1:5000/demo:v2" }))
        .send()
        .await
        .unwrap();
    let third: Value = res.json().await.unwrap();
    assert_eq!(third["image"], "127.0.0.1:5000/demo:v2");
    app.finish_next_job().await;
    app.wait_state(&t, third["deploymentId"].as_str().unwrap(), "SUCCEEDED")
        .await;
    let res = app
        .as_tenant(&t, Method::POST, "/v1/apps/shop/rollback")
        .json(&json!({ "deploymentId": first["deploymentId"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let back: Value = res.json().await.unwrap();
    assert_eq!(back["image"], IMAGE);
    let job = job_of(&app, &t, &back).await;
    assert_eq!(
        job["payload"]["env"],
        json!({ "A": "1", "B": "2" }),
        "the first deployment's spec"
    );
    assert_eq!(
        job["payload"]["secretEnvNames"],
        json!(["TOKEN"]),
        "with the current secrets"
    );
    app.finish_next_job().await;
    app.wait_state(&t, back["deploymentId"].as_str().unwrap(), "SUCCEEDED")
        .await;

    let (_, page) = app.get(&t, "/v1/apps/shop/deployments?limit=2").await;
    assert_eq!(
        page["items"][0]["deploymentId"], back["deploymentId"],
        "newest first"
    );
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, rest) = app
        .get(
            &t,
            &format!("/v1/apps/shop/deployments?limit=10&cursor={cursor}"),
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);

    let res = app
        .as_tenant(&t, Method::POST, "/v1/apps/shop/stop")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let stop: Value = res.json().await.unwrap();
    assert_eq!(stop["kind"], "STOP");
    let stop_job = job_of(&app, &t, &stop).await;
    assert_eq!(stop_job["kind"], "STOP");
    assert!(
        stop_job["payload"].get("removeVolumes").is_none(),
        "a stop keeps the volumes: {stop_job}"
    );
    app.finish_next_job().await;
    app.wait_state(&t, stop["deploymentId"].as_str().unwrap(), "SUCCEEDED")
        .await;
    assert_eq!(
        app.get(&t, "/v1/apps/shop").await.1["status"]["state"],
        "STOPPED"
    );

    let res = app
        .as_tenant(&t, Method::DELETE, "/v1/apps/shop")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let delete: Value = res.json().await.unwrap();
    assert_eq!(delete["kind"], "DELETE");
    let delete_job = job_of(&app, &t, &delete).await;
    assert_eq!(delete_job["kind"], "STOP");
    assert_eq!(
        delete_job["payload"]["removeVolumes"], true,
        "a delete takes the volumes with it: {delete_job}"
    );
    problem(
        app.put_app(&t, "shop", json!({ "image": IMAGE })).await,
        409,
    )
    .await;
    app.finish_next_job().await;
    app.wait_state(&t, delete["deploymentId"].as_str().unwrap(), "SUCCEEDED")
        .await;
    problem(
        app.as_tenant(&t, Method::GET, "/v1/apps/shop")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let other = app.tenant("other").await;
    assert_eq!(
        app.put_app(&other, "shop", json!({ "image": IMAGE }))
            .await
            .status(),
        201,
        "the id is free again"
    );

    let (_, usage) = app.get(&t, "/v1/usage?limit=50").await;
    let actions: Vec<&str> = usage["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["action"].as_str().unwrap())
        .collect();
    for a in [
        "app.put",
        "deployment.create",
        "app.config",
        "app.rollback",
        "app.stop",
        "app.delete",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    assert!(!usage.to_string().contains("s3cret"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_kept_apart_on_every_route() {
    let app = spawn_api().await;
    let a = app.tenant("alpha").await;
    let b = app.tenant("beta").await;
    let dep = &app.own_one_of_each(&a, "mine", IMAGE).await;

    let missing = [
        (Method::GET, "/v1/apps/mine".to_owned(), None),
        (Method::GET, "/v1/apps/mine/deployments".into(), None),
        (
            Method::POST,
            "/v1/apps/mine/deployments".into(),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/apps/mine/rollback".into(),
            Some(json!({ "deploymentId": dep })),
        ),
        (
            Method::PATCH,
            "/v1/apps/mine/config".into(),
            Some(json!({ "env": { "X": "1" } })),
        ),
        (Method::POST, "/v1/apps/mine/stop".into(), None),
        (Method::DELETE, "/v1/apps/mine".into(), None),
        (Method::GET, format!("/v1/deployments/{dep}"), None),
        (Method::GET, format!("/v1/deployments/{dep}/events"), None),
        (Method::GET, format!("/v1/deployments/{dep}/logs"), None),
        (Method::GET, "/v1/templates/tpl".into(), None),
        (Method::GET, "/v1/instances/alice".into(), None),
        (
            Method::POST,
            "/v1/instances".into(),
            Some(json!({ "template": "tpl", "slug": "bob" })),
        ),
    ];
    for (method, path, body) in missing {
        let mut req = app.as_tenant(&b, method.clone(), &path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        problem(req.send().await.unwrap(), 404).await;
    }
    // Ids another tenant holds: taken, not shown.
    let detail = problem(
        app.put_app(&b, "mine", json!({ "image": IMAGE })).await,
        409,
    )
    .await;
    assert!(!detail.contains("alpha"));
    let res = app
        .as_tenant(&b, Method::PUT, "/v1/templates/tpl2")
        .json(&json!({ "image": IMAGE }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = app
        .as_tenant(&b, Method::POST, "/v1/instances")
        .json(&json!({ "template": "tpl2", "slug": "alice" }))
        .send()
        .await
        .unwrap();
    problem(res, 409).await;
    let (_, apps) = app.get(&b, "/v1/apps").await;
    assert_eq!(apps["items"], json!([]));
    let (_, usage) = app.get(&b, "/v1/usage").await;
    assert!(usage["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["keyId"] == b.key_id));
    // Nothing of alpha's changed.
    assert_eq!(
        app.api
            .store
            .deployments("alpha", "mine", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_quota_refuses_with_its_name() {
    let app = spawn_api().await;
    let t = app.tenant_with("acme", json!({ "quotas": { "maxApps": 2, "maxConcurrentDeploys": 1, "deploysPerDay": 2, "deploysPerMonth": 3 } })).await;
    for id in ["a1", "a2"] {
        assert_eq!(
            app.put_app(&t, id, json!({ "image": IMAGE }))
                .await
                .status(),
            201
        );
    }
    assert!(
        problem(app.put_app(&t, "a3", json!({ "image": IMAGE })).await, 403)
            .await
            .contains("maxApps")
    );

    assert_eq!(app.deploy(&t, "a1").await.status(), 201);
    let res = app.deploy(&t, "a2").await;
    assert!(res.headers().contains_key("retry-after"));
    assert!(problem(res, 429).await.contains("maxConcurrentDeploys"));
    app.finish_next_job().await;
    let first = app
        .api
        .store
        .latest_deployment("acme", "a1")
        .await
        .unwrap()
        .unwrap();
    app.wait_state(&t, &first.deployment_id, "SUCCEEDED").await;
    assert_eq!(app.deploy(&t, "a2").await.status(), 201);
    app.finish_next_job().await;
    let second = app
        .api
        .store
        .latest_deployment("acme", "a2")
        .await
        .unwrap()
        .unwrap();
    app.wait_state(&t, &second.deployment_id, "SUCCEEDED").await;
    let res = app.deploy(&t, "a1").await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry));
    assert!(problem(res, 429).await.contains("deploysPerDay"));

    app.admin(Method::PATCH, "/v1/tenants/acme")
        .json(&json!({ "quotas": { "deploysPerDay": 10, "deploysPerMonth": 2 } }))
        .send()
        .await
        .unwrap();
    assert!(problem(app.deploy(&t, "a1").await, 429)
        .await
        .contains("deploysPerMonth"));
    let usage = app.api.store.usage("acme", None, 50).await.unwrap();
    assert!(usage
        .iter()
        .any(|u| u.status == 403 && u.detail.as_deref().is_some_and(|d| d.contains("maxApps"))));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_route_changes_nothing() {
    let app = spawn_api().await;
    let t = app.tenant("acme").await;
    assert_eq!(
        app.put_app(&t, "good", json!({ "image": IMAGE }))
            .await
            .status(),
        201
    );
    let big = "x".repeat(300 * 1024);
    let writes = [
        (Method::PUT, "/v1/apps/good"),
        (Method::POST, "/v1/apps/good/deployments"),
        (Method::POST, "/v1/apps/good/rollback"),
        (Method::PATCH, "/v1/apps/good/config"),
        (Method::PUT, "/v1/templates/tpl"),
        (Method::POST, "/v1/instances"),
    ];
    for (method, path) in writes {
        let send = |body: String, kind: &'static str| {
            app.as_tenant(&t, method.clone(), path)
                .header("content-type", kind)
                .body(body)
                .send()
        };
        problem(
            send("{not json".into(), "application/json").await.unwrap(),
            400,
        )
        .await;
        let detail = problem(
            send(r#"{"imgae": "x"}"#.into(), "application/json")
                .await
                .unwrap(),
            400,
        )
        .await;
        assert!(detail.contains("imgae"), "{path}: {detail}");
        problem(
            send(format!(r#"{{"image": "{big}"}}"#), "application/json")
                .await
                .unwrap(),
            413,
        )
        .await;
        problem(send("{}".into(), "text/plain").await.unwrap(), 415).await;
    }
    for (method, path, body) in [
        (Method::PUT, "/v1/apps/Bad_App", json!({ "image": IMAGE })),
        (
            Method::PUT,
            "/v1/apps/good",
            json!({ "image": "Bad Image" }),
        ),
        (Method::PUT, "/v1/apps/good", json!({})),
        (
            Method::PUT,
            "/v1/apps/good",
            json!({ "image": IMAGE, "labels": { "berth-tenant": "x" } }),
        ),
        (
            Method::POST,
            "/v1/apps/good/deployments",
            json!({ "image": "Bad Image" }),
        ),
        (
            Method::POST,
            "/v1/apps/good/rollback",
            json!({ "deploymentId": "nope" }),
        ),
        (
            Method::PATCH,
            "/v1/apps/good/config",
            json!({ "env": { "1BAD": "v" } }),
        ),
        (
            Method::PUT,
            "/v1/templates/Bad_Tpl",
            json!({ "image": IMAGE }),
        ),
        (
            Method::POST,
            "/v1/instances",
            json!({ "template": "tpl", "slug": "Bad Slug" }),
        ),
        (Method::GET, "/v1/apps?limit=0", Value::Null),
        (Method::GET, "/v1/apps?cursor=Bad_Cursor", Value::Null),
        (Method::GET, "/v1/deployments/not-a-uuid", Value::Null),
        (Method::GET, "/v1/usage?cursor=x", Value::Null),
    ] {
        let mut req = app.as_tenant(&t, method, path);
        if !body.is_null() {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 400, "{path} {body}");
        problem(res, 400).await;
    }
    let (_, shown) = app.get(&t, "/v1/apps/good").await;
    assert_eq!(shown["spec"]["image"], IMAGE, "nothing changed");
    assert!(app
        .api
        .store
        .deployments("acme", "good", None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(app
        .api
        .store
        .template("acme", "tpl")
        .await
        .unwrap()
        .is_none());
    let jobs: Value = app
        .control
        .deploy(Method::GET, "/deploy/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs["items"], json!([]), "no job reached the control plane");
    app.stop().await;
}

#[tokio::test]
async fn an_app_that_sleeps_shows_sleeping_while_its_node_reports_it_asleep() {
    let app = spawn_api().await;
    let t = app.tenant("acme").await;
    let spec = json!({ "image": IMAGE, "sleepAfterSecs": 60 });
    assert_eq!(app.put_app(&t, "dozy", spec).await.status(), 201);
    let res = app.deploy(&t, "dozy").await;
    assert_eq!(res.status(), 201);
    let deployment: Value = res.json().await.unwrap();
    app.finish_next_job().await;
    let id = deployment["deploymentId"].as_str().unwrap();
    app.wait_state(&t, id, "SUCCEEDED").await;
    let state = || async { app.get(&t, "/v1/apps/dozy").await.1["status"]["state"].clone() };
    assert_eq!(state().await, "RUNNING");

    // The node's agent reports the app asleep, then awake again.
    let capacity = json!({ "cpus": 4.0, "memoryMb": 8192, "maxApps": 100, "maxSleepingApps": 100 });
    let reported =
        |s: &str| json!([{ "appId": "dozy", "containerId": "c-1", "image": IMAGE, "state": s }]);
    let res = app
        .control
        .node_reports("node-1", capacity.clone(), reported("sleeping"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(state().await, "SLEEPING");
    let res = app
        .control
        .node_reports("node-1", capacity, reported("running"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(state().await, "RUNNING");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_api_process_sees_a_change_within_the_read_cache_ttl() {
    let a = spawn_api().await;
    let b = a.replica().await;
    let t = a.tenant("acme").await;
    let image = |v: &str| format!("127.0.0.1:5000/demo:{v}");
    let res = a.put_app(&t, "shop", json!({ "image": image("v1") })).await;
    assert_eq!(res.status(), 201);
    // Both processes read it, so both hold it in their read caches.
    for api in [&a, &b] {
        let (status, shown) = api.get(&t, "/v1/apps/shop").await;
        assert_eq!(
            (status, shown["spec"]["image"].clone()),
            (200, json!(image("v1")))
        );
    }
    let res = a.put_app(&t, "shop", json!({ "image": image("v2") })).await;
    assert_eq!(res.status(), 200);
    let (_, shown) = a.get(&t, "/v1/apps/shop").await;
    assert_eq!(
        shown["spec"]["image"],
        image("v2"),
        "the writer sees its write at once"
    );
    let limit = berth_api::storage::APP_READ_TTL + Duration::from_secs(2);
    let deadline = Instant::now() + limit;
    loop {
        let (_, shown) = b.get(&t, "/v1/apps/shop").await;
        if shown["spec"]["image"] == image("v2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other process never saw the change: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = b.tenant("other").await;
    assert_eq!(
        b.get(&other, "/v1/apps/shop").await.0,
        404,
        "another tenant's app"
    );
    b.stop().await;
    a.stop().await;
}
