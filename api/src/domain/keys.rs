//! API keys: `bk_{keyId}_{secret}`. The id finds the row; the secret is checked against its
//! stored HMAC-SHA256 under the server's key (`BERTH_SECRET_KEY`), in constant time. Keys are
//! 256 random bits, so a fast keyed hash is enough: no dictionary reaches them, and a copy of
//! the table without the server key tells nothing.

use berth_shared::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

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

/// The stored hash of a key's secret part.
pub fn hash(server_key: &Secret, secret: &str) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(server_key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(secret.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `secret` hashes to `stored`, in time that does not depend on where they differ.
pub fn verify(server_key: &Secret, secret: &str, stored: &str) -> bool {
    hash(server_key, secret)
        .as_bytes()
        .ct_eq(stored.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_verifies() {
        let server = Secret::new("server-key-for-tests");
        let (id, text) = generate();
        let key = parse(text.expose()).unwrap();
        assert_eq!(key.key_id, id);
        let stored = hash(&server, key.secret);
        assert!(verify(&server, key.secret, &stored));
        assert!(!verify(
            &Secret::new("another-server-key"),
            key.secret,
            &stored
        ));
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
