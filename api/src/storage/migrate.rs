//! The api's migrations, kept in its own table `api_schema_migrations`: the control plane's
//! sqlx migrator owns `_sqlx_migrations` and refuses versions it does not know, and the two
//! services may share one database (`berth dev` does).

use sqlx::Row;

use super::{sql, Dialect, Store, StoreResult};

/// A numbered migration: its statements, separated by `;` at the end of a line.
struct Migration {
    version: i64,
    name: &'static str,
    postgres: &'static str,
    mysql: &'static str,
    sqlite: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "api",
    postgres: include_str!("../../migrations/postgres/0001_api.sql"),
    mysql: include_str!("../../migrations/mysql/0001_api.sql"),
    sqlite: include_str!("../../migrations/sqlite/0001_api.sql"),
}];

/// Applies the migrations `store`'s database has not seen, in order.
pub async fn run(store: &Store) -> StoreResult<()> {
    sqlx::query(sql::CREATE_MIGRATIONS)
        .execute(&store.pool)
        .await?;
    let applied: Vec<i64> = sqlx::query(sql::SELECT_MIGRATIONS)
        .fetch_all(&store.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let text = match store.dialect {
            Dialect::Postgres => m.postgres,
            Dialect::MySql => m.mysql,
            Dialect::Sqlite => m.sqlite,
        };
        // MariaDB commits each DDL statement on its own; the statements are written to be
        // re-run safely (IF NOT EXISTS) should a start-up stop half-way.
        let mut tx = store.pool.begin().await?;
        for statement in statements(text) {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        sqlx::query(&store.q(sql::INSERT_MIGRATION))
            .bind(m.version)
            .bind(m.name)
            .bind(chrono::Utc::now().timestamp_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version = m.version, name = m.name, "api migration applied");
    }
    Ok(())
}

/// The statements of a migration file, without comments.
fn statements(text: &str) -> impl Iterator<Item = &str> {
    text.split(";\n").map(str::trim).filter(|s| {
        s.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
    })
}
