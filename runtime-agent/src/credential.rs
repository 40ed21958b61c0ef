//! The node's own credential (SPEC §7): got once by joining with `BERTH_NODE_JOIN_TOKEN`, kept
//! in the state folder (`node-credential`, mode 0600) so a restart heartbeats without joining
//! again, and rotated when older than the configured age. A rotation keeps the old credential
//! good on the control plane until the new one is used once, so the new one is saved before it
//! is used: a crash in between leaves a credential that still works.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use berth_shared::headers::{JOIN_TOKEN, NODE_TOKEN};
use berth_shared::secret::Secret;
use berth_shared::wire::{JoinRequest, NodeJoined};
use serde::{Deserialize, Serialize};

/// The state folder's file holding the credential.
pub const CREDENTIAL_FILE: &str = "node-credential";

/// A credential as kept on disk.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    node_id: String,
    credential: String,
    /// When the control plane issued it (ms since the epoch).
    issued_at: i64,
}

/// The node's credential and where it is kept.
pub struct Credentials {
    node_id: String,
    file: PathBuf,
    join_token: Option<Secret>,
    rotate_after: Duration,
    current: Option<Saved>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("node_id", &self.node_id)
            .field("file", &self.file)
            .field("joined", &self.current.is_some())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credential of `node_id` kept in `state_dir`, if any; `join_token` joins when there is
    /// none. Fails when there is neither: the agent cannot heartbeat.
    pub fn load(
        node_id: &str,
        state_dir: &Path,
        join_token: Option<Secret>,
        rotate_after: Duration,
    ) -> anyhow::Result<Self> {
        let file = state_dir.join(CREDENTIAL_FILE);
        let current = match std::fs::read_to_string(&file) {
            Ok(text) => {
                let saved: Saved = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a node credential", file.display()))?;
                (saved.node_id == node_id).then_some(saved)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        anyhow::ensure!(
            current.is_some() || join_token.as_ref().is_some_and(|t| !t.expose().is_empty()),
            "BERTH_NODE_JOIN_TOKEN is not set and {} holds no credential of node {node_id}: the agent cannot join the control plane",
            file.display()
        );
        Ok(Self {
            node_id: node_id.to_owned(),
            file,
            join_token,
            rotate_after,
            current,
        })
    }

    /// The credential to heartbeat with: the kept one, else one got by joining now (and kept).
    pub async fn get(
        &mut self,
        client: &reqwest::Client,
        control_url: &str,
    ) -> anyhow::Result<Secret> {
        if let Some(saved) = &self.current {
            return Ok(Secret::new(saved.credential.clone()));
        }
        let token = self
            .join_token
            .clone()
            .context("BERTH_NODE_JOIN_TOKEN is not set")?;
        let joined = ask(
            client,
            &format!("{control_url}/internal/runtime-nodes/join"),
            (JOIN_TOKEN, &token),
            &self.node_id,
        )
        .await
        .context("joining the control plane")?;
        tracing::info!(node_id = %self.node_id, "joined the control plane");
        self.keep(joined)
    }

    /// Rotates the credential when it is older than the configured age; the new one is kept
    /// before it is ever used.
    pub async fn rotate_if_old(
        &mut self,
        client: &reqwest::Client,
        control_url: &str,
    ) -> anyhow::Result<()> {
        let Some(saved) = &self.current else {
            return Ok(());
        };
        let age_ms = now_millis().saturating_sub(saved.issued_at);
        if u128::try_from(age_ms).unwrap_or(0) < self.rotate_after.as_millis() {
            return Ok(());
        }
        let old = Secret::new(saved.credential.clone());
        let rotated = ask(
            client,
            &format!("{control_url}/internal/runtime-nodes/rotate"),
            (NODE_TOKEN, &old),
            &self.node_id,
        )
        .await
        .context("rotating the node credential")?;
        self.keep(rotated)?;
        tracing::info!(node_id = %self.node_id, "node credential rotated");
        Ok(())
    }

    /// Writes `joined` to the state file (mode 0600, replaced whole) and makes it current.
    fn keep(&mut self, joined: NodeJoined) -> anyhow::Result<Secret> {
        let saved = Saved {
            node_id: joined.node_id,
            credential: joined.credential,
            issued_at: now_millis(),
        };
        crate::state::write_private(&self.file, serde_json::to_string(&saved)?.as_bytes())
            .with_context(|| format!("writing {}", self.file.display()))?;
        let credential = Secret::new(saved.credential.clone());
        self.current = Some(saved);
        Ok(credential)
    }
}

/// `POST url` with `header` for `node_id`: the credential the control plane answers.
async fn ask(
    client: &reqwest::Client,
    url: &str,
    (header, secret): (&str, &Secret),
    node_id: &str,
) -> anyhow::Result<NodeJoined> {
    let response = client
        .post(url)
        .header(header, secret.expose())
        .json(&JoinRequest {
            node_id: node_id.to_owned(),
        })
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        let detail = response.text().await.unwrap_or_default();
        anyhow::bail!(
            "the control plane answered {status}: {}",
            detail.chars().take(300).collect::<String>()
        );
    }
    let joined: NodeJoined = response.json().await?;
    anyhow::ensure!(
        joined.node_id == node_id,
        "the control plane answered for node {}",
        joined.node_id
    );
    Ok(joined)
}

fn now_millis() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_credential_is_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("berth-cred-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let none = Credentials::load("n1", &dir, None, Duration::from_secs(60));
        assert!(none
            .unwrap_err()
            .to_string()
            .contains("BERTH_NODE_JOIN_TOKEN"));
        let mut creds = Credentials::load(
            "n1",
            &dir,
            Some(Secret::new("join")),
            Duration::from_secs(60),
        )
        .unwrap();
        creds
            .keep(NodeJoined {
                node_id: "n1".into(),
                credential: "c1".into(),
                grant_keys: Vec::new(),
            })
            .unwrap();
        let file = dir.join(CREDENTIAL_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Credentials::load("n1", &dir, None, Duration::from_secs(60)).unwrap();
        assert_eq!(
            again.current.as_ref().map(|s| s.credential.as_str()),
            Some("c1")
        );
        // Another node id (the configuration changed) does not reuse it.
        assert!(Credentials::load("n2", &dir, None, Duration::from_secs(60)).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
