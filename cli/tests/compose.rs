//! The single-host install: `docker-compose config` (Debian's docker-compose) accepts
//! docker-compose.yml with .env.example, and it wires what the README promises.

use std::path::Path;
use std::process::Command;

#[test]
fn compose_file_is_valid_and_complete() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("docker-compose.yml"),
        dir.path().join("docker-compose.yml"),
    )
    .unwrap();
    std::fs::copy(root.join(".env.example"), dir.path().join(".env")).unwrap();
    let out = Command::new("docker-compose")
        .args(["--profile", "api", "config"])
        .current_dir(dir.path())
        .output()
        .expect("docker-compose is missing: scripts/test installs Debian's docker-compose");
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = String::from_utf8_lossy(&out.stdout);
    for service in [
        "postgres:",
        "rabbitmq:",
        "control:",
        "control-1:",
        "control-2:",
        "control-3:",
        "agent:",
        "runner:",
        "api:",
    ] {
        assert!(
            config.contains(&format!("  {service}\n")),
            "service {service} missing:\n{config}"
        );
    }
    assert!(
        config.matches("healthcheck:").count() >= 5,
        "health checks missing"
    );
    assert!(config.contains("condition: service_healthy"));
    assert!(config.contains("/var/run/docker.sock:/var/run/docker.sock"));
    assert!(config.contains("dockerfile: Dockerfile") || config.contains("context:"));
}

/// nginx (`control`, the address every piece uses) sends requests to exactly the replicas'
/// addresses, and the proxy rules it includes are the ones in deploy/nginx/.
#[test]
fn nginx_fronts_every_control_replica() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let nginx = std::fs::read_to_string(root.join("deploy/nginx/berth-control.conf")).unwrap();
    let mut replicas: Vec<String> = compose
        .split("BERTH_CONTROL_ADDR: ")
        .skip(1)
        .filter_map(|s| s.lines().next())
        .map(str::to_owned)
        .collect();
    let mut upstream: Vec<String> = nginx
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server 127."))
        .filter_map(|l| l.split_whitespace().next())
        .map(|l| format!("127.{l}"))
        .collect();
    replicas.sort_unstable();
    upstream.sort_unstable();
    assert_eq!(replicas.len(), 3, "three replicas in docker-compose.yml");
    assert_eq!(replicas, upstream, "nginx's upstream is not the replicas");
    assert!(nginx.contains("listen 127.0.0.1:7002;"));
    assert!(compose
        .contains("./deploy/nginx/berth-control-proxy.conf:/etc/nginx/berth-control-proxy.conf"));
    assert!(root.join("deploy/nginx/berth-control-proxy.conf").is_file());
}

/// Every variable a binary reads is documented in .env.example.
#[test]
fn env_example_documents_every_variable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = std::fs::read_to_string(root.join(".env.example")).unwrap();
    let sources = [
        "deploy-control/src/config.rs",
        "runtime-agent/src/config.rs",
        "runner/src/config.rs",
        "api/src/config.rs",
    ];
    for source in sources {
        let text = std::fs::read_to_string(root.join(source)).unwrap();
        for var in text
            .split("env = \"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
        {
            assert!(
                example.contains(&format!("{var}=")),
                "{var} (read in {source}) is not in .env.example"
            );
        }
    }
}
