//! Handing jobs to runners: claims made at the same moment share one transaction
//! ([`batch`]), and each lease carries a fresh fencing token. The long poll around a claim is
//! [`crate::service::runner::claim`].

pub mod batch;

use berth_shared::secret::Secret;

/// A fresh fencing token: 32 lowercase hex characters.
pub fn new_lease_token() -> String {
    Secret::generate().expose()[..32].to_owned()
}

/// Whether `token` has the shape of a lease token (anything else is a 400, not a 409).
pub fn is_lease_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
