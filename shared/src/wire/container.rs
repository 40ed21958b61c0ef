//! The one validation of what an app's container is made of, run by the control plane when a
//! job is created and by the agent when it is deployed, with the same limits
//! ([`super::limits`]), so a job the control plane accepts never fails at deploy for its input.
//! `docs/control-plane.md` lists the limits.

use std::collections::{BTreeMap, BTreeSet};

use super::job::{limits, Resources, VolumeSpec};
use crate::ids::{is_dns_label, truncate};
use crate::image::validate_image;

/// The parts of a deploy that both services check.
#[derive(Debug, Clone, Copy)]
pub struct ContainerInput<'a> {
    /// The image to run (none for a job that builds it first).
    pub image: Option<&'a str>,
    /// Every environment variable, plain and secret, in one map or several.
    pub env: &'a [&'a BTreeMap<String, String>],
    /// The port the app listens on.
    pub container_port: u16,
    /// The readiness path.
    pub health_check_path: Option<&'a str>,
    /// Memory and CPU limits.
    pub resources: &'a Resources,
    /// Named volumes.
    pub volumes: &'a [VolumeSpec],
}

/// Checks every part; the message names the first problem and what is allowed.
pub fn check_container(c: &ContainerInput<'_>) -> Result<(), String> {
    if let Some(image) = c.image {
        validate_image(image).map_err(|e| e.to_string())?;
    }
    check_env(c.env)?;
    if c.container_port == 0 {
        return Err("containerPort must be between 1 and 65535".into());
    }
    if let Some(path) = c.health_check_path {
        if !path.starts_with('/')
            || path.len() > limits::MAX_PATH
            || path.chars().any(|ch| ch.is_whitespace() || ch.is_control())
        {
            return Err(format!(
                "healthCheckPath {:?} must be an absolute URL path like /healthz of at most {} bytes, without spaces or control characters",
                truncate(path),
                limits::MAX_PATH
            ));
        }
    }
    check_resources(c.resources)?;
    check_volumes(c.volumes)
}

/// Whether `name` is a portable environment variable name.
pub fn is_env_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= limits::MAX_ENV_NAME
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

fn check_env(maps: &[&BTreeMap<String, String>]) -> Result<(), String> {
    let count: usize = maps.iter().map(|m| m.len()).sum();
    if count > limits::MAX_ENV {
        return Err(format!("at most {} environment variables", limits::MAX_ENV));
    }
    let mut total = 0;
    for (name, value) in maps.iter().flat_map(|m| m.iter()) {
        if !is_env_name(name) {
            return Err(format!(
                "environment variable name {:?} must match [A-Za-z_][A-Za-z0-9_]* (at most {} characters)",
                truncate(name),
                limits::MAX_ENV_NAME
            ));
        }
        if value.len() > limits::MAX_ENV_VALUE || value.contains('\0') {
            return Err(format!(
                "the value of {name} must be at most {} bytes, without NUL",
                limits::MAX_ENV_VALUE
            ));
        }
        total += name.len() + value.len();
    }
    if total > limits::MAX_ENV_BYTES {
        return Err(format!(
            "the environment variables' names and values come to {total} bytes; at most {} are allowed",
            limits::MAX_ENV_BYTES
        ));
    }
    Ok(())
}

fn check_resources(r: &Resources) -> Result<(), String> {
    if let Some(mb) = r.memory_mb {
        if !(limits::MIN_MEMORY_MB..=limits::MAX_MEMORY_MB).contains(&mb) {
            return Err(format!(
                "resources.memoryMb must be between {} and {}",
                limits::MIN_MEMORY_MB,
                limits::MAX_MEMORY_MB
            ));
        }
    }
    if let Some(cpus) = r.cpus {
        if !cpus.is_finite() || !(limits::MIN_CPUS..=limits::MAX_CPUS).contains(&cpus) {
            return Err(format!(
                "resources.cpus must be between {} and {}",
                limits::MIN_CPUS,
                limits::MAX_CPUS
            ));
        }
    }
    Ok(())
}

fn check_volumes(volumes: &[VolumeSpec]) -> Result<(), String> {
    if volumes.len() > limits::MAX_VOLUMES {
        return Err(format!("at most {} volumes", limits::MAX_VOLUMES));
    }
    let mut seen = BTreeSet::new();
    let mut targets = BTreeSet::new();
    for v in volumes {
        if !is_dns_label(&v.name) {
            return Err(format!(
                "volume name {:?} must be a DNS label",
                truncate(&v.name)
            ));
        }
        if !seen.insert(v.name.as_str()) {
            return Err(format!("volume {} is declared twice", v.name));
        }
        let target = mount_target(&v.mount_path);
        let path_ok = v.mount_path.starts_with('/')
            && v.mount_path.len() <= limits::MAX_PATH
            && target != "/"
            && !v.mount_path.contains([':', ',', '\\'])
            && !v.mount_path.chars().any(char::is_control)
            && v.mount_path.split('/').all(|p| p != "..");
        if !path_ok {
            return Err(format!(
                "volume {}: mountPath must be an absolute path other than / without '..', ':', ',' or '\\'",
                v.name
            ));
        }
        if !targets.insert(target) {
            return Err(format!(
                "volume {}: another volume is mounted on {} already",
                v.name,
                truncate(&v.mount_path)
            ));
        }
    }
    Ok(())
}

/// The mount point the Docker engine makes of `path` (`//data/./` is `/data`): it refuses the
/// root and two mounts on one point, however they are spelled.
fn mount_target(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        env: &'a [&'a BTreeMap<String, String>],
        resources: &'a Resources,
    ) -> ContainerInput<'a> {
        ContainerInput {
            image: Some("127.0.0.1:5000/demo:v1"),
            env,
            container_port: 8080,
            health_check_path: Some("/healthz"),
            resources,
            volumes: &[],
        }
    }

    #[test]
    fn the_limits_hold_at_their_edges() {
        let none = Resources::default();
        let env: BTreeMap<String, String> = (0..limits::MAX_ENV)
            .map(|i| (format!("V{i}"), "x".to_owned()))
            .collect();
        assert!(check_container(&input(&[&env], &none)).is_ok());
        let one_more: BTreeMap<String, String> = [("SECRET".to_owned(), "x".to_owned())].into();
        assert!(check_container(&input(&[&env, &one_more], &none))
            .unwrap_err()
            .contains("at most 128"));
        let big = "x".repeat(limits::MAX_ENV_VALUE);
        let heavy: BTreeMap<String, String> =
            (0..20).map(|i| (format!("V{i}"), big.clone())).collect();
        assert!(check_container(&input(&[&heavy], &none))
            .unwrap_err()
            .contains("bytes"));
        let edges = Resources {
            memory_mb: Some(limits::MIN_MEMORY_MB),
            cpus: Some(limits::MAX_CPUS),
        };
        assert!(check_container(&input(&[], &edges)).is_ok());
        let too_many_cpus = Resources {
            cpus: Some(limits::MAX_CPUS + 1.0),
            ..edges
        };
        assert!(check_container(&input(&[], &too_many_cpus))
            .unwrap_err()
            .contains("cpus"));
    }

    /// Found by the `volumes` fuzz target: the engine refuses these at deploy (`destination
    /// can't be '/'`, `Duplicate mount point`), so the control plane must refuse them at create.
    #[test]
    fn volumes_on_the_root_or_on_one_mount_point_are_refused() {
        let none = Resources::default();
        let check = |mounts: &[(&str, &str)]| {
            let volumes: Vec<VolumeSpec> = mounts
                .iter()
                .map(|(name, path)| VolumeSpec {
                    name: (*name).into(),
                    mount_path: (*path).into(),
                })
                .collect();
            check_container(&ContainerInput {
                volumes: &volumes,
                ..input(&[], &none)
            })
        };
        for root in ["/", "//", "/////", "/.", "/./", "/\\"] {
            let err = check(&[("data", root)]).unwrap_err();
            assert!(err.contains("mountPath"), "{root:?}: {err}");
        }
        for (a, b) in [
            ("/data", "/data"),
            ("/data", "/data/"),
            ("/data", "//./data"),
        ] {
            let err = check(&[("one", a), ("two", b)]).unwrap_err();
            assert!(err.contains("mounted on"), "{a:?} {b:?}: {err}");
        }
        assert_eq!(check(&[("one", "/data"), ("two", "/data/cache")]), Ok(()));
    }

    #[test]
    fn a_health_check_path_has_no_control_characters() {
        let none = Resources::default();
        let mut c = input(&[], &none);
        c.health_check_path = Some("/ready\u{7}");
        assert!(check_container(&c).unwrap_err().contains("healthCheckPath"));
    }
}
