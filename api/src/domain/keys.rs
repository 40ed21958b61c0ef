//! API keys: `bk_{keyId}_{secret}`. The id finds the row; the secret is checked against its
//! stored HMAC-SHA256 under the server's key (`BERTH_SECRET_KEY`), in constant time. Keys are
//! 256 random bits, so a fast keyed hash is enough: no dictionary reaches them, and a copy of
//! the table without the server key tells nothing.

use berth_shared::sealed::SealingKeys;
use berth_shared::secret::Secret;

const PREFIX: &str = "bk_";

/// A key as presented: its id and its secret part.
pub struct PresentedKey<'a> {
    /// The key's id.
    pub key_id: &'a str,
    /// The part that is hashed.
    pub secret: &'a str,
}

/// Reads `text` as a key; `None` when it does not have the shape of one.
pub fn parse(text: &str) -> Option<PresentedKey<'_>> {
    let rest = text.strip_prefix(PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(key_id, 16) && hex(secret, 64)).then_some(PresentedKey { key_id, secret })
}

/// A fresh key: its id and its full text (shown once).
pub fn generate() -> (String, Secret) {
    let id: [u8; 8] = rand::random();
    let key_id = hex::encode(id);
    let secret = Secret::generate();
    let text = format!("{PREFIX}{key_id}_{}", secret.expose());
    (key_id, Secret::new(text))
}

/// The stored hash of a key's secret part: HMAC-SHA-256 under `BERTH_SECRET_KEY`'s first key.
pub fn hash(server_keys: &SealingKeys, secret: &str) -> String {
    server_keys.fingerprint(secret.as_bytes())
}

/// Whether `secret` hashes to `stored` under any of the server keys (keys made before a
/// rotation keep working), in time that does not depend on where they differ.
pub fn verify(server_keys: &SealingKeys, secret: &str, stored: &str) -> bool {
    server_keys.fingerprint_matches(secret.as_bytes(), stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_verifies() {
        let server = SealingKeys::generate();
        let (id, text) = generate();
        let key = parse(text.expose()).unwrap();
        assert_eq!(key.key_id, id);
        let stored = hash(&server, key.secret);
        assert!(verify(&server, key.secret, &stored));
        assert!(!verify(&SealingKeys::generate(), key.secret, &stored));
        assert!(!stored.contains(key.secret));
    }

    #[test]
    fn malformed_keys_are_not_keys() {
        for bad in [
            "",
            "bk_",
            "bk_abc_def",
            "xx_0123456789abcdef_00",
            &format!("bk_0123456789abcdef_{}", "z".repeat(64)),
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
