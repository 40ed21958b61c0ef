//! Identifiers that arrive from outside, validated once at the edge.
//!
//! An [`AppId`] is a DNS label because it becomes a host name (`{appId}.{domain}`), a path
//! segment and part of a container name; a [`NodeId`] names a host in the registry.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused; the message is shown to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub String);

/// An app id: a DNS label, `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);

impl AppId {
    /// Validates `value` as an app id.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        if is_dns_label(value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidId(format!(
                "app id {:?} is not a DNS label: 1 to 63 characters of a-z, 0-9 and '-', \
                 starting and ending with a letter or digit",
                truncate(value)
            )))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `value` is a lowercase DNS label of at most 63 characters.
pub fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let inner_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(inner_ok)
        && bytes.first().is_some_and(edge_ok)
        && bytes.last().is_some_and(edge_ok)
}

/// The pattern of [`is_dns_label`], as the OpenAPI documents declare it.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

impl schemars::JsonSchema for AppId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AppId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An app id: a DNS label (it becomes a host name).",
            "type": "string",
            "minLength": 1,
            "maxLength": 63,
            "pattern": DNS_LABEL_PATTERN,
        })
    }
}

impl TryFrom<String> for AppId {
    type Error = InvalidId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AppId> for String {
    fn from(id: AppId) -> Self {
        id.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node id or runner id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Validates `value` as a node (or runner) id.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        if is_name(value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidId(format!(
                "id {:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
                truncate(value)
            )))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `value` is 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
pub fn is_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl schemars::JsonSchema for NodeId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NodeId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A node or runner id.",
            "type": "string",
            "pattern": "^[A-Za-z0-9._-]{1,64}$",
        })
    }
}

impl TryFrom<String> for NodeId {
    type Error = InvalidId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> Self {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Cuts an echoed value short so an error message stays readable whatever was sent.
pub fn truncate(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_are_dns_labels() {
        for ok in ["a", "a1", "my-app", "0abc", &"a".repeat(63)] {
            assert!(AppId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "ä",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(AppId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_ids_are_plain_names() {
        assert!(NodeId::parse("node-1.example_A").is_ok());
        assert!(NodeId::parse("").is_err());
        assert!(NodeId::parse("a/b").is_err());
        assert!(NodeId::parse(&"n".repeat(65)).is_err());
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<AppId>("\"Bad\"").is_err());
        assert_eq!(
            serde_json::from_str::<AppId>("\"good\"").unwrap().as_str(),
            "good"
        );
    }
}
