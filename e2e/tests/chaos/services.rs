//! The services the chaos suite owns, so it can stop them without touching the machine's
//! shared ones: a private PostgreSQL (its own data folder and port, run as the unprivileged
//! `postgres` user when the test runs as root) and a private RabbitMQ node (its own node name,
//! ports, database, logs and Erlang cookie).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::{free_port, tail};

/// Where Debian keeps each PostgreSQL version's `initdb`, `pg_ctl` and `postgres`.
const PG_LIB: &str = "/usr/lib/postgresql";
/// RabbitMQ's own start script (Debian's `/usr/sbin/rabbitmq-server` would switch to the
/// `rabbitmq` user and its shared settings).
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// Runs `cmd`, failing with its output when it does not succeed.
fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`; how long it took.
fn wait_port(what: &str, port: u16, limit: Duration, log: &Path) -> Duration {
    let started = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            started.elapsed() < limit,
            "{what} does not listen on {addr} after {limit:?}; its log ends:\n{}",
            tail(log, 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Whether the test runs as root (then PostgreSQL runs as `postgres`: it refuses root).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The `bin` folder of the newest PostgreSQL installed (`/usr/lib/postgresql/N/bin`).
fn pg_bin() -> PathBuf {
    let newest = std::fs::read_dir(PG_LIB)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .filter(|(_, path)| path.join("bin/initdb").is_file())
        .max();
    match newest {
        Some((_, path)) => path.join("bin"),
        None => panic!(
            "no PostgreSQL server binaries under {PG_LIB}/N/bin: the chaos suite runs a \
             PostgreSQL of its own; run scripts/ensure-services.sh (it installs postgresql)"
        ),
    }
}

/// A command of PostgreSQL's `bin` folder, as `postgres` when the test runs as root.
fn pg_command(bin: &str) -> Command {
    let path = pg_bin().join(bin);
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(&path);
        cmd
    } else {
        Command::new(path)
    }
}

/// A PostgreSQL server of the test's own; stopped when dropped.
pub struct Postgres {
    data: PathBuf,
    log: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    running: bool,
}

impl Postgres {
    /// `initdb` in `dir` (trust authentication, no fsync: the suite kills processes, not the
    /// machine) and starts it.
    pub fn start(dir: &Path) -> Postgres {
        let root = dir.join("postgres");
        std::fs::create_dir_all(&root).expect("a PostgreSQL folder");
        if is_root() {
            // The temporary folder is root's; `postgres` must reach and own its data.
            run(
                "chmod of the test folder",
                Command::new("chmod").arg("755").arg(dir),
            );
            run(
                "chown of the PostgreSQL folder",
                Command::new("chown").args(["-R", "postgres"]).arg(&root),
            );
        }
        let data = root.join("data");
        run(
            "initdb",
            pg_command("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
        );
        let mut pg = Postgres {
            log: root.join("postgres.log"),
            data,
            port: free_port(),
            running: false,
        };
        pg.resume();
        pg
    }

    /// The URL of database `postgres` (the control plane's tables go there).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on its data folder; how long until it accepted connections.
    pub fn resume(&mut self) -> Duration {
        let started = Instant::now();
        let socket_dir = self.data.parent().expect("the PostgreSQL folder");
        run(
            "pg_ctl start",
            pg_command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .arg("-o")
                .arg(format!(
                    "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
                    self.port,
                    socket_dir.display()
                ))
                .args(["-w", "start"]),
        );
        self.running = true;
        wait_port("PostgreSQL", self.port, Duration::from_secs(30), &self.log);
        started.elapsed()
    }

    /// Stops the server at once (`-m immediate`: as a crash, every connection cut).
    pub fn stop(&mut self) {
        run(
            "pg_ctl stop",
            pg_command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"]),
        );
        self.running = false;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = pg_command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A RabbitMQ node of the test's own; killed when dropped.
pub struct Rabbit {
    root: PathBuf,
    node: String,
    dist_port: u16,
    /// Its AMQP port on 127.0.0.1.
    pub port: u16,
    server: Option<Child>,
    starts: u32,
}

impl Rabbit {
    /// Prepares a node in `dir` (its configuration, an empty plugin list so it opens no
    /// management port, a cookie of its own) and starts it.
    pub fn start(dir: &Path, tag: &str) -> Rabbit {
        let root = dir.join("rabbitmq");
        for sub in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(root.join(sub)).expect("a RabbitMQ folder");
        }
        let port = free_port();
        std::fs::write(
            root.join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("rabbitmq.conf");
        std::fs::write(root.join("enabled_plugins"), "[].\n").expect("enabled_plugins");
        std::fs::write(root.join("rabbitmq-env.conf"), "").expect("rabbitmq-env.conf");
        let cookie = root.join("home/.erlang.cookie");
        std::fs::write(&cookie, format!("berthchaos{tag}")).expect("an Erlang cookie");
        run(
            "chmod of the Erlang cookie",
            Command::new("chmod").arg("400").arg(&cookie),
        );
        let mut rabbit = Rabbit {
            root,
            node: format!("berth-chaos-{tag}@localhost"),
            dist_port: free_port(),
            port,
            server: None,
            starts: 0,
        };
        rabbit.resume();
        rabbit
    }

    /// The broker's URL.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts the node on its database; how long until it accepted AMQP connections.
    pub fn resume(&mut self) -> Duration {
        use std::os::unix::process::CommandExt;
        self.starts += 1;
        let log = self.root.join(format!("server-{}.log", self.starts));
        let file = std::fs::File::create(&log).expect("a log file");
        let path = |sub: &str| self.root.join(sub).display().to_string();
        let started = Instant::now();
        let child = Command::new(RABBITMQ_SERVER)
            .current_dir(&self.root)
            .env("HOME", path("home"))
            .env("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file handle"))
            .stderr(file)
            // A group of its own: the start script and the Erlang VM go together.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{RABBITMQ_SERVER} does not start: {e}"));
        self.server = Some(child);
        wait_port("RabbitMQ", self.port, Duration::from_secs(90), &log);
        started.elapsed()
    }

    /// SIGKILL to the node's whole process group.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill")
                .args(["-9", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.kill();
    }
}
