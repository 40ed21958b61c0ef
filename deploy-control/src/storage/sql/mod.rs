//! Every SQL statement of the store, named. Each database has one file of named, commented
//! statements — `postgres.sql`, `mysql.sql`, `sqlite.sql` beside this module — that `build.rs`
//! turns into the constants of [`postgres`], [`mysql`] and [`sqlite`]. The few statements whose
//! text depends on the call (a filter's conditions, a list of ids, a batch of rows) are built
//! here, once for every database, with `sqlx::QueryBuilder`.

use sqlx::{Database, Encode, QueryBuilder, Type};
use uuid::Uuid;

use super::JobFilter;
use crate::queue::Millis;

/// PostgreSQL's statements (`postgres.sql`).
pub mod postgres {
    include!(concat!(env!("OUT_DIR"), "/postgres.rs"));
}

/// MySQL's and MariaDB's statements (`mysql.sql`).
pub mod mysql {
    include!(concat!(env!("OUT_DIR"), "/mysql.rs"));
}

/// SQLite's statements (`sqlite.sql`).
pub mod sqlite {
    include!(concat!(env!("OUT_DIR"), "/sqlite.rs"));
}

/// `GET /deploy/jobs`' query: the jobs matching `filter`, newest first. (`l.key` needs no
/// quotes after its qualifier, even in MySQL, where `KEY` is reserved.)
pub fn list_jobs<'a, DB>(filter: &JobFilter) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("SELECT * FROM deploy_job j WHERE TRUE");
    if let Some(app) = &filter.app_id {
        q.push(" AND j.app_id = ").push_bind(app.clone());
    }
    if let Some(state) = filter.state {
        q.push(" AND j.state = ").push_bind(state.as_str());
    }
    if let Some((key, value)) = &filter.label {
        q.push(" AND EXISTS (SELECT 1 FROM job_label l WHERE l.job_seq = j.seq AND l.key = ")
            .push_bind(key.clone())
            .push(" AND l.value = ")
            .push_bind(value.clone())
            .push(")");
    }
    if let Some(before) = filter.before_seq {
        q.push(" AND j.seq < ").push_bind(before);
    }
    q.push(" ORDER BY j.seq DESC LIMIT ")
        .push_bind(i64::from(filter.limit));
    q
}

/// The `INSERT` of a job's log lines, all at `now`, in one statement.
pub fn insert_logs<'a, DB>(job_id: Uuid, lines: &[String], now: Millis) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("INSERT INTO job_log (job_id, at, line) ");
    q.push_values(lines, |mut b, line| {
        b.push_bind(job_id.to_string())
            .push_bind(now)
            .push_bind(line.clone());
    });
    q
}

/// The unpublished events before `seq` but those in `taken`, `(seq, body)`: the rows another
/// relay holds, which events of the same subject must not overtake.
pub fn unpublished_before<'a, DB>(seq: i64, taken: &[i64]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT seq, body FROM outbox_event WHERE published_at IS NULL AND seq < ",
    );
    q.push_bind(seq);
    if !taken.is_empty() {
        q.push(" AND seq NOT IN (");
        let mut list = q.separated(", ");
        for seq in taken {
            list.push_bind(*seq);
        }
        q.push(")");
    }
    q
}

/// `UPDATE` marking the outbox rows `seqs` published at `now`.
pub fn mark_published<'a, DB>(now: Millis, seqs: &[i64]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("UPDATE outbox_event SET published_at = ");
    q.push_bind(now).push(" WHERE seq IN (");
    let mut list = q.separated(", ");
    for seq in seqs {
        list.push_bind(*seq);
    }
    q.push(")");
    q
}
