//! A fresh, empty database per test on each of the three real databases.
//!
//! PostgreSQL and MariaDB are reached at their usual local addresses unless
//! `BERTH_TEST_POSTGRES_URL` / `BERTH_TEST_MYSQL_URL` name an admin connection elsewhere.
//! `scripts/test` makes sure both servers run before the tests start.

use sqlx::Connection;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// PostgreSQL.
    Postgres,
    /// MariaDB / MySQL.
    MySql,
    /// An SQLite file in a temporary folder.
    Sqlite,
}

/// A database made for one test, removed when the value is dropped — also when its test
/// panics, as the value is dropped while the panic unwinds.
pub struct TestDb {
    /// What to pass as `BERTH_DATABASE_URL`.
    pub url: String,
    kind: DbKind,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

fn postgres_admin() -> String {
    std::env::var("BERTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn mysql_admin() -> String {
    std::env::var("BERTH_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into())
}

fn replace_db(url: &str, name: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/{name}")
}

/// Creates an empty database of `kind` with a random name.
pub async fn fresh_db(kind: DbKind) -> TestDb {
    let name = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
    match kind {
        DbKind::Postgres => {
            let admin = postgres_admin();
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin} ({e}); run scripts/test, which starts it"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create database");
            TestDb {
                url: replace_db(&admin, &name),
                kind,
                name,
                _dir: None,
            }
        }
        DbKind::MySql => {
            let admin = mysql_admin();
            let mut conn = sqlx::MySqlConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("MariaDB is not reachable at {admin} ({e}); run scripts/test, which starts it"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create database");
            TestDb {
                url: replace_db(&admin, &name),
                kind,
                name,
                _dir: None,
            }
        }
        DbKind::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("berth.db").display()
            );
            TestDb {
                url,
                kind,
                name,
                _dir: Some(dir),
            }
        }
    }
}

impl TestDb {
    /// Drops the database now (the same as dropping the value; SQLite's folder goes with it).
    pub async fn drop_db(self) {
        drop(self);
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {}", self.name);
        let kind = self.kind;
        if kind == DbKind::Sqlite {
            return;
        }
        // `Drop` cannot await, and may run inside or outside a runtime (or while one shuts
        // down): a thread of its own, with its own small runtime, drops the database.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(async move {
                match kind {
                    DbKind::Postgres => {
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin()).await {
                            let _ = sqlx::query(&format!("{sql} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                        }
                    }
                    DbKind::MySql => {
                        if let Ok(mut conn) = sqlx::MySqlConnection::connect(&mysql_admin()).await {
                            let _ = sqlx::query(&sql).execute(&mut conn).await;
                        }
                    }
                    DbKind::Sqlite => {}
                }
            });
        });
        let _ = dropped.join();
    }
}

/// Declares one `#[tokio::test]` per database that runs `$body(kind)`:
/// `per_database!(claims_are_exclusive, |kind| async move { ... });`
#[macro_export]
macro_rules! per_database {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                ($body)($crate::common::db::DbKind::Postgres).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn mysql() {
                ($body)($crate::common::db::DbKind::MySql).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                ($body)($crate::common::db::DbKind::Sqlite).await
            }
        }
    };
}
