//! `spawn_app`: the real control plane on 127.0.0.1:0 over a fresh database, with typed
//! request helpers for each role.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use berth_control::config::{EventSettings, Secrets, Settings};
use berth_control::startup::Application;
use berth_control::state::AppState;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::db::{fresh_db, DbKind, TestDb};

/// A running control plane.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client without default headers.
    pub client: reqwest::Client,
    /// The role secrets it checks.
    pub secrets: Secrets,
    /// Its state (store, settings), for setting up and inspecting.
    pub state: AppState,
    /// The credentials of the nodes the helpers joined, by node id.
    credentials: Mutex<HashMap<String, String>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    db: Option<TestDb>,
}

/// Starts the control plane on a fresh database of `kind`.
pub async fn spawn_app(kind: DbKind) -> TestApp {
    spawn_app_with(kind, |_| {}).await
}

/// Starts the control plane on a fresh database of `kind`, with settings changed by `tweak`.
pub async fn spawn_app_with(kind: DbKind, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = fresh_db(kind).await;
    let mut settings = Settings::for_tests(&db.url);
    tweak(&mut settings);
    spawn_on(settings, Some(db)).await
}

/// Starts a control plane with exactly these settings (a second replica on the same database).
pub async fn spawn_on(settings: Settings, db: Option<TestDb>) -> TestApp {
    spawn_with_events(settings, EventSettings::default(), db).await
}

/// Starts a control plane with these settings and event settings (RabbitMQ when
/// `events.amqp_url` is set).
pub async fn spawn_with_events(
    settings: Settings,
    events: EventSettings,
    db: Option<TestDb>,
) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let secrets = settings.secrets.clone();
    let app = Application::build_with_events(settings, events, listener)
        .await
        .expect("control plane starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        client: reqwest::Client::new(),
        secrets,
        state,
        credentials: Mutex::default(),
        stop: Some(stop),
        server: Some(server),
        db,
    }
}

impl TestApp {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the deploy secret.
    pub fn deploy(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-DEPLOY-SECRET", self.secrets.deploy.expose())
    }

    /// A request with the runner token.
    pub fn runner(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .header("X-Runner-Token", self.secrets.runner.expose())
    }

    /// A request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-Admin-Token", self.secrets.admin.expose())
    }

    /// `GET path` of the admin API, as JSON.
    pub async fn admin_json(&self, path: &str) -> Value {
        let res = self.admin(reqwest::Method::GET, path).send().await;
        res.expect("request").json().await.expect("admin json")
    }

    /// `GET path` of the deploy API, as JSON.
    pub async fn deploy_json(&self, path: &str) -> Value {
        let res = self.deploy(reqwest::Method::GET, path).send().await;
        res.expect("request").json().await.expect("deploy json")
    }

    /// `POST /deploy/jobs` with `body`; the response.
    pub async fn create_job(&self, body: Value) -> reqwest::Response {
        self.deploy(reqwest::Method::POST, "/deploy/jobs")
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Creates a deploy of `image` for `app` and returns the job.
    pub async fn deploy_image(&self, app: &str, image: &str) -> Value {
        let res = self
            .create_job(json!({ "appId": app, "image": image }))
            .await;
        assert_eq!(res.status(), 201, "create job");
        res.json().await.expect("job json")
    }

    /// `GET /deploy/jobs/{id}`.
    pub async fn get_job(&self, job_id: &str) -> Value {
        let res = self
            .deploy(reqwest::Method::GET, &format!("/deploy/jobs/{job_id}"))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200);
        res.json().await.expect("job json")
    }

    /// `POST /runner/jobs/claim`; `None` on 204.
    pub async fn claim(&self, runner: &str, wait: u64) -> Option<Value> {
        let res = self
            .runner("/runner/jobs/claim")
            .json(&json!({ "runnerId": runner, "wait": wait }))
            .send()
            .await
            .expect("request");
        match res.status().as_u16() {
            200 => Some(res.json().await.expect("claim json")),
            204 => None,
            other => panic!(
                "claim answered {other}: {}",
                res.text().await.unwrap_or_default()
            ),
        }
    }

    /// Reports the claimed job as succeeded.
    pub async fn succeed(&self, claim: &Value, runner: &str) -> reqwest::Response {
        let job_id = claim["job"]["jobId"].as_str().expect("job id");
        self.runner(&format!("/runner/jobs/{job_id}/report"))
            .json(&json!({
                "runnerId": runner,
                "leaseToken": claim["lease"]["token"],
                "outcome": "SUCCEEDED",
                "result": { "containerId": "c-1", "url": "http://127.0.0.1:8088/apps/x/", "image": claim["job"]["payload"]["image"] }
            }))
            .send()
            .await
            .expect("request")
    }

    /// `POST /internal/runtime-nodes/join` for `node_id` with the join token.
    pub async fn join(&self, node_id: &str) -> reqwest::Response {
        self.client
            .post(self.url("/internal/runtime-nodes/join"))
            .header("X-RT-Join-Token", self.secrets.node_join.expose())
            .json(&json!({ "nodeId": node_id }))
            .send()
            .await
            .expect("request")
    }

    /// Renews the lease of `claim` for `runner` (`POST /runner/jobs/{id}/heartbeat`).
    pub async fn renew(&self, claim: &Value, runner: &str) -> reqwest::Response {
        let job_id = claim["job"]["jobId"].as_str().expect("job id");
        self.runner(&format!("/runner/jobs/{job_id}/heartbeat"))
            .json(&json!({ "runnerId": runner, "leaseToken": claim["lease"]["token"] }))
            .send()
            .await
            .expect("request")
    }

    /// Node `node_id`'s credential: joined on first use.
    pub async fn credential(&self, node_id: &str) -> String {
        if let Some(known) = self.credentials.lock().unwrap().get(node_id) {
            return known.clone();
        }
        let res = self.join(node_id).await;
        assert_eq!(res.status(), 201, "join {node_id}");
        let body: Value = res.json().await.expect("join answer");
        let credential = body["credential"]
            .as_str()
            .expect("a credential")
            .to_owned();
        self.credentials
            .lock()
            .unwrap()
            .insert(node_id.to_owned(), credential.clone());
        credential
    }

    /// A node heartbeat for `node_id` with room for `max_apps` apps.
    pub async fn node_heartbeat(&self, node_id: &str, max_apps: u32) -> reqwest::Response {
        let capacity = json!({ "cpus": 4.0, "memoryMb": 8192, "maxApps": max_apps });
        self.node_reports(node_id, capacity, json!([])).await
    }

    /// A node heartbeat for `node_id` with `capacity` that reports `apps`.
    pub async fn node_reports(
        &self,
        node_id: &str,
        capacity: Value,
        apps: Value,
    ) -> reqwest::Response {
        let credential = self.credential(node_id).await;
        self.client
            .post(self.url("/internal/runtime-nodes/heartbeat"))
            .header("X-RT-Node-Token", credential)
            .json(&json!({
                "nodeId": node_id,
                "name": node_id,
                "agentBaseUrl": format!("http://127.0.0.1:1/{node_id}"),
                "gatewayBaseUrl": "http://127.0.0.1:2",
                "labels": {},
                "capacity": capacity,
                "apps": apps,
                "version": "test"
            }))
            .send()
            .await
            .expect("request")
    }

    /// Waits until `n` claims wait in their long poll, as `/metrics` reports
    /// (`berth_claims_waiting`), so a test acts only once its claimers listen.
    pub async fn until_claims_wait(&self, n: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self
                .client
                .get(self.url("/metrics"))
                .send()
                .await
                .expect("request")
                .text()
                .await
                .expect("metrics text");
            let waiting = text
                .lines()
                .find_map(|l| l.strip_prefix("berth_claims_waiting "))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0);
            if waiting >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{waiting} of {n} claims waiting after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Takes the test database away, so that stopping this replica leaves it for another.
    pub fn take_db(&mut self) -> Option<TestDb> {
        self.db.take()
    }

    /// Stops the server and drops its database.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        if let Some(db) = self.db.take() {
            db.drop_db().await;
        }
    }
}
