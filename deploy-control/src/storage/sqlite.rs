//! SQLite storage, the embedded default. SQLite has no row locks and no `SKIP LOCKED`: the store
//! has one connection, and every change runs in a `BEGIN IMMEDIATE` transaction on it, so
//! changes (claims among them) run one at a time and each sees all the others. WAL lets other
//! processes read meanwhile; `busy_timeout` makes a second writer wait rather than fail.
//! The statements are `sql/sqlite.sql`'s.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::claim::Candidate;
use super::primitives::{database_primitives, with_placements, Pick, Tuned};
use super::sql::sqlite as statements;
use super::transitions::SqlStore;
use super::StoreResult;

database_primitives! {
    handle: Sqlite,
    conn: SqliteConn,
    keeps: {},
    driver: sqlx::Sqlite,
    connection: sqlx::SqliteConnection,
    statements: statements,
    cache_nodes: false,
    hold_outbox: false,
    insert_job: returning_seq,
    // The single writer sees every earlier claim: no race to retry.
    claim_retry: |_, _| None,
}

/// Storage in an SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

/// Opens (creating it and its folder when missing) the file `url` names and applies the
/// migrations in `migrations/sqlite`.
pub async fn connect(url: &str) -> anyhow::Result<SqliteStore> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    if let Some(folder) = options
        .get_filename()
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(folder)?;
    }
    // One connection: the single writer that makes every change, claims included, exclusive.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
    Ok(SqlStore::new(Sqlite { pool }))
}

#[async_trait]
impl Tuned for SqliteConn<sqlx::Transaction<'static, sqlx::Sqlite>> {
    async fn pick(&mut self, pick: Pick<'_>) -> StoreResult<Vec<Candidate>> {
        // No lock clause: the single writer is the lock.
        let mut q = super::sql::pick_jobs(pick.now, pick.skipped, pick.want, "");
        let rows = q.build_query_as().fetch_all(&mut *self.c).await?;
        with_placements(self, rows).await
    }
}
