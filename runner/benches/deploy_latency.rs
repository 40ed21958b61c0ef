//! End-to-end deploy latency: `POST /deploy/jobs` until the gateway answers 200 from the new
//! container, through a real control plane (PostgreSQL), runner and agent — beside the floor,
//! `docker run -d -p 127.0.0.1:PORT:8080` of the same image plus its first answered request, in
//! the same run, alternating. Prints p50/p95 of each and the ratio.
//!
//! `CARGO_TARGET_DIR=/work/target-runner cargo bench -p berth-runner --bench deploy_latency`
//! (needs scripts/ensure-services.sh, scripts/ensure-docker.sh, scripts/ensure-registry.sh).

#[allow(dead_code)]
#[path = "../tests/fleet/helpers.rs"]
mod helpers;

use std::process::Command;
use std::time::{Duration, Instant};

use helpers::*;
use serde_json::json;

/// Deploys measured of each kind.
const ROUNDS: usize = 20;

/// Polls `url` until it answers 200 with `body`.
async fn until_answers(client: &reqwest::Client, url: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(res) = client.get(url).send().await {
            if res.status() == 200 && res.text().await.is_ok_and(|t| t == body) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never answered {body:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let control = spawn_control(Duration::from_secs(30), 3).await;
    let agent = spawn_agent(&control).await;
    let mut settings = runner_settings(&control, "bench-runner");
    settings.claim_wait = Duration::from_secs(20);
    let runner = spawn_runner(settings);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);

    let mut berth = Vec::new();
    let mut floor = Vec::new();
    let mut floor_containers = Vec::new();
    // Two warm-up rounds of each, not counted.
    for round in 0..ROUNDS + 2 {
        let msg = format!("bench-{run}-{round}");
        let app = format!("bench-{run}-{round}");

        let started = Instant::now();
        let job = control
            .create_job(json!({ "appId": app, "image": IMAGE, "env": { "MSG": msg } }))
            .await;
        until_answers(
            &client,
            &format!("{}/apps/{app}/", agent.gateway),
            &format!("{msg}\n"),
        )
        .await;
        let berth_ms = started.elapsed().as_secs_f64() * 1000.0;
        let job = control
            .wait_final(job["jobId"].as_str().unwrap(), Duration::from_secs(30))
            .await;
        assert_eq!(job["state"], "SUCCEEDED", "{job:#}");

        let port = free_port();
        let started = Instant::now();
        let out = Command::new(DOCKER)
            .args([
                "run",
                "-d",
                "--label",
                &format!("berth-bench={run}"),
                "-e",
                &format!("MSG={msg}"),
            ])
            .args(["-p", &format!("127.0.0.1:{port}:8080"), IMAGE])
            .output()
            .expect("docker run");
        assert!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        until_answers(
            &client,
            &format!("http://127.0.0.1:{port}/"),
            &format!("{msg}\n"),
        )
        .await;
        let floor_ms = started.elapsed().as_secs_f64() * 1000.0;
        floor_containers.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());

        if round >= 2 {
            berth.push(berth_ms);
            floor.push(floor_ms);
        }
        eprintln!("round {round:2}: berth {berth_ms:7.1} ms   docker run {floor_ms:7.1} ms");
    }
    let _ = Command::new(DOCKER)
        .args(["rm", "-f"])
        .args(&floor_containers)
        .output();

    berth.sort_by(f64::total_cmp);
    floor.sort_by(f64::total_cmp);
    let (b50, b95) = (percentile(&berth, 0.50), percentile(&berth, 0.95));
    let (f50, f95) = (percentile(&floor, 0.50), percentile(&floor, 0.95));
    println!("deploy latency over {ROUNDS} deploys (POST /deploy/jobs → gateway 200 from the new container)");
    println!("  berth:      p50 {b50:7.1} ms   p95 {b95:7.1} ms");
    println!("  docker run: p50 {f50:7.1} ms   p95 {f95:7.1} ms   (docker run -d -p + first answered request)");
    println!(
        "  ratio:      p50 {:.2}x   p95 {:.2}x   (target ≤ 1.3x)",
        b50 / f50,
        b95 / f95
    );

    runner.stop().await.expect("runner stops");
    drop(agent);
    control.stop().await;
}
