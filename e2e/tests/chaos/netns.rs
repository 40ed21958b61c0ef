//! A host of the test's own: a network namespace joined to this host by a veth pair on a
//! private /30, whose link the test can drop and bring back.
//!
//! An agent inside it reaches the Docker engine through its unix socket (a path, which no
//! network namespace hides), the control plane through the host's end of the link, and its
//! containers at `127.0.0.1:{hostPort}` — which inside the namespace is the namespace's own
//! loopback, while Docker publishes on the host's. So both ends translate:
//! - in the namespace, TCP to `127.0.0.1` is sent to the host's end of the link (DNAT in
//!   `OUTPUT`, the source rewritten to the namespace's address, `route_localnet` on);
//! - on the host, TCP that comes in over the link is delivered to `127.0.0.1` (DNAT in
//!   `PREROUTING` for that interface only, `route_localnet` on it), where the control plane
//!   and Docker's published ports listen.
//!
//! Nothing leaves the machine: the namespace has no default route, and while the link is down
//! the host keeps its route to the /30 (the device has no carrier), so nothing is sent
//! elsewhere. The namespace, its link and the host's rule go when the guard is dropped.

use std::process::{Command, Stdio};

/// `ip`.
const IP: &str = "/usr/sbin/ip";
/// `iptables`.
const IPTABLES: &str = "/usr/sbin/iptables";

/// Runs `program args`, failing with its output.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The namespace and its link; removed when dropped.
pub struct Namespace {
    /// The namespace's name (`ip netns exec NAME …`).
    pub name: String,
    host_if: String,
    ns_if: String,
    /// The host's end of the link.
    pub host_ip: String,
    /// The namespace's end of the link.
    pub ns_ip: String,
}

impl Namespace {
    /// Makes the namespace `berth-{tag}` on `10.254.{octet}.0/30`.
    pub fn create(tag: &str, octet: u8) -> Namespace {
        let ns = Namespace {
            name: format!("berth-{tag}"),
            host_if: format!("bc{tag}h"),
            ns_if: format!("bc{tag}n"),
            host_ip: format!("10.254.{octet}.1"),
            ns_ip: format!("10.254.{octet}.2"),
        };
        run(IP, &["netns", "add", &ns.name]);
        run(
            IP,
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns.ns_if,
            ],
        );
        run(IP, &["link", "set", &ns.ns_if, "netns", &ns.name]);
        run(
            IP,
            &[
                "addr",
                "add",
                &format!("{}/30", ns.host_ip),
                "dev",
                &ns.host_if,
            ],
        );
        run(IP, &["link", "set", &ns.host_if, "up"]);
        ns.exec(
            IP,
            &["addr", "add", &format!("{}/30", ns.ns_ip), "dev", &ns.ns_if],
        );
        ns.exec(IP, &["link", "set", &ns.ns_if, "up"]);
        ns.exec(IP, &["link", "set", "lo", "up"]);
        // The namespace's loopback → the host's end of the link.
        ns.exec(
            "/usr/sbin/sysctl",
            &["-q", "-w", "net.ipv4.conf.all.route_localnet=1"],
        );
        ns.exec(
            IPTABLES,
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-d",
                "127.0.0.1",
                "-p",
                "tcp",
                "-j",
                "DNAT",
                "--to-destination",
                &ns.host_ip,
            ],
        );
        ns.exec(
            IPTABLES,
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                &ns.ns_if,
                "-j",
                "SNAT",
                "--to-source",
                &ns.ns_ip,
            ],
        );
        // The link → the host's loopback.
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/route_localnet", ns.host_if),
            "1",
        )
        .expect("route_localnet on the host's end of the link");
        run(IPTABLES, &ns.host_rule("-I"));
        ns
    }

    /// The host's `PREROUTING` rule, added (`-I`) or deleted (`-D`).
    fn host_rule<'a>(&'a self, op: &'a str) -> Vec<&'a str> {
        vec![
            "-t",
            "nat",
            op,
            "PREROUTING",
            "-i",
            &self.host_if,
            "-p",
            "tcp",
            "-j",
            "DNAT",
            "--to-destination",
            "127.0.0.1",
        ]
    }

    /// Runs `program args` inside the namespace.
    fn exec(&self, program: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run(IP, &all);
    }

    /// The `ip netns exec NAME` prefix that runs a program inside.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec!["netns".into(), "exec".into(), self.name.clone()]
    }

    /// Drops (`false`) or restores (`true`) the link, at the namespace's end.
    pub fn set_link(&self, up: bool) {
        self.exec(
            IP,
            &["link", "set", &self.ns_if, if up { "up" } else { "down" }],
        );
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let quiet = |program: &str, args: &[&str]| {
            let _ = Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(IPTABLES, &self.host_rule("-D"));
        // Deleting the namespace deletes its end of the pair, and so the host's end.
        quiet(IP, &["netns", "delete", &self.name]);
        quiet(IP, &["link", "delete", &self.host_if]);
    }
}
