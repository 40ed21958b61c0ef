//! Registry credentials and private images (issue 13): a login goes only to the registry it is
//! for, and an image from a registry is pulled with the job's own credentials on every deploy,
//! so a private image already on the node is never handed to a job without the right to it.
//!
//! The private registry is Debian's `docker-registry` with an htpasswd login, started by the test
//! on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const USER: &str = "berth";
const PASSWORD: &str = "berth-private-registry-pw";
/// `PASSWORD` hashed with bcrypt (cost 5), as the registry's htpasswd file holds it.
const HTPASSWD: &str = "berth:$2y$05$0123456789abcdefghijkeM9qR6IPZ8Vq7SuHth/Sq3uCYAgwpxmq\n";

/// A registry that wants a login, on 127.0.0.1; stopped (by its process id) when dropped.
struct PrivateRegistry {
    host: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl PrivateRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        std::fs::write(dir.path().join("htpasswd"), HTPASSWD).unwrap();
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n\
             auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            dir.path().join("data").display(),
            dir.path().join("htpasswd").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is missing; run scripts/ensure-registry.sh");
        let registry = Self { host, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&registry.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// Pushes the test image as `{host}/private/app:{tag}` with the registry's login.
    fn push(&self, tag: &str) -> String {
        let image = format!("{}/private/app:{tag}", self.host);
        let config = self.dir.path().join("docker-config");
        std::fs::create_dir_all(&config).unwrap();
        let auth = base64(&format!("{USER}:{PASSWORD}"));
        std::fs::write(
            config.join("config.json"),
            json!({"auths": {self.host.as_str(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
        docker_ok(Some(&config), &["tag", IMAGE, &image]);
        docker_ok(Some(&config), &["push", &image]);
        image
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64(plain: &str) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(plain.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_private_image_on_the_node_is_not_handed_to_a_job_without_the_right_to_it() {
    let registry = PrivateRegistry::start();
    let image = registry.push(&format!("v{:06x}", rand::random::<u32>() & 0xff_ffff));
    let agent = spawn_agent().await;
    let auth = |password: &str| json!({"username": USER, "password": password, "serverAddress": registry.host});

    let mut body = deploy_body(&app_id("entitled"), json!({}));
    body["image"] = json!(image);
    body["registryAuth"] = auth(PASSWORD);
    agent.deploy_ok(&body).await;

    // The image is on this node now; jobs without the login, or with a wrong one, still get nothing.
    for registry_auth in [None, Some(auth("wrong-password"))] {
        let app = app_id("freeloader");
        let mut body = deploy_body(&app, json!({}));
        body["image"] = json!(image);
        if let Some(a) = registry_auth {
            body["registryAuth"] = a;
        }
        let detail = problem(agent.deploy(&body).await, 422).await;
        assert!(detail.contains("could not be pulled"), "{detail}");
        assert!(agent.containers(&app).is_empty());
    }
    drop(agent);
    let _ = Command::new(DOCKER).args(["rmi", "-f", &image]).output();
}

#[tokio::test]
async fn registry_credentials_go_only_to_the_registry_they_are_for() {
    // A registry an attacker runs: it asks every client for a login and records what it got.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = vec![0u8; 8192];
            let n = stream.read(&mut head).await.unwrap_or(0);
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head[..n]).to_ascii_lowercase());
            let _ = stream
                .write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"evil\"\r\n\
                      Docker-Distribution-API-Version: registry/2.0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let agent = spawn_agent().await;
    let mut body = deploy_body(&app_id("lured"), json!({}));
    body["image"] = json!(format!("{evil}/team/app:v1"));
    body["registryAuth"] =
        json!({"username": USER, "password": PASSWORD, "serverAddress": "127.0.0.1:5000"});
    let detail = problem(agent.deploy(&body).await, 422).await;
    assert!(detail.contains("could not be pulled"), "{detail}");
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "the engine asked the image's registry");
    assert!(
        seen.iter()
            .all(|request| !request.contains("authorization:")),
        "the login for 127.0.0.1:5000 was sent to {evil}: {seen:?}"
    );
}
