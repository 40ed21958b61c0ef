//! `spawn_api`: the real control plane (in-process, from berth-control) and the real api on
//! fresh databases, both on 127.0.0.1:0, with typed helpers for operators and tenants.
//!
//! The databases per test and the control plane's own spawn helper are the control plane's
//! test helpers, used as they are rather than copied.
#![allow(dead_code)]

#[path = "../../../deploy-control/tests/common/app.rs"]
pub mod control;
#[path = "../../../deploy-control/tests/common/db.rs"]
pub mod db;

use std::time::Duration;

use berth_api::config::Settings;
use berth_api::service::Api;
use berth_api::startup::Application;
use berth_api::storage::Store;
use db::{fresh_db, DbKind, TestDb};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub use berth_api::config::test_secrets::{ADMIN_TOKEN, SECRET_KEY};

/// [`SECRET_KEY`], parsed.
pub fn sealing_keys() -> std::sync::Arc<berth_shared::sealed::SealingKeys> {
    std::sync::Arc::new(
        berth_shared::sealed::SealingKeys::parse(SECRET_KEY).expect("a sealing key"),
    )
}

/// A store on a fresh database of `kind`, with the database to drop.
pub async fn fresh_store(kind: DbKind) -> (Store, TestDb) {
    let db = fresh_db(kind).await;
    let store = Store::connect(&db.url, sealing_keys())
        .await
        .expect("api store opens");
    (store, db)
}

/// A running api in front of a running control plane.
pub struct TestApi {
    /// `http://127.0.0.1:PORT` of the api.
    pub base: String,
    /// A plain client.
    pub client: reqwest::Client,
    /// The control plane behind it.
    pub control: control::TestApp,
    /// The service, for looking inside (store, followers, metrics).
    pub api: Api,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    db: Option<TestDb>,
}

/// The api's settings in front of `control`.
pub fn settings(database_url: &str, control: &control::TestApp) -> Settings {
    Settings::for_tests(database_url, &control.base, control.secrets.deploy.clone())
}

/// A control plane on PostgreSQL and an api on a fresh database of `kind`.
pub async fn spawn_api_on(kind: DbKind) -> TestApi {
    let control = control::spawn_app(DbKind::Postgres).await;
    let db = fresh_db(kind).await;
    start(settings(&db.url, &control), control, Some(db)).await
}

/// A control plane and an api, both on PostgreSQL.
pub async fn spawn_api() -> TestApi {
    spawn_api_on(DbKind::Postgres).await
}

/// Starts the api with `settings` in front of `control`.
pub async fn start(settings: Settings, control: control::TestApp, db: Option<TestDb>) -> TestApi {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = Application::build(settings, listener)
        .await
        .expect("api starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let api = app.api().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    TestApi {
        base,
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        control,
        api,
        stop: Some(stop),
        server: Some(server),
        db,
    }
}

/// A tenant's key and id, for its requests.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Its id.
    pub id: String,
    /// Its key's text.
    pub key: String,
    /// Its key's id.
    pub key_id: String,
}

impl TestApi {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A second api process on this api's database, in front of a control plane of its own:
    /// another replica, with its own caches.
    pub async fn replica(&self) -> TestApi {
        let url = self
            .db
            .as_ref()
            .expect("an api on a database of its own")
            .url
            .clone();
        let control = control::spawn_app(DbKind::Postgres).await;
        start(settings(&url, &control), control, None).await
    }

    /// A request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-Admin-Token", ADMIN_TOKEN)
    }

    /// A request with `tenant`'s key.
    pub fn as_tenant(
        &self,
        tenant: &Tenant,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&tenant.key)
    }

    /// Creates tenant `id` with `body` merged over defaults, and a key for it.
    pub async fn tenant_with(&self, id: &str, extra: Value) -> Tenant {
        let mut body = json!({ "tenantId": id, "name": format!("Tenant {id}") });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let res = self
            .admin(reqwest::Method::POST, "/v1/tenants")
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(
            res.status(),
            201,
            "create tenant: {}",
            res.text().await.unwrap_or_default()
        );
        let key = self.new_key(id).await;
        Tenant {
            id: id.to_owned(),
            key: key["key"].as_str().expect("key").to_owned(),
            key_id: key["keyId"].as_str().expect("id").to_owned(),
        }
    }

    /// Creates tenant `id` with default quotas and a key.
    pub async fn tenant(&self, id: &str) -> Tenant {
        self.tenant_with(id, json!({})).await
    }

    /// A new key of tenant `id` (the whole answer).
    pub async fn new_key(&self, id: &str) -> Value {
        let res = self
            .admin(reqwest::Method::POST, &format!("/v1/tenants/{id}/keys"))
            .json(&json!({ "name": "portal" }))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 201);
        res.json().await.expect("json")
    }

    /// `PUT /v1/apps/{app}` with `spec` as `tenant`; the response.
    pub async fn put_app(&self, tenant: &Tenant, app: &str, spec: Value) -> reqwest::Response {
        self.as_tenant(tenant, reqwest::Method::PUT, &format!("/v1/apps/{app}"))
            .json(&spec)
            .send()
            .await
            .expect("request")
    }

    /// `POST /v1/apps/{app}/deployments` `{}` as `tenant`; the response.
    pub async fn deploy(&self, tenant: &Tenant, app: &str) -> reqwest::Response {
        self.as_tenant(
            tenant,
            reqwest::Method::POST,
            &format!("/v1/apps/{app}/deployments"),
        )
        .json(&json!({}))
        .send()
        .await
        .expect("request")
    }

    /// The api's `/openapi.json`.
    pub async fn document(&self) -> Value {
        let res = self.client.get(self.url("/openapi.json")).send().await;
        res.expect("request").json().await.expect("json")
    }

    /// Gives `tenant` one of each thing a tenant owns: app `app` with a deployment (whose id
    /// it returns), template `tpl` and its instance `alice`.
    pub async fn own_one_of_each(&self, tenant: &Tenant, app: &str, image: &str) -> String {
        let res = self.put_app(tenant, app, json!({ "image": image })).await;
        assert_eq!(res.status(), 201, "put app {app}");
        let d: Value = self.deploy(tenant, app).await.json().await.expect("json");
        for (method, path, body) in [
            (
                reqwest::Method::PUT,
                "/v1/templates/tpl",
                json!({ "image": image }),
            ),
            (
                reqwest::Method::POST,
                "/v1/instances",
                json!({ "template": "tpl", "slug": "alice" }),
            ),
        ] {
            let res = self
                .as_tenant(tenant, method, path)
                .json(&body)
                .send()
                .await
                .expect("request");
            assert_eq!(res.status(), 201, "{path}");
        }
        d["deploymentId"].as_str().expect("a deployment").to_owned()
    }

    /// `GET path` as `tenant`, as JSON with its status.
    pub async fn get(&self, tenant: &Tenant, path: &str) -> (u16, Value) {
        let res = self
            .as_tenant(tenant, reqwest::Method::GET, path)
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Plays a runner for the next job: a node heartbeats, a runner claims the job and
    /// reports it succeeded. Returns the claimed job.
    pub async fn finish_next_job(&self) -> Value {
        let node = self.control.node_heartbeat("node-1", 100).await;
        assert!(
            node.status().is_success(),
            "node heartbeat: {}",
            node.status()
        );
        let claim = self
            .control
            .claim("runner-1", 5)
            .await
            .expect("a job to claim");
        let res = self.control.succeed(&claim, "runner-1").await;
        assert_eq!(
            res.status(),
            200,
            "report: {}",
            res.text().await.unwrap_or_default()
        );
        claim["job"].clone()
    }

    /// Waits until deployment `id` of `tenant` is in `state`.
    pub async fn wait_state(&self, tenant: &Tenant, id: &str, state: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut version = -1;
        loop {
            let (status, d) = self
                .get(
                    tenant,
                    &format!("/v1/deployments/{id}?wait=2&version={version}"),
                )
                .await;
            assert_eq!(status, 200, "{d}");
            if d["state"] == state {
                return d;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "deployment {id} never reached {state}: {d}"
            );
            version = d["version"].as_i64().expect("version");
        }
    }

    /// Stops the api and the control plane and drops their databases.
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
        self.control.stop().await;
    }
}

/// Asserts `res` is a problem+json with `status`, and returns its detail.
pub async fn problem(res: reqwest::Response, status: u16) -> String {
    let got = res.status().as_u16();
    let kind = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    assert_eq!(kind, "application/problem+json", "{body}");
    body["detail"].as_str().expect("a detail").to_owned()
}
