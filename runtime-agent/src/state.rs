//! The agent's state folder: its node id (when none is configured) next to the route table,
//! its credential and its grant keys, private files written whole.

use std::path::Path;

use anyhow::Context;
use berth_shared::ids::NodeId;

const NODE_ID_FILE: &str = "node-id";

/// Writes `bytes` to `path` whole (through a temporary file renamed over it, so a crash
/// leaves the old content or the new, never half), readable by its owner only (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut out = open_private(&tmp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A new file only its owner can read.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // `mode` applies to a new file only: an old one keeps its mode otherwise.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// The configured node id, else the one kept in `state_dir`, else a new one written there.
pub fn node_id(configured: Option<&NodeId>, state_dir: &Path) -> anyhow::Result<NodeId> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating the state folder {}", state_dir.display()))?;
    if let Some(id) = configured {
        return Ok(id.clone());
    }
    let file = state_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => NodeId::parse(text.trim())
            .with_context(|| format!("the node id in {} is not valid", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId::parse(&format!("node-{}", uuid::Uuid::new_v4().simple()))
                .context("a generated node id is valid")?;
            std::fs::write(&file, format!("{id}\n"))
                .with_context(|| format!("writing {}", file.display()))?;
            tracing::info!(node_id = %id, "generated a node id");
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_is_kept() {
        let dir = std::env::temp_dir().join(format!("berth-state-{}", uuid::Uuid::new_v4()));
        let first = node_id(None, &dir).unwrap();
        assert_eq!(node_id(None, &dir).unwrap(), first);
        let configured = NodeId::parse("n1").unwrap();
        assert_eq!(node_id(Some(&configured), &dir).unwrap(), configured);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
