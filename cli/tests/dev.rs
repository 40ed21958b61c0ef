//! `berth dev` and the CLI as separate processes, on the real Docker engine: start, deploy an
//! image the test builds, reach it through the gateway, stop it, shut down.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `berth` command in `dir`, with no secrets or control URL from the test's environment.
fn berth(dir: &Path) -> Command {
    let mut cmd = Command::new(BERTH);
    cmd.current_dir(dir);
    for var in [
        "BERTH_CONTROL_URL",
        "BERTH_DEPLOY_SECRET",
        "BERTH_RUNNER_TOKEN",
        "BERTH_NODE_JOIN_TOKEN",
        "BERTH_ADMIN_TOKEN",
        "BERTH_SECRET_KEY",
        "BERTH_API_URL",
        "BERTH_API_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Output {
    berth(dir).args(args).output().expect("berth runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dev(dir: &Path) -> Dev {
    let child = berth(dir)
        .args([
            "dev",
            "--control-addr",
            "127.0.0.1:0",
            "--agent-addr",
            "127.0.0.1:0",
            "--gateway-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth dev starts");
    Dev(child)
}

fn build_test_image() {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/test-images/build.sh"))
        .status()
        .expect("bash runs");
    assert!(
        status.success(),
        "building the test image failed: the Docker engine must run (scripts/ensure-docker.sh)"
    );
}

/// Waits until `berth dev` in `dir` is up: its agent's node `ONLINE` in the registry.
async fn wait_until_up(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if dir.join(".berth/dev.json").exists() {
            let out = run(dir, &["nodes", "--json"]);
            if out.status.success() && stdout(&out).contains("ONLINE") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "berth dev did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `berth` in `dir` and returns its output; fails with its stderr unless it succeeded.
fn ok(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = berth(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("berth runs");
    assert!(
        out.status.success(),
        "berth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

#[tokio::test]
async fn dev_deploys_serves_and_stops_an_app() {
    build_test_image();
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    wait_until_up(dir.path()).await;

    let app = format!("cli-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let out = run(
        dir.path(),
        &[
            "deploy",
            &app,
            "--image",
            "berth-test/app:latest",
            "--env",
            "MSG=from-the-cli",
            "--wait",
        ],
    );
    assert!(
        out.status.success(),
        "deploy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let url = text
        .lines()
        .find_map(|l| {
            l.split_once("is running: ")
                .map(|(_, u)| u.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no URL in {text:?}"));
    assert!(url.ends_with(&format!("/apps/{app}/")), "{url}");
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("from-the-cli"));

    let jobs: Value = serde_json::from_str(&stdout(&run(
        dir.path(),
        &["jobs", "--json", "--app", &app],
    )))
    .unwrap();
    assert_eq!(jobs["items"][0]["state"], "SUCCEEDED");
    let table = stdout(&run(dir.path(), &["jobs"]));
    assert!(table.starts_with("JOB") && table.contains(&app), "{table}");

    let out = run(dir.path(), &["stop", &app]);
    assert!(
        out.status.success(),
        "stop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("is stopped"));
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 404);

    // Secrets: generated once, private, never printed.
    let secrets = std::fs::read_to_string(dir.path().join(".berth/secrets.env")).unwrap();
    let values: Vec<&str> = secrets
        .lines()
        .filter_map(|l| l.split_once('=').map(|(_, v)| v))
        .collect();
    assert_eq!(values.len(), berth_cli::dev::SECRET_VARS.len());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(".berth/secrets.env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // SIGTERM: a clean exit that removes the announcement.
    let mut dev = dev;
    let pid = dev.0.id().to_string();
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    let status = dev.0.wait().unwrap();
    assert!(status.success(), "berth dev exited with {status}");
    let mut printed = String::new();
    std::io::Read::read_to_string(dev.0.stdout.as_mut().unwrap(), &mut printed).unwrap();
    assert!(printed.contains("berth dev is running"));
    for secret in values {
        assert!(!printed.contains(secret), "a secret was printed");
    }
    assert!(!dir.path().join(".berth/dev.json").exists());
}

/// The public api inside `berth dev`, driven by the CLI's operator and tenant commands: a
/// tenant and a key, an app deployed through the api, listed, its log read, rolled back to its
/// first deployment, and the key revoked.
#[tokio::test]
async fn the_cli_drives_the_public_api_of_berth_dev() {
    build_test_image();
    let dir = tempfile::tempdir().unwrap();
    let _dev = start_dev(dir.path());
    wait_until_up(dir.path()).await;
    let d = dir.path();
    let tenant = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    ok(d, &["tenant", "create", &tenant, "--max-apps", "3"], &[]);
    assert!(ok(d, &["tenant", "list"], &[]).contains(&tenant));
    let created: Value = serde_json::from_str(&ok(
        d,
        &["key", "create", &tenant, "--name", "ci", "--json"],
        &[],
    ))
    .unwrap();
    let key = created["key"]
        .as_str()
        .expect("the key, shown once")
        .to_owned();
    let key_id = created["keyId"].as_str().unwrap().to_owned();
    let listed = ok(d, &["key", "list", &tenant], &[]);
    assert!(
        listed.contains(&key_id) && !listed.contains(&key),
        "{listed}"
    );

    // An app through the api (a portal's calls), then the CLI reads and rolls it back.
    let announced: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join(".berth/dev.json")).unwrap()).unwrap();
    let api = announced["apiUrl"]
        .as_str()
        .expect("berth dev announces its api")
        .to_owned();
    let http = reqwest::Client::new();
    let app = format!(
        "cli-api-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let call = |method: reqwest::Method, path: String, body: Value| {
        http.request(method, format!("{api}{path}"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let put = call(
        reqwest::Method::PUT,
        format!("/v1/apps/{app}"),
        serde_json::json!({"image": "berth-test/app:latest", "env": {"MSG": "first"}}),
    )
    .await
    .unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    let auth = [("BERTH_API_KEY", key.as_str())];
    let mut first = String::new();
    for msg in ["first", "second"] {
        let deployment: Value = if msg == "first" {
            call(
                reqwest::Method::POST,
                format!("/v1/apps/{app}/deployments"),
                serde_json::json!({}),
            )
        } else {
            call(
                reqwest::Method::PATCH,
                format!("/v1/apps/{app}/config"),
                serde_json::json!({"env": {"MSG": msg}}),
            )
        }
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let id = deployment["deploymentId"]
            .as_str()
            .expect("a deployment")
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now: Value = call(
                reqwest::Method::GET,
                format!("/v1/deployments/{id}?wait=10&version=0"),
                Value::Null,
            )
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            if now["state"] == "SUCCEEDED" {
                break;
            }
            assert!(
                Instant::now() < deadline && now["state"] != "FAILED",
                "deployment {msg}: {now:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if msg == "first" {
            first = id;
        }
    }
    let apps = ok(d, &["apps"], &auth);
    assert!(
        apps.starts_with("APP") && apps.contains(&app) && apps.contains("RUNNING"),
        "{apps}"
    );
    let log = ok(d, &["logs", &app], &auth);
    assert!(
        !log.trim().is_empty(),
        "the latest deployment's log is empty"
    );
    let rolled = ok(d, &["rollback", &app], &auth);
    assert!(
        rolled.contains("rolled back to") && rolled.contains(&first[..8]),
        "{rolled}"
    );
    let status: Value = call(reqwest::Method::GET, format!("/v1/apps/{app}"), Value::Null)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = status["status"]["url"]
        .as_str()
        .expect("a running app has a URL")
        .to_owned();
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        page.contains("first"),
        "after the rollback the app serves {page:?}"
    );

    ok(d, &["key", "revoke", &tenant, &key_id], &[]);
    let refused = berth(d).args(["apps"]).envs(auth).output().unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ok(d, &["stop", &app], &[]);
}

#[test]
fn dev_without_docker_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth(dir.path())
        .args([
            "dev",
            "--control-addr",
            "127.0.0.1:0",
            "--agent-addr",
            "127.0.0.1:0",
            "--gateway-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs the Docker engine") && err.contains("ensure-docker.sh"),
        "{err}"
    );
}

#[test]
fn cli_without_a_control_plane_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["jobs"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BERTH_CONTROL_URL"), "{err}");
}
