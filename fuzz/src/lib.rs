//! What the fuzz targets assert, written apart from the validators they check: each grammar
//! is spelled out again here from its documentation (SPEC, docs/control-plane.md, the Docker
//! engine's rules), so a validator that drifts from what it promises fails a target.
#![forbid(unsafe_code)]

use std::fmt::Debug;
use std::path::{Component, Path};

use berth_shared::wire::{limits, BuildSpec, VolumeSpec};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`, counted in characters (the documented grammar of an
/// app id and a volume name).
pub fn dns_label_grammar(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    match chars.as_slice() {
        [] => false,
        [only] => alnum(*only),
        [first, middle @ .., last] => {
            chars.len() <= 63
                && alnum(*first)
                && alnum(*last)
                && middle.iter().all(|&c| alnum(c) || c == '-')
        }
    }
}

/// `^[A-Za-z0-9._-]{1,64}$` (a node or runner id).
pub fn name_grammar(s: &str) -> bool {
    let n = s.chars().count();
    (1..=64).contains(&n)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `[A-Za-z_][A-Za-z0-9_]*` of at most [`limits::MAX_ENV_NAME`] characters.
pub fn env_name_grammar(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.chars().count() <= limits::MAX_ENV_NAME
}

/// A mount target as the Docker engine reads it: backslashes as slashes, `.` and empty
/// components dropped (`path.Clean`); `None` when it names the root, which the engine refuses.
pub fn clean_mount_target(path: &str) -> Option<String> {
    let parts: Vec<&str> = path
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    (!parts.is_empty()).then(|| format!("/{}", parts.join("/")))
}

/// What every accepted set of volumes must be: DNS-label names, each once; absolute mount
/// targets that are not the root, without `..`, `:`, `,` or control characters; and no two on
/// the same target (the engine refuses a duplicate mount point at deploy).
pub fn assert_volumes_deployable(volumes: &[VolumeSpec]) {
    assert!(volumes.len() <= limits::MAX_VOLUMES);
    let mut names = std::collections::BTreeSet::new();
    let mut targets = std::collections::BTreeSet::new();
    for v in volumes {
        assert!(dns_label_grammar(&v.name), "volume name {:?}", v.name);
        assert!(names.insert(v.name.as_str()), "volume {:?} twice", v.name);
        let path = Path::new(&v.mount_path);
        assert!(path.is_absolute(), "mountPath {:?}", v.mount_path);
        assert!(
            !path.components().any(|c| c == Component::ParentDir),
            "mountPath {:?} has ..",
            v.mount_path
        );
        assert!(
            !v.mount_path.contains([':', ',']) && !v.mount_path.chars().any(char::is_control),
            "mountPath {:?}",
            v.mount_path
        );
        assert!(v.mount_path.len() <= limits::MAX_PATH);
        let target = clean_mount_target(&v.mount_path)
            .unwrap_or_else(|| panic!("mountPath {:?} is the root", v.mount_path));
        assert!(
            targets.insert(target),
            "two volumes on one mount point: {volumes:?}"
        );
    }
}

/// Whether `path` stays inside the folder it is relative to: not absolute, no `..`
/// component, no control character, not empty.
pub fn stays_inside(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.is_relative()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && !path.chars().any(char::is_control)
}

/// What every accepted build must be: paths that stay inside the clone, a repository URL of an
/// allowed scheme and a commit that git cannot read as an option.
pub fn assert_build_safe(build: &BuildSpec) {
    for path in [&build.dockerfile_path, &build.build_context] {
        assert!(stays_inside(path), "build path {path:?} leaves the clone");
        // Joined under the clone, lexically it stays there.
        let joined = Path::new("/clone").join(&build.build_context).join(path);
        assert!(joined.starts_with("/clone"), "{joined:?}");
    }
    assert!(
        ["http://", "https://", "git://", "file://"]
            .iter()
            .any(|s| build.repo_url.starts_with(s)),
        "repoUrl {:?}",
        build.repo_url
    );
    assert!(
        !build
            .repo_url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control()),
        "repoUrl {:?}",
        build.repo_url
    );
    if let Some(commit) = &build.commit {
        assert!(
            !commit.is_empty()
                && !commit.starts_with('-')
                && commit
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')),
            "commit {commit:?}"
        );
    }
}

/// A container user the engine reads as `user[:group]` and never as an option.
pub fn assert_user_plain(user: &str) {
    let parts: Vec<&str> = user.split(':').collect();
    assert!((1..=2).contains(&parts.len()), "user {user:?}");
    for part in parts {
        assert!(
            !part.is_empty()
                && !part.starts_with('-')
                && part.chars().count() <= 32
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')),
            "user {user:?}"
        );
    }
}

/// Serialising `value` and reading it back gives it again, and serialising that gives the
/// same JSON (what is stored is what is read). Numbers are compared as `f64` to within a few
/// units in the last place: serde_json (without its `float_roundtrip` feature, as the services
/// build it) may read a long decimal back as a neighbouring `f64` (docs/security.md, "Fuzzing").
pub fn assert_round_trip<T: Serialize + DeserializeOwned + Debug>(value: &T) -> T {
    let json = serde_json::to_string(value).expect("a value serialises");
    let back: T = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("{value:?} serialised as {json} does not read back: {e}"));
    assert_same_json(value, &back);
    back
}

/// `a` and `b` serialise to the same JSON, numbers to within a few units in the last place.
pub fn assert_same_json<T: Serialize + Debug>(a: &T, b: &T) {
    let (x, y) = (
        serde_json::to_value(a).unwrap(),
        serde_json::to_value(b).unwrap(),
    );
    assert!(json_close(&x, &y), "{a:?} is not {b:?}");
}

/// Whether two JSON values are equal, numbers to within 1e-15 of their size.
fn json_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x == y => true,
            (Some(x), Some(y)) => (x - y).abs() <= 1e-15 * x.abs().max(y.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

/// A refusal's message stays short whatever was sent: echoed values are cut to 80 characters
/// (which `{:?}` may escape to up to 10 each).
pub fn assert_short_message(message: &str) {
    assert!(
        message.chars().count() <= 1100,
        "a {}-character refusal: {:?}…",
        message.chars().count(),
        message.chars().take(200).collect::<String>()
    );
}
