//! Which runner may act on which app here (SPEC §7): every call of the agent API carries a
//! grant the control plane signed for one job's app on this node until that job's lease ends
//! (`X-Runtime-Grant`, [`berth_shared::grant`]). There is no token that opens every app.
//!
//! The keys grants are verified with come from the control plane's heartbeat answers (so a
//! rotation of its `BERTH_SECRET_KEY` arrives within a heartbeat) and are kept in the state
//! folder (`grant-keys`), so an agent restarted while the control plane is away still takes the
//! grants of runners at work. `BERTH_GRANT_KEYS` pins them instead: answers are then ignored.
//!
//! A grant also fences a runner that lost its lease: once a later attempt of a job has reached
//! this agent, the earlier attempt's grant opens nothing, even before it runs out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use anyhow::Context;
use berth_shared::grant::{Grant, GrantError, GrantVerifier};
use uuid::Uuid;

use crate::error::AgentError;

/// The file in the state folder holding the learned keys, one per line.
const KEYS_FILE: &str = "grant-keys";

/// The keys this agent accepts grants of, and the latest attempt seen per app.
#[derive(Debug)]
pub struct Grants {
    node_id: String,
    keys: RwLock<Keys>,
    /// Per app: the job and attempt of the latest grant that opened it.
    latest: Mutex<HashMap<String, (Uuid, i64)>>,
}

#[derive(Debug)]
struct Keys {
    verifier: GrantVerifier,
    /// The keys as text, to notice a change.
    text: Vec<String>,
    /// Where learned keys are kept; `None` when they are pinned by configuration.
    file: Option<PathBuf>,
}

impl Grants {
    /// The grants of `node_id`: pinned to `pinned` keys when given, else the keys kept in
    /// `state_dir` (none yet on a node that never heard from its control plane).
    pub fn load(
        node_id: &str,
        state_dir: &Path,
        pinned: Option<&[String]>,
    ) -> anyhow::Result<Self> {
        let (text, file) = match pinned {
            Some(keys) => (keys.to_vec(), None),
            None => {
                let file = state_dir.join(KEYS_FILE);
                let text = match std::fs::read_to_string(&file) {
                    Ok(text) => text.lines().map(str::to_owned).collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
                };
                (text, Some(file))
            }
        };
        let verifier = GrantVerifier::from_public_keys(&text)
            .map_err(|e| anyhow::anyhow!("grant keys: {e}"))?;
        Ok(Self {
            node_id: node_id.to_owned(),
            keys: RwLock::new(Keys {
                verifier,
                text,
                file,
            }),
            latest: Mutex::new(HashMap::new()),
        })
    }

    /// Takes the keys of a control plane's answer (unless pinned), keeping them in the state
    /// folder when they changed. Keys that do not parse are refused and the old ones kept.
    pub fn learn(&self, keys: &[String]) -> anyhow::Result<()> {
        let mut current = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let Some(file) = current.file.clone() else {
            return Ok(());
        };
        if keys.is_empty() || current.text == keys {
            return Ok(());
        }
        let verifier = GrantVerifier::from_public_keys(keys)
            .map_err(|e| anyhow::anyhow!("the control plane sent grant keys that {e}"))?;
        let text = keys.join("\n") + "\n";
        crate::state::write_private(&file, text.as_bytes())
            .with_context(|| format!("keeping the grant keys in {}", file.display()))?;
        tracing::info!(node_id = %self.node_id, keys = keys.len(), "grant keys learned from the control plane");
        *current = Keys {
            verifier,
            text: keys.to_vec(),
            file: Some(file),
        };
        Ok(())
    }

    /// The grant in `header` when it opens `app_id` on this node now (and, with `job_id`, is
    /// that job's): signed by a known key, not run out, not of a superseded attempt.
    pub fn check(
        &self,
        header: &str,
        app_id: &str,
        job_id: Option<&str>,
    ) -> Result<Grant, AgentError> {
        let grant = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .verifier
            .verify(header)
            .map_err(refused)?;
        let job = match job_id {
            Some(text) => Some(
                Uuid::parse_str(text)
                    .ok()
                    .filter(|job| *job == grant.job_id)
                    .ok_or(refused(GrantError::OtherJob(grant.job_id)))?,
            ),
            None => None,
        };
        let now = chrono::Utc::now().timestamp_millis();
        grant
            .allows(&self.node_id, app_id, job, now)
            .map_err(refused)?;
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        match latest.get(app_id) {
            Some(&(job, attempt)) if job == grant.job_id && attempt > grant.attempt => {
                return Err(refused(GrantError::Superseded(grant.attempt, attempt)));
            }
            _ => {
                latest.insert(app_id.to_owned(), (grant.job_id, grant.attempt));
            }
        }
        Ok(grant)
    }
}

fn refused(e: GrantError) -> AgentError {
    tracing::warn!(reason = %e, "a grant was refused");
    AgentError::Forbidden(e.to_string())
}
