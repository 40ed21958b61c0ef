//! The nodes dashboard in headless Chromium: the real page, loading the real admin API.

mod common;

use std::process::Command;

use common::app::spawn_app;
use common::db::DbKind;

/// The page's DOM after its scripts ran, as headless Chromium renders it.
fn render(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("/usr/bin/chromium is missing: scripts/test installs Debian's chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_nodes_and_jobs() {
    let app = spawn_app(DbKind::Sqlite).await;
    app.node_heartbeat("node-a", 10).await;
    app.deploy_image("shop", "shop:1").await;
    let claim = app.claim("runner-1", 0).await.expect("claimed");
    app.succeed(&claim, "runner-1").await;

    let page = app.url("/admin/nodes-admin.html");
    let token = app.secrets.admin.expose().to_owned();
    let dom = tokio::task::spawn_blocking(move || render(&format!("{page}#token={token}")))
        .await
        .unwrap();
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the page never loaded its data:\n{dom}"
    );
    assert!(dom.contains(r#"data-node="node-a""#), "{dom}");
    assert!(dom.contains(">ONLINE<"), "{dom}");
    assert!(
        dom.contains(">shop<") && dom.contains(">SUCCEEDED<"),
        "the job is listed:\n{dom}"
    );
    assert!(dom.contains(r#"data-action="cordon""#));

    // A wrong token shows the API's answer, and no data.
    let page = app.url("/admin/nodes-admin.html");
    let dom = tokio::task::spawn_blocking(move || render(&format!("{page}#token=wrong")))
        .await
        .unwrap();
    assert!(dom.contains("401"), "{dom}");
    assert!(!dom.contains(r#"data-node="node-a""#));
    app.stop().await;
}
