//! Secrets at rest: `secretEnv` values sealed with XChaCha20-Poly1305 under `BERTH_SECRET_KEY`
//! before they reach a database, in the control plane and the api alike.
//!
//! `BERTH_SECRET_KEY` holds one or more keys, comma-separated, each 32 random bytes in base64
//! (`openssl rand -base64 32`). The first key seals; every key opens, so a key is rotated by
//! putting the new one first and keeping the old one after it until nothing sealed with it is
//! left (docs/security.md, "Secrets at rest").
//!
//! A sealed value is text, `berth-sealed:v1:{key id}:{base64(nonce ‖ ciphertext)}`: the key id is
//! the first 8 hex digits of the key's SHA-256 (which key to open it with, nothing about the key
//! itself), the nonce is 24 random bytes, and the ciphertext carries the Poly1305 tag. Each value
//! is sealed for a *context* (the app it belongs to), authenticated as associated data: a sealed
//! value copied to another app's row does not open.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// What every sealed value starts with.
const PREFIX: &str = "berth-sealed:v1:";
/// Bytes in a key.
const KEY_LEN: usize = 32;
/// Bytes in an XChaCha20 nonce.
const NONCE_LEN: usize = 24;

/// One key: its id and its cipher.
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
    /// For [`SealingKeys::fingerprint`]: derived from the key, never the key itself.
    mac_key: [u8; 32],
    /// The seed of the Ed25519 key that signs agent grants ([`crate::grant`]), derived likewise.
    grant_seed: [u8; 32],
}

/// The keys of `BERTH_SECRET_KEY`: the first seals, all open. `Debug` shows only key ids.
pub struct SealingKeys {
    keys: Vec<Key>,
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// It was sealed with a key that is not in `BERTH_SECRET_KEY` (any more).
    #[error("sealed with key {0}, which BERTH_SECRET_KEY does not hold")]
    UnknownKey(String),
    /// It is not a sealed value, or it was changed, or it belongs to another context.
    #[error("the sealed value does not open (changed, or sealed for another app)")]
    Corrupt,
}

impl SealingKeys {
    /// Parses `BERTH_SECRET_KEY`: comma-separated base64 keys of 32 bytes each.
    pub fn parse(value: &str) -> Result<Self, String> {
        let keys = value
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
            .map(|(i, text)| {
                let bytes = BASE64.decode(text).map_err(|_| {
                    format!("BERTH_SECRET_KEY: key {} is not base64 (use `openssl rand -base64 32`)", i + 1)
                })?;
                if bytes.len() != KEY_LEN {
                    return Err(format!(
                        "BERTH_SECRET_KEY: key {} is {} bytes, not {KEY_LEN} (use `openssl rand -base64 32`)",
                        i + 1,
                        bytes.len()
                    ));
                }
                Ok(Key::new(&bytes))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(
                "BERTH_SECRET_KEY is empty: set it to 32 random bytes in base64 (`openssl rand -base64 32`)"
                    .into(),
            );
        }
        Ok(Self { keys })
    }

    /// A fresh random key, as `BERTH_SECRET_KEY` text (for `berth dev` and tests).
    pub fn generate_text() -> String {
        BASE64.encode(rand::random::<[u8; KEY_LEN]>())
    }

    /// One fresh random key (tests and benches; a service takes its keys from the environment,
    /// since values sealed under a key that is gone do not open).
    pub fn generate() -> Self {
        Self {
            keys: vec![Key::new(&rand::random::<[u8; KEY_LEN]>())],
        }
    }

    /// The seeds of the grant signing keys, one per key, the sealing one first.
    pub(crate) fn grant_seeds(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.keys.iter().map(|k| &k.grant_seed)
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `plaintext` for `context` with the first key.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let key = &self.keys[0];
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            // Encryption fails only for inputs of over 256 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", key.id, BASE64.encode(out))
    }

    /// Opens a value [`seal`](Self::seal) made for `context`, with whichever key sealed it.
    pub fn open(&self, stored: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let rest = stored.strip_prefix(PREFIX).ok_or(SealError::Corrupt)?;
        let (id, data) = rest.split_once(':').ok_or(SealError::Corrupt)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let bytes = BASE64.decode(data).map_err(|_| SealError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        key.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealError::Corrupt)
    }

    /// Whether `stored` was sealed with a key other than the first (it should be sealed again).
    pub fn is_stale(&self, stored: &str) -> bool {
        let current = format!("{PREFIX}{}:", self.current_id());
        !stored.starts_with(&current)
    }

    /// A keyed hash of `data` (HMAC-SHA-256 under a key derived from the first key), in hex:
    /// lets two requests be compared, e.g. for `Idempotency-Key`, without storing anything a
    /// guess at a secret value could be checked against.
    pub fn fingerprint(&self, data: &[u8]) -> String {
        self.keys[0].fingerprint(data)
    }
}

impl SealingKeys {
    /// Whether `stored` is the [`fingerprint`](Self::fingerprint) of `data` under any of the
    /// keys (so a rotation keeps what was fingerprinted before it), in time that does not
    /// depend on where they differ.
    pub fn fingerprint_matches(&self, data: &[u8], stored: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.keys.iter().fold(false, |found, key| {
            found | bool::from(key.fingerprint(data).as_bytes().ct_eq(stored.as_bytes()))
        })
    }
}

impl Key {
    fn fingerprint(&self, data: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    fn new(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        Self {
            id: hex::encode(&digest[..4]),
            cipher: XChaCha20Poly1305::new_from_slice(bytes)
                .unwrap_or_else(|_| unreachable!("the key was checked to be 32 bytes")),
            mac_key: derive(bytes, b"berth fingerprint key v1"),
            grant_seed: derive(bytes, b"berth grant signing key v1"),
        }
    }
}

/// A key for one purpose derived from a sealing key: SHA-256 over the purpose's label and the
/// key, so no derived key reveals the sealing key or another purpose's key.
fn derive(key: &[u8], label: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(label)
        .chain_update(key)
        .finalize()
        .into()
}

impl fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("SealingKeys").field("ids", &ids).finish()
    }
}

/// An app's secret environment as it is stored: sealed for the app, never in clear. Jobs of the
/// same app copy it as it is (a redeploy, a drain, a rollback): it is opened only to hand the
/// values to the runner that deploys them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SealedEnv(String);

/// What a stored secret environment is that has no values (nothing to seal).
const EMPTY: &str = "{}";

impl SealedEnv {
    /// Seals `env` for `app_id` (an empty map stays `{}`: nothing to hide).
    pub fn seal(keys: &SealingKeys, env: &BTreeMap<String, String>, app_id: &str) -> Self {
        if env.is_empty() {
            return Self::empty();
        }
        let json = serde_json::to_vec(env).unwrap_or_default();
        Self(keys.seal(&json, &context(app_id)))
    }

    /// No secret values.
    pub fn empty() -> Self {
        Self(EMPTY.into())
    }

    /// The text as it was stored.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    /// The text to store.
    pub fn as_stored(&self) -> &str {
        &self.0
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty() || self.0 == EMPTY
    }

    /// The values, for the runner that deploys `app_id`. Text written before secrets were
    /// sealed (a JSON object, from Berth before 0.2) is read as it is.
    pub fn open(
        &self,
        keys: &SealingKeys,
        app_id: &str,
    ) -> Result<BTreeMap<String, String>, SealError> {
        if self.is_empty() {
            return Ok(BTreeMap::new());
        }
        if self.0.starts_with('{') {
            return serde_json::from_str(&self.0).map_err(|_| SealError::Corrupt);
        }
        let json = keys.open(&self.0, &context(app_id))?;
        serde_json::from_slice(&json).map_err(|_| SealError::Corrupt)
    }
}

/// The associated data a secret environment is sealed with.
fn context(app_id: &str) -> String {
    format!("secretEnv of app {app_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SealingKeys {
        SealingKeys::parse(&SealingKeys::generate_text()).unwrap()
    }

    #[test]
    fn sealed_values_open_and_hide_the_plaintext() {
        let keys = keys();
        let sealed = keys.seal(b"hunter2-password", "app a");
        assert!(sealed.starts_with(PREFIX), "{sealed}");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(keys.open(&sealed, "app a").unwrap(), b"hunter2-password");
        // A fresh nonce each time: sealing twice never gives the same text.
        assert_ne!(sealed, keys.seal(b"hunter2-password", "app a"));
    }

    #[test]
    fn another_context_a_changed_value_or_another_key_does_not_open() {
        let keys = keys();
        let sealed = keys.seal(b"value", "app a");
        assert_eq!(keys.open(&sealed, "app b"), Err(SealError::Corrupt));
        let mut changed = sealed.clone().into_bytes();
        let last = changed.len() - 3;
        changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).unwrap();
        assert_eq!(keys.open(&changed, "app a"), Err(SealError::Corrupt));
        let other = self::keys();
        assert!(matches!(
            other.open(&sealed, "app a"),
            Err(SealError::UnknownKey(_))
        ));
        assert_eq!(keys.open("plain text", "app a"), Err(SealError::Corrupt));
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_every_key() {
        let (old, new) = (SealingKeys::generate_text(), SealingKeys::generate_text());
        let before = SealingKeys::parse(&old).unwrap();
        let sealed = before.seal(b"value", "app a");
        let rotated = SealingKeys::parse(&format!("{new}, {old}")).unwrap();
        assert_eq!(rotated.open(&sealed, "app a").unwrap(), b"value");
        assert!(rotated.is_stale(&sealed));
        let again = rotated.seal(b"value", "app a");
        assert!(!rotated.is_stale(&again));
        assert!(matches!(
            before.open(&again, "app a"),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        assert!(SealingKeys::parse("").unwrap_err().contains("empty"));
        assert!(SealingKeys::parse("not base64!")
            .unwrap_err()
            .contains("not base64"));
        assert!(SealingKeys::parse(&BASE64.encode([1u8; 16]))
            .unwrap_err()
            .contains("16 bytes"));
        let shown = format!("{:?}", keys());
        assert!(shown.starts_with("SealingKeys { ids: ["), "{shown}");
    }

    #[test]
    fn fingerprints_are_keyed() {
        let (a, b) = (keys(), keys());
        assert_eq!(a.fingerprint(b"x"), a.fingerprint(b"x"));
        assert_ne!(a.fingerprint(b"x"), a.fingerprint(b"y"));
        assert_ne!(a.fingerprint(b"x"), b.fingerprint(b"x"));
        assert_ne!(a.fingerprint(b"x"), hex::encode(Sha256::digest(b"x")));
        assert!(a.fingerprint_matches(b"x", &a.fingerprint(b"x")));
        assert!(!a.fingerprint_matches(b"y", &a.fingerprint(b"x")));
        assert!(!b.fingerprint_matches(b"x", &a.fingerprint(b"x")));
    }

    #[test]
    fn fingerprints_survive_a_rotation() {
        let (old, new) = (SealingKeys::generate_text(), SealingKeys::generate_text());
        let before = SealingKeys::parse(&old).unwrap();
        let stored = before.fingerprint(b"key secret");
        let rotated = SealingKeys::parse(&format!("{new},{old}")).unwrap();
        assert!(rotated.fingerprint_matches(b"key secret", &stored));
        assert_ne!(rotated.fingerprint(b"key secret"), stored);
    }

    #[test]
    fn sealed_envs_open_only_for_their_app_and_read_old_plain_rows() {
        let keys = keys();
        let env = BTreeMap::from([("TOKEN".to_owned(), "s3cret-value".to_owned())]);
        let sealed = SealedEnv::seal(&keys, &env, "shop");
        assert!(!sealed.as_stored().contains("s3cret"));
        assert_eq!(sealed.open(&keys, "shop").unwrap(), env);
        assert_eq!(sealed.open(&keys, "blog"), Err(SealError::Corrupt));
        let empty = SealedEnv::seal(&keys, &BTreeMap::new(), "shop");
        assert!(empty.is_empty());
        assert_eq!(empty.as_stored(), "{}");
        let old = SealedEnv::from_stored(r#"{"TOKEN":"s3cret-value"}"#.into());
        assert_eq!(old.open(&keys, "shop").unwrap(), env);
    }
}
