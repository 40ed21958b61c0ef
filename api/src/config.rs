//! Configuration: every setting is a flag with an environment variable of the same meaning
//! (SPEC §1). `--help` shows these doc comments.

use std::net::SocketAddr;
use std::sync::Arc;

use berth_shared::sealed::SealingKeys;
use berth_shared::secret::{check_role_secrets, Secret};

/// The api's well-known secrets, the ones [`Settings::for_tests`] holds. They are public: only
/// tests and benches use them, never an api anyone else can reach.
pub mod test_secrets {
    /// `X-Admin-Token`.
    pub const ADMIN_TOKEN: &str = "api-admin-token-for-tests";
    /// `BERTH_SECRET_KEY` (32 bytes in base64).
    pub const SECRET_KEY: &str = "YXBpLXNlcnZlci1rZXktZm9yLXRlc3RzLTAwMDAwMDA=";
}

/// `berth-api` flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "berth-api",
    version,
    about = "The public Berth api for portals: tenants, API keys, quotas, apps, deployments, instances."
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "BERTH_API_ADDR", default_value = "0.0.0.0:7000")]
    pub addr: SocketAddr,
    /// `postgres://…`, `mysql://…` or `sqlite://…` for the api's own `api_*` tables (it may be
    /// the control plane's database; the api never touches the control plane's tables).
    #[arg(
        long,
        env = "BERTH_DATABASE_URL",
        default_value = "sqlite://.berth/berth.db?mode=rwc"
    )]
    pub database_url: String,
    /// Where the control plane's deploy API answers.
    #[arg(
        long,
        env = "BERTH_CONTROL_URL",
        default_value = "http://127.0.0.1:7002"
    )]
    pub control_url: String,
    /// The control plane's deploy secret (`X-DEPLOY-SECRET`).
    #[arg(long, env = "BERTH_DEPLOY_SECRET", hide_env_values = true)]
    pub deploy_secret: Option<Secret>,
    /// Token operators send as `X-Admin-Token` to manage tenants and keys.
    #[arg(long, env = "BERTH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// Seals `secretEnv` at rest and keys the API-key hashes (HMAC-SHA256): 32 random bytes in
    /// base64 (`openssl rand -base64 32`), the control plane's key. Several, comma-separated,
    /// rotate it: the first seals and hashes new keys, all open and verify.
    #[arg(long, env = "BERTH_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<Secret>,
    /// Instances answer at `{slug}.{domain}`.
    #[arg(long, env = "BERTH_BASE_DOMAIN", default_value = "localhost")]
    pub base_domain: String,
    /// The gateway as end users reach it; its scheme and port make an instance's URL.
    #[arg(
        long,
        env = "BERTH_GATEWAY_PUBLIC_URL",
        default_value = "http://localhost:8088"
    )]
    pub gateway_public_url: String,
}

/// Validated settings the service runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The api's database.
    pub database_url: String,
    /// The deploy API's base URL, without a trailing `/`.
    pub control_url: String,
    /// `X-DEPLOY-SECRET`.
    pub deploy_secret: Secret,
    /// `X-Admin-Token`.
    pub admin_token: Secret,
    /// `BERTH_SECRET_KEY`: seals apps' and templates' `secretEnv` and keys the API-key hashes.
    pub secret_key: Arc<SealingKeys>,
    /// The domain instances answer under.
    pub base_domain: String,
    /// `http` or `https`, for instance URLs.
    pub gateway_scheme: String,
    /// The gateway's public port, for instance URLs.
    pub gateway_port: u16,
}

impl Config {
    /// Checks the flags: every secret set, and strong and distinct by
    /// [`check_role_secrets`]'s rules, which every service shares.
    pub fn settings(self) -> anyhow::Result<Settings> {
        let need = |value: Option<Secret>, name: &str| -> anyhow::Result<Secret> {
            value.ok_or_else(|| anyhow::anyhow!("{name} is not set"))
        };
        let deploy_secret = need(self.deploy_secret, "BERTH_DEPLOY_SECRET")?;
        let admin_token = need(self.admin_token, "BERTH_ADMIN_TOKEN")?;
        let secret_key = need(self.secret_key, "BERTH_SECRET_KEY")?;
        check_role_secrets(&[
            ("BERTH_DEPLOY_SECRET", &deploy_secret),
            ("BERTH_ADMIN_TOKEN", &admin_token),
            ("BERTH_SECRET_KEY", &secret_key),
        ])?;
        let secret_key =
            Arc::new(SealingKeys::parse(secret_key.expose()).map_err(anyhow::Error::msg)?);
        let (gateway_scheme, gateway_port) = scheme_and_port(&self.gateway_public_url)?;
        anyhow::ensure!(
            self.base_domain
                .split('.')
                .all(berth_shared::ids::is_dns_label),
            "BERTH_BASE_DOMAIN must be a domain name like apps.example.com"
        );
        Ok(Settings {
            database_url: self.database_url,
            control_url: self.control_url.trim_end_matches('/').to_owned(),
            deploy_secret,
            admin_token,
            secret_key,
            base_domain: self.base_domain,
            gateway_scheme,
            gateway_port,
        })
    }
}

/// The scheme and port of a URL like `http://host:8088` (the scheme's port when none is given).
fn scheme_and_port(url: &str) -> anyhow::Result<(String, u16)> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        anyhow::anyhow!("BERTH_GATEWAY_PUBLIC_URL must look like http://host:8088")
    })?;
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => anyhow::bail!("BERTH_GATEWAY_PUBLIC_URL must be http:// or https://"),
    };
    let host = rest.split('/').next().unwrap_or("");
    let port = match host.rsplit_once(':') {
        Some((_, p)) => p
            .parse()
            .map_err(|_| anyhow::anyhow!("BERTH_GATEWAY_PUBLIC_URL has a bad port"))?,
        None => default,
    };
    Ok((scheme.to_owned(), port))
}

impl Settings {
    /// The settings a test or a bench starts from: the api on `database_url` in front of the
    /// control plane at `control_url`, which checks `deploy_secret`; the well-known
    /// [`test_secrets`]; instances at `http://{slug}.localhost:8088/`, the flags' defaults.
    pub fn for_tests(database_url: &str, control_url: &str, deploy_secret: Secret) -> Settings {
        Settings {
            database_url: database_url.to_owned(),
            control_url: control_url.to_owned(),
            deploy_secret,
            admin_token: Secret::new(test_secrets::ADMIN_TOKEN),
            secret_key: Arc::new(
                SealingKeys::parse(test_secrets::SECRET_KEY).expect("the test key is a key"),
            ),
            base_domain: "localhost".into(),
            gateway_scheme: "http".into(),
            gateway_port: 8088,
        }
    }

    /// Where an instance answers: `http://{slug}.{domain}:{port}/`.
    pub fn instance_url(&self, slug: &str) -> String {
        format!(
            "{}://{slug}.{}:{}/",
            self.gateway_scheme, self.base_domain, self.gateway_port
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        Config::parse_from([&["berth-api"], args].concat())
    }

    #[test]
    fn for_tests_answers_where_the_flags_default_to() {
        let s = Settings::for_tests("sqlite::memory:", "http://127.0.0.1:7002", Secret::new("d"));
        assert_eq!(s.instance_url("x"), "http://x.localhost:8088/");
    }

    #[test]
    fn secrets_are_required_long_and_distinct() {
        let ok = [
            "--deploy-secret",
            "d".repeat(16).as_str(),
            "--admin-token",
            "a".repeat(16).as_str(),
            "--secret-key",
            "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=",
        ]
        .map(str::to_owned);
        let args: Vec<&str> = ok.iter().map(String::as_str).collect();
        let s = config(&args).settings().unwrap();
        assert_eq!(s.instance_url("x"), "http://x.localhost:8088/");
        assert!(config(&args[..4])
            .settings()
            .unwrap_err()
            .to_string()
            .contains("BERTH_SECRET_KEY"));
        let mut not_a_key = args.clone();
        not_a_key[5] = "k-k-k-k-k-k-k-k-k-k";
        assert!(config(&not_a_key)
            .settings()
            .unwrap_err()
            .to_string()
            .contains("openssl rand -base64 32"));
        let mut same = args.clone();
        same[5] = same[1];
        assert!(config(&same)
            .settings()
            .unwrap_err()
            .to_string()
            .contains("the same"));
        let mut short = args.clone();
        short[1] = "short";
        assert!(config(&short)
            .settings()
            .unwrap_err()
            .to_string()
            .contains("16"));
    }
}
