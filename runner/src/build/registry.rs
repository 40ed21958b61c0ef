//! The runner's registry login, as a private Docker client configuration: in a temporary
//! folder of its own under the system temp folder, never under the work folder that holds the
//! clones (a build context that escaped its clone still finds nothing there), readable only by
//! the runner's user, and removed when the build ends. Without credentials the folder is empty,
//! so the host's `~/.docker` never reaches a build or a push either.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tempfile::TempDir;

use crate::config::RegistryCredentials;
use crate::error::JobError;

/// A Docker client configuration folder for one build (`docker --config`).
#[derive(Debug)]
pub struct DockerConfig {
    dir: TempDir,
}

impl DockerConfig {
    /// Writes `registry`'s login (or nothing) into a fresh folder. The Docker client sends a
    /// login only to the host it is for, so a `FROM` or push to another registry gets none.
    pub fn write(registry: Option<&RegistryCredentials>) -> Result<Self, JobError> {
        let failed = |e: std::io::Error| {
            JobError::retryable(format!(
                "cannot write the build's registry configuration: {e}"
            ))
        };
        let dir = tempfile::Builder::new()
            .prefix("berth-docker-config-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(failed)?;
        let auths = match registry {
            Some(r) => {
                let auth = base64(format!("{}:{}", r.username, r.password.expose()).as_bytes());
                serde_json::json!({ r.server.as_str(): { "auth": auth } })
            }
            None => serde_json::json!({}),
        };
        let config = serde_json::json!({ "auths": auths });
        std::fs::write(dir.path().join("config.json"), config.to_string()).map_err(failed)?;
        Ok(Self { dir })
    }

    /// The folder to pass as `docker --config`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Standard base64 with padding (what Docker's `config.json` `auth` holds).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_shared::secret::Secret;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn the_login_lives_in_a_private_folder_outside_the_work_dir_and_goes_away() {
        let work_dir = std::env::temp_dir().join("berth-runner");
        let creds = RegistryCredentials {
            server: "127.0.0.1:5000".into(),
            username: "u".into(),
            password: Secret::new("p"),
        };
        let config = DockerConfig::write(Some(&creds)).unwrap();
        let path = config.path().to_owned();
        assert!(!path.starts_with(&work_dir), "{}", path.display());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the runner's user may read it");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.join("config.json")).unwrap()).unwrap();
        assert_eq!(json["auths"]["127.0.0.1:5000"]["auth"], base64(b"u:p"));
        drop(config);
        assert!(!path.exists());

        let empty = DockerConfig::write(None).unwrap();
        let json = std::fs::read_to_string(empty.path().join("config.json")).unwrap();
        assert_eq!(json, r#"{"auths":{}}"#);
    }
}
