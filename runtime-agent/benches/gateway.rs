//! Gateway benchmark (not a test): requests per second and p99 latency to the same container
//! directly, through nginx (Debian's package) and through the Berth gateway, in one run.
//!
//! ```sh
//! scripts/ensure-docker.sh
//! cargo bench -p berth-agent --bench gateway      # BERTH_BENCH_SECS=10 BERTH_BENCH_CONNECTIONS=32
//! ```
//!
//! It runs the release `berth-agent` binary as its own process, deploys a test image through
//! the agent API, starts nginx with a config in a temporary folder on 127.0.0.1, and loads each
//! target with `wrk` (Debian's package) in alternating rounds, keeping each target's median round.
//! Two upstreams: the busybox test app (which closes every connection, so every proxied request
//! opens a new one through Docker's port proxy) and a keep-alive static hyper server
//! (`scripts/test-images/build-fast.sh`), where the proxies' own cost shows.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_shared::grant::{Grant, GrantSigner};
use berth_shared::sealed::SealingKeys;

/// The bench's agent: where it listens and the key its grants are signed with.
struct AgentAt {
    port: u16,
    node_id: String,
    signer: GrantSigner,
}

impl AgentAt {
    /// The `X-Runtime-Grant` header line for `app`.
    fn grant_header(&self, app: &str) -> String {
        let grant = Grant::new(
            uuid::Uuid::nil(),
            app,
            &self.node_id,
            Duration::from_secs(3600),
        );
        format!("x-runtime-grant: {}", self.signer.sign(&grant))
    }
}

/// A child process stopped with SIGTERM when dropped (SIGKILL would orphan nginx's workers).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !terminated {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_http(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if Command::new("curl")
            .args(["-sf", "-o", "/dev/null", url])
            .status()
            .is_ok_and(|s| s.success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} did not answer within 20 s");
}

/// Parses wrk's `--latency` report.
fn parse_wrk(report: &str) -> Figures {
    let ms = |value: &str| -> f64 {
        let value = value.trim();
        let (number, factor) = if let Some(v) = value.strip_suffix("us") {
            (v, 0.001)
        } else if let Some(v) = value.strip_suffix("ms") {
            (v, 1.0)
        } else if let Some(v) = value.strip_suffix('s') {
            (v, 1000.0)
        } else {
            (value, 1.0)
        };
        number.parse::<f64>().unwrap_or(f64::NAN) * factor
    };
    let mut figures = Figures {
        rps: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
    };
    for line in report.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => figures.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => figures.p50_ms = ms(v),
            ["99%", v] => figures.p99_ms = ms(v),
            ["Non-2xx", "or", "3xx", "responses:", v] => {
                figures.errors += v.parse::<u64>().unwrap_or(0)
            }
            ["Socket", "errors:", rest @ ..] => {
                figures.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    figures
}

fn wrk(url: &str, connections: u32, secs: u64) -> Figures {
    let report = run(
        Command::new("wrk").args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ]),
        "wrk",
    );
    parse_wrk(&report)
}

fn nginx_conf(dir: &Path, listen: u16, upstream: u16) -> PathBuf {
    let conf = format!(
        "worker_processes auto;\n\
         error_log {dir}/error.log warn;\n\
         pid {dir}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
           upstream app {{ server 127.0.0.1:{upstream}; keepalive 256; }}\n\
           server {{\n\
             listen 127.0.0.1:{listen};\n\
             location / {{\n\
               proxy_pass http://app;\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n\
               proxy_set_header Host $host;\n\
               proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
               proxy_set_header X-Forwarded-Proto $scheme;\n\
             }}\n\
           }}\n\
         }}\n",
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("writing nginx.conf");
    path
}

#[derive(Debug, Clone, Copy)]
struct Load {
    connections: u32,
    secs: u64,
    rounds: u32,
}

/// The round with the median throughput: one lucky or unlucky round (the machine's other
/// work, a burst of SYN retransmits) moves neither way.
fn median_round(mut rounds: Vec<Figures>) -> Figures {
    rounds.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    rounds[rounds.len() / 2]
}

/// Deploys `image` as `app`, puts nginx in front of it, loads the three targets and prints.
fn scenario(
    title: &str,
    image: &str,
    app: &str,
    agent: &AgentAt,
    gateway_port: u16,
    dir: &Path,
    load: Load,
) {
    let Load {
        connections,
        secs,
        rounds,
    } = load;
    let body = format!(
        r#"{{"jobId":"{}","appId":"{app}","image":"{image}","env":{{"MSG":"hello"}},"containerPort":8080}}"#,
        uuid::Uuid::nil()
    );
    let answer = run(
        Command::new("curl").args([
            "-sf",
            "-H",
            &agent.grant_header(app),
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            &format!("http://127.0.0.1:{}/agent/apps/deploy", agent.port),
        ]),
        "deploying the benchmark app",
    );
    let deployed: serde_json::Value = serde_json::from_str(&answer).expect("a deploy answer");
    let host_port = deployed["hostPort"].as_u64().expect("hostPort") as u16;

    let nginx_dir = dir.join(app);
    std::fs::create_dir_all(&nginx_dir).expect("nginx folder");
    let nginx_port = free_port();
    let conf = nginx_conf(&nginx_dir, nginx_port, host_port);
    let nginx = Killed(
        Command::new("nginx")
            .args([
                "-p",
                &nginx_dir.display().to_string(),
                "-c",
                &conf.display().to_string(),
                "-g",
                "daemon off;",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx"),
    );

    let targets = [
        ("direct", format!("http://127.0.0.1:{host_port}/")),
        ("nginx", format!("http://127.0.0.1:{nginx_port}/")),
        (
            "gateway",
            format!("http://127.0.0.1:{gateway_port}/apps/{app}/"),
        ),
    ];
    for (_, url) in &targets {
        wait_http(url);
        wrk(url, connections, 2); // warm-up
    }
    println!(
        "\n## {title}\n{connections} connections, {secs} s per run, {rounds} rounds, each target's median round (by req/s) kept"
    );
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); targets.len()];
    for round in 1..=rounds {
        for (i, (name, url)) in targets.iter().enumerate() {
            let f = wrk(url, connections, secs);
            println!(
                "  round {round} {name:<8} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                f.rps, f.p50_ms, f.p99_ms, f.errors
            );
            runs[i].push(f);
        }
    }
    let median: Vec<Figures> = runs.into_iter().map(median_round).collect();
    println!("\n| target | req/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|");
    for ((name, _), f) in targets.iter().zip(&median) {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} |",
            f.rps, f.p50_ms, f.p99_ms, f.errors
        );
    }
    let (direct_f, nginx_f, gateway_f) = (median[0], median[1], median[2]);
    println!(
        "\ngateway / nginx: throughput {:.1}% (target >= 90%), p99 {:.2}x (target <= 1.2x)",
        gateway_f.rps / nginx_f.rps * 100.0,
        gateway_f.p99_ms / nginx_f.p99_ms
    );
    println!(
        "gateway / direct: throughput {:.1}%, p99 {:.2}x",
        gateway_f.rps / direct_f.rps * 100.0,
        gateway_f.p99_ms / direct_f.p99_ms
    );
    drop(nginx);
    let _ = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "-H",
            &agent.grant_header(app),
            &format!("http://127.0.0.1:{}/agent/apps/{app}/stop", agent.port),
        ])
        .output();
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let secs: u64 = std::env::var("BERTH_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let connections: u32 = std::env::var("BERTH_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let rounds: u32 = std::env::var("BERTH_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    run(
        Command::new("bash").arg(format!("{root}/scripts/ensure-docker.sh")),
        "ensure-docker.sh",
    );
    run(
        Command::new("bash").arg(format!("{root}/scripts/test-images/build.sh")),
        "test images",
    );
    run(
        Command::new("bash").arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/ensure-tools.sh"
        )),
        "installing nginx and wrk",
    );

    let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node_id = format!("bench-{}", std::process::id());
    let (agent_port, gateway_port) = (free_port(), free_port());
    let signer = GrantSigner::new(&SealingKeys::generate());
    let agent = Killed(
        Command::new(env!("CARGO_BIN_EXE_berth-agent"))
            .env("BERTH_AGENT_ADDR", format!("127.0.0.1:{agent_port}"))
            .env("BERTH_GATEWAY_ADDR", format!("127.0.0.1:{gateway_port}"))
            .env("BERTH_GRANT_KEYS", signer.public_keys().join(","))
            .env("BERTH_NODE_ID", &node_id)
            .env("BERTH_AGENT_STATE_DIR", dir.join("agent"))
            .env("RUST_LOG", "warn")
            .env_remove("BERTH_CONTROL_URL")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting berth-agent"),
    );
    wait_http(&format!("http://127.0.0.1:{agent_port}/internal/health"));
    let agent_at = AgentAt {
        port: agent_port,
        node_id,
        signer,
    };

    let fast = Command::new("bash")
        .arg(format!("{root}/scripts/test-images/build-fast.sh"))
        .status()
        .is_ok_and(|s| s.success());
    let mut scenarios = vec![(
        "busybox httpd upstream (a new connection per request)",
        "berth-test/app:latest",
    )];
    if fast {
        scenarios.push((
            "keep-alive upstream (hyper, static binary)",
            "berth-test/fast:latest",
        ));
    } else {
        println!("(berth-test/fast could not be built; only the busybox scenario runs)");
    }
    let load = Load {
        connections,
        secs,
        rounds,
    };
    for (i, (title, image)) in scenarios.into_iter().enumerate() {
        let app = format!("bench-{i}-{}", std::process::id());
        scenario(title, image, &app, &agent_at, gateway_port, &dir, load);
    }

    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
