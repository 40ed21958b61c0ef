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
        "BERTH_NODE_TOKEN",
        "BERTH_RUNTIME_TOKEN",
        "BERTH_ADMIN_TOKEN",
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

#[tokio::test]
async fn dev_deploys_serves_and_stops_an_app() {
    build_test_image();
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());

    // Up once the agent's node is ONLINE in the registry.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if dir.path().join(".berth/dev.json").exists() {
            let out = run(dir.path(), &["nodes", "--json"]);
            if out.status.success() && stdout(&out).contains("ONLINE") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "berth dev did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

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
    assert_eq!(values.len(), 5);
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
