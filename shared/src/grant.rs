//! Agent grants (SPEC §7): what lets a runner act on one app on one node, for one job, until
//! its lease ends — instead of one token that opens every agent.
//!
//! The control plane signs a [`Grant`] with Ed25519 when a runner claims a job and again each
//! time the lease is renewed; the runner sends it to the agent as `X-Runtime-Grant`; the agent
//! verifies the signature with the public keys it received from the control plane (join and
//! heartbeat answers) and checks that the grant names its own node, the app the call is about
//! (and, for a deploy, the job) and has not run out.
//!
//! A grant is text: `v1.{base64url(json)}.{base64url(signature)}`, the signature over
//! `berth-grant:` followed by everything before the last dot. The signing keys are derived from
//! `BERTH_SECRET_KEY` ([`crate::sealed`]), one per key: every replica of the control plane signs
//! with the same key, the first key signs, and agents accept every key's public half, so the
//! keys rotate with `BERTH_SECRET_KEY`.

use std::fmt;

use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL};
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::sealed::SealingKeys;

/// What every grant starts with.
const VERSION: &str = "v1";
/// What the signature covers before the grant's text (domain separation).
const SIGNED_PREFIX: &[u8] = b"berth-grant:";
/// Longest grant text accepted (a real one is about 300 bytes).
const MAX_LEN: usize = 2048;

/// The right to deploy, stop or read one app on one node, for one job attempt, until a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// The job the runner holds the lease of.
    pub job_id: Uuid,
    /// The job's attempt: an agent that saw a later attempt of the job refuses earlier ones.
    pub attempt: i64,
    /// The app the grant opens.
    pub app_id: String,
    /// The node whose agent accepts it.
    pub node_id: String,
    /// When it runs out (Unix milliseconds): the end of the lease it was signed with.
    pub expires_at: i64,
}

/// Why an agent refused a grant. The texts say what was wrong, never the grant itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Not a grant at all.
    #[error("X-Runtime-Grant is not a grant (v1.<payload>.<signature>)")]
    Malformed,
    /// Signed by no key this agent knows: forged, changed, or from another control plane.
    #[error("the grant is not signed by this node's control plane")]
    Unsigned,
    /// Its lease ended.
    #[error("the grant ran out (its lease ended); claim the job again")]
    Expired,
    /// It is for another node.
    #[error("the grant is for node {0}, not this one")]
    OtherNode(String),
    /// It is for another app.
    #[error("the grant is for app {0}, not this one")]
    OtherApp(String),
    /// It is for another job than the request names.
    #[error("the grant is for job {0}, not the one in the request")]
    OtherJob(Uuid),
    /// A later attempt of its job already reached this agent: the runner lost its lease.
    #[error("attempt {0} of the job was superseded by attempt {1}")]
    Superseded(i64, i64),
}

impl Grant {
    /// A grant of attempt 1 of `job_id` for `app_id` on `node_id`, good for `valid_for` from
    /// now (the control plane signs its grants with the lease's end; tests and benchmarks that
    /// hold a key make their own with this).
    pub fn new(job_id: Uuid, app_id: &str, node_id: &str, valid_for: std::time::Duration) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            job_id,
            attempt: 1,
            app_id: app_id.to_owned(),
            node_id: node_id.to_owned(),
            expires_at: i64::try_from((now + valid_for).as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Checks that the grant opens `app_id` on `node_id` at `now` (Unix milliseconds), and,
    /// with `job_id`, that it is that job's.
    pub fn allows(
        &self,
        node_id: &str,
        app_id: &str,
        job_id: Option<Uuid>,
        now: i64,
    ) -> Result<(), GrantError> {
        if self.node_id != node_id {
            return Err(GrantError::OtherNode(self.node_id.clone()));
        }
        if self.app_id != app_id {
            return Err(GrantError::OtherApp(self.app_id.clone()));
        }
        if job_id.is_some_and(|job| job != self.job_id) {
            return Err(GrantError::OtherJob(self.job_id));
        }
        if now >= self.expires_at {
            return Err(GrantError::Expired);
        }
        Ok(())
    }
}

/// The control plane's signing keys, derived from `BERTH_SECRET_KEY`: the first signs. Their
/// public halves are computed once: every node heartbeat answers with them.
pub struct GrantSigner {
    keys: Vec<Ed25519KeyPair>,
    public_keys: Vec<String>,
    verifier: GrantVerifier,
}

impl GrantSigner {
    /// The signing keys of `keys`, one per sealing key.
    pub fn new(keys: &SealingKeys) -> Self {
        let keys = keys
            .grant_seeds()
            .map(|seed| {
                Ed25519KeyPair::from_seed_unchecked(seed)
                    .unwrap_or_else(|_| unreachable!("every 32-byte seed is an Ed25519 key"))
            })
            .collect::<Vec<_>>();
        let public_keys = keys
            .iter()
            .map(|k| BASE64.encode(k.public_key().as_ref()))
            .collect();
        let verifier = GrantVerifier {
            keys: keys
                .iter()
                .map(|k| k.public_key().as_ref().to_vec())
                .collect(),
        };
        Self {
            keys,
            public_keys,
            verifier,
        }
    }

    /// `grant` as signed text, for `X-Runtime-Grant`.
    pub fn sign(&self, grant: &Grant) -> String {
        let payload =
            serde_json::to_vec(grant).unwrap_or_else(|_| unreachable!("a grant always serializes"));
        let body = format!("{VERSION}.{}", BASE64URL.encode(payload));
        let signature = self.keys[0].sign(&signed_bytes(&body));
        format!("{body}.{}", BASE64URL.encode(signature.as_ref()))
    }

    /// The public keys agents verify with (standard base64), the signing one first.
    pub fn public_keys(&self) -> &[String] {
        &self.public_keys
    }

    /// A verifier of this signer's own grants (to renew one a runner holds).
    pub fn verifier(&self) -> &GrantVerifier {
        &self.verifier
    }
}

impl fmt::Debug for GrantSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantSigner")
            .field("public_keys", &self.public_keys())
            .finish()
    }
}

/// The public keys an agent accepts grants of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantVerifier {
    keys: Vec<Vec<u8>>,
}

impl GrantVerifier {
    /// A verifier of `keys` (standard base64 Ed25519 public keys, as
    /// [`GrantSigner::public_keys`] gives them).
    pub fn from_public_keys(keys: &[String]) -> Result<Self, String> {
        let keys = keys
            .iter()
            .map(|key| match BASE64.decode(key.trim()) {
                Ok(bytes) if bytes.len() == 32 => Ok(bytes),
                _ => Err(format!(
                    "{key:?} is not an Ed25519 public key (32 bytes in base64)"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys })
    }

    /// Whether it knows no key yet (an agent before its first answer from the control plane).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The grant in `text`, when one of the keys signed it (whether it still holds is
    /// [`Grant::allows`]).
    pub fn verify(&self, text: &str) -> Result<Grant, GrantError> {
        if text.len() > MAX_LEN {
            return Err(GrantError::Malformed);
        }
        let (body, signature) = text.rsplit_once('.').ok_or(GrantError::Malformed)?;
        let (version, payload) = body.split_once('.').ok_or(GrantError::Malformed)?;
        if version != VERSION {
            return Err(GrantError::Malformed);
        }
        let signature = BASE64URL
            .decode(signature)
            .map_err(|_| GrantError::Malformed)?;
        let signed = signed_bytes(body);
        let genuine = self.keys.iter().any(|key| {
            UnparsedPublicKey::new(&ED25519, key)
                .verify(&signed, &signature)
                .is_ok()
        });
        if !genuine {
            return Err(GrantError::Unsigned);
        }
        let payload = BASE64URL
            .decode(payload)
            .map_err(|_| GrantError::Malformed)?;
        serde_json::from_slice(&payload).map_err(|_| GrantError::Malformed)
    }
}

fn signed_bytes(body: &str) -> Vec<u8> {
    [SIGNED_PREFIX, body.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            job_id: Uuid::now_v7(),
            attempt: 1,
            app_id: "shop".into(),
            node_id: "node-a".into(),
            expires_at: 2_000,
        }
    }

    #[test]
    fn a_signed_grant_verifies_and_opens_its_app_on_its_node_only() {
        let signer = GrantSigner::new(&SealingKeys::generate());
        let g = grant();
        let text = signer.sign(&g);
        let verifier = GrantVerifier::from_public_keys(signer.public_keys()).unwrap();
        let back = verifier.verify(&text).unwrap();
        assert_eq!(back, g);
        assert_eq!(back.allows("node-a", "shop", Some(g.job_id), 1_999), Ok(()));
        assert_eq!(back.allows("node-a", "shop", None, 1_999), Ok(()));
        assert_eq!(
            back.allows("node-b", "shop", None, 1_000),
            Err(GrantError::OtherNode("node-a".into()))
        );
        assert_eq!(
            back.allows("node-a", "blog", None, 1_000),
            Err(GrantError::OtherApp("shop".into()))
        );
        assert_eq!(
            back.allows("node-a", "shop", Some(Uuid::now_v7()), 1_000),
            Err(GrantError::OtherJob(g.job_id))
        );
        assert_eq!(
            back.allows("node-a", "shop", None, 2_000),
            Err(GrantError::Expired)
        );
    }

    #[test]
    fn a_changed_or_foreign_grant_is_refused() {
        let signer = GrantSigner::new(&SealingKeys::generate());
        let verifier = GrantVerifier::from_public_keys(signer.public_keys()).unwrap();
        let text = signer.sign(&grant());
        // Another control plane's grant.
        let stranger = GrantSigner::new(&SealingKeys::generate()).sign(&grant());
        assert_eq!(verifier.verify(&stranger), Err(GrantError::Unsigned));
        // The payload changed to another app, the signature kept.
        let (_, rest) = text.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let mut other = grant();
        other.app_id = "blog".into();
        let forged_payload = BASE64URL.encode(serde_json::to_vec(&other).unwrap());
        let forged = format!("v1.{forged_payload}.{signature}");
        assert_eq!(verifier.verify(&forged), Err(GrantError::Unsigned));
        for junk in [
            "",
            "v1",
            "v1..",
            "v2.e30.AA",
            "v1.e30.!!",
            &"a".repeat(5000),
        ] {
            assert!(verifier.verify(junk).is_err(), "{junk:?}");
        }
        // No keys known: nothing verifies.
        assert_eq!(
            GrantVerifier::default().verify(&text),
            Err(GrantError::Unsigned)
        );
    }

    #[test]
    fn grants_of_every_key_of_a_rotation_verify() {
        let old = SealingKeys::generate_text();
        let new = SealingKeys::generate_text();
        let before = GrantSigner::new(&SealingKeys::parse(&old).unwrap());
        let after = GrantSigner::new(&SealingKeys::parse(&format!("{new},{old}")).unwrap());
        let verifier = GrantVerifier::from_public_keys(after.public_keys()).unwrap();
        assert!(verifier.verify(&before.sign(&grant())).is_ok());
        assert!(verifier.verify(&after.sign(&grant())).is_ok());
        // The new key signs: an agent that knows only the old key refuses it.
        let old_only = GrantVerifier::from_public_keys(before.public_keys()).unwrap();
        assert_eq!(
            old_only.verify(&after.sign(&grant())),
            Err(GrantError::Unsigned)
        );
    }

    #[test]
    fn public_keys_must_be_ed25519_keys() {
        assert!(GrantVerifier::from_public_keys(&["AAAA".into()]).is_err());
        assert!(GrantVerifier::from_public_keys(&["not base64!".into()]).is_err());
    }
}
