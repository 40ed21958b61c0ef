//! The operators' dashboard (`/admin/nodes-admin.html`) in a real headless Chromium, against
//! the real control plane: each test starts both, plays agents and runners through their
//! APIs and drives the page as an operator would. Screenshots go to
//! `target/dashboard-screenshots/`.

mod browser;
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use browser::Browser;
use common::app::{spawn_app, spawn_app_with, TestApp};
use common::db::DbKind;
use fantoccini::key::Key;
use serde_json::{json, Value};

const DESKTOP: (u32, u32) = (1280, 1000);
const PHONE: (u32, u32) = (390, 844);

/// Opens the page and signs in with the admin token; waits for the nodes to show.
async fn signed_in(app: &TestApp, size: (u32, u32)) -> Browser {
    let browser = Browser::start(size.0, size.1).await;
    browser.goto(&app.url("/admin/nodes-admin.html")).await;
    browser
        .type_into("#token", app.secrets.admin.expose())
        .await;
    browser.click("#sign-in-form button[type=submit]").await;
    // Live: the event stream is connected, so every change from now on reaches the page.
    browser
        .wait_until("document.getElementById('live').textContent === 'live'")
        .await;
    browser
}

/// The node card's attribute `attr` (`data-health`, …).
fn node_attr(node: &str, attr: &str) -> String {
    format!("document.querySelector('[data-node=\"{node}\"]')?.getAttribute('{attr}')")
}

/// Confirms the open confirmation dialog.
async fn confirm(browser: &Browser) {
    browser
        .wait_until("document.getElementById('confirm').open")
        .await;
    browser.click("#confirm-ok").await;
    browser
        .wait_until("!document.getElementById('confirm').open")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_in_and_sees_two_nodes_at_desktop_and_phone_width() {
    let app = spawn_app(DbKind::Sqlite).await;
    let alive = Arc::new(AtomicBool::new(true));
    keep_beating(&app, "node-a", alive.clone()).await;
    keep_beating(&app, "node-b", alive.clone()).await;
    app.node_heartbeat("node-a", 10).await;
    app.node_heartbeat("node-b", 10).await;

    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.goto(&app.url("/admin/nodes-admin.html")).await;
    browser
        .wait_until("!document.getElementById('sign-in').hidden")
        .await;
    browser.screenshot("01-sign-in").await;
    browser
        .type_into("#token", app.secrets.admin.expose())
        .await;
    browser.click("#sign-in-form button[type=submit]").await;
    browser
        .wait_until("document.querySelectorAll('article.node').length === 2")
        .await;
    browser
        .wait_until(&format!("{} === 'ok'", node_attr("node-a", "data-health")))
        .await;
    browser
        .wait_until(&format!("{} === 'ok'", node_attr("node-b", "data-health")))
        .await;
    browser
        .wait_until("document.getElementById('live').textContent === 'live'")
        .await;
    // The token is kept for the tab only, and never put in the address.
    let stored = browser
        .eval("sessionStorage.getItem('berthAdminToken')")
        .await;
    assert_eq!(stored, json!(app.secrets.admin.expose()));
    let href = browser.eval("location.href").await;
    assert!(!href
        .as_str()
        .unwrap_or_default()
        .contains(app.secrets.admin.expose()));
    browser.screenshot("02-two-nodes").await;
    browser.close().await;

    // At phone width the page fits the screen: nothing runs off to the side.
    let phone = signed_in(&app, PHONE).await;
    phone
        .wait_until("document.querySelectorAll('article.node').length === 2")
        .await;
    let overflow = phone
        .eval("document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the page is wider than a phone: {overflow}"
    );
    phone.screenshot("03-phone").await;
    phone.close().await;
    alive.store(false, Ordering::Release);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_shows_a_clear_message() {
    let app = spawn_app(DbKind::Sqlite).await;
    app.node_heartbeat("node-a", 10).await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.goto(&app.url("/admin/nodes-admin.html")).await;
    browser.type_into("#token", "not-the-admin-token").await;
    browser.click("#sign-in-form button[type=submit]").await;
    browser
        .wait_until("document.getElementById('sign-in-error').textContent.includes('refused this admin token')")
        .await;
    let message = browser
        .eval("document.getElementById('sign-in-error').textContent")
        .await;
    assert!(
        message.as_str().unwrap_or_default().contains("401"),
        "{message}"
    );
    assert_eq!(
        browser.eval("document.getElementById('main').hidden").await,
        json!(true)
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('article.node').length")
            .await,
        json!(0)
    );
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('berthAdminToken')")
            .await,
        Value::Null
    );
    // The focus is back in the token field, to type it again.
    assert_eq!(
        browser.eval("document.activeElement.id").await,
        json!("token")
    );
    browser.screenshot("04-wrong-token").await;
    browser.close().await;
    app.stop().await;
}

/// Sends heartbeats for `node` every 300 ms while `alive` holds.
async fn keep_beating(app: &TestApp, node: &'static str, alive: Arc<AtomicBool>) {
    let (client, url, token) = (
        app.client.clone(),
        app.url("/internal/runtime-nodes/heartbeat"),
        app.credential(node).await,
    );
    tokio::spawn(async move {
        while alive.load(Ordering::Acquire) {
            let _ = client
                .post(&url)
                .header("X-RT-Node-Token", &token)
                .json(&json!({
                    "nodeId": node, "name": node,
                    "agentBaseUrl": format!("http://127.0.0.1:1/{node}"),
                    "gatewayBaseUrl": "http://127.0.0.1:2", "labels": {},
                    "capacity": { "cpus": 4.0, "memoryMb": 8192, "maxApps": 10 },
                    "apps": [], "version": "test"
                }))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_heartbeats_stop_turns_amber_then_red() {
    let app = spawn_app_with(DbKind::Sqlite, |s| s.node_ttl = Duration::from_secs(3)).await;
    let (a_alive, b_alive) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );
    keep_beating(&app, "node-a", a_alive.clone()).await;
    keep_beating(&app, "node-b", b_alive.clone()).await;
    app.node_heartbeat("node-a", 10).await;
    app.node_heartbeat("node-b", 10).await;

    let browser = signed_in(&app, DESKTOP).await;
    browser
        .wait_until(&format!("{} === 'ok'", node_attr("node-b", "data-health")))
        .await;
    // Its agent dies: no more heartbeats.
    b_alive.store(false, Ordering::Release);
    browser
        .wait_until(&format!(
            "{} === 'late'",
            node_attr("node-b", "data-health")
        ))
        .await;
    browser.screenshot("05-node-late").await;
    browser
        .wait_until(&format!(
            "{} === 'dead'",
            node_attr("node-b", "data-health")
        ))
        .await;
    browser
        .wait_until("document.querySelector('[data-node=\"node-b\"] .badge.OFFLINE')")
        .await;
    assert_eq!(
        browser.eval(&node_attr("node-a", "data-health")).await,
        json!("ok")
    );
    browser.screenshot("06-node-red").await;
    a_alive.store(false, Ordering::Release);
    browser.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordons_a_node_after_a_confirmation() {
    let app = spawn_app(DbKind::Sqlite).await;
    let alive = Arc::new(AtomicBool::new(true));
    keep_beating(&app, "node-a", alive.clone()).await;
    keep_beating(&app, "node-b", alive.clone()).await;
    app.node_heartbeat("node-a", 10).await;
    app.node_heartbeat("node-b", 10).await;
    let browser = signed_in(&app, DESKTOP).await;
    let cordon = "[data-node=\"node-a\"] [data-action=cordon]";
    let scheduling =
        "document.querySelector('[data-node=\"node-a\"] [data-scheduling]')?.dataset.scheduling";
    // Escape backs out of the confirmation: nothing changes, the focus returns to the button.
    browser.click(cordon).await;
    browser
        .wait_until("document.getElementById('confirm').open")
        .await;
    browser.press(Key::Escape).await;
    browser
        .wait_until("!document.getElementById('confirm').open")
        .await;
    browser
        .wait_until("document.activeElement?.dataset.action === 'cordon'")
        .await;
    assert_eq!(browser.eval(scheduling).await, json!("ACTIVE"));
    // Enter on the dialog's Confirm button (focused when it opens) cordons the node.
    browser.click(cordon).await;
    browser
        .wait_until("document.activeElement?.id === 'confirm-ok'")
        .await;
    browser.screenshot("07-cordon-confirm").await;
    browser.press(Key::Enter).await;
    browser
        .wait_until("document.querySelector('[data-node=\"node-a\"] [data-scheduling]')?.dataset.scheduling === 'CORDONED'")
        .await;
    browser.screenshot("08-cordoned").await;

    let nodes: Value = app
        .admin(reqwest::Method::GET, "/admin/runtime-nodes/list")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let a = nodes["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|n| n["nodeId"] == "node-a")
        .cloned();
    let a = a.expect("node-a listed");
    assert_eq!(a["scheduling"], "CORDONED");
    assert_eq!(a["schedulable"], false);
    alive.store(false, Ordering::Release);
    browser.close().await;
    app.stop().await;
}

/// The job row's state in the jobs table.
fn job_row_state(job_id: &str) -> String {
    format!("document.querySelector('#jobs tr[data-job=\"{job_id}\"]')?.dataset.state")
}

/// Deploys `image` as `app_id` through the deploy API and waits for the page to list the job
/// as `PENDING`; returns its id.
async fn pending_deploy(app: &TestApp, browser: &Browser, app_id: &str, image: &str) -> String {
    let job = app.deploy_image(app_id, image).await;
    let job_id = job["jobId"].as_str().expect("job id").to_owned();
    browser
        .wait_until(&format!("{} === 'PENDING'", job_row_state(&job_id)))
        .await;
    job_id
}

/// Waits until the job detail panel shows the job in `state`.
async fn detail_shows(browser: &Browser, state: &str) {
    browser
        .wait_until(&format!(
            "document.getElementById('job-detail').dataset.state === '{state}'"
        ))
        .await;
}

/// Sends log lines for the claimed job, as its runner.
async fn send_logs(app: &TestApp, claim: &Value, lines: &[&str]) {
    let job_id = claim["job"]["jobId"].as_str().expect("job id");
    let res = app
        .runner(&format!("/runner/jobs/{job_id}/logs"))
        .json(&json!({ "leaseToken": claim["lease"]["token"], "lines": lines }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_deploy_from_pending_to_succeeded_with_its_logs() {
    let app = spawn_app(DbKind::Sqlite).await;
    let browser = signed_in(&app, DESKTOP).await;
    // No node yet: the deploy waits, PENDING.
    let job_id = pending_deploy(&app, &browser, "shop", "registry.local/shop:1").await;
    browser
        .click(&format!(
            "#jobs tr[data-job=\"{job_id}\"] button[aria-label^='show job']"
        ))
        .await;
    detail_shows(&browser, "PENDING").await;
    browser
        .wait_until("document.getElementById('job-timeline').textContent.includes('Created')")
        .await;

    // A node comes up and the test plays the runner: claim, logs, report.
    app.node_heartbeat("node-a", 10).await;
    let claim = app.claim("runner-1", 5).await.expect("claimed");
    detail_shows(&browser, "RUNNING").await;
    browser
        .wait_until("document.getElementById('job-timeline').textContent.includes('claimed by runner runner-1 on node node-a')")
        .await;
    send_logs(
        &app,
        &claim,
        &["pulling registry.local/shop:1", "container started"],
    )
    .await;
    browser
        .wait_until("document.getElementById('job-logs').textContent.includes('container started')")
        .await;
    browser
        .eval("document.getElementById('job-detail').scrollIntoView()")
        .await;
    browser.screenshot("09-deploy-running").await;
    send_logs(&app, &claim, &["health check passed"]).await;
    assert_eq!(app.succeed(&claim, "runner-1").await.status(), 200);
    detail_shows(&browser, "SUCCEEDED").await;
    browser
        .wait_until("document.getElementById('job-following').textContent === 'finished'")
        .await;
    let logs = browser
        .eval("document.getElementById('job-logs').textContent")
        .await;
    assert_eq!(
        logs,
        json!("pulling registry.local/shop:1\ncontainer started\nhealth check passed\n")
    );
    browser
        .wait_until(
            "document.getElementById('job-timeline').textContent.includes('Finished: SUCCEEDED')",
        )
        .await;
    // The app shows as running on its node, with its URL as a link.
    browser
        .wait_until(
            "document.querySelector('#apps tr[data-app=\"shop\"]')?.dataset.state === 'RUNNING'",
        )
        .await;
    browser
        .wait_until("document.querySelector('#apps tr[data-app=\"shop\"] a[href=\"http://127.0.0.1:8088/apps/x/\"]')")
        .await;
    browser.screenshot("10-deploy-succeeded").await;
    browser
        .eval("document.getElementById('job-detail').scrollIntoView()")
        .await;
    browser.screenshot("11-deploy-timeline-and-logs").await;
    browser.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_a_pending_job() {
    let app = spawn_app(DbKind::Sqlite).await;
    let browser = signed_in(&app, DESKTOP).await;
    let job_id = pending_deploy(&app, &browser, "blog", "registry.local/blog:2").await;
    browser
        .click(&format!(
            "#jobs tr[data-job=\"{job_id}\"] [data-action=cancel]"
        ))
        .await;
    confirm(&browser).await;
    browser
        .wait_until(&format!("{} === 'CANCELLED'", job_row_state(&job_id)))
        .await;
    browser.screenshot("12-cancelled").await;
    assert_eq!(app.get_job(&job_id).await["state"], "CANCELLED");
    browser.close().await;
    app.stop().await;
}

/// `(status, content type, body)` of an admin request.
async fn admin_call(app: &TestApp, method: reqwest::Method, path: &str) -> (u16, String, Value) {
    let res = app.admin(method, path).send().await.expect("request");
    let status = res.status().as_u16();
    let kind = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, kind, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_endpoints_act_and_refuse_bad_input() {
    use reqwest::Method;
    let app = spawn_app(DbKind::Sqlite).await;
    app.node_heartbeat("node-a", 10).await;
    let res = app
        .client
        .get(app.url("/admin/events"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401, "the stream needs the admin token");

    for (method, path, status) in [
        (Method::GET, "/admin/jobs/not-a-uuid/follow", 400),
        (
            Method::GET,
            "/admin/jobs/01a23582-2b13-7397-9ff8-66d63c8141e1/follow",
            404,
        ),
        (
            Method::POST,
            "/admin/jobs/01a23582-2b13-7397-9ff8-66d63c8141e1/cancel",
            404,
        ),
        (Method::POST, "/admin/apps/Not%20An%20App/stop", 400),
        (Method::POST, "/admin/apps/ghost/stop", 404),
        (Method::POST, "/admin/apps/ghost/redeploy", 409),
    ] {
        let (got, kind, body) = admin_call(&app, method.clone(), path).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert_eq!(kind, "application/problem+json", "{method} {path}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    let (_, _, jobs) = admin_call(&app, Method::GET, "/admin/jobs").await;
    assert_eq!(jobs["items"], json!([]), "refused requests queue nothing");

    // A deployed app: listed with its last run; redeploy queues its deploy again, which an
    // operator may cancel while it is pending (once); stop queues a STOP.
    app.deploy_image("shop", "registry.local/shop:1").await;
    let claim = app.claim("runner-1", 5).await.expect("claimed");
    assert_eq!(app.succeed(&claim, "runner-1").await.status(), 200);
    let (_, _, apps) = admin_call(&app, Method::GET, "/admin/dashboard/apps").await;
    assert_eq!(apps["items"][0]["appId"], "shop");
    assert_eq!(apps["items"][0]["state"], "RUNNING");
    assert_eq!(apps["items"][0]["lastJob"]["state"], "SUCCEEDED");
    let (_, _, nodes) = admin_call(&app, Method::GET, "/admin/dashboard/nodes").await;
    assert_eq!(nodes["items"][0]["apps"], json!(["shop"]));
    assert_eq!(nodes["ttlMs"], 15_000);

    let (status, _, again) = admin_call(&app, Method::POST, "/admin/apps/shop/redeploy").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["kind"], "DEPLOY");
    assert_eq!(again["state"], "PENDING");
    assert_eq!(again["payload"]["image"], "registry.local/shop:1");
    let cancel = format!(
        "/admin/jobs/{}/cancel",
        again["jobId"].as_str().expect("id")
    );
    let (status, _, cancelled) = admin_call(&app, Method::POST, &cancel).await;
    assert_eq!(
        (status, cancelled["state"].clone()),
        (200, json!("CANCELLED"))
    );
    let (status, kind, _) = admin_call(&app, Method::POST, &cancel).await;
    assert_eq!((status, kind.as_str()), (409, "application/problem+json"));

    let (status, _, stop) = admin_call(&app, Method::POST, "/admin/apps/shop/stop").await;
    assert_eq!(status, 200, "{stop}");
    assert_eq!(
        (stop["kind"].clone(), stop["appId"].clone()),
        (json!("STOP"), json!("shop"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploys_an_app_from_its_row() {
    let app = spawn_app(DbKind::Sqlite).await;
    app.node_heartbeat("node-a", 10).await;
    app.deploy_image("shop", "registry.local/shop:1").await;
    let claim = app.claim("runner-1", 5).await.expect("claimed");
    assert_eq!(app.succeed(&claim, "runner-1").await.status(), 200);
    let browser = signed_in(&app, DESKTOP).await;
    browser
        .click("#apps tr[data-app=\"shop\"] [data-action=redeploy]")
        .await;
    confirm(&browser).await;
    // The new job opens, pending, and is the app's newest job.
    detail_shows(&browser, "PENDING").await;
    let (_, _, jobs) = admin_call(&app, reqwest::Method::GET, "/admin/jobs?appId=shop").await;
    let newest = &jobs["items"][0];
    assert_eq!(newest["state"], "PENDING");
    assert_eq!(newest["payload"]["image"], "registry.local/shop:1");
    assert_eq!(
        browser
            .eval("document.getElementById('job-detail').dataset.job")
            .await,
        newest["jobId"]
    );
    browser.screenshot("13-redeploy").await;
    browser.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shows_an_app_asleep_and_awake_again_as_its_agent_reports_it() {
    let app = spawn_app(DbKind::Sqlite).await;
    let capacity = json!({ "cpus": 4.0, "memoryMb": 8192, "maxApps": 10, "maxSleepingApps": 200 });
    let reported = |state: &str| json!([{ "appId": "dozy", "containerId": "c-1", "image": "dozy:1", "state": state }]);
    app.node_reports("node-a", capacity.clone(), json!([]))
        .await;
    app.deploy_image("dozy", "registry.local/dozy:1").await;
    let claim = app.claim("runner-1", 5).await.expect("claimed");
    assert_eq!(app.succeed(&claim, "runner-1").await.status(), 200);
    let browser = signed_in(&app, DESKTOP).await;
    let row_state = "document.querySelector('#apps tr[data-app=\"dozy\"]')?.dataset.state";
    let asleep =
        "document.querySelector('[data-node=\"node-a\"] [data-sleeping]')?.dataset.sleeping";
    browser
        .wait_until(&format!("{row_state} === 'RUNNING'"))
        .await;

    // The agent puts it to sleep: its row, its node's card and its count say so, live.
    app.node_reports("node-a", capacity.clone(), reported("sleeping"))
        .await;
    browser
        .wait_until(&format!("{row_state} === 'SLEEPING'"))
        .await;
    browser.wait_until(&format!("{asleep} === '1'")).await;
    assert_eq!(
        browser
            .eval("document.querySelector('[data-node=\"node-a\"] .apps .badge')?.textContent")
            .await,
        json!("SLEEPING")
    );
    assert_eq!(
        browser
            .eval("document.querySelector('[data-node=\"node-a\"] [data-apps]').dataset.apps")
            .await,
        json!("0"),
        "a sleeping app frees its slot of maxApps"
    );
    browser.screenshot("14-sleeping-app").await;

    // A request woke it.
    app.node_reports("node-a", capacity, reported("running"))
        .await;
    browser
        .wait_until(&format!("{row_state} === 'RUNNING'"))
        .await;
    browser.wait_until(&format!("{asleep} === '0'")).await;
    browser.close().await;
    app.stop().await;
}

/// The job detail's timeline item `step` (`claim`, `end`, …) of attempt `attempt`.
fn timeline_item(step: &str, attempt: u32) -> String {
    format!("document.querySelector('#job-timeline li[data-step=\"{step}\"][data-attempt=\"{attempt}\"]')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_job_shows_both_attempts_with_the_first_ones_reason() {
    let app = spawn_app_with(DbKind::Sqlite, |s| {
        s.retry.base_ms = 50;
        s.retry.cap_ms = 100;
    })
    .await;
    app.node_heartbeat("node-a", 10).await;
    let browser = signed_in(&app, DESKTOP).await;
    let job_id = pending_deploy(&app, &browser, "shop", "registry.local/shop:1").await;
    // Chosen with the keyboard: the row's button focused, Enter.
    browser
        .eval(&format!(
            "document.querySelector('#jobs tr[data-job=\"{job_id}\"] button[aria-label^=\"show job\"]').focus()"
        ))
        .await;
    browser.press(Key::Enter).await;
    detail_shows(&browser, "PENDING").await;

    // Attempt 1: runner-1 fails, retryable; the reason holds markup that must stay text.
    let reason = "registry timed out <b>twice</b>";
    let first = app.claim("runner-1", 5).await.expect("claimed");
    detail_shows(&browser, "RUNNING").await;
    send_logs(&app, &first, &["pulling registry.local/shop:1"]).await;
    let res = app
        .runner(&format!("/runner/jobs/{job_id}/report"))
        .json(
            &json!({ "runnerId": "runner-1", "leaseToken": first["lease"]["token"],
            "outcome": "FAILED", "error": reason, "retryable": true }),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    browser
        .wait_until(&format!(
            "{}?.dataset.outcome === 'RETRY'",
            timeline_item("end", 1)
        ))
        .await;

    // Attempt 2, followed live: claimed by runner-2, then it succeeds.
    let second = app
        .claim("runner-2", 5)
        .await
        .expect("the retry is claimed");
    browser
        .wait_until(&format!(
            "{}?.textContent.includes('claimed by runner runner-2 on node node-a')",
            timeline_item("claim", 2)
        ))
        .await;
    send_logs(&app, &second, &["container started"]).await;
    browser
        .wait_until("document.getElementById('job-logs').textContent.includes('container started')")
        .await;
    assert_eq!(app.succeed(&second, "runner-2").await.status(), 200);
    detail_shows(&browser, "SUCCEEDED").await;
    browser
        .wait_until(&format!(
            "{}?.dataset.outcome === 'SUCCEEDED'",
            timeline_item("end", 2)
        ))
        .await;
    browser
        .wait_until("document.querySelector('#job-timeline li[data-step=\"finished\"]')")
        .await;

    assert_eq!(
        browser
            .eval("document.getElementById('job-detail').dataset.attempts")
            .await,
        json!("2")
    );
    let first_end = browser
        .eval(&format!("{}.textContent", timeline_item("end", 1)))
        .await;
    assert!(
        first_end.as_str().unwrap().contains(reason),
        "the first attempt's reason, as text: {first_end}"
    );
    assert!(
        first_end.as_str().unwrap().contains("failed, retried"),
        "{first_end}"
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#job-timeline b').length")
            .await,
        json!(0),
        "markup from the API is never HTML"
    );
    let claim_1 = browser
        .eval(&format!("{}.textContent", timeline_item("claim", 1)))
        .await;
    assert!(
        claim_1
            .as_str()
            .unwrap()
            .contains("claimed by runner runner-1 on node node-a"),
        "{claim_1}"
    );
    browser
        .wait_until(&format!("{} === 'SUCCEEDED'", job_row_state(&job_id)))
        .await;
    browser
        .eval("document.getElementById('job-detail').scrollIntoView()")
        .await;
    browser.screenshot("15-retried-job-timeline").await;
    browser.close().await;

    // At phone width the timeline and the logs stack, and read the same.
    let phone = signed_in(&app, PHONE).await;
    phone
        .click(&format!(
            "#jobs tr[data-job=\"{job_id}\"] button[aria-label^='show job']"
        ))
        .await;
    phone
        .wait_until(&format!(
            "{}?.dataset.outcome === 'SUCCEEDED'",
            timeline_item("end", 2)
        ))
        .await;
    let fits = phone
        .eval("document.getElementById('job-detail').scrollWidth <= document.documentElement.clientWidth")
        .await;
    assert_eq!(fits, json!(true), "the job detail fits a phone's width");
    phone
        .eval("document.getElementById('job-detail').scrollIntoView()")
        .await;
    phone.screenshot("16-retried-job-phone").await;
    phone.close().await;
    app.stop().await;
}
