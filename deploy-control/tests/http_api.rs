//! The control plane's HTTP API, end to end over real databases: every test runs on
//! PostgreSQL, MariaDB and SQLite.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use berth_shared::wire::NodeState;
use common::app::{spawn_app, spawn_app_with, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

async fn problem(res: reqwest::Response, status: u16) -> String {
    assert_eq!(res.status(), status, "status");
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = res.json().await.expect("problem json");
    assert_eq!(body["status"], status);
    body["detail"].as_str().expect("detail").to_owned()
}

async fn job_count(app: &TestApp) -> usize {
    let page: Value = app
        .deploy(Method::GET, "/deploy/jobs?limit=500")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().len()
}

per_database!(create_read_list_cancel, |kind| async move {
    let app = spawn_app(kind).await;
    let job = app.deploy_image("shop", "127.0.0.1:5000/shop:v1").await;
    assert_eq!(job["state"], "PENDING");
    assert_eq!(job["attempt"], 0);
    assert_eq!(job["payload"]["containerPort"], 8080);
    let id = job["jobId"].as_str().unwrap();
    assert_eq!(app.get_job(id).await["jobId"], id);

    // Labels and filters.
    let res = app
        .create_job(json!({ "appId": "blog", "image": "blog:1", "labels": { "tenant": "acme" }, "secretEnv": { "DB_PASSWORD": "hunter2" } }))
        .await;
    assert_eq!(res.status(), 201);
    let text = res.text().await.unwrap();
    assert!(!text.contains("hunter2"), "a secret value leaked: {text}");
    assert!(text.contains("DB_PASSWORD"));
    let page: Value = app
        .deploy(Method::GET, "/deploy/jobs?label=tenant:acme")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["appId"], "blog");
    let page: Value = app
        .deploy(Method::GET, "/deploy/jobs?appId=shop&state=PENDING")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["jobId"], id);

    // Cursor pagination, newest first, every job once.
    for i in 0..5 {
        app.deploy_image(&format!("page-{i}"), "img:1").await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/deploy/jobs?limit=3&cursor={c}"),
            None => "/deploy/jobs?limit=3".to_owned(),
        };
        let page: Value = app
            .deploy(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["appId"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["page-4", "page-3", "page-2", "page-1", "page-0", "blog", "shop"]
    );

    // Cancel a pending job; cancelling again is a conflict.
    let res = app
        .deploy(Method::POST, &format!("/deploy/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["state"], "CANCELLED");
    let res = app
        .deploy(Method::POST, &format!("/deploy/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert!(problem(res, 409).await.contains("only PENDING"));
    app.stop().await;
});

per_database!(idempotent_create, |kind| async move {
    let app = spawn_app(kind).await;
    let body = json!({ "appId": "shop", "image": "shop:v1" });
    let send = |body: Value| {
        app.deploy(Method::POST, "/deploy/jobs")
            .header("Idempotency-Key", "order-42")
            .json(&body)
            .send()
    };
    let first: Value = send(body.clone()).await.unwrap().json().await.unwrap();
    let again = send(body.clone()).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(
        again.json::<Value>().await.unwrap()["jobId"],
        first["jobId"]
    );
    let other = send(json!({ "appId": "shop", "image": "shop:v2" }))
        .await
        .unwrap();
    assert!(problem(other, 409).await.contains("Idempotency-Key"));
    assert_eq!(job_count(&app).await, 1);
    app.stop().await;
});

per_database!(claim_race_for_one_job, |kind| async move {
    let app = spawn_app(kind).await;
    app.node_heartbeat("node-a", 10).await;
    app.deploy_image("solo", "solo:1").await;
    let (a, b) = tokio::join!(app.claim("runner-a", 0), app.claim("runner-b", 0));
    assert!(
        a.is_some() ^ b.is_some(),
        "exactly one claimer gets the job"
    );
    let claim = a.or(b).unwrap();
    assert_eq!(claim["job"]["state"], "RUNNING");
    assert_eq!(claim["job"]["attempt"], 1);
    assert_eq!(claim["node"]["nodeId"], "node-a");
    app.stop().await;
});

per_database!(many_claimers_each_job_once, |kind| async move {
    let app = spawn_app(kind).await;
    app.node_heartbeat("node-a", 10_000).await;
    const JOBS: usize = 400;
    for i in 0..JOBS {
        app.deploy_image(&format!("app-{}", i % 50), "img:1").await;
    }
    let claimed = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for r in 0..8 {
        let (client, base, token, claimed) = (
            app.client.clone(),
            app.base.clone(),
            app.secrets.runner.expose().to_owned(),
            claimed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let runner = format!("runner-{r}");
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let res = client.post(format!("{base}/runner/jobs/claim")).header("X-Runner-Token", &token)
                    .json(&json!({ "runnerId": runner, "wait": 2 })).send().await.unwrap();
                // An empty wait says nothing by itself under load (a job of a busy app only
                // becomes claimable when its predecessor reports): stop once every job is
                // done, or at the deadline.
                if res.status() == 204 {
                    if claimed.lock().await.len() >= JOBS || Instant::now() > deadline {
                        return;
                    }
                    continue;
                }
                let claim: Value = res.json().await.unwrap();
                let id = claim["job"]["jobId"].as_str().unwrap().to_owned();
                let done = client.post(format!("{base}/runner/jobs/{id}/report")).header("X-Runner-Token", &token)
                    .json(&json!({ "runnerId": runner, "leaseToken": claim["lease"]["token"], "outcome": "SUCCEEDED" }))
                    .send().await.unwrap();
                assert_eq!(done.status(), 200);
                claimed.lock().await.push(id);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let claimed = claimed.lock().await;
    let unique: HashSet<&String> = claimed.iter().collect();
    assert_eq!(claimed.len(), JOBS, "every job claimed");
    assert_eq!(unique.len(), JOBS, "no job claimed twice");
    app.stop().await;
});

per_database!(
    claims_woken_together_share_transactions,
    |kind| async move {
        // Eight claims wait on an empty queue; eight jobs arrive; the claims, woken together,
        // are served by fewer transactions than claims, and each gets its own job.
        let app = spawn_app(kind).await;
        app.node_heartbeat("node-a", 100).await;
        let waiters: Vec<_> = (0..8)
            .map(|r| {
                let (client, url, token) = (
                    app.client.clone(),
                    app.url("/runner/jobs/claim"),
                    app.secrets.runner.expose().to_owned(),
                );
                tokio::spawn(async move {
                    let res = client
                        .post(url)
                        .header("X-Runner-Token", token)
                        .json(&json!({ "runnerId": format!("r{r}"), "wait": 20 }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200);
                    let claim: Value = res.json().await.unwrap();
                    (
                        claim["job"]["jobId"].as_str().unwrap().to_owned(),
                        claim["job"]["runnerId"].clone(),
                    )
                })
            })
            .collect();
        app.until_claims_wait(8).await;
        let before = batch_metrics(&app).await;
        for i in 0..8 {
            app.deploy_image(&format!("together-{i}"), "img:1").await;
        }
        let mut jobs = HashSet::new();
        for (r, waiter) in waiters.into_iter().enumerate() {
            let (job, runner) = waiter.await.unwrap();
            assert_eq!(
                runner,
                format!("r{r}"),
                "the job carries its claimer's runner id"
            );
            assert!(jobs.insert(job), "a job handed to two claims");
        }
        let after = batch_metrics(&app).await;
        let (transactions, claims) = (after.0 - before.0, after.1 - before.1);
        assert!(claims >= 8.0, "{claims} claims counted");
        assert!(
            transactions < claims,
            "{claims} claims took {transactions} transactions: none was shared"
        );
        app.stop().await;
    }
);

/// `berth_claim_batch_size`: (claim transactions, claims they served) so far.
async fn batch_metrics(app: &TestApp) -> (f64, f64) {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("berth_claim_batch_size_count "),
        value("berth_claim_batch_size_sum "),
    )
}

per_database!(long_poll_claim_wakes_on_new_job, |kind| async move {
    let app = spawn_app(kind).await;
    app.node_heartbeat("node-a", 10).await;
    let waiter = {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/runner/jobs/claim"),
            app.secrets.runner.expose().to_owned(),
        );
        tokio::spawn(async move {
            let res = client
                .post(url)
                .header("X-Runner-Token", token)
                .json(&json!({ "runnerId": "r1", "wait": 20 }))
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), Instant::now())
        })
    };
    // Let the claim start waiting on an empty queue.
    app.until_claims_wait(1).await;
    let created = Instant::now();
    app.deploy_image("wake", "wake:1").await;
    let (status, answered) = waiter.await.unwrap();
    assert_eq!(status, 200);
    // The periodic re-check is every second; a wake-up answers well before it.
    assert!(
        answered.duration_since(created) < Duration::from_millis(900),
        "woken by the new job, not by the re-check"
    );
    app.stop().await;
});

per_database!(job_wait_returns_on_change, |kind| async move {
    let app = spawn_app(kind).await;
    app.node_heartbeat("node-a", 10).await;
    let job = app.deploy_image("watch", "watch:1").await;
    let id = job["jobId"].as_str().unwrap().to_owned();
    let version = job["version"].as_i64().unwrap();
    let watcher = {
        let req = app.deploy(
            Method::GET,
            &format!("/deploy/jobs/{id}?wait=20&version={version}"),
        );
        tokio::spawn(async move { req.send().await.unwrap().json::<Value>().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.claim("r1", 0).await.expect("claimed");
    let seen = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("watcher answered")
        .unwrap();
    assert_eq!(seen["state"], "RUNNING");
    assert!(seen["version"].as_i64().unwrap() > version);
    app.stop().await;
});

per_database!(stale_lease_is_refused, |kind| async move {
    let app = spawn_app_with(kind, |s| s.lease = Duration::from_secs(1)).await;
    app.node_heartbeat("node-a", 10).await;
    app.deploy_image("lease", "lease:1").await;
    let first = app.claim("runner-a", 0).await.unwrap();
    let id = first["job"]["jobId"].as_str().unwrap().to_owned();
    // runner-a never renews: the reaper sends the job back to PENDING with a backoff.
    let version = first["job"]["version"].as_i64().unwrap();
    let requeued: Value = app
        .deploy(
            Method::GET,
            &format!("/deploy/jobs/{id}?wait=10&version={version}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requeued["state"], "PENDING");
    assert_eq!(requeued["attempt"], 1);
    assert!(
        requeued["runAfter"].as_str().unwrap() > requeued["updatedAt"].as_str().unwrap(),
        "backoff pushed runAfter out"
    );
    assert!(requeued["error"].as_str().unwrap().contains("runner-a"));
    // Once the backoff ends another runner takes it, with a new lease.
    let again = app
        .claim("runner-b", 10)
        .await
        .expect("claimed again after the backoff");
    assert_eq!(again["job"]["attempt"], 2);
    // Keep runner-b's lease alive while the stale one is tried.
    let renew = app
        .runner(&format!("/runner/jobs/{id}/heartbeat"))
        .json(&json!({ "runnerId": "runner-b", "leaseToken": again["lease"]["token"] }));
    assert_eq!(renew.send().await.unwrap().status(), 200);
    let before = app.get_job(&id).await;
    let stale = first["lease"]["token"].clone();
    let hb = app
        .runner(&format!("/runner/jobs/{id}/heartbeat"))
        .json(&json!({ "runnerId": "runner-a", "leaseToken": stale }))
        .send()
        .await
        .unwrap();
    assert!(problem(hb, 409).await.contains("lease"));
    let logs = app
        .runner(&format!("/runner/jobs/{id}/logs"))
        .json(&json!({ "leaseToken": stale, "lines": ["late"] }))
        .send()
        .await
        .unwrap();
    problem(logs, 409).await;
    let report = app.runner(&format!("/runner/jobs/{id}/report")).json(&json!({ "runnerId": "runner-a", "leaseToken": stale, "outcome": "FAILED", "error": "late" })).send().await.unwrap();
    problem(report, 409).await;
    assert_eq!(app.get_job(&id).await, before, "nothing changed");
    // The current holder can still heartbeat, log and report.
    assert_eq!(app.renew(&again, "runner-b").await.status(), 200);
    let logs = app
        .runner(&format!("/runner/jobs/{id}/logs"))
        .json(&json!({ "leaseToken": again["lease"]["token"], "lines": ["pulling", "started"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(logs.status(), 204);
    assert_eq!(app.succeed(&again, "runner-b").await.status(), 200);
    let text = app
        .deploy(Method::GET, &format!("/deploy/jobs/{id}/logs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "pulling\nstarted\n");
    let run: Value = app
        .deploy(Method::GET, "/deploy/apps/lease")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["state"], "RUNNING");
    assert_eq!(run["lastJobId"], id.as_str());
    assert_eq!(run["nodeId"], "node-a");
    assert_eq!(run["url"], "http://127.0.0.1:8088/apps/x/");
    app.stop().await;
});

per_database!(
    offline_node_loses_its_apps_and_cordon_keeps_new_ones_away,
    |kind| async move {
        let app = spawn_app_with(kind, |s| s.node_ttl = Duration::from_secs(1)).await;
        app.node_heartbeat("node-a", 10).await;
        app.node_heartbeat("node-b", 10).await;
        app.node_heartbeat("node-b", 10).await;
        // Two apps: fewest apps first, ties by id.
        app.deploy_image("one", "one:1").await;
        let c1 = app.claim("r", 0).await.unwrap();
        assert_eq!(c1["node"]["nodeId"], "node-a");
        app.succeed(&c1, "r").await;
        app.deploy_image("two", "two:1").await;
        let c2 = app.claim("r", 0).await.unwrap();
        assert_eq!(c2["node"]["nodeId"], "node-b");
        app.succeed(&c2, "r").await;

        // node-a stops heartbeating; node-b keeps going until node-a shows OFFLINE.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            app.node_heartbeat("node-b", 10).await;
            let list: Value = app
                .admin(Method::GET, "/admin/runtime-nodes/list")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let a = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["nodeId"] == "node-a")
                .unwrap()
                .clone();
            if a["state"] == "OFFLINE" {
                break;
            }
            assert!(Instant::now() < deadline, "node-a never went OFFLINE");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        app.deploy_image("one", "one:2").await;
        let moved = app.claim("r", 0).await.unwrap();
        assert_eq!(
            moved["node"]["nodeId"], "node-b",
            "the redeploy left the offline node"
        );
        app.succeed(&moved, "r").await;

        // Cordon node-b: a new app waits with a reason; uncordon: it is placed.
        app.node_heartbeat("node-b", 10).await;
        let res = app
            .admin(Method::POST, "/admin/runtime-nodes/node-b/cordon")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let job = app.deploy_image("three", "three:1").await;
        assert!(app.claim("r", 0).await.is_none());
        let waiting = app.get_job(job["jobId"].as_str().unwrap()).await;
        assert_eq!(waiting["state"], "PENDING");
        assert!(
            waiting["waitingReason"]
                .as_str()
                .unwrap()
                .contains("cordoned")
                || waiting["waitingReason"]
                    .as_str()
                    .unwrap()
                    .contains("OFFLINE")
        );
        app.admin(Method::POST, "/admin/runtime-nodes/node-b/uncordon")
            .send()
            .await
            .unwrap();
        app.node_heartbeat("node-b", 10).await;
        let placed = app.claim("r", 0).await.expect("placed after uncordon");
        assert_eq!(placed["node"]["nodeId"], "node-b");
        app.stop().await;
    }
);

/// The jobs of `app_id` in `state`, newest first.
async fn jobs_of(app: &TestApp, app_id: &str, state: &str) -> Vec<Value> {
    let path = format!("/deploy/jobs?appId={app_id}&state={state}");
    let page = app.deploy_json(&path).await;
    page["items"].as_array().unwrap().clone()
}

per_database!(
    a_lost_node_moves_its_stateless_apps_once_and_holds_apps_with_volumes,
    |kind| async move {
        let app = spawn_app_with(kind, |s| {
            s.node_ttl = Duration::from_secs(1);
            s.node_lost = Duration::from_secs(2);
        })
        .await;
        app.node_heartbeat("node-a", 10).await;
        app.deploy_image("web", "web:1").await;
        let web = app.claim("r", 0).await.unwrap();
        app.succeed(&web, "r").await;
        let res = app
            .create_job(json!({ "appId": "db", "image": "db:1", "volumes": [{ "name": "data", "mountPath": "/data" }] }))
            .await;
        assert_eq!(res.status(), 201);
        let db = app.claim("r", 0).await.unwrap();
        assert_eq!(db["node"]["nodeId"], "node-a");
        app.succeed(&db, "r").await;

        // Evacuate: admin only, 404 for an app placed nowhere, 409 while its node is not lost.
        let evacuate =
            |app_id: &str| app.admin(Method::POST, &format!("/admin/apps/{app_id}/evacuate"));
        let res = app
            .client
            .post(app.url("/admin/apps/db/evacuate"))
            .send()
            .await
            .unwrap();
        assert!(problem(res, 401).await.contains("X-Admin-Token"));
        let res = evacuate("nowhere").send().await.unwrap();
        assert!(problem(res, 404).await.contains("nowhere"));
        let res = evacuate("db").send().await.unwrap();
        assert!(problem(res, 409).await.contains("not lost"));

        // node-a falls silent; node-b heartbeats until web's redeploy is queued.
        let deadline = Instant::now() + Duration::from_secs(20);
        let moved = loop {
            app.node_heartbeat("node-b", 10).await;
            let pending = jobs_of(&app, "web", "PENDING").await;
            if let Some(job) = pending.first() {
                break job.clone();
            }
            assert!(
                Instant::now() < deadline,
                "web was never moved off the lost node"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(moved["payload"]["labels"]["reason"], "node lost");
        assert_eq!(moved["payload"]["image"], "web:1");
        // More sweeps queue nothing more; the app with volumes stays, its run says why.
        tokio::time::sleep(Duration::from_millis(600)).await;
        app.node_heartbeat("node-b", 10).await;
        assert_eq!(jobs_of(&app, "web", "PENDING").await.len(), 1);
        assert!(jobs_of(&app, "db", "PENDING").await.is_empty());
        let run = app.deploy_json("/deploy/apps/db").await;
        let why = run["error"].as_str().unwrap_or_default();
        assert!(why.contains("lost") && why.contains("evacuate"), "{run}");

        // The operator evacuates db: one redeploy, the same one when asked again.
        let res = evacuate("db").send().await.unwrap();
        assert_eq!(res.status(), 201);
        let job: Value = res.json().await.unwrap();
        assert_eq!(job["payload"]["labels"]["reason"], "node lost");
        assert_eq!(job["payload"]["volumes"][0]["name"], "data");
        let res = evacuate("db").send().await.unwrap();
        assert_eq!(res.status(), 200);
        let again: Value = res.json().await.unwrap();
        assert_eq!(again["jobId"], job["jobId"]);
        for _ in 0..2 {
            let claim = app.claim("r", 0).await.expect("a redeploy to claim");
            assert_eq!(claim["node"]["nodeId"], "node-b", "moved off the lost node");
        }
        app.stop().await;
    }
);

per_database!(
    nothing_is_lost_within_node_lost_of_the_control_planes_start,
    |kind| async move {
        let lost = |s: &mut berth_control::config::Settings| {
            s.node_ttl = Duration::from_secs(1);
            s.node_lost = Duration::from_secs(3);
        };
        let mut first = spawn_app_with(kind, lost).await;
        first.node_heartbeat("node-a", 10).await;
        let silent_since = Instant::now();
        first.deploy_image("web", "web:1").await;
        let web = first.claim("r", 0).await.unwrap();
        first.succeed(&web, "r").await;
        // node-a is recorded OFFLINE after one TTL; stop before it is silent for node_lost.
        tokio::time::sleep(Duration::from_secs(2).saturating_sub(silent_since.elapsed())).await;
        let db = first.take_db().expect("the test database");
        first.stop().await;
        tokio::time::sleep(Duration::from_secs(2)).await;

        // node-a has been silent for longer than node_lost, but the new control plane has not
        // watched that long: it moves nothing until it has.
        let mut settings = berth_control::config::Settings::for_tests(&db.url);
        lost(&mut settings);
        let app = common::app::spawn_on(settings, Some(db)).await;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(2500) {
            app.node_heartbeat("node-b", 10).await;
            assert!(
                jobs_of(&app, "web", "PENDING").await.is_empty(),
                "moved within node_lost of the start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while jobs_of(&app, "web", "PENDING").await.is_empty() {
            assert!(Instant::now() < deadline, "web was never moved");
            app.node_heartbeat("node-b", 10).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        app.stop().await;
    }
);

per_database!(
    bad_input_is_refused_and_changes_nothing,
    |kind| async move {
        let app = spawn_app(kind).await;
        let post = |body: &'static str| {
            app.deploy(Method::POST, "/deploy/jobs")
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        assert!(problem(post("{not json").await.unwrap(), 400)
            .await
            .contains("not valid JSON"));
        assert!(problem(
            post(r#"{"appId":"a","image":"x","imgae":"y"}"#)
                .await
                .unwrap(),
            400
        )
        .await
        .contains("imgae"));
        assert!(problem(
            post(r#"{"appId":"Bad_App","image":"x"}"#).await.unwrap(),
            400
        )
        .await
        .contains("DNS label"));
        assert!(problem(
            post(r#"{"appId":"a","image":"Not An Image"}"#)
                .await
                .unwrap(),
            400
        )
        .await
        .contains("not a valid reference"));
        assert!(problem(
            post(r#"{"appId":"a","image":"x","containerPort":70000}"#)
                .await
                .unwrap(),
            400
        )
        .await
        .contains("containerPort"));
        let huge =
            json!({ "appId": "a", "image": "x", "env": { "BIG": "x".repeat(2 * 1024 * 1024) } });
        // The server closes the connection after a 413 it did not read: use a client of its
        // own so the next requests do not meet that closed connection in the pool.
        let res = reqwest::Client::new()
            .post(app.url("/deploy/jobs"))
            .header("X-DEPLOY-SECRET", app.secrets.deploy.expose())
            .json(&huge)
            .send()
            .await
            .unwrap();
        assert!(problem(res, 413).await.contains("limit"));
        let res = app
            .deploy(Method::POST, "/deploy/jobs")
            .body(r#"{"appId":"a","image":"x"}"#)
            .send()
            .await
            .unwrap();
        assert!(problem(res, 415).await.contains("Content-Type"));

        // Tokens: missing, wrong, and another role's.
        let res = app
            .client
            .post(app.url("/deploy/jobs"))
            .json(&json!({ "appId": "a", "image": "x" }))
            .send()
            .await
            .unwrap();
        assert!(problem(res, 401).await.contains("X-DEPLOY-SECRET"));
        let res = app
            .client
            .post(app.url("/deploy/jobs"))
            .header("X-DEPLOY-SECRET", "wrong")
            .json(&json!({ "appId": "a", "image": "x" }))
            .send()
            .await
            .unwrap();
        assert!(problem(res, 401).await.contains("not valid"));
        let res = app
            .client
            .post(app.url("/deploy/jobs"))
            .header("X-DEPLOY-SECRET", app.secrets.runner.expose())
            .json(&json!({ "appId": "a", "image": "x" }))
            .send()
            .await
            .unwrap();
        problem(res, 401).await;
        let res = app
            .client
            .post(app.url("/runner/jobs/claim"))
            .header("X-Runner-Token", "nope")
            .json(&json!({ "runnerId": "r" }))
            .send()
            .await
            .unwrap();
        assert!(problem(res, 401).await.contains("X-Runner-Token"));
        let res = app
            .client
            .get(app.url("/admin/runtime-nodes/list"))
            .send()
            .await
            .unwrap();
        assert!(problem(res, 401).await.contains("X-Admin-Token"));
        let res = app
            .client
            .post(app.url("/internal/runtime-nodes/heartbeat"))
            .header("X-RT-Node-Token", "nope")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        problem(res, 401).await;

        // Unknown and malformed ids, bad queries.
        let res = app
            .deploy(
                Method::GET,
                "/deploy/jobs/0190b7a4-0000-7000-8000-000000000000",
            )
            .send()
            .await
            .unwrap();
        assert!(problem(res, 404).await.contains("no job"));
        let res = app
            .deploy(Method::GET, "/deploy/jobs/not-a-uuid")
            .send()
            .await
            .unwrap();
        assert!(problem(res, 400).await.contains("path"));
        let res = app
            .deploy(Method::GET, "/deploy/jobs?state=DONE")
            .send()
            .await
            .unwrap();
        assert!(problem(res, 400).await.contains("state"));
        let res = app
            .deploy(Method::GET, "/deploy/jobs?limit=0")
            .send()
            .await
            .unwrap();
        assert!(problem(res, 400).await.contains("limit"));
        let res = app
            .deploy(Method::GET, "/deploy/jobs?colour=red")
            .send()
            .await
            .unwrap();
        assert!(problem(res, 400).await.contains("colour"));
        let res = app
            .deploy(Method::GET, "/deploy/apps/NOPE")
            .send()
            .await
            .unwrap();
        problem(res, 400).await;
        let res = app
            .deploy(Method::GET, "/deploy/apps/never")
            .send()
            .await
            .unwrap();
        problem(res, 404).await;
        let res = app
            .runner("/runner/jobs/claim")
            .json(&json!({ "runnerId": "r", "wait": 3600 }))
            .send()
            .await
            .unwrap();
        assert!(problem(res, 400).await.contains("wait"));
        let res = app
            .runner("/runner/jobs/claim")
            .json(&json!({ "runnerId": "bad runner" }))
            .send()
            .await
            .unwrap();
        assert!(problem(res, 400).await.contains("runnerId"));
        let res = app
            .runner("/runner/jobs/0190b7a4-0000-7000-8000-000000000000/report")
            .json(&json!({ "runnerId": "r", "leaseToken": "short", "outcome": "SUCCEEDED" }))
            .send()
            .await
            .unwrap();
        assert!(problem(res, 400).await.contains("leaseToken"));
        let res = app.runner("/runner/jobs/0190b7a4-0000-7000-8000-000000000000/report")
        .json(&json!({ "runnerId": "r", "leaseToken": "0123456789abcdef0123456789abcdef", "outcome": "SUCCEEDED" })).send().await.unwrap();
        problem(res, 404).await;
        let res = app
            .admin(Method::POST, "/admin/runtime-nodes/ghost/cordon")
            .send()
            .await
            .unwrap();
        problem(res, 404).await;
        let res = app.client.post(app.url("/internal/runtime-nodes/heartbeat")).header("X-RT-Node-Token", app.credential("good-id").await)
        .json(&json!({ "nodeId": "bad id", "name": "n", "agentBaseUrl": "http://x", "gatewayBaseUrl": "http://y", "capacity": { "cpus": 1.0, "memoryMb": 1, "maxApps": 1 }, "version": "1" }))
        .send().await.unwrap();
        assert!(problem(res, 400).await.contains("nodeId"));

        assert_eq!(job_count(&app).await, 0, "no bad request created a job");
        let nodes: Value = app.admin_json("/admin/runtime-nodes/list").await;
        assert_eq!(nodes["items"].as_array().unwrap().len(), 0);
        app.stop().await;
    }
);

per_database!(health_metrics_and_dashboard, |kind| async move {
    let app = spawn_app(kind).await;
    app.node_heartbeat("node-a", 10).await;
    app.deploy_image("m", "m:1").await;
    app.claim("r", 0).await.unwrap();
    let health = app
        .client
        .get(app.url("/internal/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("berth_claims_total 1"), "{text}");
    assert!(text.contains(r#"berth_jobs{state="RUNNING"} 1"#), "{text}");
    assert!(text.contains(r#"berth_nodes{state="ONLINE"} 1"#), "{text}");
    assert!(text.contains("berth_claim_wait_seconds_bucket"));
    assert!(!text.contains(app.secrets.admin.expose()));
    let page = app
        .client
        .get(app.url("/admin/nodes-admin.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("X-Admin-Token"));
    app.stop().await;
});

/// The control plane refuses to start without each of its secrets.
#[test]
fn refuses_to_start_without_secrets() {
    use clap::Parser;
    let base = [
        "berth-control",
        "--deploy-secret",
        "0123456789abcdef",
        "--runner-token",
        "0123456789abcdef",
        "--node-join-token",
        "0123456789abcdef",
    ];
    let config = berth_control::config::Config::try_parse_from(base).unwrap();
    let err = config.settings().unwrap_err().to_string();
    assert!(err.contains("BERTH_ADMIN_TOKEN"), "{err}");
    let key = berth_shared::sealed::SealingKeys::generate_text();
    let mut short = base.to_vec();
    short.extend(["--admin-token", "short", "--secret-key", &key]);
    let err = berth_control::config::Config::try_parse_from(short)
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(err.contains("too short"), "{err}");
}

per_database!(etags_answer_304_until_the_job_changes, |kind| async move {
    let app = spawn_app(kind).await;
    let job = app.deploy_image("tagged", "img:1").await;
    let path = format!("/deploy/jobs/{}", job["jobId"].as_str().unwrap());
    let res = app.deploy(Method::GET, &path).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let tag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(tag, "W/\"1\"");
    // Unchanged: 304, no body, the same tag.
    let res = app
        .deploy(Method::GET, &path)
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], tag.as_str());
    assert!(res.bytes().await.unwrap().is_empty());
    // Strong form and lists match too; another version does not.
    for header in ["\"1\"", "\"7\", W/\"1\"", "*"] {
        let res = app
            .deploy(Method::GET, &path)
            .header("If-None-Match", header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 304, "{header}");
    }
    let res = app
        .deploy(Method::GET, &path)
        .header("If-None-Match", "W/\"7\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A wait that sees no change ends in 304; one that sees the claim answers 200.
    let started = Instant::now();
    let res = app
        .deploy(Method::GET, &format!("{path}?wait=1"))
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(app.node_heartbeat("node-a", 10).await.status(), 200);
    let waiting = app
        .deploy(Method::GET, &format!("{path}?wait=10"))
        .header("If-None-Match", &tag)
        .send();
    let claim = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.claim("runner-1", 1).await.expect("a claim")
    };
    let (res, _) = tokio::join!(waiting, claim);
    let res = res.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "W/\"2\"");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["state"], "RUNNING");
    app.stop().await;
});

/// Reads one Server-Sent Event (`event`, `id`, parsed `data`) from `stream`; `None` at its end.
async fn next_sse<B: AsRef<[u8]>>(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<B>> + Unpin),
    buffer: &mut String,
) -> Option<(String, String, Value)> {
    use futures::StreamExt;
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            return Some((event, id, serde_json::from_str(&data).expect("event data")));
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")?
            .expect("stream chunk");
        buffer.push_str(std::str::from_utf8(chunk.as_ref()).expect("utf-8"));
    }
}

per_database!(job_events_stream_until_the_job_ends, |kind| async move {
    let app = spawn_app(kind).await;
    assert_eq!(app.node_heartbeat("node-a", 10).await.status(), 200);
    let job = app.deploy_image("streamed", "img:1").await;
    let path = format!("/deploy/jobs/{}/events", job["jobId"].as_str().unwrap());
    // The deploy secret guards it.
    let res = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = app.deploy(Method::GET, &path).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = Box::pin(res.bytes_stream());
    let mut buffer = String::new();
    let (event, id, data) = next_sse(&mut stream, &mut buffer).await.unwrap();
    assert_eq!((event.as_str(), id.as_str()), ("job.created", "1"));
    assert_eq!(data["state"], "PENDING");
    let claim = app.claim("runner-1", 1).await.expect("a claim");
    let (event, id, data) = next_sse(&mut stream, &mut buffer).await.unwrap();
    assert_eq!((event.as_str(), id.as_str()), ("job.running", "2"));
    assert_eq!(data["runnerId"], "runner-1");
    assert_eq!(app.succeed(&claim, "runner-1").await.status(), 200);
    let (event, _, data) = next_sse(&mut stream, &mut buffer).await.unwrap();
    assert_eq!(event, "job.succeeded");
    assert_eq!(data["state"], "SUCCEEDED");
    // The stream ends with the job.
    assert!(next_sse(&mut stream, &mut buffer).await.is_none());
    // A finished job: one event, then the end; with Last-Event-ID of that version, just the end.
    let res = app.deploy(Method::GET, &path).send().await.unwrap();
    let mut stream = Box::pin(res.bytes_stream());
    let mut buffer = String::new();
    let (event, id, _) = next_sse(&mut stream, &mut buffer).await.unwrap();
    assert_eq!(event, "job.succeeded");
    assert!(next_sse(&mut stream, &mut buffer).await.is_none());
    let res = app
        .deploy(Method::GET, &path)
        .header("Last-Event-ID", id)
        .send()
        .await
        .unwrap();
    let mut stream = Box::pin(res.bytes_stream());
    assert!(next_sse(&mut stream, &mut String::new()).await.is_none());
    // An unknown job: 404 before any stream.
    let res = app
        .deploy(
            Method::GET,
            &format!("/deploy/jobs/{}/events", uuid::Uuid::now_v7()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    app.stop().await;
});

per_database!(
    a_sleeping_app_shows_in_its_run_and_the_node_list,
    |kind| async move {
        let app = spawn_app(kind).await;
        let capacity =
            json!({ "cpus": 4.0, "memoryMb": 8192, "maxApps": 10, "maxSleepingApps": 100 });
        let reported = |state: &str| json!([{ "appId": "dozy", "containerId": "c-1", "image": "dozy:1", "state": state }]);
        assert_eq!(
            app.node_reports("node-a", capacity.clone(), json!([]))
                .await
                .status(),
            200
        );
        app.deploy_image("dozy", "dozy:1").await;
        let claim = app.claim("r", 0).await.expect("claimed");
        assert_eq!(app.succeed(&claim, "r").await.status(), 200);
        let run = |app: &TestApp| {
            let req = app.deploy(Method::GET, "/deploy/apps/dozy");
            async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
        };
        assert_eq!(run(&app).await["state"], "RUNNING");

        let res = app
            .node_reports("node-a", capacity.clone(), reported("sleeping"))
            .await;
        assert_eq!(res.status(), 200);
        let asleep = run(&app).await;
        assert_eq!(asleep["state"], "SLEEPING");
        assert_eq!(
            asleep["url"], "http://127.0.0.1:8088/apps/x/",
            "its route is kept"
        );
        let nodes: Value = app.admin_json("/admin/runtime-nodes/list").await;
        let node = &nodes["items"][0];
        assert_eq!(node["sleepingApps"], 1);
        assert_eq!(node["capacity"]["maxSleepingApps"], 100);
        assert_eq!(node["apps"], json!(["dozy"]));
        assert_eq!(node["reportedApps"][0]["state"], "sleeping");

        // Woken by a request: running again.
        app.node_reports("node-a", capacity.clone(), reported("running"))
            .await;
        assert_eq!(run(&app).await["state"], "RUNNING");

        // A bad capacity is refused and changes nothing.
        for bad in [json!(-1), json!("many"), json!(4_294_967_296u64)] {
            let mut capacity = capacity.clone();
            capacity["maxSleepingApps"] = bad;
            let res = app
                .node_reports("node-a", capacity, reported("sleeping"))
                .await;
            assert!(problem(res, 400).await.contains("maxSleepingApps"));
        }
        assert_eq!(run(&app).await["state"], "RUNNING");
        app.stop().await;
    }
);

/// A heartbeat of `node_id` announcing `agent`, sent with `credential`.
async fn beat_as(app: &TestApp, credential: &str, node_id: &str, agent: &str) -> reqwest::Response {
    app.client
        .post(app.url("/internal/runtime-nodes/heartbeat"))
        .header("X-RT-Node-Token", credential)
        .json(&json!({
            "nodeId": node_id, "name": node_id, "agentBaseUrl": agent,
            "gatewayBaseUrl": "http://127.0.0.1:2", "labels": {},
            "capacity": { "cpus": 4.0, "memoryMb": 8192, "maxApps": 10 },
            "apps": [], "version": "test"
        }))
        .send()
        .await
        .unwrap()
}

/// The admin list's entry of `node_id`.
async fn listed(app: &TestApp, node_id: &str) -> Value {
    let nodes = app.admin_json("/admin/runtime-nodes/list").await;
    let items = nodes["items"].as_array().unwrap();
    items
        .iter()
        .find(|n| n["nodeId"] == node_id)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_node_joins_once_and_its_credential_speaks_for_it_only() {
    let app = spawn_app(common::db::DbKind::Sqlite).await;
    let res = app.join("node-a").await;
    assert_eq!(res.status(), 201);
    let joined: Value = res.json().await.unwrap();
    assert_eq!(joined["nodeId"], "node-a");
    let a = joined["credential"].as_str().unwrap().to_owned();
    assert!(a.len() >= 64, "256 random bits");
    assert!(problem(app.join("node-a").await, 409)
        .await
        .contains("joined before"));
    assert!(problem(app.join("Not A Label").await, 400)
        .await
        .contains("nodeId"));
    for token in [None, Some("a-wrong-but-long-enough-token")] {
        let mut req = app
            .client
            .post(app.url("/internal/runtime-nodes/join"))
            .json(&json!({ "nodeId": "node-z" }));
        if let Some(token) = token {
            req = req.header("X-RT-Join-Token", token);
        }
        problem(req.send().await.unwrap(), 401).await;
    }
    let own = beat_as(&app, &a, "node-a", "http://10.0.0.1:7005").await;
    assert_eq!(own.status(), 200);

    // Attack: with node-b's own credential, re-point node-a's agent (runners would send it
    // the jobs' secrets). Refused, and node-a's address is unchanged.
    let b = app.credential("node-b").await;
    let detail = problem(
        beat_as(&app, &b, "node-a", "http://203.0.113.66:7005").await,
        403,
    )
    .await;
    assert!(
        detail.contains("node-b") && detail.contains("node-a"),
        "{detail}"
    );
    assert_eq!(
        listed(&app, "node-a").await["agentBaseUrl"],
        "http://10.0.0.1:7005"
    );

    // Attack: register a made-up node without joining, with the join token or a guess.
    for guess in [
        app.secrets.node_join.expose(),
        "0123456789abcdef0123456789abcdef",
    ] {
        problem(
            beat_as(&app, guess, "node-ghost", "http://203.0.113.66:7005").await,
            401,
        )
        .await;
    }
    assert_eq!(
        listed(&app, "node-ghost").await,
        Value::Null,
        "no made-up node"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_credential_is_refused_at_once_and_the_node_goes_offline() {
    let app = spawn_app(common::db::DbKind::Sqlite).await;
    assert_eq!(app.node_heartbeat("node-a", 10).await.status(), 200);
    assert_eq!(listed(&app, "node-a").await["state"], "ONLINE");
    let a = app.credential("node-a").await;
    let res = app
        .admin(Method::POST, "/admin/runtime-nodes/node-a/revoke")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let detail = problem(
        beat_as(&app, &a, "node-a", "http://127.0.0.1:1/node-a").await,
        401,
    )
    .await;
    assert!(detail.contains("revoked"), "{detail}");
    assert_eq!(listed(&app, "node-a").await["state"], "OFFLINE");
    let res = app
        .admin(Method::POST, "/admin/runtime-nodes/ghost/revoke")
        .send()
        .await
        .unwrap();
    problem(res, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn a_rotation_keeps_the_old_credential_until_the_new_one_is_used() {
    let app = spawn_app(common::db::DbKind::Sqlite).await;
    let old = app.credential("node-a").await;
    let rotate = |credential: String, node: &'static str| {
        app.client
            .post(app.url("/internal/runtime-nodes/rotate"))
            .header("X-RT-Node-Token", credential)
            .json(&json!({ "nodeId": node }))
            .send()
    };
    problem(rotate(old.clone(), "node-b").await.unwrap(), 403).await;
    let res = rotate(old.clone(), "node-a").await.unwrap();
    assert_eq!(res.status(), 201);
    let new = res.json::<Value>().await.unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);
    let agent = "http://127.0.0.1:1/node-a";
    assert_eq!(
        beat_as(&app, &old, "node-a", agent).await.status(),
        200,
        "old still good"
    );
    assert_eq!(beat_as(&app, &new, "node-a", agent).await.status(), 200);
    problem(beat_as(&app, &old, "node-a", agent).await, 401).await;
    app.stop().await;
}

#[tokio::test]
async fn a_moved_agent_is_shown_to_operators() {
    let app = spawn_app(common::db::DbKind::Sqlite).await;
    let a = app.credential("node-a").await;
    assert_eq!(
        beat_as(&app, &a, "node-a", "http://10.0.0.1:7005")
            .await
            .status(),
        200
    );
    assert_eq!(
        listed(&app, "node-a").await.get("previousAgentBaseUrl"),
        None
    );
    assert_eq!(
        beat_as(&app, &a, "node-a", "http://10.0.0.2:7005")
            .await
            .status(),
        200
    );
    let node = listed(&app, "node-a").await;
    assert_eq!(node["agentBaseUrl"], "http://10.0.0.2:7005");
    assert_eq!(node["previousAgentBaseUrl"], "http://10.0.0.1:7005");
    assert!(node["agentBaseUrlChangedAt"].is_string());
    app.stop().await;
}

/// The grant a claim hands for `node` in `claim` (`node` or `previousNode`), verified with the
/// keys the control plane gives agents.
fn verified_grant(keys: &[String], text: &str) -> berth_shared::grant::Grant {
    berth_shared::grant::GrantVerifier::from_public_keys(keys)
        .expect("the keys are Ed25519 keys")
        .verify(text)
        .expect("the grant verifies with the keys agents get")
}

fn millis(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

per_database!(
    a_claim_grants_its_app_on_its_node_until_the_lease_ends_and_heartbeats_renew_it,
    |kind| async move {
        let app = spawn_app(kind).await;
        let beat = app.node_heartbeat("node-g", 10).await;
        assert_eq!(beat.status(), 200);
        let answer: Value = beat.json().await.unwrap();
        let keys: Vec<String> = serde_json::from_value(answer["grantKeys"].clone()).unwrap();
        assert_eq!(keys.len(), 1, "one key per BERTH_SECRET_KEY key: {answer}");
        let joined: Value = app.join("node-h").await.json().await.unwrap();
        assert_eq!(
            joined["grantKeys"], answer["grantKeys"],
            "the join answer names them too"
        );

        let job = app.deploy_image("shop", "127.0.0.1:5000/shop:v1").await;
        let other = app.deploy_image("blog", "127.0.0.1:5000/blog:v1").await;
        let claim = app.claim("runner-g", 5).await.expect("a claim");
        let second = app.claim("runner-g", 5).await.expect("a second claim");
        let (claim, second) = if claim["job"]["jobId"] == job["jobId"] {
            (claim, second)
        } else {
            (second, claim)
        };
        assert_eq!(second["job"]["jobId"], other["jobId"]);
        let text = claim["node"]["agentGrant"].as_str().expect("a grant");
        let grant = verified_grant(&keys, text);
        assert_eq!(grant.app_id, "shop");
        assert_eq!(grant.node_id, "node-g");
        assert_eq!(grant.job_id.to_string(), job["jobId"].as_str().unwrap());
        assert_eq!(grant.attempt, 1);
        assert_eq!(grant.expires_at, millis(&claim["lease"]["expiresAt"]));

        // A heartbeat renews the job's own grant to the lease's new end, and no other job's.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let id = job["jobId"].as_str().unwrap();
        let renewed: Value = app
            .runner(&format!("/runner/jobs/{id}/heartbeat"))
            .json(&json!({
                "runnerId": "runner-g", "leaseToken": claim["lease"]["token"],
                "agentGrants": [text, second["node"]["agentGrant"], "v1.forged.grant"],
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let grants = renewed["agentGrants"].as_object().unwrap();
        assert_eq!(
            grants.len(),
            1,
            "only this job's grant is renewed: {renewed}"
        );
        let fresh = verified_grant(&keys, grants["node-g"].as_str().unwrap());
        assert_eq!(fresh.expires_at, millis(&renewed["expiresAt"]));
        assert!(fresh.expires_at > grant.expires_at);
        assert_eq!((fresh.job_id, fresh.attempt), (grant.job_id, grant.attempt));

        // A stale lease renews nothing.
        let stale = app
            .runner(&format!("/runner/jobs/{id}/heartbeat"))
            .json(&json!({
                "runnerId": "runner-g", "leaseToken": "0123456789abcdef0123456789abcdef",
                "agentGrants": [text],
            }))
            .send()
            .await
            .unwrap();
        problem(stale, 409).await;
    }
);

per_database!(
    the_timeline_shows_each_claim_and_the_reason_of_a_retry,
    |kind| async move {
        let app = spawn_app_with(kind, |s| {
            s.retry.base_ms = 50;
            s.retry.cap_ms = 100;
        })
        .await;
        app.node_heartbeat("node-a", 10).await;
        let job = app.deploy_image("shop", "shop:1").await;
        let id = job["jobId"].as_str().unwrap();
        let path = format!("/admin/jobs/{id}/timeline");
        let created = app.admin_json(&path).await;
        assert_eq!(created["jobId"], id);
        assert_eq!(created["appId"], "shop");
        assert_eq!(created["state"], "PENDING");
        assert_eq!(created["createdAt"], job["createdAt"]);
        assert_eq!(created["attempts"], json!([]));

        let first = app.claim("runner-a", 0).await.unwrap();
        let report = app
            .runner(&format!("/runner/jobs/{id}/report"))
            .json(
                &json!({ "runnerId": "runner-a", "leaseToken": first["lease"]["token"],
                "outcome": "FAILED", "error": "registry timed out", "retryable": true }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(report.status(), 200);
        let second = app
            .claim("runner-b", 5)
            .await
            .expect("the retry is claimed");
        let running = app.admin_json(&path).await;
        assert_eq!(running["state"], "RUNNING");
        assert_eq!(running["attempts"][1]["runnerId"], "runner-b");
        assert!(running["attempts"][1]["endedAt"].is_null(), "{running}");
        assert_eq!(app.succeed(&second, "runner-b").await.status(), 200);

        let done = app.admin_json(&path).await;
        assert_eq!(done["state"], "SUCCEEDED");
        let attempts = done["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{done}");
        let (a, b) = (&attempts[0], &attempts[1]);
        assert_eq!(
            (
                &a["attempt"],
                &a["runnerId"],
                &a["nodeId"],
                &a["outcome"],
                &a["error"]
            ),
            (
                &json!(1),
                &json!("runner-a"),
                &json!("node-a"),
                &json!("RETRY"),
                &json!("registry timed out")
            )
        );
        assert_eq!(
            (&b["attempt"], &b["runnerId"], &b["outcome"]),
            (&json!(2), &json!("runner-b"), &json!("SUCCEEDED"))
        );
        assert!(millis(&a["claimedAt"]) <= millis(&a["endedAt"]));
        assert!(millis(&a["endedAt"]) <= millis(&b["claimedAt"]));
        assert_eq!(millis(&b["endedAt"]), millis(&done["finishedAt"]));

        let unknown = format!("/admin/jobs/{}/timeline", uuid::Uuid::now_v7());
        let res = app.admin(Method::GET, &unknown).send().await.unwrap();
        assert!(problem(res, 404).await.contains("no job"));
        let res = app
            .admin(Method::GET, "/admin/jobs/not-a-uuid/timeline")
            .send()
            .await
            .unwrap();
        problem(res, 400).await;
        app.stop().await;
    }
);

/// The heartbeats `app` answered from memory ([`berth_control::service::beats`]).
fn coalesced(app: &TestApp) -> u64 {
    app.state.metrics().node_heartbeats_coalesced.get()
}

per_database!(
    coalesced_heartbeats_keep_a_node_online_and_a_silent_one_goes_offline_within_its_ttl,
    |kind| async move {
        let app = spawn_app_with(kind, |s| s.node_ttl = Duration::from_secs(1)).await;
        assert_eq!(app.node_heartbeat("steady", 10).await.status(), 200);
        assert_eq!(app.node_heartbeat("silent", 10).await.status(), 200);
        let silent_since = Instant::now();
        // For three TTLs "steady" repeats its report: answered from memory, and only the
        // flushes write that it is alive.
        let mut went_offline = None;
        while silent_since.elapsed() < Duration::from_secs(3) {
            assert_eq!(app.node_heartbeat("steady", 10).await.status(), 200);
            let nodes = app.state.store().list_nodes().await.unwrap();
            let recorded = |id: &str| {
                nodes
                    .iter()
                    .find(|n| n.node_id == id)
                    .unwrap()
                    .recorded_state
            };
            assert_eq!(
                recorded("steady"),
                NodeState::Online,
                "a heartbeating node went OFFLINE"
            );
            if recorded("silent") == NodeState::Offline {
                went_offline.get_or_insert(silent_since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            coalesced(&app) > 5,
            "the steady node's heartbeats were coalesced"
        );
        let after = went_offline.expect("the silent node was never marked OFFLINE");
        // Its TTL, one sweep period, and the test's own pace of looking.
        assert!(
            after < Duration::from_millis(1600),
            "OFFLINE after {after:?}"
        );
        assert_eq!(listed(&app, "silent").await["state"], "OFFLINE");
        // It comes back ONLINE at once: a node back from OFFLINE is written in full.
        assert_eq!(app.node_heartbeat("silent", 10).await.status(), 200);
        let back = app.state.store().list_nodes().await.unwrap();
        assert!(back.iter().all(|n| n.recorded_state == NodeState::Online));
        app.stop().await;
    }
);

per_database!(
    a_restarted_control_plane_coalesces_a_first_heartbeat_that_repeats_the_nodes_row,
    |kind| async move {
        let mut first = spawn_app(kind).await;
        let url = first.state.settings().database_url.clone();
        let db = first.take_db();
        let (a, b) = (
            first.credential("node-a").await,
            first.credential("node-b").await,
        );
        let c = first.credential("node-c").await;
        let agent = |id: &str| format!("http://127.0.0.1:1/{id}");
        for (credential, id) in [(&a, "node-a"), (&b, "node-b"), (&c, "node-c")] {
            assert_eq!(
                beat_as(&first, credential, id, &agent(id)).await.status(),
                200
            );
        }
        first.stop().await;

        // The new process reads the nodes with its first flushes.
        let settings = berth_control::config::Settings::for_tests(&url);
        let restarted = common::app::spawn_on(settings, db).await;
        let flush = restarted.state.beats().every();
        tokio::time::sleep(flush * 3).await;
        let sent = Instant::now();
        let res = beat_as(&restarted, &a, "node-a", &agent("node-a")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            coalesced(&restarted),
            1,
            "node-a repeated its row: answered from memory"
        );
        // node-b reports a new agent address: written in full, and recorded.
        let res = beat_as(&restarted, &b, "node-b", "http://127.0.0.1:1/moved").await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            coalesced(&restarted),
            1,
            "a changed report is not coalesced"
        );
        assert_eq!(
            listed(&restarted, "node-b").await["agentBaseUrl"],
            "http://127.0.0.1:1/moved"
        );
        // The coalesced heartbeat reaches the database with the next flush.
        tokio::time::sleep(flush * 3).await;
        let nodes = restarted.state.store().list_nodes().await.unwrap();
        let node_a = nodes.iter().find(|n| n.node_id == "node-a").unwrap();
        let since_epoch =
            |at: Instant| berth_control::queue::now_millis() - at.elapsed().as_millis() as i64;
        assert!(
            node_a.last_heartbeat_at >= since_epoch(sent) - 50,
            "node-a's last heartbeat was flushed"
        );
        // A wrong credential for a seeded node is refused, not answered from memory.
        problem(
            beat_as(&restarted, &b, "node-a", &agent("node-a")).await,
            403,
        )
        .await;
        // A seeded node revoked here is refused at once.
        let res = restarted
            .admin(Method::POST, "/admin/runtime-nodes/node-c/revoke")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        problem(
            beat_as(&restarted, &c, "node-c", &agent("node-c")).await,
            401,
        )
        .await;
        restarted.stop().await;
    }
);

per_database!(
    a_node_revoked_on_one_replica_is_refused_by_another_from_its_next_flush,
    |kind| async move {
        let first = spawn_app(kind).await;
        let url = first.state.settings().database_url.clone();
        let second =
            common::app::spawn_on(berth_control::config::Settings::for_tests(&url), None).await;
        let flush = second.state.beats().every();
        let a = first.credential("node-a").await;
        let agent = "http://127.0.0.1:1/node-a";
        // The second replica accepts the credential, writes the first heartbeat in full, and
        // answers the next ones from memory once a flush has kept the node.
        assert_eq!(beat_as(&second, &a, "node-a", agent).await.status(), 200);
        tokio::time::sleep(flush * 3).await;
        assert_eq!(beat_as(&second, &a, "node-a", agent).await.status(), 200);
        assert_eq!(
            coalesced(&second),
            1,
            "the second heartbeat came from memory"
        );

        let res = first
            .admin(Method::POST, "/admin/runtime-nodes/node-a/revoke")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        problem(beat_as(&first, &a, "node-a", agent).await, 401).await;
        // Within one flush period (and the flush's own time) the second replica refuses it.
        tokio::time::sleep(flush * 3).await;
        let detail = problem(beat_as(&second, &a, "node-a", agent).await, 401).await;
        assert!(detail.contains("revoked"), "{detail}");
        assert_eq!(listed(&second, "node-a").await["state"], "OFFLINE");
        second.stop().await;
        first.stop().await;
    }
);
