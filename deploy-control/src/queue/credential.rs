//! Per-node credentials (SPEC §7): what a node shows in `X-RT-Node-Token`, stored only as a
//! SHA-256 hash. A credential is 256 random bits, so a fast unkeyed hash is enough: no
//! dictionary reaches it, and a copy of the table tells nothing an attacker can present.
//!
//! The rules, on one `node_credential` row:
//! - a node joins once; its first credential is current, there is no previous one;
//! - a rotation makes a new credential current and keeps the one the node presented as the
//!   previous one, still accepted, until the new one is used once: an agent that dies between
//!   receiving the new credential and saving it still holds a credential that works;
//! - a revoked credential (current and previous) is refused from then on.

use berth_shared::secret::Secret;
use sha2::{Digest, Sha256};

use super::Millis;

/// One `node_credential` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCredential {
    /// The node it speaks for, and only that node.
    pub node_id: String,
    /// Hash of the current credential.
    pub credential_hash: String,
    /// Hash of the credential before the last rotation, accepted until the current one is
    /// used once.
    pub previous_hash: Option<String>,
    /// When the node joined.
    pub created_at: Millis,
    /// When it last rotated.
    pub rotated_at: Option<Millis>,
    /// When an operator revoked it.
    pub revoked_at: Option<Millis>,
}

/// Which of a row's credentials was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// The current one.
    Current,
    /// The one before the last rotation (the new one not used yet).
    Previous,
}

/// Why a presented credential is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialRefused {
    /// No credential has this hash (never issued, or retired by a rotation).
    #[error("the X-RT-Node-Token header is not a valid node credential")]
    Unknown,
    /// An operator revoked the node's credential.
    #[error("this node's credential was revoked; the node must join again under a new node id")]
    Revoked,
}

/// The stored form of `credential`: its SHA-256, in lowercase hex.
pub fn hash(credential: &str) -> String {
    hex::encode(Sha256::digest(credential.as_bytes()))
}

impl NodeCredential {
    /// A node's first credential (hash `credential_hash`) at `now`.
    pub fn joined(node_id: &str, credential_hash: String, now: Millis) -> Self {
        Self {
            node_id: node_id.to_owned(),
            credential_hash,
            previous_hash: None,
            created_at: now,
            rotated_at: None,
            revoked_at: None,
        }
    }

    /// Which of the row's credentials hashes to `presented_hash`, compared in constant time.
    pub fn check(&self, presented_hash: &str) -> Result<Presented, CredentialRefused> {
        let same = |stored: &str| Secret::new(stored).matches(presented_hash.as_bytes());
        let which = if same(&self.credential_hash) {
            Presented::Current
        } else if self.previous_hash.as_deref().is_some_and(same) {
            Presented::Previous
        } else {
            return Err(CredentialRefused::Unknown);
        };
        match self.revoked_at {
            Some(_) => Err(CredentialRefused::Revoked),
            None => Ok(which),
        }
    }

    /// Records a use of the `presented` credential; true when the row changed: the first use
    /// of a new credential retires the previous one (the rotation is complete).
    pub fn used(&mut self, presented: Presented) -> bool {
        match presented {
            Presented::Current if self.previous_hash.is_some() => {
                self.previous_hash = None;
                true
            }
            _ => false,
        }
    }

    /// Makes `new_hash` current at `now`. The credential the node `presented` to ask for it
    /// stays accepted as the previous one until `new_hash` is used, so a node that lost the
    /// answer can rotate again with the credential it still holds.
    pub fn rotate(&mut self, presented: Presented, new_hash: String, now: Millis) {
        let kept = match presented {
            Presented::Current => std::mem::replace(&mut self.credential_hash, new_hash),
            Presented::Previous => {
                self.credential_hash = new_hash;
                self.previous_hash.take().unwrap_or_default()
            }
        };
        self.previous_hash = Some(kept);
        self.rotated_at = Some(now);
    }

    /// Revokes the node's credentials at `now` (once: a second revoke keeps the first time).
    pub fn revoke(&mut self, now: Millis) {
        self.revoked_at.get_or_insert(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined() -> NodeCredential {
        NodeCredential::joined("node-a", hash("first"), 1)
    }

    #[test]
    fn only_the_issued_credential_is_accepted() {
        let cred = joined();
        assert_eq!(cred.check(&hash("first")), Ok(Presented::Current));
        assert_eq!(cred.check(&hash("other")), Err(CredentialRefused::Unknown));
        assert_eq!(cred.check("first"), Err(CredentialRefused::Unknown));
        assert_ne!(hash("first"), "first");
        assert_eq!(hash("first").len(), 64);
    }

    #[test]
    fn the_previous_credential_works_until_the_new_one_is_used() {
        let mut cred = joined();
        cred.rotate(Presented::Current, hash("second"), 2);
        assert_eq!(cred.rotated_at, Some(2));
        assert_eq!(cred.check(&hash("first")), Ok(Presented::Previous));
        assert!(
            !cred.used(Presented::Previous),
            "the old one changes nothing"
        );
        assert_eq!(cred.check(&hash("second")), Ok(Presented::Current));
        assert!(
            cred.used(Presented::Current),
            "the first use of the new one"
        );
        assert_eq!(cred.check(&hash("first")), Err(CredentialRefused::Unknown));
        assert!(!cred.used(Presented::Current), "later uses change nothing");
    }

    #[test]
    fn a_lost_rotation_answer_is_replaced_by_the_next() {
        let mut cred = joined();
        cred.rotate(Presented::Current, hash("lost"), 2);
        // The node never saved "lost" and asks again with "first".
        cred.rotate(Presented::Previous, hash("third"), 3);
        assert_eq!(cred.check(&hash("first")), Ok(Presented::Previous));
        assert_eq!(cred.check(&hash("third")), Ok(Presented::Current));
        assert_eq!(cred.check(&hash("lost")), Err(CredentialRefused::Unknown));
    }

    #[test]
    fn a_revoked_credential_is_refused_old_and_new() {
        let mut cred = joined();
        cred.rotate(Presented::Current, hash("second"), 2);
        cred.revoke(5);
        cred.revoke(9);
        assert_eq!(cred.revoked_at, Some(5));
        for presented in ["first", "second"] {
            assert_eq!(
                cred.check(&hash(presented)),
                Err(CredentialRefused::Revoked)
            );
        }
    }
}
