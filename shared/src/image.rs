//! Container image references, checked the way the Docker engine parses them:
//! `[registry[:port]/]path[:tag][@sha256:digest]`.

use crate::ids::truncate;

/// Why an image reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image {image:?} is not a valid reference: {reason}")]
pub struct InvalidImage {
    /// The reference as given (shortened).
    pub image: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks an image reference with an optional tag and digest (`registry:5000/team/app:v1`).
pub fn validate_image(image: &str) -> Result<(), InvalidImage> {
    let fail = |reason| InvalidImage {
        image: truncate(image),
        reason,
    };
    if image.is_empty() || image.len() > 255 {
        return Err(fail("it must be 1 to 255 characters"));
    }
    let (name_and_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| fail("a digest must start with sha256:"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(fail("a sha256 digest has 64 hex characters"));
        }
    }
    // A tag follows the last ':' after the last '/'; a ':' before it is a registry port.
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_and_tag[..last_slash + i],
            Some(&name_and_tag[last_slash + i + 1..]),
        ),
        None => (name_and_tag, None),
    };
    if let Some(tag) = tag {
        if !is_tag(tag) {
            return Err(fail(
                "a tag is 1 to 128 characters of A-Z, a-z, 0-9, '_', '.' and '-', not starting with '.' or '-'",
            ));
        }
    }
    validate_repository(name).map_err(fail)
}

/// Checks a repository name without tag or digest (`registry:5000/team/app`), as used for
/// `imageRepo` in build jobs.
pub fn validate_repository_ref(repo: &str) -> Result<(), InvalidImage> {
    validate_repository(repo).map_err(|reason| InvalidImage {
        image: truncate(repo),
        reason,
    })
}

/// Docker Hub, where references without a registry host are pulled from.
pub const DOCKER_HUB: &str = "docker.io";

/// The registry an image reference is pulled from, as the Docker engine reads it: the first path
/// component when it names a host (it has a '.' or ':' or is `localhost`), else Docker Hub.
/// Lowercased, since host names are case-insensitive.
pub fn registry_host(image: &str) -> String {
    named_registry(image).unwrap_or_else(|| DOCKER_HUB.to_owned())
}

/// The registry host a reference names itself (`127.0.0.1:5000/app`, `docker.io/team/app`),
/// lowercased; `None` for a bare name (`team/app`), which Docker reads as Docker Hub.
pub fn named_registry(image: &str) -> Option<String> {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            Some(normalize_registry(first))
        }
        _ => None,
    }
}

/// A registry address as credentials name it (`https://host:port/v1/`, `host:port`), reduced to
/// the `host[:port]` form [`registry_host`] returns; Docker Hub's aliases become `docker.io`.
pub fn normalize_registry(server: &str) -> String {
    let server = server.trim();
    let without_scheme = server.split_once("://").map_or(server, |(_, rest)| rest);
    let host = without_scheme
        .split('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

/// Whether credentials for the registry `server` are for the registry `image` is pulled from:
/// only then may they be sent with its pull.
pub fn credentials_fit(server: &str, image: &str) -> bool {
    let server = normalize_registry(server);
    !server.is_empty() && server == registry_host(image)
}

fn validate_repository(name: &str) -> Result<(), &'static str> {
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("it has an empty path component");
    }
    // The first component is a registry host when it has a '.' or ':' or is localhost.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        if !is_registry_host(host) {
            return Err("the registry host is not a valid host[:port]");
        }
    }
    if parts.iter().all(|p| is_path_component(p)) {
        Ok(())
    } else {
        Err("path components are lowercase letters and digits, separated by '.', '_', '__' or '-'")
    }
}

fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_path_component(part: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = part.as_bytes();
    if !bytes.first().is_some_and(|b| alnum(*b)) || !bytes.last().is_some_and(|b| alnum(*b)) {
        return false;
    }
    // Separators are '.', '_', '__' or runs of '-', always between alphanumerics.
    let mut run = String::new();
    for &b in bytes {
        if alnum(b) {
            if !matches!(run.as_str(), "" | "." | "_" | "__") && !run.bytes().all(|c| c == b'-') {
                return false;
            }
            run.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            run.push(b as char);
        } else {
            return false;
        }
    }
    true
}

fn is_registry_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    port_ok && name_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_references() {
        for ok in [
            "nginx",
            "nginx:1.27",
            "library/nginx:latest",
            "127.0.0.1:5000/team/app:abc123",
            "localhost:5000/app",
            "registry.example.com/a/b/c:v1.2.3-rc_1",
            "my_app__x.y-z:tag",
            &format!("app@sha256:{}", "a".repeat(64)),
        ] {
            assert!(validate_image(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_broken_references() {
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "a//b",
            "/a",
            "a/",
            "app@sha256:zz",
            "app@md5:aa",
            "has space",
            "a_-b",
            "host:99999999/app",
            &"a".repeat(300),
        ] {
            assert!(validate_image(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_registry_of_a_reference_is_its_host() {
        assert_eq!(
            registry_host("127.0.0.1:5000/team/app:v1"),
            "127.0.0.1:5000"
        );
        assert_eq!(
            registry_host("Registry.Example.com/a"),
            "registry.example.com"
        );
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(registry_host("team/app:v1"), DOCKER_HUB);
        assert_eq!(registry_host("nginx"), DOCKER_HUB);
        assert_eq!(named_registry("team/app"), None);
        assert_eq!(
            named_registry("docker.io/team/app").as_deref(),
            Some(DOCKER_HUB)
        );
        assert!(credentials_fit(
            "https://127.0.0.1:5000/v2/",
            "127.0.0.1:5000/app:1"
        ));
        assert!(credentials_fit("https://index.docker.io/v1/", "team/app"));
        assert!(!credentials_fit("127.0.0.1:5000", "127.0.0.1:5001/app:1"));
        assert!(!credentials_fit("127.0.0.1:5000", "team/app"));
        assert!(!credentials_fit(
            "registry.example.com",
            "registry.example.com.evil.io/app"
        ));
        assert!(!credentials_fit("", "app"));
    }

    #[test]
    fn repositories_have_no_tag() {
        assert!(validate_repository_ref("127.0.0.1:5000/team/app").is_ok());
        assert!(validate_repository_ref("team/app:v1").is_err());
    }
}
