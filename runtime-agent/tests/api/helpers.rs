//! `spawn_agent()` and a `TestAgent` of typed helpers, like zero2prod's `spawn_app`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use berth_agent::config::Config;
use berth_agent::startup::Application;
use berth_shared::grant::{Grant, GrantSigner};
use berth_shared::sealed::SealingKeys;
use berth_shared::secret::Secret;
use berth_shared::wire::agent::{AgentAppStatus, AgentDeployResponse};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The header runners send grants in.
pub const GRANT: &str = "x-runtime-grant";
/// The image the tests deploy (built by `scripts/test-images/build.sh`).
pub const IMAGE: &str = "berth-test/app:latest";
/// Debian's client, which builds with the daemon's builder.
pub const DOCKER: &str = "/usr/bin/docker";

/// Fails (never skips) when the Docker engine is missing, then builds the test images once.
pub fn ensure_images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let info = Command::new(DOCKER).arg("info").output();
        match info {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "the Docker engine is not answering ({DOCKER} info: {}); run scripts/ensure-docker.sh",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("{DOCKER} is missing ({e}); run scripts/ensure-docker.sh to install Debian's docker.io"),
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-images/build.sh");
        let out = Command::new("bash").arg(script).output().expect("running the test-image script");
        assert!(
            out.status.success(),
            "building the test images failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The control plane's signing key, as far as test agents know: they are pinned to its
/// public key unless a test lets them learn keys from a control plane.
pub fn signer() -> &'static GrantSigner {
    static SIGNER: OnceLock<GrantSigner> = OnceLock::new();
    SIGNER.get_or_init(|| GrantSigner::new(&SealingKeys::generate()))
}

/// A grant of `app` on `node` for `job`, good for a minute.
pub fn grant(node: &str, app: &str, job: uuid::Uuid) -> String {
    signer().sign(&Grant::new(job, app, node, Duration::from_secs(60)))
}

/// A unique app id for one test.
pub fn app_id(name: &str) -> String {
    format!("t-{name}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// How to start a test agent.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node id (kept across a restart).
    pub node_id: String,
    /// The state folder (kept across a restart).
    pub state_dir: PathBuf,
    /// Readiness timeout in seconds.
    pub ready_timeout_secs: f64,
    /// Control plane URL and join token.
    pub control: Option<(String, String)>,
    /// Seconds after which the agent rotates its credential.
    pub rotate_secs: u64,
    /// Pin the agent to [`signer`]'s key (else it learns keys from its control plane).
    pub pin_grant_keys: bool,
}

impl Options {
    /// A fresh node with a fresh state folder.
    pub fn fresh() -> Self {
        let node_id = format!("test-node-{}", uuid::Uuid::new_v4().simple());
        let state_dir = std::env::temp_dir().join(format!("berth-agent-{node_id}"));
        Self {
            node_id,
            state_dir,
            ready_timeout_secs: 10.0,
            control: None,
            rotate_secs: 604_800,
            pin_grant_keys: true,
        }
    }
}

/// A running agent and its gateway, on port 0.
pub struct TestAgent {
    /// The agent API's address.
    pub agent: SocketAddr,
    /// The gateway's address.
    pub gateway: SocketAddr,
    /// How it was started.
    pub options: Options,
    /// A plain HTTP client.
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    cleanup: bool,
}

/// Starts a fresh agent.
pub async fn spawn_agent() -> TestAgent {
    spawn_agent_with(Options::fresh()).await
}

/// Starts an agent with the given options.
pub async fn spawn_agent_with(options: Options) -> TestAgent {
    ensure_images();
    let mut config = Config::for_tests(options.state_dir.clone());
    if options.pin_grant_keys {
        config.grant_keys = Some(signer().public_keys().to_vec());
    }
    config.node_id = Some(berth_shared::ids::NodeId::parse(&options.node_id).unwrap());
    config.ready_timeout_secs = options.ready_timeout_secs;
    config.stop_grace_secs = 2;
    config.heartbeat_secs = 0.5;
    if let Some((url, token)) = &options.control {
        config.control_url = Some(url.clone());
        // An empty token: the agent must do with the credential it kept.
        config.node_join_token = (!token.is_empty()).then(|| Secret::new(token.clone()));
    }
    config.node_credential_rotate_secs = options.rotate_secs;
    let settings = config.validate().expect("test settings are valid");
    let agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build(settings, agent, gateway)
        .await
        .expect("the agent builds (is the Docker engine running? scripts/ensure-docker.sh)");
    let (agent, gateway) = (app.agent_addr(), app.gateway_addr());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    TestAgent {
        agent,
        gateway,
        options,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        shutdown: Some(tx),
        handle: Some(handle),
        cleanup: true,
    }
}

/// A deploy body for the test image.
pub fn deploy_body(app: &str, env: Value) -> Value {
    json!({
        "jobId": uuid::Uuid::new_v4().to_string(),
        "appId": app,
        "image": IMAGE,
        "env": env,
        "containerPort": 8080,
    })
}

impl TestAgent {
    /// `http://{agent}{path}`.
    pub fn agent_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.agent)
    }

    /// `http://{gateway}{path}`.
    pub fn gateway_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    /// A grant of `app` on this node for a job of its own.
    pub fn grant(&self, app: &str) -> String {
        grant(&self.options.node_id, app, uuid::Uuid::new_v4())
    }

    /// A grant of the deploy `body`'s app and job on this node.
    pub fn grant_for(&self, body: &Value) -> String {
        let job = body["jobId"].as_str().and_then(|j| j.parse().ok());
        let app = body["appId"].as_str().unwrap_or_default();
        grant(&self.options.node_id, app, job.unwrap_or_default())
    }

    /// `POST /agent/apps/deploy` with the body's grant.
    pub async fn deploy(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.agent_url("/agent/apps/deploy"))
            .header(GRANT, self.grant_for(body))
            .json(body)
            .send()
            .await
            .expect("the agent answers")
    }

    /// Deploys and insists it worked.
    pub async fn deploy_ok(&self, body: &Value) -> AgentDeployResponse {
        let response = self.deploy(body).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "deploy failed: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// `POST /agent/apps/{app}/stop`.
    pub async fn stop(&self, app: &str) -> reqwest::Response {
        self.stop_with(app, "").await
    }

    /// `POST /agent/apps/{app}/stop?{query}` (e.g. `removeVolumes=true`).
    pub async fn stop_with(&self, app: &str, query: &str) -> reqwest::Response {
        self.client
            .post(self.agent_url(&format!("/agent/apps/{app}/stop?{query}")))
            .header(GRANT, self.grant(app))
            .send()
            .await
            .unwrap()
    }

    /// `GET /agent/apps/{app}/status`.
    pub async fn status(&self, app: &str) -> AgentAppStatus {
        let response = self
            .client
            .get(self.agent_url(&format!("/agent/apps/{app}/status")))
            .header(GRANT, self.grant(app))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// `GET` through the gateway by path: status and body.
    pub async fn via_path(&self, app: &str, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(self.gateway_url(&format!("/apps/{app}{path}")))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.agent_url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Stops serving (like a killed agent) but leaves the containers and the state folder.
    pub async fn kill(mut self) -> Options {
        self.cleanup = false;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
        self.options.clone()
    }

    /// This node's containers of one app (all states), by the engine's own CLI.
    pub fn containers(&self, app: &str) -> Vec<String> {
        containers_with(&[
            format!("berth.node={}", self.options.node_id),
            format!("berth.app={app}"),
        ])
    }
}

/// Insists `response` is a problem+json with `status`; its `detail`.
pub async fn problem(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    body["detail"].as_str().unwrap().to_owned()
}

/// Container ids carrying every given label.
pub fn containers_with(labels: &[String]) -> Vec<String> {
    let mut cmd = Command::new(DOCKER);
    cmd.args(["ps", "-aq", "--no-trunc"]);
    for label in labels {
        cmd.args(["--filter", &format!("label={label}")]);
    }
    let out = cmd.output().expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs the Docker CLI (with `--config config` when given) and insists it worked; its stdout.
pub fn docker_ok(config: Option<&std::path::Path>, args: &[&str]) -> String {
    let mut command = Command::new(DOCKER);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let out = command.args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `sh -c script` inside a container: whether it succeeded, and what it printed.
pub fn exec(container: &str, script: &str) -> (bool, String) {
    let out = Command::new(DOCKER)
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The Docker volumes labelled for `app`, by name, sorted.
pub fn volumes_of(app: &str) -> Vec<String> {
    let out = Command::new(DOCKER)
        .args(["volume", "ls", "-q", "--filter"])
        .arg(format!("label=berth.app={app}"))
        .output()
        .expect("docker volume ls");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// `docker inspect` of one container.
pub fn inspect(id: &str) -> Value {
    let out = Command::new(DOCKER).args(["inspect", id]).output().unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list[0].clone()
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if self.cleanup {
            let ids = containers_with(&[format!("berth.node={}", self.options.node_id)]);
            if !ids.is_empty() {
                let _ = Command::new(DOCKER).args(["rm", "-f"]).args(&ids).output();
            }
            let _ = std::fs::remove_dir_all(&self.options.state_dir);
        }
    }
}

/// The local registry (`scripts/ensure-registry.sh`, 127.0.0.1:5000); fails, never skips,
/// when it does not answer.
pub fn ensure_registry() -> &'static str {
    const REGISTRY: &str = "127.0.0.1:5000";
    let answers = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", &format!("http://{REGISTRY}/v2/")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        answers,
        "no image registry answers on {REGISTRY}; run scripts/ensure-registry.sh"
    );
    REGISTRY
}
