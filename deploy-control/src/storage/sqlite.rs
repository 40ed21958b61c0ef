//! Placeholder being replaced by the sqlite implementation (work in progress in this session).

/// Storage on sqlite.
#[derive(Debug, Clone)]
pub struct SqliteStore;

impl SqliteStore {
    /// Connects and applies the migrations.
    pub async fn connect(_url: &str) -> anyhow::Result<super::postgres::PgStore> {
        anyhow::bail!("sqlite storage is not built yet")
    }
}
