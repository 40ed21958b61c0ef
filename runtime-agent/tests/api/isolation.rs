//! Containers apart (issue 13): the apps' network keeps apps from each other and from the host,
//! every container has limits, a job may ask for a read-only root and a non-root user, and a
//! volume is mounted only into the app it was made for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// A plain HTTP GET over `nc` from inside `container`; what came back.
fn nc_get(container: &str, ip: &str, port: u16) -> String {
    exec(
        container,
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} {port}"),
    )
    .1
}

fn network_of(container: &Value) -> Value {
    container["NetworkSettings"]["Networks"]["berth-apps"].clone()
}

#[tokio::test]
async fn apps_reach_neither_each_other_nor_the_host() {
    let agent = spawn_agent().await;
    let (a, b) = (app_id("near"), app_id("far"));
    let a_id = agent
        .deploy_ok(&deploy_body(&a, json!({})))
        .await
        .container_id;
    let b_id = agent
        .deploy_ok(&deploy_body(&b, json!({"MSG": "b"})))
        .await
        .container_id;
    let options = docker_ok(
        None,
        &[
            "network",
            "inspect",
            "-f",
            "{{json .Options}}",
            "berth-apps",
        ],
    );
    assert!(
        options.contains(r#""com.docker.network.bridge.enable_icc":"false""#),
        "{options}"
    );

    let b_net = network_of(&inspect(&b_id));
    let b_ip = b_net["IPAddress"].as_str().unwrap().to_owned();
    let gateway_ip = b_net["Gateway"].as_str().unwrap().to_owned();
    // B answers on its address (from the host), so a silence below is the network's doing.
    let mut from_host = TcpStream::connect((b_ip.as_str(), 8080)).unwrap();
    from_host.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    from_host.read_to_string(&mut answer).unwrap();
    assert!(answer.ends_with("b\n"), "{answer}");
    let from_a = nc_get(&a_id, &b_ip, 8080);
    assert!(
        !from_a.contains("200 OK"),
        "app {a} reached app {b}: {from_a}"
    );

    // A service of the host on the bridge's address (where an agent on 0.0.0.0 listens).
    let host_service = std::net::TcpListener::bind((gateway_ip.as_str(), 0)).unwrap();
    let port = host_service.local_addr().unwrap().port();
    host_service.set_nonblocking(true).unwrap();
    let _ = TcpStream::connect((gateway_ip.as_str(), port)).unwrap();
    assert!(host_service.accept().is_ok(), "the host itself reaches it");
    let from_a = nc_get(&a_id, &gateway_ip, port);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        host_service.accept().is_err(),
        "app {a} opened a connection to the host: {from_a}"
    );
}

#[tokio::test]
async fn every_container_has_limits_even_when_the_job_asks_none() {
    let agent = spawn_agent().await;
    let app = app_id("bounded");
    let deployed = agent.deploy_ok(&deploy_body(&app, json!({}))).await;
    let c = inspect(&deployed.container_id);
    let host = &c["HostConfig"];
    assert_eq!(host["Memory"], 512 * 1024 * 1024);
    assert_eq!(host["NanoCpus"], 1_000_000_000);
    assert_eq!(host["PidsLimit"], 512);
    assert_eq!(host["LogConfig"]["Type"], "json-file");
    assert_eq!(host["LogConfig"]["Config"]["max-size"], "10m");
    assert_eq!(host["LogConfig"]["Config"]["max-file"], "3");
    assert_eq!(host["ReadonlyRootfs"], false);
    assert_eq!(
        host["NetworkMode"].as_str(),
        Some(docker_ok(None, &["network", "inspect", "-f", "{{.Id}}", "berth-apps"]).as_str())
    );
}

#[tokio::test]
async fn a_job_may_ask_for_a_read_only_root_and_a_non_root_user() {
    let agent = spawn_agent().await;
    let app = app_id("locked");
    let mut body = deploy_body(&app, json!({"WWW": "/tmp/www", "MSG": "locked"}));
    body["readOnlyRootfs"] = json!(true);
    body["user"] = json!("65534:65534");
    let deployed = agent.deploy_ok(&body).await;
    assert_eq!(
        agent.via_path(&app, "/").await,
        (200, "locked\n".to_owned())
    );
    let (wrote, out) = exec(&deployed.container_id, "touch /probe");
    assert!(!wrote && out.contains("Read-only file system"), "{out}");
    assert_eq!(exec(&deployed.container_id, "id -u").1.trim(), "65534");
    assert!(
        exec(&deployed.container_id, "touch /tmp/probe").0,
        "/tmp stays writable"
    );

    let mut bad = deploy_body(&app, json!({}));
    bad["user"] = json!("root; rm -rf /");
    let detail = problem(agent.deploy(&bad).await, 400).await;
    assert!(detail.contains("user[:group]"), "{detail}");
}

#[tokio::test]
async fn volumes_never_collide_and_stay_with_their_app() {
    let agent = spawn_agent().await;
    let shop = app_id("shop");
    let shop_db = format!("{shop}-db");
    // The pair that shared one volume before: shop + db-data, shop-db + data.
    let mut body = deploy_body(&shop, json!({}));
    body["volumes"] = json!([{"name": "db-data", "mountPath": "/data"}]);
    let shop_c = agent.deploy_ok(&body).await.container_id;
    let mut body = deploy_body(&shop_db, json!({}));
    body["volumes"] = json!([{"name": "data", "mountPath": "/data"}]);
    let shop_db_c = agent.deploy_ok(&body).await.container_id;
    assert!(exec(&shop_c, "echo shop > /data/owner").0);
    let (read, out) = exec(&shop_db_c, "cat /data/owner");
    assert!(!read, "app {shop_db} read app {shop}'s volume: {out}");
    let labels = docker_ok(
        None,
        &[
            "volume",
            "inspect",
            "-f",
            "{{json .Labels}}",
            &format!("berth-{shop}_db-data"),
        ],
    );
    assert!(
        labels.contains(&format!(r#""berth.app":"{shop}""#))
            && labels.contains(r#""berth.volume":"db-data""#),
        "{labels}"
    );

    // A volume labelled for another app is never mounted.
    let thief = app_id("thief");
    let victim_volume = format!("berth-{thief}_data");
    docker_ok(
        None,
        &[
            "volume",
            "create",
            "--label",
            "berth.app=someone-else",
            &victim_volume,
        ],
    );
    let mut body = deploy_body(&thief, json!({}));
    body["volumes"] = json!([{"name": "data", "mountPath": "/data"}]);
    let detail = problem(agent.deploy(&body).await, 409).await;
    assert!(detail.contains("labelled for app someone-else"), "{detail}");
    assert!(agent.containers(&thief).is_empty(), "nothing was started");

    // A volume of the old name, labelled for the app, is adopted with its data.
    let old = app_id("old");
    let legacy = format!("berth-{old}-data");
    docker_ok(
        None,
        &[
            "volume",
            "create",
            "--label",
            &format!("berth.app={old}"),
            &legacy,
        ],
    );
    docker_ok(
        None,
        &[
            "run",
            "--rm",
            "-v",
            &format!("{legacy}:/data"),
            IMAGE,
            "sh",
            "-c",
            "echo kept > /data/f",
        ],
    );
    let mut body = deploy_body(&old, json!({}));
    body["volumes"] = json!([{"name": "data", "mountPath": "/data"}]);
    let old_c = agent.deploy_ok(&body).await.container_id;
    assert_eq!(exec(&old_c, "cat /data/f").1.trim(), "kept");

    drop(agent);
    for volume in [
        format!("berth-{shop}_db-data"),
        format!("berth-{shop_db}_data"),
        victim_volume,
        legacy,
    ] {
        let _ = Command::new(DOCKER)
            .args(["volume", "rm", "-f", &volume])
            .output();
    }
}
