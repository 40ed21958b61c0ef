//! MySQL / MariaDB storage. Claims lock pending rows with `FOR UPDATE SKIP LOCKED` (MariaDB
//! 10.6+, MySQL 8+); a unique index on a generated column (`running_app`, the app id while the
//! job is `RUNNING`, else NULL) keeps one running job per app, as PostgreSQL's partial index does.
//! The statements are `sql/mysql.sql`'s; this module holds the connection settings, the
//! claim's pick and its retries.

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::Executor;

use super::claim::Candidate;
use super::primitives::{database_primitives, with_placements, Pick, Tuned};
use super::sql::mysql as statements;
use super::transitions::SqlStore;
use super::{StoreError, StoreResult};

database_primitives! {
    handle: MySql,
    conn: MySqlConn,
    keeps: {},
    driver: sqlx::MySql,
    connection: sqlx::MySqlConnection,
    statements: statements,
    cache_nodes: true,
    hold_outbox: true,
    insert_job: last_insert_id,
    claim_retry: retry,
}

/// Storage on MySQL or MariaDB.
pub type MySqlStore = SqlStore<MySql>;

/// MariaDB's "deadlock found": InnoDB rolled the transaction back and it may simply run again.
const ER_LOCK_DEADLOCK: &str = "40001";

/// How many times a claim that lost a race or a deadlock runs again before it fails.
const CLAIM_TRIES: u32 = 10;

/// Connects and applies the migrations in `migrations/mysql`.
pub async fn connect(url: &str) -> anyhow::Result<MySqlStore> {
    let url = url.replacen("mariadb://", "mysql://", 1);
    let pool = MySqlPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(super::ACQUIRE_TIMEOUT)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await?;
    sqlx::migrate!("../migrations/mysql").run(&pool).await?;
    Ok(SqlStore::new(MySql { pool }))
}

/// Two claims can pick two jobs of one app at once; the unique index on running jobs lets one
/// win and the other run again (it then sees the app busy and moves on). InnoDB also picks
/// deadlock victims among batches whose writes take gap locks on neighbouring keys of the
/// unique indexes; a victim waits a little, at random, so victims that retry together do not
/// meet again.
fn retry(error: &StoreError, tries: u32) -> Option<Duration> {
    let StoreError::Database(sqlx::Error::Database(e)) = error else {
        return None;
    };
    let retryable = e.is_unique_violation() || e.code().as_deref() == Some(ER_LOCK_DEADLOCK);
    (retryable && tries < CLAIM_TRIES).then(|| {
        let most = 5 * u64::from(tries + 1);
        Duration::from_millis(rand::thread_rng().gen_range(1..=most))
    })
}

#[async_trait]
impl Tuned for MySqlConn<sqlx::Transaction<'static, sqlx::MySql>> {
    async fn pick(&mut self, pick: Pick<'_>) -> StoreResult<Vec<Candidate>> {
        let mut q = super::sql::pick_jobs(pick.now, pick.skipped, pick.want, statements::PICK_LOCK);
        let rows = q.build_query_as().fetch_all(&mut *self.c).await?;
        with_placements(self, rows).await
    }
}
