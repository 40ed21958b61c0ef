//! Placeholder being replaced by the mysql implementation (work in progress in this session).

/// Storage on mysql.
#[derive(Debug, Clone)]
pub struct MySqlStore;

impl MySqlStore {
    /// Connects and applies the migrations.
    pub async fn connect(_url: &str) -> anyhow::Result<super::postgres::PgStore> {
        anyhow::bail!("mysql storage is not built yet")
    }
}
