//! Finding the control plane and the public api: a `berth dev` in this folder announces itself
//! in `./.berth/dev.json` and keeps its secrets in `./.berth/secrets.env`; otherwise the CLI uses
//! `BERTH_CONTROL_URL`, `BERTH_DEPLOY_SECRET` and `BERTH_ADMIN_TOKEN`, and for the api
//! `BERTH_API_URL` (default `http://127.0.0.1:7000`) with `BERTH_API_KEY` for a tenant's calls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use berth_shared::problem::Problem;
use berth_shared::secret::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The folder `berth dev` keeps its state in.
pub const STATE_DIR: &str = ".berth";

/// What a running `berth dev` writes to `.berth/dev.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevAnnouncement {
    /// The control plane's URL.
    pub control_url: String,
    /// The gateway's URL.
    pub gateway_url: String,
    /// The public api's URL (absent in the announcement of an older `berth dev`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// The `berth dev` process.
    pub pid: u32,
}

/// How the CLI reaches the control plane.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Base URL, without a trailing slash.
    pub control_url: String,
    /// The public api's base URL, without a trailing slash.
    pub api_url: String,
    deploy_secret: Option<Secret>,
    admin_token: Option<Secret>,
    api_key: Option<Secret>,
    http: reqwest::Client,
}

/// Where the public api answers when nothing names it: where `berth dev` serves it.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7000";

/// The secrets file of `berth dev`: `NAME=value` lines.
pub fn secrets_path(dir: &Path) -> PathBuf {
    dir.join("secrets.env")
}

/// Reads `NAME=value` lines (comments and blank lines ignored).
pub fn read_env_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect())
}

impl Connection {
    /// A `berth dev` in `dir` if one runs, else the environment. The api's URL is the flag,
    /// else `BERTH_API_URL`, else the one `berth dev` announced, else [`DEFAULT_API_URL`].
    pub fn discover(
        dir: &Path,
        control_url_flag: Option<String>,
        api_url_flag: Option<String>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let env = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new)
        };
        let announced = std::fs::read_to_string(dir.join("dev.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<DevAnnouncement>(&t).ok());
        let api_url = |announced: Option<String>| {
            api_url_flag
                .clone()
                .or_else(|| {
                    std::env::var("BERTH_API_URL")
                        .ok()
                        .filter(|v| !v.is_empty())
                })
                .or(announced)
                .unwrap_or_else(|| DEFAULT_API_URL.to_owned())
                .trim_end_matches('/')
                .to_owned()
        };
        if let (None, Some(dev)) = (&control_url_flag, announced) {
            let secrets = read_env_file(&secrets_path(dir)).unwrap_or_default();
            let secret = |name: &str| env(name).or_else(|| secrets.get(name).map(Secret::new));
            return Ok(Self {
                control_url: dev.control_url,
                api_url: api_url(dev.api_url),
                deploy_secret: secret("BERTH_DEPLOY_SECRET"),
                admin_token: secret("BERTH_ADMIN_TOKEN"),
                api_key: env("BERTH_API_KEY"),
                http,
            });
        }
        let control_url = control_url_flag
            .or_else(|| std::env::var("BERTH_CONTROL_URL").ok())
            .context(
                "no `berth dev` runs in this folder (no .berth/dev.json) and BERTH_CONTROL_URL is not set: \
                 start `berth dev`, or point BERTH_CONTROL_URL at a control plane",
            )?;
        Ok(Self {
            control_url: control_url.trim_end_matches('/').to_owned(),
            api_url: api_url(None),
            deploy_secret: env("BERTH_DEPLOY_SECRET"),
            admin_token: env("BERTH_ADMIN_TOKEN"),
            api_key: env("BERTH_API_KEY"),
            http,
        })
    }

    /// A request to `base` + `path` carrying `header: secret`, or an error naming `var`.
    fn send(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        (header, secret, var): (&str, &Option<Secret>, &str),
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let secret = secret
            .as_ref()
            .with_context(|| format!("{var} is not set"))?;
        let value = if header == "Authorization" {
            format!("Bearer {}", secret.expose())
        } else {
            secret.expose().to_owned()
        };
        Ok(self
            .http
            .request(method, format!("{base}{path}"))
            .header(header, value))
    }

    /// A deploy-API request (`X-DEPLOY-SECRET`).
    pub fn deploy(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let auth = (
            "X-DEPLOY-SECRET",
            &self.deploy_secret,
            "BERTH_DEPLOY_SECRET",
        );
        self.send(&self.control_url, method, path, auth)
    }

    /// An admin-API request of the control plane (`X-Admin-Token`).
    pub fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let auth = ("X-Admin-Token", &self.admin_token, "BERTH_ADMIN_TOKEN");
        self.send(&self.control_url, method, path, auth)
    }

    /// An operator's request of the public api (`X-Admin-Token`): tenants and keys.
    pub fn api_admin(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let auth = ("X-Admin-Token", &self.admin_token, "BERTH_ADMIN_TOKEN");
        self.send(&self.api_url, method, path, auth)
    }

    /// A tenant's request of the public api (`Authorization: Bearer $BERTH_API_KEY`).
    pub fn api_tenant(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let auth = (
            "Authorization",
            &self.api_key,
            "BERTH_API_KEY (a tenant's key: `berth key create TENANT`)",
        );
        self.send(&self.api_url, method, path, auth)
    }
}

/// Sends `request` and returns its JSON body, or the server's problem detail as the error.
pub async fn json(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let res = request.send().await.context("the server did not answer")?;
    let status = res.status();
    let body = res.bytes().await.context("reading the answer")?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<Problem>(&body)
            .map(|p| p.detail)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        anyhow::bail!("{status}: {detail}");
    }
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).context("the server answered something that is not JSON")
}

/// Sends `request` and returns its text body.
pub async fn text(request: reqwest::RequestBuilder) -> anyhow::Result<String> {
    let res = request.send().await.context("the server did not answer")?;
    let status = res.status();
    let body = res.text().await?;
    if !status.is_success() {
        let detail = serde_json::from_str::<Problem>(&body)
            .map(|p| p.detail)
            .unwrap_or(body);
        anyhow::bail!("{status}: {detail}");
    }
    Ok(body)
}
