//! Cloning a job's repository without trusting it or the runner host: only URLs the operator
//! allows (`BERTH_RUNNER_REPO_ALLOW`), never with credentials in the URL, never to a loopback or
//! private address unless a prefix names that host, and with git cut off from the host's own
//! configuration (global and system files, credential helpers, askpass programs), from
//! transports the policy does not allow, and from HTTP redirects.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use berth_shared::ids::truncate;
use berth_shared::wire::BuildSpec;
use tokio::process::Command;

use super::command::{permanent, run_logged};
use crate::config::Settings;
use crate::error::JobError;
use crate::joblog::JobLog;
use crate::retry::{retry, CallError};

/// The transports git may use, by URL scheme.
const SCHEMES: [&str; 5] = ["https", "http", "git", "ssh", "file"];
/// Environment variables git keeps: the path to find its helpers, proxies and CA files the
/// operator set for the runner. Everything else (a `GIT_ASKPASS`, `GIT_CONFIG_*`, `HOME` with a
/// `.gitconfig`) is dropped.
const KEPT_ENV: [&str; 10] = [
    "PATH",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Which repository URLs builds may clone: URL prefixes (`https://`, `file://`,
/// `https://git.internal.example/`), from `BERTH_RUNNER_REPO_ALLOW`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPolicy {
    prefixes: Vec<String>,
}

impl RepoPolicy {
    /// Parses a comma-separated list of prefixes; each starts with a scheme git knows
    /// (`https://`, `http://`, `git://`, `ssh://`, `file://`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let prefixes: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if prefixes.is_empty() {
            return Err("BERTH_RUNNER_REPO_ALLOW names no URL prefix".into());
        }
        for prefix in &prefixes {
            let scheme_ok = prefix
                .split_once("://")
                .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme));
            if !scheme_ok {
                return Err(format!(
                    "BERTH_RUNNER_REPO_ALLOW: {prefix:?} must start with one of {}",
                    SCHEMES.map(|s| format!("{s}://")).join(", ")
                ));
            }
        }
        Ok(Self { prefixes })
    }

    /// The URL schemes the prefixes allow, which are the only transports git may use.
    fn schemes(&self) -> BTreeSet<&str> {
        self.prefixes
            .iter()
            .filter_map(|p| p.split_once("://").map(|(scheme, _)| scheme))
            .collect()
    }

    /// Whether builds may clone `url`; the refusal says why.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let Some(prefix) = self.prefixes.iter().find(|p| url.starts_with(p.as_str())) else {
            return Err(format!(
                "repoUrl {:?} is not allowed on this runner: it must start with {} (BERTH_RUNNER_REPO_ALLOW)",
                truncate(url),
                self.prefixes.join(" or ")
            ));
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("repoUrl {:?} has no scheme", truncate(url)));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(
                "repoUrl must not carry credentials (user:password@host): the runner refuses them, \
                 since they would show in logs and reach whatever the URL points at"
                    .into(),
            );
        }
        let host = host_of(authority);
        // A prefix longer than `scheme://` names the host itself: the operator chose it.
        let host_named = prefix.len() > scheme.len() + 3;
        if !host_named && is_internal(&host) {
            return Err(format!(
                "repoUrl {:?} points at a loopback, private or numeric address; \
                 a runner clones such hosts only when BERTH_RUNNER_REPO_ALLOW names them",
                truncate(url)
            ));
        }
        Ok(())
    }
}

/// The host of a URL authority (`host:port`, `[v6]:port`), lowercased.
fn host_of(authority: &str) -> String {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `host` names this machine or a private network: `localhost`, or an IP literal in a
/// loopback, private, link-local (cloud metadata), shared or unspecified range. A host whose
/// last label is numeric but not a plain address (`2130706433`, `0x7f.1`) counts too: curl
/// reads such forms as addresses.
fn is_internal(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => internal_v4(v4),
        Ok(IpAddr::V6(v6)) => internal_v6(v6),
        Err(_) => host
            .rsplit('.')
            .next()
            .is_some_and(|label| label.starts_with(|c: char| c.is_ascii_digit())),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || (a == 100 && (64..128).contains(&b))
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

/// A git command that reads no configuration but its own command line: no system or global
/// file, no credential helper or askpass program, no prompt, only the transports the policy
/// allows, no redirects.
pub fn git(settings: &Settings) -> Command {
    let mut command = Command::new(&settings.git);
    command.env_clear();
    for name in KEPT_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        // English messages, which `permanent` reads.
        .env("LC_ALL", "C")
        .args(["-c", "credential.helper=", "-c", "core.askPass="])
        .args(["-c", "http.followRedirects=false"])
        .args(["-c", "protocol.allow=never"]);
    for scheme in settings.repo_policy.schemes() {
        command
            .arg("-c")
            .arg(format!("protocol.{scheme}.allow=always"));
    }
    command
}

/// Clones the job's repository into `src` without checking anything out; refuses URLs the
/// policy does not allow before git runs.
pub async fn clone(
    settings: &Settings,
    spec: &BuildSpec,
    src: &Path,
    log: &JobLog,
) -> Result<(), JobError> {
    settings
        .repo_policy
        .check(&spec.repo_url)
        .map_err(JobError::fatal)?;
    log.line(format!("cloning {}", spec.repo_url)).await;
    let result = retry(&settings.retry, || async {
        if src.exists() {
            let _ = tokio::fs::remove_dir_all(src).await;
        }
        let mut command = git(settings);
        command
            .args(["clone", "--no-checkout", "--quiet", "--"])
            .arg(&spec.repo_url)
            .arg(src);
        let ran = run_logged(command, "git: ", log).await.map_err(|e| {
            CallError::command(format!("cannot run {}: {e}", settings.git.display()), false)
        })?;
        if ran.status.success() {
            return Ok(());
        }
        let tail = ran.tail_text();
        Err(CallError::command(
            format!(
                "git clone of {} failed ({}):\n{tail}",
                spec.repo_url, ran.status
            ),
            !permanent(&tail),
        ))
    })
    .await;
    result.map_err(JobError::from)
}

/// Resolves the job's commit (a sha, branch or tag; the default branch when none) to a full sha
/// and checks it out.
pub async fn checkout(
    settings: &Settings,
    spec: &BuildSpec,
    src: &Path,
    log: &JobLog,
) -> Result<String, JobError> {
    let wanted = spec.commit.as_deref().unwrap_or("HEAD");
    let mut sha = None;
    for candidate in [
        format!("{wanted}^{{commit}}"),
        format!("origin/{wanted}^{{commit}}"),
    ] {
        let out = git(settings)
            .current_dir(src)
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &candidate,
            ])
            .output()
            .await
            .map_err(|e| JobError::fatal(format!("cannot run git: {e}")))?;
        if out.status.success() {
            sha = Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            break;
        }
    }
    let Some(sha) = sha else {
        return Err(JobError::fatal(format!(
            "commit {wanted:?} is not in {}",
            spec.repo_url
        )));
    };
    let mut command = git(settings);
    command
        .current_dir(src)
        .args(["checkout", "--quiet", "--detach", &sha]);
    let ran = run_logged(command, "git: ", log)
        .await
        .map_err(|e| JobError::fatal(format!("cannot run git: {e}")))?;
    if !ran.status.success() {
        return Err(JobError::fatal(format!(
            "git checkout of {sha} failed:\n{}",
            ran.tail_text()
        )));
    }
    log.line(format!("checked out {wanted} at {sha}")).await;
    Ok(sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn settings(allow: &str) -> Settings {
        let mut settings =
            Settings::new("http://127.0.0.1:9", "runner-token-0123456789", "git-test").unwrap();
        settings.repo_policy = RepoPolicy::parse(allow).unwrap();
        settings.retry.max_times = 0;
        settings
    }

    fn spec(url: &str) -> BuildSpec {
        BuildSpec {
            repo_url: url.to_owned(),
            commit: None,
            dockerfile_path: "Dockerfile".into(),
            build_context: ".".into(),
            image_repo: "127.0.0.1:5000/x".into(),
        }
    }

    #[test]
    fn only_allowed_urls_without_credentials_or_internal_hosts_pass() {
        let https = RepoPolicy::parse("https://").unwrap();
        assert_eq!(https.check("https://github.com/o/r.git"), Ok(()));
        for (url, why) in [
            ("file:///etc", "is not allowed on this runner"),
            ("git://example.com/r", "is not allowed"),
            ("ext::sh -c id", "is not allowed"),
            (
                "https://user:pw@github.com/o/r",
                "must not carry credentials",
            ),
            ("https://token@github.com/o/r", "must not carry credentials"),
            ("https://127.0.0.1/r", "loopback, private or numeric"),
            ("https://localhost:8443/r", "loopback"),
            ("https://10.1.2.3/r", "loopback"),
            ("https://169.254.169.254/latest", "loopback"),
            ("https://[::1]:443/r", "loopback"),
            ("https://[fd00::1]/r", "loopback"),
            ("https://[::ffff:127.0.0.1]/r", "loopback"),
            ("https://2130706433/r", "numeric"),
            ("https://0x7f.1/r", "numeric"),
            ("https://100.64.0.1/r", "loopback"),
        ] {
            let err = https.check(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
        }
        // A prefix naming an internal host lets the operator allow exactly that host.
        let internal = RepoPolicy::parse("https://, http://127.0.0.1:8080/, file://").unwrap();
        assert_eq!(internal.check("http://127.0.0.1:8080/team/r.git"), Ok(()));
        assert!(internal.check("http://127.0.0.1:9000/r").is_err());
        assert_eq!(internal.check("file:///srv/repos/r"), Ok(()));
        assert!(internal.check("https://a@b/r").is_err());
        assert!(RepoPolicy::parse("").is_err());
        assert!(RepoPolicy::parse("ftp://")
            .unwrap_err()
            .contains("must start with one of"));
    }

    #[tokio::test]
    async fn git_reads_no_configuration_but_its_command_line() {
        // A global configuration that would hand git a credential helper and rewrite URLs:
        // what a runner host's ~/.gitconfig may hold.
        let dir = tempfile::tempdir().unwrap();
        let global = dir.path().join("gitconfig");
        std::fs::write(
            &global,
            "[credential]\n\thelper = store\n[url \"file:///evil\"]\n\tinsteadOf = https://\n",
        )
        .unwrap();
        // Only this test in the library's tests reads or sets git's variables.
        std::env::set_var("GIT_CONFIG_GLOBAL", &global);
        std::env::set_var("GIT_ASKPASS", "/bin/echo");
        let out = git(&settings("https://, file://"))
            .current_dir(dir.path())
            .args(["config", "--list", "--show-origin"])
            .output()
            .await
            .unwrap();
        std::env::remove_var("GIT_CONFIG_GLOBAL");
        std::env::remove_var("GIT_ASKPASS");
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{listed}");
        assert!(
            listed.lines().all(|l| l.starts_with("command line:")),
            "git read a configuration file:\n{listed}"
        );
        for wanted in [
            "credential.helper=",
            "http.followredirects=false",
            "protocol.allow=never",
            "protocol.file.allow=always",
            "protocol.https.allow=always",
        ] {
            assert!(listed.contains(wanted), "{wanted} missing:\n{listed}");
        }
        assert!(!listed.contains("protocol.git.allow"), "{listed}");
    }

    #[tokio::test]
    async fn a_refused_url_never_reaches_git() {
        let err = clone(
            &settings("https://"),
            &spec("file:///etc"),
            Path::new("/nonexistent/src"),
            &JobLog::discard(),
        )
        .await
        .unwrap_err();
        assert!(!err.retryable);
        assert!(
            err.message.contains("not allowed on this runner"),
            "{}",
            err.message
        );
    }

    /// Answers every connection with `response`; counts the connections.
    async fn http_server(response: String) -> (u16, tokio::sync::watch::Receiver<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::watch::channel(0usize);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tx.send_modify(|n| *n += 1);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (elsewhere, hits) =
            http_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into()).await;
        let (port, _) = http_server(format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{elsewhere}/other.git/info/refs?service=git-upload-pack\r\nContent-Length: 0\r\n\r\n"
        ))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let err = clone(
            &settings(&format!("http://127.0.0.1:{port}/")),
            &spec(&format!("http://127.0.0.1:{port}/repo.git")),
            &dir.path().join("src"),
            &JobLog::discard(),
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("git clone of"), "{}", err.message);
        assert_eq!(
            *hits.borrow(),
            0,
            "git followed the redirect: {}",
            err.message
        );
    }
}
