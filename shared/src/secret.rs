//! Secrets: tokens and passwords that must never reach a log line or a response.

use std::fmt;

use subtle::ConstantTimeEq;

/// A secret string. `Debug` and `Display` print `[redacted]`; the only way to read it is
/// [`Secret::expose`], which makes every use easy to find in review.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value. Empty secrets are allowed here; services refuse them at start-up.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A fresh random token: 32 random bytes as 64 lowercase hex characters.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The secret itself, for sending it in a header or passing it to a container.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` equals the secret, in time that does not depend on where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        // `ct_eq` on slices of different lengths returns false at once; the length of a
        // token is not a secret worth hiding.
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

/// The shortest role secret (token, shared secret) a service starts with.
pub const MIN_ROLE_SECRET_LEN: usize = 16;

/// Why a service's role secrets were refused; the message names the variables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WeakSecrets(pub String);

/// Checks the role secrets a service holds, each named by its variable: every one at least
/// [`MIN_ROLE_SECRET_LEN`] characters, and no two the same, so that a secret leaked from one
/// role (a runner host, a node) never also opens another.
pub fn check_role_secrets(roles: &[(&str, &Secret)]) -> Result<(), WeakSecrets> {
    for (var, secret) in roles {
        if secret.expose().chars().count() < MIN_ROLE_SECRET_LEN {
            return Err(WeakSecrets(format!(
                "{var} is too short: use at least {MIN_ROLE_SECRET_LEN} characters (e.g. `openssl rand -hex 32`)"
            )));
        }
    }
    for (i, (var, secret)) in roles.iter().enumerate() {
        if let Some((other, _)) = roles[i + 1..]
            .iter()
            .find(|(_, s)| s.matches(secret.expose().as_bytes()))
        {
            return Err(WeakSecrets(format!(
                "{var} and {other} are the same: every role needs a secret of its own"
            )));
        }
    }
    Ok(())
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let s = Secret::new("abc");
        assert!(s.matches(b"abc"));
        assert!(!s.matches(b"abd"));
        assert!(!s.matches(b"ab"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn role_secrets_are_long_and_distinct() {
        let a = Secret::new("a".repeat(16));
        let b = Secret::new("b".repeat(16));
        assert_eq!(check_role_secrets(&[("A", &a), ("B", &b)]), Ok(()));
        let short = Secret::new("b".repeat(15));
        let err = check_role_secrets(&[("A", &a), ("B", &short)]).unwrap_err();
        assert!(err.0.contains("B is too short"), "{err}");
        let err = check_role_secrets(&[("A", &a), ("B", &b), ("C", &a.clone())]).unwrap_err();
        assert_eq!(
            err.0,
            "A and C are the same: every role needs a secret of its own"
        );
    }

    #[test]
    fn generated_tokens_differ() {
        assert_ne!(Secret::generate(), Secret::generate());
        assert_eq!(Secret::generate().expose().len(), 64);
    }
}
