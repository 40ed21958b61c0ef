//! The storage contract: every test runs unchanged on PostgreSQL, MariaDB and SQLite, each on a
//! fresh database dropped at the end. Time is injected (`now`), never slept through.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use berth_control::queue::credential::{hash, CredentialRefused, NodeCredential};
use berth_control::queue::machine::Report;
use berth_control::queue::retry::RetryPolicy;
use berth_control::queue::{AgentUrlChange, JobRecord, Millis};
use berth_control::storage::{
    self, ClaimBatch, Claimed, Claimer, Created, JobFilter, JobSpec, LastSeen, NewJob, Store,
    StoreError,
};
use berth_shared::sealed::SealingKeys;
use berth_shared::wire::agent::AppState;
use berth_shared::wire::{
    Capacity, CreateJobRequest, JobKind, JobResult, JobState, NodeApp, NodeHeartbeat, NodeState,
    Outcome, Resources, Scheduling,
};
use futures::FutureExt;
use sqlx::Connection;
use uuid::Uuid;

use common::db::{fresh_db, DbKind};

const T0: Millis = 1_700_000_000_000;
const LEASE_MS: i64 = 30_000;
const TTL_MS: i64 = 15_000;
const LOST_MS: i64 = 30_000;
const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    base_ms: 5_000,
    cap_ms: 300_000,
};

/// A store over a fresh database, and where that database is, to count its rows.
#[derive(Clone)]
struct Env {
    store: Arc<dyn Store>,
    url: String,
    kind: DbKind,
}

/// Runs `test` on a fresh database of `kind` and drops the database, whether it passed or not.
async fn with_store<F, Fut>(kind: DbKind, test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = fresh_db(kind).await;
    let store = storage::connect(&db.url).await.expect("open the store");
    let env = Env {
        store,
        url: db.url.clone(),
        kind,
    };
    let outcome = AssertUnwindSafe(test(env)).catch_unwind().await;
    db.drop_db().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

impl Env {
    /// `outbox_event` rows by routing key.
    async fn outbox(&self) -> BTreeMap<String, i64> {
        let sql =
            "SELECT routing_key, CAST(COUNT(*) AS SIGNED) FROM outbox_event GROUP BY routing_key";
        let rows: Vec<(String, i64)> = match self.kind {
            DbKind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(&sql.replace("SIGNED", "BIGINT"))
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
            }
            DbKind::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
            }
            DbKind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(&sql.replace("SIGNED", "INTEGER"))
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
            }
        };
        rows.into_iter().collect()
    }

    /// The rows of `table`, counted with the database's own client.
    async fn rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let count = match self.kind {
            DbKind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(&sql).fetch_one(&mut c).await
            }
            DbKind::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(&sql).fetch_one(&mut c).await
            }
            DbKind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(&sql).fetch_one(&mut c).await
            }
        };
        count.unwrap()
    }

    async fn events(&self, key: &str) -> i64 {
        self.outbox().await.get(key).copied().unwrap_or(0)
    }

    async fn create(&self, app: &str, now: Millis) -> JobRecord {
        created(
            self.store
                .create_job(new_job(app, JobKind::Deploy, None, now))
                .await
                .unwrap(),
        )
    }

    async fn claim(&self, now: Millis) -> Option<Claimed> {
        claim_one(&*self.store, &claim_request("runner-1", now))
            .await
            .unwrap()
    }

    async fn succeed(&self, job: &JobRecord, now: Millis) -> JobRecord {
        let token = job.lease_token.as_deref().unwrap();
        self.store
            .report_job(job.job_id, token, success(), &POLICY, now)
            .await
            .unwrap()
    }

    /// Reports a final (not retryable) failure of `job`.
    async fn fail(&self, job: &JobRecord, now: Millis) -> JobRecord {
        let token = job.lease_token.as_deref().unwrap();
        self.store
            .report_job(job.job_id, token, failure(false), &POLICY, now)
            .await
            .unwrap()
    }

    /// The pending jobs, newest first.
    async fn pending(&self) -> Vec<JobRecord> {
        let pending = JobFilter {
            state: Some(JobState::Pending),
            ..filter()
        };
        self.store.list_jobs(&pending).await.unwrap()
    }

    /// Eight claimers at once, each claiming until nothing is left: every job claimed.
    async fn claim_concurrently(&self, now: Millis) -> Vec<JobRecord> {
        let claimers = (0..8).map(|w| {
            let store = self.store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(c) = claim_one(&*store, &claim_request(&format!("r{w}"), now))
                    .await
                    .unwrap()
                {
                    got.push(c.job);
                }
                got
            })
        });
        let mut all = Vec::new();
        for got in futures::future::join_all(claimers).await {
            all.extend(got.unwrap());
        }
        all
    }

    async fn heartbeat(&self, node: &str, max_apps: u32, now: Millis) {
        self.store
            .node_heartbeat(&heartbeat(node, max_apps), now)
            .await
            .unwrap();
    }
}

fn new_job(app: &str, kind: JobKind, key: Option<&str>, now: Millis) -> NewJob {
    let request = CreateJobRequest {
        app_id: app.to_owned(),
        kind,
        image: (kind == JobKind::Deploy).then(|| "nginx:1.27".to_owned()),
        labels: BTreeMap::from([("tenant".to_owned(), format!("t-{}", &app[..1]))]),
        ..Default::default()
    };
    NewJob {
        job_id: Uuid::now_v7(),
        job: JobSpec::seal(
            request.validate().expect("a valid job"),
            &SealingKeys::generate(),
        ),
        idempotency_key: key.map(str::to_owned),
        request_hash: format!("hash-{app}"),
        max_attempts: POLICY.max_attempts,
        now,
    }
}

fn created(c: Created) -> JobRecord {
    match c {
        Created::New(job) => job,
        Created::Existing(job) => panic!("expected a new job, got existing {}", job.job_id),
    }
}

/// A claim batch of one claimer, `runner`.
fn claim_request(runner: &str, now: Millis) -> ClaimBatch {
    ClaimBatch {
        claimers: vec![Claimer {
            runner_id: runner.to_owned(),
            lease_token: Uuid::new_v4().simple().to_string(),
        }],
        lease_expires_at: now + LEASE_MS,
        now,
        node_ttl_ms: TTL_MS,
        nodes_settled: true,
        node_lost_ms: Some(LOST_MS),
    }
}

/// The one claim of a [`claim_request`] batch: `None` when nothing is claimable.
async fn claim_one(store: &dyn Store, batch: &ClaimBatch) -> Result<Option<Claimed>, StoreError> {
    Ok(store.claim_jobs(batch).await?.into_iter().next())
}

fn heartbeat(node: &str, max_apps: u32) -> NodeHeartbeat {
    NodeHeartbeat {
        node_id: node.to_owned(),
        name: format!("host {node}"),
        agent_base_url: format!("http://{node}:7005"),
        gateway_base_url: format!("http://{node}:8088"),
        labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
        capacity: Capacity {
            cpus: 4.0,
            memory_mb: 8192,
            max_apps,
            max_sleeping_apps: 0,
        },
        apps: vec![],
        removed: vec![],
        version: "test".to_owned(),
    }
}

/// A heartbeat of `node` (room for `max_apps` awake and `max_sleeping` sleeping apps) that
/// reports `apps` as `(appId, state, error)`.
fn reporting(
    node: &str,
    max_apps: u32,
    max_sleeping: u32,
    apps: &[(&str, AppState, Option<&str>)],
) -> NodeHeartbeat {
    let mut hb = heartbeat(node, max_apps);
    hb.capacity.max_sleeping_apps = max_sleeping;
    hb.apps = apps
        .iter()
        .map(|(app, state, error)| NodeApp {
            app_id: (*app).to_owned(),
            container_id: format!("c-{app}"),
            image: "nginx:1.27".to_owned(),
            state: *state,
            error: error.map(str::to_owned),
            job_id: None,
        })
        .collect();
    hb
}

fn success() -> Report {
    Report {
        outcome: Outcome::Succeeded,
        error: None,
        retryable: false,
        result: Some(JobResult {
            container_id: Some("c1".into()),
            url: Some("http://app".into()),
            image: None,
        }),
    }
}

fn failure(retryable: bool) -> Report {
    Report {
        outcome: Outcome::Failed,
        error: Some("agent unreachable".into()),
        retryable,
        result: None,
    }
}

fn is_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

fn filter() -> JobFilter {
    JobFilter {
        limit: 100,
        ..Default::default()
    }
}

per_database!(create_get_and_list_with_filters_and_cursor, |kind| {
    with_store(kind, |env: Env| async move {
        let mut made = Vec::new();
        for (i, app) in ["alpha", "beta", "alpha", "gamma", "alpha"]
            .iter()
            .enumerate()
        {
            made.push(env.create(app, T0 + i as i64).await);
        }
        let got = env.store.get_job(made[1].job_id).await.unwrap();
        assert_eq!(got, made[1]);
        assert_eq!(
            (got.state, got.attempt, got.version),
            (JobState::Pending, 0, 1)
        );
        assert!(matches!(
            env.store.get_job(Uuid::now_v7()).await,
            Err(StoreError::JobNotFound(_))
        ));

        let all = env.store.list_jobs(&filter()).await.unwrap();
        let ids: Vec<_> = all.iter().map(|j| j.job_id).collect();
        let newest_first: Vec<_> = made.iter().rev().map(|j| j.job_id).collect();
        assert_eq!(ids, newest_first);

        let alpha = env
            .store
            .list_jobs(&JobFilter {
                app_id: Some("alpha".into()),
                ..filter()
            })
            .await
            .unwrap();
        assert_eq!(alpha.len(), 3);
        assert!(alpha.iter().all(|j| j.app_id == "alpha"));
        let by_label = JobFilter {
            label: Some(("tenant".into(), "t-g".into())),
            ..filter()
        };
        assert_eq!(env.store.list_jobs(&by_label).await.unwrap().len(), 1);
        let no_label = JobFilter {
            label: Some(("tenant".into(), "nobody".into())),
            ..filter()
        };
        assert!(env.store.list_jobs(&no_label).await.unwrap().is_empty());

        env.store.cancel_job(made[3].job_id, T0 + 10).await.unwrap();
        let cancelled = env
            .store
            .list_jobs(&JobFilter {
                state: Some(JobState::Cancelled),
                ..filter()
            })
            .await
            .unwrap();
        assert_eq!(
            cancelled.iter().map(|j| j.job_id).collect::<Vec<_>>(),
            vec![made[3].job_id]
        );

        // Pages of two, following the cursor (the last item's seq), newest first.
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = env
                .store
                .list_jobs(&JobFilter {
                    limit: 2,
                    before_seq: cursor,
                    ..filter()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            cursor = page.last().map(|j| j.seq);
            pages.push(page.iter().map(|j| j.job_id).collect::<Vec<_>>());
        }
        assert_eq!(pages.len(), 3);
        assert_eq!(pages.concat(), newest_first);
    })
});

per_database!(
    job_versions_name_each_existing_job_in_one_read_per_chunk,
    |kind| with_store(kind, |env: Env| async move {
        let a = env.create("alpha", T0).await;
        let b = env.create("beta", T0).await;
        env.store.cancel_job(b.job_id, T0 + 1).await.unwrap();
        // More ids than one statement takes: the rest go in further statements.
        let mut ids: Vec<Uuid> = (0..storage::VERSIONS_PER_READ + 1)
            .map(|_| Uuid::now_v7())
            .collect();
        ids.push(a.job_id);
        ids.push(b.job_id);
        let versions: HashMap<Uuid, i64> = env
            .store
            .job_versions(&ids)
            .await
            .unwrap()
            .into_iter()
            .collect();
        let b_now = env.store.get_job(b.job_id).await.unwrap();
        assert_eq!(
            versions,
            HashMap::from([(a.job_id, a.version), (b.job_id, b_now.version)])
        );
        assert!(b_now.version > b.version);
        assert!(env.store.job_versions(&[]).await.unwrap().is_empty());
    })
);

per_database!(idempotent_create, |kind| with_store(
    kind,
    |env: Env| async move {
        let first = created(
            env.store
                .create_job(new_job("alpha", JobKind::Deploy, Some("key-1"), T0))
                .await
                .unwrap(),
        );
        let again = env
            .store
            .create_job(new_job("alpha", JobKind::Deploy, Some("key-1"), T0 + 5))
            .await
            .unwrap();
        assert!(matches!(again, Created::Existing(ref j) if j.job_id == first.job_id));
        let mut other = new_job("alpha", JobKind::Deploy, Some("key-1"), T0 + 6);
        other.request_hash = "a different body".into();
        assert!(is_conflict(env.store.create_job(other).await));

        // Racing creates with one key make one job.
        let racers = (0..6).map(|_| {
            let store = env.store.clone();
            tokio::spawn(async move {
                store
                    .create_job(new_job("beta", JobKind::Deploy, Some("key-2"), T0))
                    .await
                    .unwrap()
            })
        });
        let ids: HashSet<Uuid> = futures::future::join_all(racers)
            .await
            .into_iter()
            .map(|r| match r.unwrap() {
                Created::New(j) | Created::Existing(j) => j.job_id,
            })
            .collect();
        assert_eq!(ids.len(), 1);
        assert_eq!(env.store.list_jobs(&filter()).await.unwrap().len(), 2);
        assert_eq!(env.events("job.created").await, 2);
    }
));

per_database!(two_claimers_race_for_one_job, |kind| with_store(
    kind,
    |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        let job = env.create("alpha", T0).await;
        let racers = ["r1", "r2"].map(|runner| {
            let store = env.store.clone();
            tokio::spawn(async move {
                claim_one(&*store, &claim_request(runner, T0 + 1))
                    .await
                    .unwrap()
            })
        });
        let won: Vec<Claimed> = futures::future::join_all(racers)
            .await
            .into_iter()
            .filter_map(|r| r.unwrap())
            .collect();
        assert_eq!(won.len(), 1, "exactly one claimer gets the job");
        let claimed = &won[0];
        assert_eq!(claimed.job.job_id, job.job_id);
        assert_eq!(
            (claimed.job.state, claimed.job.attempt),
            (JobState::Running, 1)
        );
        assert_eq!(
            claimed.node.as_ref().map(|n| n.node_id.as_str()),
            Some("node-a")
        );
        assert_eq!(env.store.get_job(job.job_id).await.unwrap(), claimed.job);
        assert_eq!(env.events("job.running").await, 1);
    }
));

per_database!(eight_claimers_over_5000_jobs_claim_each_once, |kind| {
    with_store(kind, |env: Env| async move {
        const JOBS: usize = 5_000;
        const APPS: usize = 1_250;
        env.heartbeat("node-a", 100_000, T0).await;
        let creators = (0..8).map(|w| {
            let env = env.clone();
            tokio::spawn(async move {
                for i in (w..JOBS).step_by(8) {
                    env.create(&format!("app-{}", i % APPS), T0).await;
                }
            })
        });
        for c in futures::future::join_all(creators).await {
            c.unwrap();
        }

        let claims: Arc<Mutex<HashMap<Uuid, usize>>> = Arc::default();
        let order: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
        let running: Arc<Mutex<HashSet<String>>> = Arc::default();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let claimers = (0..8).map(|w| {
            let (env, claims, order, running, done) = (
                env.clone(),
                claims.clone(),
                order.clone(),
                running.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                let now = T0 + 1;
                while done.load(std::sync::atomic::Ordering::SeqCst) < JOBS {
                    let Some(c) = claim_one(&*env.store, &claim_request(&format!("r{w}"), now))
                        .await
                        .unwrap()
                    else {
                        // Jobs left, but each behind its app's running job: let the others report.
                        tokio::task::yield_now().await;
                        continue;
                    };
                    let app = c.job.app_id.clone();
                    assert!(
                        running.lock().unwrap().insert(app.clone()),
                        "two RUNNING jobs of {app}"
                    );
                    *claims.lock().unwrap().entry(c.job.job_id).or_default() += 1;
                    order
                        .lock()
                        .unwrap()
                        .entry(app.clone())
                        .or_default()
                        .push(c.job.seq);
                    running.lock().unwrap().remove(&app);
                    env.succeed(&c.job, now).await;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        });
        let all = tokio::time::timeout(
            std::time::Duration::from_secs(600),
            futures::future::join_all(claimers),
        )
        .await
        .unwrap();
        for c in all {
            c.unwrap();
        }
        assert!(env.claim(T0 + 2).await.is_none());
        let claims = claims.lock().unwrap().clone();
        assert_eq!(claims.len(), JOBS, "every job was claimed");
        assert!(claims.values().all(|&n| n == 1), "no job was claimed twice");
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), APPS);
        for (app, seqs) in order.iter() {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{app}'s jobs ran out of order: {seqs:?}"
            );
        }
        let stats = env.store.stats().await.unwrap();
        assert!(stats
            .jobs_by_state
            .contains(&(JobState::Succeeded, JOBS as i64)));
        assert_eq!(env.events("job.succeeded").await, JOBS as i64);
    })
});

per_database!(fifo_per_app_and_one_running_per_app, |kind| with_store(
    kind,
    |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        let a1 = env.create("alpha", T0).await;
        let a2 = env.create("alpha", T0 + 1).await;
        let b1 = env.create("beta", T0 + 2).await;
        let first = env.claim(T0 + 10).await.unwrap();
        assert_eq!(first.job.job_id, a1.job_id);
        // alpha is busy: the next claim skips a2 and takes beta's job.
        let second = env.claim(T0 + 10).await.unwrap();
        assert_eq!(second.job.job_id, b1.job_id);
        assert!(env.claim(T0 + 10).await.is_none());
        env.succeed(&first.job, T0 + 11).await;
        let third = env.claim(T0 + 12).await.unwrap();
        assert_eq!(third.job.job_id, a2.job_id);
        assert_eq!(
            third.node.unwrap().node_id,
            "node-a",
            "the app stays on its node"
        );

        let run = env.store.app_run("alpha").await.unwrap().unwrap();
        assert_eq!(
            (run.state.as_str(), run.last_job_id),
            ("DEPLOYING", a2.job_id)
        );
        assert_eq!(run.url.as_deref(), Some("http://app"));
    }
));

per_database!(expired_leases_retry_with_backoff_then_fail, |kind| {
    with_store(kind, |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        let job = env.create("alpha", T0).await;
        let mut now = T0;
        for attempt in 1..=POLICY.max_attempts {
            env.heartbeat("node-a", 10, now).await;
            let claimed = env.claim(now).await.unwrap();
            assert_eq!(claimed.job.attempt, attempt);
            assert!(
                env.store
                    .expire_leases(&POLICY, now + LEASE_MS - 1)
                    .await
                    .unwrap()
                    .is_empty(),
                "the lease is live"
            );
            now += LEASE_MS;
            let expired = env.store.expire_leases(&POLICY, now).await.unwrap();
            assert_eq!(expired.len(), 1);
            let after = env.store.get_job(job.job_id).await.unwrap();
            assert_eq!(after, expired[0]);
            assert_eq!(after.attempt, attempt, "the attempt count is kept");
            assert!(after.lease_token.is_none());
            if attempt < POLICY.max_attempts {
                assert_eq!(after.state, JobState::Pending);
                let nominal = POLICY.nominal_delay_ms(attempt);
                assert!(
                    after.run_after >= now + nominal * 8 / 10
                        && after.run_after <= now + nominal * 12 / 10
                );
                assert!(
                    env.claim(now).await.is_none(),
                    "not claimable before runAfter"
                );
                now = after.run_after;
            } else {
                assert_eq!(after.state, JobState::Failed);
                assert!(
                    after.error.as_deref().unwrap().contains("out of attempts"),
                    "{:?}",
                    after.error
                );
                assert!(after.finished_at.is_some());
            }
        }
        assert_eq!(env.events("job.running").await, 3);
        assert_eq!(env.events("job.retrying").await, 2);
        assert_eq!(env.events("job.failed").await, 1);
        assert_eq!(
            env.store.app_run("alpha").await.unwrap().unwrap().state,
            "FAILED"
        );
    })
});

/// The claim batch of `runner` at `now`.
async fn claim_by(env: &Env, runner: &str, now: Millis) -> Claimed {
    claim_one(&*env.store, &claim_request(runner, now))
        .await
        .unwrap()
        .expect("a claimable job")
}

per_database!(
    the_timeline_lists_each_attempt_with_its_runner_node_and_outcome,
    |kind| {
        with_store(kind, |env: Env| async move {
            env.heartbeat("node-a", 10, T0).await;
            env.heartbeat("node-b", 10, T0).await;
            let job = env.create("alpha", T0).await;
            let (created, none) = env.store.job_timeline(job.job_id).await.unwrap();
            assert_eq!((created.state, none.len()), (JobState::Pending, 0));

            // 1: runner-1 on node-a; its lease runs out.
            let first = claim_by(&env, "runner-1", T0 + 1).await;
            assert_eq!(first.node.as_ref().unwrap().node_id, "node-a");
            let (_, open) = env.store.job_timeline(job.job_id).await.unwrap();
            assert_eq!(open.len(), 1);
            assert_eq!((open[0].ended_at, open[0].outcome), (None, None), "it runs");
            let expiry = T0 + 1 + LEASE_MS;
            env.heartbeat("node-a", 10, expiry).await;
            env.heartbeat("node-b", 10, expiry).await;
            assert_eq!(
                env.store
                    .expire_leases(&POLICY, expiry)
                    .await
                    .unwrap()
                    .len(),
                1
            );

            // 2: node-a cordoned, runner-2 takes it on node-b and reports a retryable failure.
            env.store
                .set_scheduling("node-a", Scheduling::Cordoned, expiry)
                .await
                .unwrap();
            let retry_at = expiry + POLICY.cap_ms;
            env.heartbeat("node-a", 10, retry_at).await;
            env.heartbeat("node-b", 10, retry_at).await;
            let second = claim_by(&env, "runner-2", retry_at).await;
            assert_eq!(second.node.as_ref().unwrap().node_id, "node-b");
            let token = second.job.lease_token.clone().unwrap();
            env.store
                .report_job(job.job_id, &token, failure(true), &POLICY, retry_at + 5)
                .await
                .unwrap();

            // 3: runner-3, node-b again, succeeds.
            let again_at = retry_at + 5 + POLICY.cap_ms;
            env.heartbeat("node-a", 10, again_at).await;
            env.heartbeat("node-b", 10, again_at).await;
            let third = claim_by(&env, "runner-3", again_at).await;
            env.succeed(&third.job, again_at + 7).await;

            let (done, attempts) = env.store.job_timeline(job.job_id).await.unwrap();
            assert_eq!(done.state, JobState::Succeeded);
            assert_eq!(done.finished_at, Some(again_at + 7));
            let seen: Vec<_> = attempts
                .iter()
                .map(|a| {
                    (
                        a.attempt,
                        a.runner_id.as_str(),
                        a.node_id.as_deref(),
                        a.claimed_at,
                        a.ended_at,
                        a.outcome.map(|o| o.as_str()),
                    )
                })
                .collect();
            assert_eq!(
                seen,
                [
                    (
                        1,
                        "runner-1",
                        Some("node-a"),
                        T0 + 1,
                        Some(expiry),
                        Some("EXPIRED")
                    ),
                    (
                        2,
                        "runner-2",
                        Some("node-b"),
                        retry_at,
                        Some(retry_at + 5),
                        Some("RETRY")
                    ),
                    (
                        3,
                        "runner-3",
                        Some("node-b"),
                        again_at,
                        Some(again_at + 7),
                        Some("SUCCEEDED")
                    ),
                ]
            );
            assert!(
                attempts[0]
                    .error
                    .as_deref()
                    .unwrap()
                    .contains("runner-1 stopped renewing"),
                "{:?}",
                attempts[0].error
            );
            assert_eq!(attempts[1].error.as_deref(), Some("agent unreachable"));
            assert_eq!(attempts[2].error, None);
            assert!(matches!(
                env.store.job_timeline(Uuid::now_v7()).await,
                Err(StoreError::JobNotFound(_))
            ));
        })
    }
);

per_database!(stale_lease_tokens_are_refused_and_change_nothing, |kind| {
    with_store(kind, |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        env.create("alpha", T0).await;
        let claimed = env.claim(T0).await.unwrap().job;
        let token = claimed.lease_token.clone().unwrap();
        let stale = "0123456789abcdef0123456789abcdef";
        let before = env.outbox().await;
        assert!(is_conflict(
            env.store
                .renew_lease(claimed.job_id, stale, T0 + 99_000, T0 + 1)
                .await
        ));
        assert!(is_conflict(
            env.store
                .append_logs(claimed.job_id, stale, &["forged".into()], T0 + 1)
                .await
        ));
        assert!(is_conflict(
            env.store
                .report_job(claimed.job_id, stale, success(), &POLICY, T0 + 1)
                .await
        ));
        assert_eq!(env.store.get_job(claimed.job_id).await.unwrap(), claimed);
        assert!(env.store.job_logs(claimed.job_id).await.unwrap().is_empty());
        assert_eq!(env.outbox().await, before);

        // The real token works.
        let renewed = env
            .store
            .renew_lease(claimed.job_id, &token, T0 + 60_000, T0 + 2)
            .await
            .unwrap();
        assert_eq!(
            (renewed.lease_expires_at, renewed.version),
            (Some(T0 + 60_000), claimed.version)
        );
        env.store
            .append_logs(
                claimed.job_id,
                &token,
                &["pulling".into(), "started".into()],
                T0 + 3,
            )
            .await
            .unwrap();
        let lines: Vec<_> = env
            .store
            .job_logs(claimed.job_id)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.line)
            .collect();
        assert_eq!(lines, ["pulling", "started"]);
        let done = env
            .store
            .report_job(claimed.job_id, &token, success(), &POLICY, T0 + 4)
            .await
            .unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        // After the report, the old token is stale too.
        assert!(is_conflict(
            env.store
                .append_logs(claimed.job_id, &token, &["late".into()], T0 + 5)
                .await
        ));
        assert!(is_conflict(
            env.store
                .report_job(claimed.job_id, &token, success(), &POLICY, T0 + 5)
                .await
        ));
    })
});

per_database!(retryable_failures_go_back_to_pending_with_backoff, |kind| {
    with_store(kind, |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        env.create("alpha", T0).await;
        let claimed = env.claim(T0).await.unwrap().job;
        let token = claimed.lease_token.as_deref().unwrap();
        let back = env
            .store
            .report_job(claimed.job_id, token, failure(true), &POLICY, T0 + 100)
            .await
            .unwrap();
        assert_eq!((back.state, back.attempt), (JobState::Pending, 1));
        assert!(back.run_after >= T0 + 100 + 4_000);
        assert_eq!(back.error.as_deref(), Some("agent unreachable"));
        let again = env.claim(back.run_after).await.unwrap().job;
        let token = again.lease_token.as_deref().unwrap();
        let failed = env
            .store
            .report_job(
                again.job_id,
                token,
                failure(false),
                &POLICY,
                back.run_after + 1,
            )
            .await
            .unwrap();
        assert_eq!((failed.state, failed.attempt), (JobState::Failed, 2));
        assert_eq!(env.events("job.retrying").await, 1);
        assert_eq!(env.events("job.failed").await, 1);
    })
});

per_database!(only_pending_jobs_can_be_cancelled, |kind| with_store(
    kind,
    |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        let running = env.create("alpha", T0).await;
        let pending = env.create("beta", T0 + 1).await;
        env.claim(T0 + 2).await.unwrap();
        let cancelled = env.store.cancel_job(pending.job_id, T0 + 3).await.unwrap();
        assert_eq!(
            (cancelled.state, cancelled.version),
            (JobState::Cancelled, 2)
        );
        assert!(is_conflict(
            env.store.cancel_job(pending.job_id, T0 + 4).await
        ));
        assert!(is_conflict(
            env.store.cancel_job(running.job_id, T0 + 4).await
        ));
        assert_eq!(
            env.store.get_job(running.job_id).await.unwrap().state,
            JobState::Running
        );
        assert!(matches!(
            env.store.cancel_job(Uuid::now_v7(), T0).await,
            Err(StoreError::JobNotFound(_))
        ));
        assert_eq!(env.events("job.cancelled").await, 1);
        assert!(
            env.claim(T0 + 5).await.is_none(),
            "a cancelled job is never claimed"
        );
    }
));

per_database!(node_heartbeats_and_ttl, |kind| with_store(
    kind,
    |env: Env| async move {
        let saved = env
            .store
            .node_heartbeat(&heartbeat("node-a", 5), T0)
            .await
            .unwrap();
        assert!(saved.came_online, "a new node comes online");
        let node = saved.node;
        assert_eq!(
            (node.recorded_state, node.scheduling),
            (NodeState::Online, Scheduling::Active)
        );
        assert_eq!(node.capacity.max_apps, 5);
        assert_eq!(node.labels.get("zone").map(String::as_str), Some("a"));
        let again = env
            .store
            .node_heartbeat(&heartbeat("node-a", 5), T0 + 1_000)
            .await
            .unwrap();
        assert!(
            !again.came_online,
            "a routine heartbeat brings nothing online"
        );
        assert_eq!(
            env.events("node.online").await,
            1,
            "only the first heartbeat is news"
        );

        assert!(env
            .store
            .mark_offline_nodes(T0 + 1_000 + TTL_MS, TTL_MS)
            .await
            .unwrap()
            .is_empty());
        let gone = env
            .store
            .mark_offline_nodes(T0 + 1_001 + TTL_MS, TTL_MS)
            .await
            .unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].recorded_state, NodeState::Offline);
        assert!(
            env.store
                .mark_offline_nodes(T0 + 99_000, TTL_MS)
                .await
                .unwrap()
                .is_empty(),
            "once"
        );
        assert_eq!(env.events("node.offline").await, 1);

        let saved = env
            .store
            .node_heartbeat(&heartbeat("node-a", 5), T0 + 100_000)
            .await
            .unwrap();
        assert!(
            saved.came_online,
            "an OFFLINE node's heartbeat brings it back"
        );
        let back = saved.node;
        assert_eq!(back.recorded_state, NodeState::Online);
        assert_eq!(env.events("node.online").await, 2);
        let nodes = env.store.list_nodes().await.unwrap();
        assert_eq!(nodes, vec![back]);

        let cordoned = env
            .store
            .set_scheduling("node-a", Scheduling::Cordoned, T0 + 100_001)
            .await
            .unwrap();
        assert_eq!(cordoned.scheduling, Scheduling::Cordoned);
        assert!(matches!(
            env.store
                .set_scheduling("nope", Scheduling::Cordoned, T0)
                .await,
            Err(StoreError::NodeNotFound(_))
        ));
        assert_eq!(env.events("node.scheduling").await, 1);
    }
));

per_database!(node_credentials_join_rotate_and_revoke, |kind| with_store(
    kind,
    |env: Env| async move {
        let store = &env.store;
        let refused = |r: Result<NodeCredential, StoreError>| match r {
            Err(StoreError::Credential(why)) => why,
            other => panic!("expected a refused credential, got {other:?}"),
        };
        let joined = store.join_node("node-a", &hash("first"), T0).await.unwrap();
        assert_eq!((joined.created_at, joined.previous_hash), (T0, None));
        assert!(matches!(
            store.join_node("node-a", &hash("again"), T0).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            refused(store.use_credential(&hash("again")).await),
            CredentialRefused::Unknown
        );
        let used = store.use_credential(&hash("first")).await.unwrap();
        assert_eq!(used.node_id, "node-a");
        assert_eq!(
            refused(store.use_credential(&hash("nothing")).await),
            CredentialRefused::Unknown
        );

        // Rotation: the old credential works until the new one is used once.
        let rotated = store
            .rotate_credential(&hash("first"), &hash("second"), T0 + 1)
            .await
            .unwrap();
        assert_eq!(rotated.rotated_at, Some(T0 + 1));
        store.use_credential(&hash("first")).await.unwrap();
        store.use_credential(&hash("second")).await.unwrap();
        assert_eq!(
            refused(store.use_credential(&hash("first")).await),
            CredentialRefused::Unknown
        );
        // A rotation whose answer was lost: the node asks again with the credential it holds.
        store
            .rotate_credential(&hash("second"), &hash("lost"), T0 + 2)
            .await
            .unwrap();
        store
            .rotate_credential(&hash("second"), &hash("third"), T0 + 3)
            .await
            .unwrap();
        assert_eq!(
            refused(store.use_credential(&hash("lost")).await),
            CredentialRefused::Unknown
        );
        store.use_credential(&hash("third")).await.unwrap();
        assert!(matches!(
            store
                .rotate_credential(&hash("second"), &hash("x"), T0 + 4)
                .await,
            Err(StoreError::Credential(CredentialRefused::Unknown))
        ));

        // Revocation: refused at once, the node OFFLINE at once and no longer placed.
        env.heartbeat("node-a", 10, T0 + 5).await;
        store.join_node("node-b", &hash("b"), T0).await.unwrap();
        store
            .rotate_credential(&hash("b"), &hash("b2"), T0 + 5)
            .await
            .unwrap();
        let revoked = store.revoke_node("node-a", T0 + 6, TTL_MS).await.unwrap();
        assert_eq!(revoked.revoked_at, Some(T0 + 6));
        assert_eq!(
            refused(store.use_credential(&hash("third")).await),
            CredentialRefused::Revoked
        );
        let node = store.list_nodes().await.unwrap().remove(0);
        assert_eq!(node.recorded_state, NodeState::Offline);
        assert_eq!(node.state_at(T0 + 6, TTL_MS), NodeState::Offline);
        assert_eq!(env.events("node.offline").await, 1);
        env.create("alpha", T0 + 6).await;
        assert!(
            env.claim(T0 + 7).await.is_none(),
            "nothing goes to a revoked node"
        );
        // Another node's credentials are untouched; a node that never joined is not found.
        assert_eq!(
            store.use_credential(&hash("b")).await.unwrap().node_id,
            "node-b"
        );
        assert!(matches!(
            store.revoke_node("ghost", T0, TTL_MS).await,
            Err(StoreError::NodeNotFound(_))
        ));
    }
));

per_database!(
    heartbeat_seeds_are_the_online_nodes_with_one_good_credential,
    |kind| {
        with_store(kind, |env: Env| async move {
            let store = &env.store;
            for node in ["good", "revoked", "offline", "rotating", "silent"] {
                store.join_node(node, &hash(node), T0).await.unwrap();
            }
            // "silent" joined but never heartbeat: no row to repeat.
            for node in ["good", "revoked", "offline", "rotating"] {
                env.heartbeat(node, 10, T0).await;
            }
            let reported = reporting("good", 10, 2, &[("alpha", AppState::Running, None)]);
            store.node_heartbeat(&reported, T0 + 1).await.unwrap();
            env.create("alpha", T0).await;
            let placed = env.claim(T0 + 2).await.unwrap();
            assert_eq!(
                placed.node.as_ref().map(|n| n.node_id.as_str()),
                Some("good")
            );
            store.revoke_node("revoked", T0 + 3, TTL_MS).await.unwrap();
            store
                .rotate_credential(&hash("rotating"), &hash("rotating-2"), T0 + 4)
                .await
                .unwrap();
            // "offline" alone goes silent past its TTL.
            for node in ["good", "rotating"] {
                let hb = if node == "good" {
                    reported.clone()
                } else {
                    heartbeat(node, 10)
                };
                store.node_heartbeat(&hb, T0 + TTL_MS).await.unwrap();
            }
            store
                .mark_offline_nodes(T0 + TTL_MS + 1, TTL_MS)
                .await
                .unwrap();

            let seeds = store.heartbeat_seeds().await.unwrap();
            let ids: Vec<&str> = seeds.iter().map(|s| s.heartbeat.node_id.as_str()).collect();
            assert_eq!(
                ids,
                ["good"],
                "revoked, OFFLINE, mid-rotation and never-heard nodes are left out"
            );
            let good = &seeds[0];
            assert_eq!(good.credential_hash, hash("good"));
            assert_eq!(
                good.heartbeat, reported,
                "the row gives back the report that wrote it"
            );
            assert_eq!(good.last_heartbeat_at, T0 + TTL_MS);
            assert_eq!(good.scheduling, Scheduling::Active);
            assert_eq!(good.placed_apps, ["alpha"]);

            // Once the new credential is used the rotation is over: the node is seeded again.
            store.use_credential(&hash("rotating-2")).await.unwrap();
            let seeds = store.heartbeat_seeds().await.unwrap();
            let rotated = seeds.iter().find(|s| s.heartbeat.node_id == "rotating");
            assert_eq!(
                rotated.map(|s| s.credential_hash.clone()),
                Some(hash("rotating-2"))
            );
        })
    }
);

per_database!(coalesced_heartbeats_flush_for_good_nodes_only, |kind| {
    with_store(kind, |env: Env| async move {
        let store = &env.store;
        let seen = |node: &str, at: Millis, credential: &str| LastSeen {
            node_id: node.to_owned(),
            at,
            credential_hash: hash(credential),
        };
        let last = |nodes: &[berth_control::queue::NodeRecord], id: &str| {
            let node = nodes.iter().find(|n| n.node_id == id).unwrap();
            (node.last_heartbeat_at, node.recorded_state)
        };
        for node in ["good", "revoked", "offline", "rotated"] {
            store.join_node(node, &hash(node), T0).await.unwrap();
            env.heartbeat(node, 10, T0).await;
        }
        assert!(store.flush_heartbeats(&[]).await.unwrap().is_empty());
        env.create("alpha", T0).await;
        let placed = env.claim(T0 + 1).await.unwrap();
        let placed_on = placed.node.as_ref().unwrap().node_id.clone();
        store.revoke_node("revoked", T0 + 2, TTL_MS).await.unwrap();
        store
            .mark_offline_nodes(T0 + TTL_MS + 1, TTL_MS)
            .await
            .unwrap();
        // "offline" went OFFLINE with everyone else; the others come back in full.
        for node in ["good", "rotated"] {
            env.heartbeat(node, 10, T0 + TTL_MS + 2).await;
        }
        store
            .rotate_credential(&hash("rotated"), &hash("rotated-2"), T0 + TTL_MS + 3)
            .await
            .unwrap();
        assert_eq!(
            store.credentials_changed(T0 + 2).await.unwrap(),
            vec!["revoked".to_owned(), "rotated".to_owned()],
            "revoked at T0 + 2 and rotated since"
        );
        assert_eq!(
            store.credentials_changed(T0 + TTL_MS + 4).await.unwrap(),
            Vec::<String>::new()
        );

        let at = T0 + TTL_MS + 10;
        let kept = store
            .flush_heartbeats(&[
                seen("good", at, "good"),
                seen("revoked", at, "revoked"),
                seen("offline", at, "offline"),
                seen("rotated", at, "rotated"),
                seen("ghost", at, "ghost"),
            ])
            .await
            .unwrap();
        let mut ids: Vec<&str> = kept.iter().map(|k| k.node_id.as_str()).collect();
        ids.sort();
        assert_eq!(
            ids,
            ["good", "rotated"],
            "the previous credential is good until the new one is used"
        );
        let good = kept.iter().find(|k| k.node_id == "good").unwrap();
        assert_eq!(good.scheduling, Scheduling::Active);
        let apps_on = |id: &str| {
            kept.iter()
                .find(|k| k.node_id == id)
                .map(|k| k.placed_apps.clone())
        };
        assert_eq!(apps_on(&placed_on), Some(vec!["alpha".to_owned()]));
        let nodes = store.list_nodes().await.unwrap();
        assert_eq!(last(&nodes, "good"), (at, NodeState::Online));
        assert_eq!(last(&nodes, "rotated").0, at);
        assert_eq!(
            last(&nodes, "offline"),
            (T0, NodeState::Offline),
            "an OFFLINE node waits for a full heartbeat"
        );
        assert_eq!(last(&nodes, "revoked").1, NodeState::Offline);
        assert!(last(&nodes, "revoked").0 < T0 + 2 - TTL_MS);
        assert_eq!(nodes.len(), 4, "no node is made up");

        // Never back; a retired credential is refused.
        store.use_credential(&hash("rotated-2")).await.unwrap();
        let kept = store
            .flush_heartbeats(&[
                seen("good", at - 5, "good"),
                seen("rotated", at + 5, "rotated"),
            ])
            .await
            .unwrap();
        assert_eq!(kept.len(), 1);
        let nodes = store.list_nodes().await.unwrap();
        assert_eq!(last(&nodes, "good").0, at);
        assert_eq!(last(&nodes, "rotated").0, at);
        assert_eq!(
            env.events("node.online").await,
            6,
            "a flush writes no event"
        );
    })
});

per_database!(one_of_two_concurrent_joins_wins, |kind| with_store(
    kind,
    |env: Env| async move {
        let joins = (0..4).map(|i| {
            let store = env.store.clone();
            tokio::spawn(async move { store.join_node("node-a", &hash(&i.to_string()), T0).await })
        });
        let outcomes = futures::future::join_all(joins).await;
        let won = outcomes.iter().filter(|o| matches!(o, Ok(Ok(_)))).count();
        let refused = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Err(StoreError::Conflict(_)))))
            .count();
        assert_eq!((won, refused), (1, 3), "{outcomes:?}");
    }
));

per_database!(a_heartbeat_that_moves_the_agent_is_recorded, |kind| {
    with_store(kind, |env: Env| async move {
        env.heartbeat("node-a", 5, T0).await;
        let first = env.store.list_nodes().await.unwrap().remove(0);
        assert_eq!(first.agent_url_change, None);
        let mut moved = heartbeat("node-a", 5);
        moved.agent_base_url = "http://203.0.113.9:7005".to_owned();
        let saved = env.store.node_heartbeat(&moved, T0 + 1_000).await.unwrap();
        assert_eq!(saved.node.agent_base_url, "http://203.0.113.9:7005");
        assert_eq!(
            saved.node.agent_url_change,
            Some(AgentUrlChange {
                previous: "http://node-a:7005".to_owned(),
                at: T0 + 1_000
            })
        );
        env.store.node_heartbeat(&moved, T0 + 2_000).await.unwrap();
        assert_eq!(
            env.events("node.agent_moved").await,
            1,
            "one move, one event"
        );
        let listed = env.store.list_nodes().await.unwrap().remove(0);
        assert_eq!(listed.agent_url_change, saved.node.agent_url_change);
    })
});

per_database!(an_offline_nodes_app_moves_on_its_next_deploy, |kind| {
    with_store(kind, |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        env.create("alpha", T0).await;
        let first = env.claim(T0).await.unwrap();
        assert_eq!(first.node.as_ref().unwrap().node_id, "node-a");
        env.succeed(&first.job, T0 + 1).await;

        // node-b joins; node-a stops heartbeating and is OFFLINE after the TTL.
        let later = T0 + TTL_MS + 5_000;
        env.heartbeat("node-b", 10, later).await;
        let gone = env.store.mark_offline_nodes(later, TTL_MS).await.unwrap();
        assert_eq!(
            gone.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(),
            ["node-a"]
        );
        env.create("alpha", later).await;
        let moved = env.claim(later).await.unwrap();
        assert_eq!(moved.node.as_ref().unwrap().node_id, "node-b");
        assert!(
            moved.previous_node.is_none(),
            "an OFFLINE node is not reported"
        );
        let placements = env.store.list_placements().await.unwrap();
        assert_eq!(
            (placements.len(), placements[0].node_id.as_str()),
            (1, "node-b")
        );
        let nodes = env.store.list_nodes().await.unwrap();
        assert_eq!(
            nodes.iter().map(|n| n.app_count).collect::<Vec<_>>(),
            [0, 1]
        );
        env.succeed(&moved.job, later + 1).await;

        // Cordoned but ONLINE: the app moves, and the node it left is reported for clean-up.
        env.heartbeat("node-a", 10, later + 2).await;
        env.store
            .set_scheduling("node-b", Scheduling::Cordoned, later + 2)
            .await
            .unwrap();
        env.create("alpha", later + 3).await;
        let again = env.claim(later + 3).await.unwrap();
        assert_eq!(again.node.unwrap().node_id, "node-a");
        assert_eq!(again.previous_node.unwrap().node_id, "node-b");
    })
});

per_database!(cordoned_nodes_get_no_new_app, |kind| with_store(
    kind,
    |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        env.heartbeat("node-b", 10, T0).await;
        env.store
            .set_scheduling("node-a", Scheduling::Cordoned, T0)
            .await
            .unwrap();
        env.create("alpha", T0).await;
        assert_eq!(env.claim(T0).await.unwrap().node.unwrap().node_id, "node-b");
        env.store
            .set_scheduling("node-b", Scheduling::Draining, T0)
            .await
            .unwrap();
        let waiting = env.create("beta", T0 + 1).await;
        assert!(env.claim(T0 + 1).await.is_none());
        let job = env.store.get_job(waiting.job_id).await.unwrap();
        assert_eq!(job.state, JobState::Pending);
        assert!(
            job.waiting_reason.as_deref().unwrap().contains("cordoned"),
            "{:?}",
            job.waiting_reason
        );
        env.store
            .set_scheduling("node-a", Scheduling::Active, T0 + 2)
            .await
            .unwrap();
        assert_eq!(
            env.claim(T0 + 2).await.unwrap().node.unwrap().node_id,
            "node-a"
        );
    }
));

per_database!(a_job_no_node_can_take_waits_with_a_reason, |kind| {
    with_store(kind, |env: Env| async move {
        let job = env.create("alpha", T0).await;
        assert!(env.claim(T0).await.is_none());
        let waiting = env.store.get_job(job.job_id).await.unwrap();
        assert_eq!(waiting.state, JobState::Pending);
        assert!(waiting.waiting_reason.is_some());
        assert_eq!(waiting.version, 2);
        assert!(env.claim(T0 + 1).await.is_none());
        assert_eq!(
            env.store.get_job(job.job_id).await.unwrap().version,
            2,
            "the same reason is not written again"
        );
        env.heartbeat("node-a", 1, T0 + 2).await;
        let claimed = env.claim(T0 + 2).await.unwrap().job;
        assert_eq!((claimed.job_id, claimed.waiting_reason), (job.job_id, None));
    })
});

per_database!(max_apps_holds_under_concurrent_claims, |kind| with_store(
    kind,
    |env: Env| async move {
        env.heartbeat("node-a", 3, T0).await;
        for i in 0..10 {
            env.create(&format!("app-{i}"), T0).await;
        }
        let total = env.claim_concurrently(T0 + 1).await.len();
        assert_eq!(total, 3);
        let node = env.store.list_nodes().await.unwrap().remove(0);
        assert_eq!(node.app_count, 3);
        assert_eq!(env.store.list_placements().await.unwrap().len(), 3);
        let waiting = env.pending().await;
        assert_eq!(waiting.len(), 7);
        // Claims that lost the last slot to a concurrent one skip without a reason; the next writes it.
        assert!(env.claim(T0 + 2).await.is_none());
        let waiting = env.pending().await;
        assert!(waiting.iter().all(|j| j
            .waiting_reason
            .as_deref()
            .is_some_and(|r| r.contains("room"))));
    }
));

per_database!(resources_are_reserved_and_released, |kind| with_store(
    kind,
    |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        let mut big = new_job("alpha", JobKind::Deploy, None, T0);
        big.job.payload.resources = Resources {
            memory_mb: Some(6_000),
            cpus: Some(1.5),
        };
        env.store.create_job(big.clone()).await.unwrap();
        let claimed = env.claim(T0).await.unwrap().job;
        let node = env.store.list_nodes().await.unwrap().remove(0);
        assert_eq!(
            (node.reserved_memory_mb, node.reserved_cpu_millis),
            (6_000, 1_500)
        );
        env.succeed(&claimed, T0 + 1).await;
        let mut second = big;
        second.job_id = Uuid::now_v7();
        second.job.app_id = berth_shared::ids::AppId::parse("beta").unwrap();
        env.store.create_job(second).await.unwrap();
        assert!(env.claim(T0 + 2).await.is_none(), "no memory left for beta");
    }
));

per_database!(a_stop_removes_the_placement, |kind| with_store(
    kind,
    |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        env.create("alpha", T0).await;
        let deployed = env.claim(T0).await.unwrap().job;
        env.succeed(&deployed, T0 + 1).await;
        env.store
            .create_job(new_job("alpha", JobKind::Stop, None, T0 + 2))
            .await
            .unwrap();
        let stop = env.claim(T0 + 2).await.unwrap();
        assert_eq!(
            (stop.job.kind, stop.node.unwrap().node_id.as_str()),
            (JobKind::Stop, "node-a")
        );
        env.succeed(&stop.job, T0 + 3).await;
        assert!(env.store.list_placements().await.unwrap().is_empty());
        assert_eq!(env.store.list_nodes().await.unwrap()[0].app_count, 0);
        let run = env.store.app_run("alpha").await.unwrap().unwrap();
        assert_eq!((run.state.as_str(), run.url), ("STOPPED", None));
        // A stop of an app never placed needs no node.
        env.store
            .create_job(new_job("ghost", JobKind::Stop, None, T0 + 4))
            .await
            .unwrap();
        let nowhere = env.claim(T0 + 4).await.unwrap();
        assert!(nowhere.node.is_none());
    }
));

per_database!(
    a_failed_first_deploy_gives_its_placement_and_slot_back,
    |kind| {
        with_store(kind, |env: Env| async move {
            // One slot: whoever holds a placement keeps every other app out.
            let placed = || async { env.store.list_placements().await.unwrap() };
            let apps_on_a = || async { env.store.list_nodes().await.unwrap()[0].app_count };
            env.heartbeat("node-a", 1, T0).await;
            env.create("alpha", T0).await;
            let first = env.claim(T0).await.unwrap().job;
            let failed = env.fail(&first, T0 + 1).await;
            assert_eq!(failed.state, JobState::Failed);
            assert!(placed().await.is_empty(), "alpha runs nowhere");
            assert_eq!(apps_on_a().await, 0);

            // A first deploy whose leases run out, attempt after attempt, gives it back too.
            env.create("beta", T0 + 2).await;
            let mut now = T0 + 2;
            for _ in 0..POLICY.max_attempts {
                env.heartbeat("node-a", 1, now).await;
                let claimed = env.claim(now).await.expect("the slot is free");
                assert_eq!(claimed.job.app_id, "beta");
                now += LEASE_MS;
                let expired = env.store.expire_leases(&POLICY, now).await.unwrap();
                now = now.max(expired[0].run_after);
            }
            let beta = env.pending().await;
            assert!(beta.is_empty(), "{beta:?}");
            assert!(placed().await.is_empty(), "beta runs nowhere");
            assert_eq!(apps_on_a().await, 0);

            // An app an earlier deploy serves keeps its node when a later deploy fails.
            env.heartbeat("node-a", 1, now).await;
            env.create("gamma", now).await;
            let deployed = env.claim(now).await.expect("the slot is free").job;
            env.succeed(&deployed, now + 1).await;
            env.create("gamma", now + 2).await;
            let again = env.claim(now + 2).await.unwrap().job;
            env.fail(&again, now + 3).await;
            let kept = placed().await;
            assert_eq!(
                kept.iter().map(|p| p.app_id.as_str()).collect::<Vec<_>>(),
                ["gamma"]
            );
            assert_eq!(apps_on_a().await, 1);
        })
    }
);

per_database!(
    a_stop_for_a_lost_node_fails_and_frees_the_apps_queue,
    |kind| {
        with_store(kind, |env: Env| async move {
            env.heartbeat("node-a", 10, T0).await;
            env.create("alpha", T0).await;
            let deployed = env.claim(T0).await.unwrap().job;
            env.succeed(&deployed, T0 + 1).await;
            let stop = created(
                env.store
                    .create_job(new_job("alpha", JobKind::Stop, None, T0 + 2))
                    .await
                    .unwrap(),
            );
            let redeploy = env.create("alpha", T0 + 3).await;
            let lost_at = T0 + LOST_MS + 1;
            env.heartbeat("node-b", 10, lost_at).await;

            // OFFLINE, not lost: the stop waits, and the app's next job behind it.
            assert!(env.claim(T0 + TTL_MS + 1_000).await.is_none());
            let waiting = env.store.get_job(stop.job_id).await.unwrap();
            assert!(waiting.waiting_reason.unwrap().contains("OFFLINE"));
            // Silent long enough, but the control plane has not watched that long itself.
            let mut unwatched = claim_request("runner-1", lost_at);
            unwatched.node_lost_ms = None;
            assert!(claim_one(&*env.store, &unwatched).await.unwrap().is_none());
            assert_eq!(
                env.store.get_job(stop.job_id).await.unwrap().state,
                JobState::Pending
            );

            // Lost: the stop fails with the reason, and the redeploy goes to another node.
            let claimed = env.claim(lost_at).await.expect("the app's next job");
            assert_eq!(claimed.job.job_id, redeploy.job_id);
            assert_eq!(claimed.node.unwrap().node_id, "node-b");
            let failed = env.store.get_job(stop.job_id).await.unwrap();
            assert_eq!(failed.state, JobState::Failed);
            assert!(failed.finished_at.is_some());
            let error = failed.error.unwrap();
            assert!(
                error.contains("node-a") && error.contains("lost"),
                "{error}"
            );
            assert_eq!(env.events("job.failed").await, 1);
        })
    }
);

per_database!(every_change_writes_an_outbox_event, |kind| with_store(
    kind,
    |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        let ok = env.create("alpha", T0).await;
        let cancelled = env.create("beta", T0).await;
        env.store
            .cancel_job(cancelled.job_id, T0 + 1)
            .await
            .unwrap();
        let claimed = env.claim(T0 + 2).await.unwrap().job;
        assert_eq!(claimed.job_id, ok.job_id);
        env.succeed(&claimed, T0 + 3).await;
        env.create("gamma", T0 + 4).await;
        let doomed = env.claim(T0 + 4).await.unwrap().job;
        let token = doomed.lease_token.as_deref().unwrap();
        env.store
            .report_job(doomed.job_id, token, failure(false), &POLICY, T0 + 5)
            .await
            .unwrap();
        env.store
            .mark_offline_nodes(T0 + 5 + TTL_MS * 2, TTL_MS)
            .await
            .unwrap();
        let expected: BTreeMap<String, i64> = [
            ("job.created", 3),
            ("job.cancelled", 1),
            ("job.running", 2),
            ("job.succeeded", 1),
            ("job.failed", 1),
            ("node.online", 1),
            ("node.offline", 1),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
        assert_eq!(env.outbox().await, expected);
        let stats = env.store.stats().await.unwrap();
        let count = |s| {
            stats
                .jobs_by_state
                .iter()
                .find(|(st, _)| *st == s)
                .unwrap()
                .1
        };
        assert_eq!(
            (
                count(JobState::Pending),
                count(JobState::Succeeded),
                count(JobState::Failed),
                count(JobState::Cancelled)
            ),
            (0, 1, 1, 1)
        );
    }
));

/// The `seq`s and routing keys of a batch.
fn keys(batch: &dyn storage::OutboxBatch) -> Vec<String> {
    batch
        .events()
        .iter()
        .map(|e| e.routing_key.clone())
        .collect()
}

per_database!(outbox_batches_come_back_until_marked, |kind| with_store(
    kind,
    |env: Env| async move {
        env.heartbeat("node-a", 10, T0).await;
        let x = env.create("xray", T0).await;
        env.create("yankee", T0).await;
        env.claim(T0 + 1).await.unwrap();
        let batch = env.store.claim_outbox(10).await.unwrap();
        assert_eq!(
            keys(batch.as_ref()),
            ["node.online", "job.created", "job.created", "job.running"]
        );
        let seqs: Vec<i64> = batch.events().iter().map(|e| e.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "oldest first: {seqs:?}"
        );
        for e in batch.events() {
            let body: serde_json::Value = serde_json::from_str(&e.body).unwrap();
            assert_eq!(body["eventId"], e.event_id.as_str());
            assert_eq!(body["type"], e.routing_key.as_str());
        }
        let body: serde_json::Value = serde_json::from_str(&batch.events()[1].body).unwrap();
        assert_eq!(body["jobId"], x.job_id.to_string());
        // A relay that dies mid-batch: nothing marked, everything comes back (once the
        // dropped transaction's rollback has reached the database).
        drop(batch);
        let mut batch = env.store.claim_outbox(10).await.unwrap();
        for _ in 0..100 {
            if !batch.events().is_empty() {
                break;
            }
            drop(batch);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            batch = env.store.claim_outbox(10).await.unwrap();
        }
        assert_eq!(batch.events().len(), 4);
        assert_eq!(batch.events()[0].seq, seqs[0]);
        // Only what was confirmed is marked.
        batch.mark_published(&seqs[..2], T0 + 2).await.unwrap();
        let batch = env.store.claim_outbox(10).await.unwrap();
        assert_eq!(
            batch.events().iter().map(|e| e.seq).collect::<Vec<_>>(),
            seqs[2..]
        );
        // A limit takes the oldest.
        batch.mark_published(&[], T0 + 2).await.unwrap();
        let batch = env.store.claim_outbox(1).await.unwrap();
        assert_eq!(batch.events()[0].seq, seqs[2]);
        batch
            .mark_published(&[seqs[2], seqs[3]], T0 + 3)
            .await
            .unwrap();
        let batch = env.store.claim_outbox(10).await.unwrap();
        assert!(batch.events().is_empty());
        batch.mark_published(&[], T0 + 3).await.unwrap();
    }
));

per_database!(outbox_relays_share_without_overtaking, |kind| with_store(
    kind,
    |env: Env| async move {
        if env.kind == DbKind::Sqlite {
            // One process, one relay: nothing to share.
            return;
        }
        env.heartbeat("node-a", 10, T0).await;
        env.create("xray", T0).await;
        env.create("yankee", T0).await;
        env.claim(T0 + 1).await.unwrap(); // xray runs: its second event.
                                          // Relay A holds node.online and xray's job.created.
        let a = env.store.claim_outbox(2).await.unwrap();
        assert_eq!(keys(a.as_ref()), ["node.online", "job.created"]);
        // Relay B skips those rows, and holds back xray's job.running, which must not
        // overtake xray's job.created.
        let b = env.store.claim_outbox(10).await.unwrap();
        assert_eq!(keys(b.as_ref()), ["job.created"]);
        let body: serde_json::Value = serde_json::from_str(&b.events()[0].body).unwrap();
        assert_eq!(body["appId"], "yankee");
        let a_seqs: Vec<i64> = a.events().iter().map(|e| e.seq).collect();
        let b_seqs: Vec<i64> = b.events().iter().map(|e| e.seq).collect();
        a.mark_published(&a_seqs, T0 + 2).await.unwrap();
        b.mark_published(&b_seqs, T0 + 2).await.unwrap();
        let rest = env.store.claim_outbox(10).await.unwrap();
        assert_eq!(keys(rest.as_ref()), ["job.running"]);
    }
));

per_database!(outbox_prunes_after_retention, |kind| with_store(
    kind,
    |env: Env| async move {
        env.create("alpha", T0).await;
        env.create("beta", T0).await;
        let batch = env.store.claim_outbox(1).await.unwrap();
        let seq = batch.events()[0].seq;
        batch.mark_published(&[seq], T0 + 10).await.unwrap();
        // Not yet old enough.
        assert_eq!(env.store.prune_outbox(T0 + 10, false).await.unwrap(), 0);
        // Published before the cut: gone; the unpublished one stays for the relay.
        assert_eq!(env.store.prune_outbox(T0 + 11, false).await.unwrap(), 1);
        assert_eq!(env.events("job.created").await, 1);
        // Without a broker, old unpublished events go too.
        assert_eq!(env.store.prune_outbox(T0 + 11, true).await.unwrap(), 1);
        assert_eq!(env.events("job.created").await, 0);
    }
));

fn claim_batch(claimers: usize, now: Millis) -> ClaimBatch {
    ClaimBatch {
        claimers: (0..claimers)
            .map(|i| Claimer {
                runner_id: format!("runner-{i}"),
                lease_token: Uuid::new_v4().simple().to_string(),
            })
            .collect(),
        lease_expires_at: now + LEASE_MS,
        now,
        node_ttl_ms: TTL_MS,
        nodes_settled: true,
        node_lost_ms: Some(LOST_MS),
    }
}

per_database!(
    a_batch_hands_the_oldest_jobs_to_its_claimers_one_per_app,
    |kind| {
        with_store(kind, |env: Env| async move {
            env.heartbeat("node-a", 100, T0).await;
            let a1 = env.create("alpha", T0).await;
            let a2 = env.create("alpha", T0).await;
            let b = env.create("beta", T0).await;
            let c = env.create("gamma", T0).await;
            let batch = claim_batch(4, T0 + 1);
            let claimed = env.store.claim_jobs(&batch).await.unwrap();

            // alpha's second job waits for its first: three jobs for four claimers, oldest first.
            let ids: Vec<Uuid> = claimed.iter().map(|c| c.job.job_id).collect();
            assert_eq!(ids, [a1.job_id, b.job_id, c.job_id]);
            for (got, claimer) in claimed.iter().zip(&batch.claimers) {
                assert_eq!(got.job.state, JobState::Running);
                assert_eq!(
                    got.job.runner_id.as_deref(),
                    Some(claimer.runner_id.as_str())
                );
                assert_eq!(
                    got.job.lease_token.as_deref(),
                    Some(claimer.lease_token.as_str())
                );
                assert_eq!(got.job.lease_expires_at, Some(batch.lease_expires_at));
                assert_eq!(env.store.get_job(got.job.job_id).await.unwrap(), got.job);
                let run = env.store.app_run(&got.job.app_id).await.unwrap().unwrap();
                assert_eq!(
                    (run.last_job_id, run.state.as_str()),
                    (got.job.job_id, "DEPLOYING")
                );
            }
            let waiting = env.store.get_job(a2.job_id).await.unwrap();
            assert_eq!((waiting.state, waiting.version), (JobState::Pending, 1));
            assert_eq!(env.events("job.running").await, 3);

            // Nothing else is claimable until alpha's first job ends.
            assert!(env
                .store
                .claim_jobs(&claim_batch(4, T0 + 2))
                .await
                .unwrap()
                .is_empty());
            env.succeed(&claimed[0].job, T0 + 3).await;
            let next = env.store.claim_jobs(&claim_batch(4, T0 + 4)).await.unwrap();
            let ids: Vec<Uuid> = next.iter().map(|c| c.job.job_id).collect();
            assert_eq!(ids, [a2.job_id]);
        })
    }
);

per_database!(a_batch_places_new_apps_with_the_room_it_leaves, |kind| {
    with_store(kind, |env: Env| async move {
        // Two nodes with room for one app each, three new apps in one batch: the first two
        // are spread over both nodes, the third waits for room.
        env.heartbeat("node-a", 1, T0).await;
        env.heartbeat("node-b", 1, T0).await;
        for app in ["alpha", "beta", "gamma"] {
            env.create(app, T0).await;
        }
        let claimed = env.store.claim_jobs(&claim_batch(3, T0 + 1)).await.unwrap();
        let mut nodes: Vec<String> = claimed
            .iter()
            .map(|c| c.node.as_ref().unwrap().node_id.clone())
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["node-a", "node-b"]);
        let placements = env.store.list_placements().await.unwrap();
        assert_eq!(placements.len(), 2);
        for node in env.store.list_nodes().await.unwrap() {
            assert_eq!(node.app_count, 1, "{} holds one app", node.node_id);
        }
        let gamma = env
            .store
            .list_jobs(&JobFilter {
                app_id: Some("gamma".into()),
                ..filter()
            })
            .await
            .unwrap();
        assert_eq!(gamma[0].state, JobState::Pending);
        assert!(gamma[0]
            .waiting_reason
            .as_deref()
            .unwrap_or("")
            .contains("room"));
    })
});

per_database!(
    claims_one_after_another_place_with_the_room_earlier_ones_took,
    |kind| {
        with_store(kind, |env: Env| async move {
            // The node rows a claim decides with are kept between claims (PostgreSQL, MySQL) and
            // must count every app placed since: four new apps claimed one at a time, with a
            // heartbeat in between, are spread two and two over two roomy nodes.
            env.heartbeat("node-a", 10, T0).await;
            env.heartbeat("node-b", 10, T0).await;
            for app in ["alpha", "beta", "gamma", "delta"] {
                env.create(app, T0).await;
            }
            let mut on = Vec::new();
            for i in 0..4 {
                if i == 2 {
                    env.heartbeat("node-a", 10, T0 + 2).await;
                }
                let claimed = env.claim(T0 + 1 + i).await.expect("a job to claim");
                on.push(claimed.node.expect("a node").node_id);
            }
            assert_eq!(on, ["node-a", "node-b", "node-a", "node-b"]);
            for node in env.store.list_nodes().await.unwrap() {
                assert_eq!(node.app_count, 2, "{} holds two apps", node.node_id);
            }
        })
    }
);

per_database!(
    concurrent_batches_claim_every_job_once_and_in_order,
    |kind| {
        with_store(kind, |env: Env| async move {
            const JOBS: usize = 2_000;
            const APPS: usize = 100;
            env.heartbeat("node-a", 100_000, T0).await;
            for i in 0..JOBS {
                env.create(&format!("app-{}", i % APPS), T0).await;
            }
            let claims: Arc<Mutex<HashMap<Uuid, usize>>> = Arc::default();
            let order: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
            let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let workers = (0..4).map(|_| {
                let (env, claims, order, done) =
                    (env.clone(), claims.clone(), order.clone(), done.clone());
                tokio::spawn(async move {
                    while done.load(std::sync::atomic::Ordering::SeqCst) < JOBS {
                        let batch = env.store.claim_jobs(&claim_batch(8, T0 + 1)).await.unwrap();
                        let apps: HashSet<&str> =
                            batch.iter().map(|c| c.job.app_id.as_str()).collect();
                        assert_eq!(apps.len(), batch.len(), "two jobs of one app in a batch");
                        if batch.is_empty() {
                            tokio::task::yield_now().await;
                        }
                        for c in &batch {
                            *claims.lock().unwrap().entry(c.job.job_id).or_default() += 1;
                            order
                                .lock()
                                .unwrap()
                                .entry(c.job.app_id.clone())
                                .or_default()
                                .push(c.job.seq);
                        }
                        for c in &batch {
                            env.succeed(&c.job, T0 + 1).await;
                            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                })
            });
            let all = tokio::time::timeout(
                std::time::Duration::from_secs(600),
                futures::future::join_all(workers),
            )
            .await
            .unwrap();
            for w in all {
                w.unwrap();
            }
            let claims = claims.lock().unwrap().clone();
            assert_eq!(claims.len(), JOBS, "every job was claimed");
            assert!(claims.values().all(|&n| n == 1), "no job was claimed twice");
            for (app, seqs) in order.lock().unwrap().iter() {
                assert!(
                    seqs.windows(2).all(|w| w[0] < w[1]),
                    "{app}'s jobs ran out of order: {seqs:?}"
                );
            }
            assert_eq!(env.events("job.running").await, JOBS as i64);
            assert_eq!(env.events("job.succeeded").await, JOBS as i64);
        })
    }
);

per_database!(
    heartbeats_record_sleeping_and_woken_apps_in_their_runs,
    |kind| {
        with_store(kind, |env: Env| async move {
            let beat = |apps: &'static [(&'static str, AppState, Option<&'static str>)], now| {
                let store = env.store.clone();
                async move {
                    store
                        .node_heartbeat(&reporting("node-a", 10, 100, apps), now)
                        .await
                        .unwrap()
                        .node
                }
            };
            let state = |app: &'static str| {
                let store = env.store.clone();
                async move {
                    let run = store.app_run(app).await.unwrap().unwrap();
                    (run.state, run.error)
                }
            };
            beat(&[], T0).await;
            for (i, app) in ["alpha", "beta"].into_iter().enumerate() {
                env.create(app, T0 + i as i64).await;
                let claimed = env.claim(T0 + 10).await.unwrap();
                env.succeed(&claimed.job, T0 + 11).await;
            }
            const ALPHA_ASLEEP: &[(&str, AppState, Option<&str>)] = &[
                ("alpha", AppState::Sleeping, None),
                ("beta", AppState::Running, None),
            ];
            let node = beat(ALPHA_ASLEEP, T0 + 20).await;
            assert_eq!(node.sleeping_apps, 1);
            assert_eq!(state("alpha").await, ("SLEEPING".to_owned(), None));
            assert_eq!(state("beta").await, ("RUNNING".to_owned(), None));
            let run = env.store.app_run("alpha").await.unwrap().unwrap();
            assert_eq!(run.updated_at, T0 + 20);
            assert_eq!(run.url.as_deref(), Some("http://app"), "the route is kept");

            // A failed wake: still asleep, with the reason; another node's report changes nothing.
            beat(
                &[("alpha", AppState::Sleeping, Some("exited with code 1"))],
                T0 + 21,
            )
            .await;
            let expected = ("SLEEPING".to_owned(), Some("exited with code 1".to_owned()));
            assert_eq!(state("alpha").await, expected);
            env.store
                .node_heartbeat(
                    &reporting("node-b", 10, 100, &[("alpha", AppState::Running, None)]),
                    T0 + 22,
                )
                .await
                .unwrap();
            assert_eq!(state("alpha").await, expected);

            // Woken: running again, the error gone.
            beat(&[("alpha", AppState::Running, None)], T0 + 23).await;
            assert_eq!(state("alpha").await, ("RUNNING".to_owned(), None));

            // A redeploy of a sleeping app: the job owns the run until it ends.
            beat(ALPHA_ASLEEP, T0 + 30).await;
            env.create("alpha", T0 + 31).await;
            let redeploy = env.claim(T0 + 32).await.unwrap();
            assert_eq!(redeploy.node.unwrap().node_id, "node-a", "it stays");
            assert_eq!(state("alpha").await.0, "DEPLOYING");
            beat(ALPHA_ASLEEP, T0 + 33).await;
            assert_eq!(
                state("alpha").await.0,
                "DEPLOYING",
                "a job's run is its own"
            );
            env.succeed(&redeploy.job, T0 + 34).await;
            assert_eq!(state("alpha").await, ("RUNNING".to_owned(), None));

            // A stop of a sleeping app goes to its node and frees its placement.
            beat(ALPHA_ASLEEP, T0 + 40).await;
            let stop = created(
                env.store
                    .create_job(new_job("alpha", JobKind::Stop, None, T0 + 41))
                    .await
                    .unwrap(),
            );
            let claimed = env.claim(T0 + 42).await.unwrap();
            assert_eq!(claimed.job.job_id, stop.job_id);
            assert_eq!(claimed.node.unwrap().node_id, "node-a");
            assert_eq!(state("alpha").await.0, "STOPPING");
            env.succeed(&claimed.job, T0 + 43).await;
            beat(ALPHA_ASLEEP, T0 + 44).await;
            assert_eq!(
                state("alpha").await.0,
                "STOPPED",
                "a stopped app stays stopped"
            );
            let placements = env.store.list_placements().await.unwrap();
            assert_eq!(
                placements
                    .iter()
                    .map(|p| p.app_id.as_str())
                    .collect::<Vec<_>>(),
                ["beta"]
            );
            assert_eq!(env.store.list_nodes().await.unwrap()[0].app_count, 1);
        })
    }
);

per_database!(
    sleeping_apps_count_against_max_sleeping_apps_under_concurrent_claims,
    |kind| {
        with_store(kind, |env: Env| async move {
            // Room for 2 awake apps and 3 sleeping ones beyond them.
            let beat = |asleep: Vec<String>, now| {
                let store = env.store.clone();
                async move {
                    let names: Vec<&str> = asleep.iter().map(String::as_str).collect();
                    let apps: Vec<_> = names
                        .iter()
                        .map(|a| (*a, AppState::Sleeping, None))
                        .collect();
                    store
                        .node_heartbeat(&reporting("node-a", 2, 3, &apps), now)
                        .await
                        .unwrap()
                        .node
                }
            };
            beat(vec![], T0).await;
            for i in 0..12 {
                env.create(&format!("app-{i:02}"), T0).await;
            }
            let mut placed = Vec::new();
            // Awake apps fill maxApps; once asleep, up to maxSleepingApps of them free their slot.
            for (round, want) in [(0, 2), (1, 2), (2, 1), (3, 0)] {
                let now = T0 + 10 * (round + 1);
                let got = env.claim_concurrently(now).await;
                assert_eq!(got.len(), want, "round {round}: {got:?}");
                for job in &got {
                    env.succeed(job, now + 1).await;
                }
                placed.extend(got.into_iter().map(|j| j.app_id));
                let node = beat(placed.clone(), now + 2).await;
                assert_eq!(node.app_count, placed.len() as i64);
                assert_eq!(node.sleeping_apps, placed.len() as i64);
            }
            assert_eq!(placed.len(), 5, "maxApps + maxSleepingApps");
            let node = env.store.list_nodes().await.unwrap().remove(0);
            assert_eq!(
                (node.counted_apps(), node.capacity.max_sleeping_apps),
                (2, 3)
            );
            for app in &placed {
                let run = env.store.app_run(app).await.unwrap().unwrap();
                assert_eq!(run.state, "SLEEPING", "{app}");
            }
            // Woken apps count against maxApps again: nothing fits, and the reason says why.
            beat(placed[..3].to_vec(), T0 + 100).await;
            assert!(env.claim(T0 + 101).await.is_none());
            let waiting = env.pending().await;
            assert_eq!(waiting.len(), 7);
            assert!(waiting[0]
                .waiting_reason
                .as_deref()
                .is_some_and(|r| r.contains("room")));
        })
    }
);

/// A heartbeat of `node` reporting one container per `(app, job)`, named `c-{node}-{app}`.
fn running(node: &str, apps: &[(&str, &JobRecord)]) -> NodeHeartbeat {
    let mut hb = heartbeat(node, 10);
    hb.apps = apps
        .iter()
        .map(|(app, job)| NodeApp {
            app_id: (*app).to_owned(),
            container_id: format!("c-{node}-{app}"),
            image: "nginx:1.27".to_owned(),
            state: AppState::Running,
            error: None,
            job_id: Some(job.job_id.to_string()),
        })
        .collect();
    hb
}

impl Env {
    /// node-a and node-b heartbeat at `T0`, and alpha's first deploy is claimed on node-a.
    async fn first_on_node_a(&self) -> Claimed {
        self.heartbeat("node-a", 10, T0).await;
        self.heartbeat("node-b", 10, T0).await;
        self.create("alpha", T0).await;
        let first = self.claim(T0).await.unwrap();
        assert_eq!(first.node.as_ref().unwrap().node_id, "node-a");
        first
    }

    /// node-a and node-b heartbeat just before `expiry`, when the one running job's lease runs
    /// out (its report was lost): the job, `PENDING` again.
    async fn lose_report(&self, expiry: Millis) -> JobRecord {
        self.heartbeat("node-a", 10, expiry - 1).await;
        self.heartbeat("node-b", 10, expiry - 1).await;
        let mut expired = self.store.expire_leases(&POLICY, expiry).await.unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].state, JobState::Pending);
        expired.remove(0)
    }

    /// node-a and node-b heartbeat once the retry of a job whose lease ran out at `expiry` is
    /// due, and it is claimed.
    async fn claim_retry(&self, expiry: Millis) -> Claimed {
        let retry_at = expiry + POLICY.cap_ms;
        self.heartbeat("node-a", 10, retry_at).await;
        self.heartbeat("node-b", 10, retry_at).await;
        self.claim(retry_at).await.unwrap()
    }

    /// The apps whose containers `node` must remove when it reports `apps`.
    async fn displaced(&self, node: &str, apps: &[(&str, &JobRecord)]) -> Vec<(String, String)> {
        let hb = running(node, apps);
        let mut found: Vec<(String, String)> = self
            .store
            .displaced_apps(node, &hb.apps)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.app_id, d.container_id))
            .collect();
        found.sort();
        found
    }
}

per_database!(
    a_node_removes_the_container_of_an_app_settled_elsewhere,
    |kind| {
        with_store(kind, |env: Env| async move {
            env.heartbeat("node-a", 10, T0).await;
            env.create("alpha", T0).await;
            let first = env.claim(T0).await.unwrap();
            assert_eq!(first.node.as_ref().unwrap().node_id, "node-a");
            let first = env.succeed(&first.job, T0 + 1).await;

            // node-a goes silent; a redeploy moves alpha to node-b.
            let later = T0 + TTL_MS + 5_000;
            env.heartbeat("node-b", 10, later).await;
            env.store.mark_offline_nodes(later, TTL_MS).await.unwrap();
            env.create("alpha", later).await;
            let moving = env.claim(later).await.unwrap();
            assert_eq!(moving.node.as_ref().unwrap().node_id, "node-b");
            let a_reports = [("alpha", &first)];
            assert!(
                env.displaced("node-a", &a_reports).await.is_empty(),
                "the only copy that serves stays while the move is under way"
            );
            env.fail(&moving.job, later + 1).await;
            assert!(
                env.displaced("node-a", &a_reports).await.is_empty(),
                "a move whose deploy failed leaves the last version that succeeded where it runs"
            );
            assert!(
                env.displaced("node-a", &[("ghost", &first)])
                    .await
                    .is_empty(),
                "an app the control plane never ran is left alone"
            );

            // The next deploy goes to node-b (the app's placement) and succeeds there.
            env.create("alpha", later + 2).await;
            let moved = env.claim(later + 2).await.unwrap();
            assert_eq!(moved.node.as_ref().unwrap().node_id, "node-b");
            let moved = env.succeed(&moved.job, later + 3).await;
            assert_eq!(
                env.displaced("node-a", &a_reports).await,
                [("alpha".to_owned(), "c-node-a-alpha".to_owned())],
                "node-a's old version goes once the app succeeded on node-b"
            );
            let answer = env
                .store
                .displaced_apps("node-a", &running("node-a", &a_reports).apps)
                .await
                .unwrap();
            assert_eq!(answer[0].job_id, moved.job_id.to_string());
            assert_eq!(answer[0].node_id.as_deref(), Some("node-b"));
            assert!(answer[0].reason.contains("node-b"), "{}", answer[0].reason);
            assert!(
                env.displaced("node-b", &[("alpha", &moved)])
                    .await
                    .is_empty(),
                "the node the app is placed on keeps it"
            );

            // node-a reports what it removed: one event each.
            let mut hb = running("node-a", &[]);
            hb.removed = answer;
            env.store.node_heartbeat(&hb, later + 4).await.unwrap();
            assert_eq!(env.events("node.app_removed").await, 1);

            // A stopped app goes from any node still reporting it.
            env.store
                .create_job(new_job("alpha", JobKind::Stop, None, later + 5))
                .await
                .unwrap();
            let stop = env.claim(later + 5).await.unwrap();
            env.succeed(&stop.job, later + 6).await;
            assert_eq!(
                env.displaced("node-b", &[("alpha", &moved)]).await,
                [("alpha".to_owned(), "c-node-b-alpha".to_owned())],
                "the app was stopped"
            );
        })
    }
);

per_database!(
    a_retry_elsewhere_removes_the_first_attempts_container,
    |kind| {
        with_store(kind, |env: Env| async move {
            env.first_on_node_a().await;
            // The attempt deployed on node-a, but its report never arrived: the lease runs out.
            let expiry = T0 + LEASE_MS + 1;
            let pending = &env.lose_report(expiry).await;
            assert!(
                env.displaced("node-a", &[("alpha", pending)])
                    .await
                    .is_empty(),
                "the job waits for its retry"
            );

            // The retry goes to node-b (node-a cordoned meanwhile) and succeeds there.
            env.store
                .set_scheduling("node-a", Scheduling::Cordoned, expiry)
                .await
                .unwrap();
            let retry = env.claim_retry(expiry).await;
            let retry_at = expiry + POLICY.cap_ms;
            assert_eq!(retry.job.job_id, pending.job_id);
            assert_eq!(retry.node.as_ref().unwrap().node_id, "node-b");
            assert!(
                env.displaced("node-a", &[("alpha", &retry.job)])
                    .await
                    .is_empty(),
                "nothing goes while the retry runs"
            );
            env.succeed(&retry.job, retry_at + 1).await;
            assert_eq!(
                env.displaced("node-a", &[("alpha", &retry.job)]).await,
                [("alpha".to_owned(), "c-node-a-alpha".to_owned())],
                "the first attempt's container goes once the retry succeeded elsewhere"
            );
        })
    }
);

per_database!(a_container_newer_than_every_success_stays, |kind| {
    with_store(kind, |env: Env| async move {
        let first = env.first_on_node_a().await;
        env.succeed(&first.job, T0 + 1).await;

        // The next deploy moves alpha to node-b, deploys there, and its report is lost.
        env.store
            .set_scheduling("node-a", Scheduling::Cordoned, T0 + 2)
            .await
            .unwrap();
        env.create("alpha", T0 + 2).await;
        let second = env.claim(T0 + 2).await.unwrap();
        assert_eq!(second.node.as_ref().unwrap().node_id, "node-b");
        let expiry = T0 + 2 + LEASE_MS + 1;
        env.lose_report(expiry).await;

        // Its retry goes back to node-a and fails for good: node-b's copy is the newest version.
        for (node, scheduling) in [
            ("node-a", Scheduling::Active),
            ("node-b", Scheduling::Cordoned),
        ] {
            env.store
                .set_scheduling(node, scheduling, expiry)
                .await
                .unwrap();
        }
        let retry = env.claim_retry(expiry).await;
        let retry_at = expiry + POLICY.cap_ms;
        assert_eq!(retry.node.as_ref().unwrap().node_id, "node-a");
        let failed = env.fail(&retry.job, retry_at + 1).await;
        assert_eq!(failed.state, JobState::Failed);
        assert!(
            env.displaced("node-b", &[("alpha", &failed)])
                .await
                .is_empty(),
            "a container newer than every success may be the only copy that serves"
        );
    })
});

per_database!(
    retention_deletes_old_finished_jobs_with_their_logs_but_keeps_what_redeploys_need,
    |kind| {
        with_store(kind, |env: Env| async move {
            env.heartbeat("node-a", 10, T0).await;
            // shop: two deploys that succeeded, a later one that failed (its last run).
            let mut shop = Vec::new();
            for (i, succeed) in [true, true, false].into_iter().enumerate() {
                let now = T0 + 10 * i as i64;
                env.create("shop", now).await;
                let job = env.claim(now + 1).await.unwrap().job;
                let lease = job.lease_token.clone().unwrap();
                env.store
                    .append_logs(job.job_id, &lease, &["a line".into()], now + 2)
                    .await
                    .unwrap();
                shop.push(if succeed {
                    env.succeed(&job, now + 3).await
                } else {
                    env.fail(&job, now + 3).await
                });
            }
            // blog: a job cancelled before it ran; news: one still pending.
            let blog = env.create("blog", T0 + 40).await;
            env.store.cancel_job(blog.job_id, T0 + 41).await.unwrap();
            let news = env.create("news", T0 + 50).await;

            // Nothing finished before the cut-off: nothing goes.
            assert_eq!(env.store.prune_jobs(T0).await.unwrap(), 0);
            assert_eq!(env.store.list_jobs(&filter()).await.unwrap().len(), 5);
            assert_eq!(env.rows("job_log").await, 3);
            assert_eq!(env.rows("job_attempt").await, 3);

            let deleted = env.store.prune_jobs(T0 + 1_000_000).await.unwrap();
            let left: Vec<Uuid> = env
                .store
                .list_jobs(&filter())
                .await
                .unwrap()
                .iter()
                .map(|j| j.job_id)
                .collect();
            // The first deploy (an older success) goes, with its log lines, and so does blog's
            // cancelled job (it never ran: no app's run); the newest success (what a redeploy
            // repeats), the last run (the failure) and the pending job stay.
            assert_eq!(deleted, 2, "left: {left:?}");
            assert!(!left.contains(&shop[0].job_id));
            assert!(!left.contains(&blog.job_id));
            for kept in [shop[1].job_id, shop[2].job_id, news.job_id] {
                assert!(left.contains(&kept), "{kept} was kept");
            }
            assert!(matches!(
                env.store.get_job(shop[0].job_id).await,
                Err(StoreError::JobNotFound(_))
            ));
            assert_eq!(
                env.rows("job_log").await,
                2,
                "the deleted job's line went with it"
            );
            assert_eq!(env.store.job_logs(shop[1].job_id).await.unwrap().len(), 1);
            assert_eq!(
                env.rows("job_attempt").await,
                2,
                "the deleted job's attempt went with it"
            );
            let filter_by_label = JobFilter {
                label: Some(("tenant".into(), "t-s".into())),
                ..filter()
            };
            assert_eq!(
                env.store.list_jobs(&filter_by_label).await.unwrap().len(),
                2,
                "the label of the deleted job went with it"
            );
            // A second pass finds nothing more.
            assert_eq!(env.store.prune_jobs(T0 + 1_000_000).await.unwrap(), 0);
        })
    }
);

per_database!(
    a_claim_batch_opens_one_attempt_per_job_it_hands_out,
    |kind| {
        with_store(kind, |env: Env| async move {
            env.heartbeat("node-a", 100, T0).await;
            let jobs = [
                env.create("alpha", T0).await,
                env.create("beta", T0).await,
                env.create("gamma", T0).await,
            ];
            let claimed = env.store.claim_jobs(&claim_batch(3, T0 + 1)).await.unwrap();
            assert_eq!(claimed.len(), 3);
            for (i, job) in jobs.iter().enumerate() {
                let (_, attempts) = env.store.job_timeline(job.job_id).await.unwrap();
                assert_eq!(attempts.len(), 1, "{}", job.app_id);
                let a = &attempts[0];
                assert_eq!(
                    (
                        a.attempt,
                        a.runner_id.clone(),
                        a.node_id.as_deref(),
                        a.claimed_at
                    ),
                    (1, format!("runner-{i}"), Some("node-a"), T0 + 1)
                );
                assert_eq!((a.ended_at, a.outcome), (None, None));
            }
            assert_eq!(env.rows("job_attempt").await, 3);
        })
    }
);

per_database!(
    the_job_tables_statistics_are_refreshed_as_the_queue_grows,
    |kind| {
        with_store(kind, |env: Env| async move {
            // Once soon after the start, then after every STATS_EVERY new jobs.
            assert!(env.store.refresh_statistics().await.unwrap());
            assert!(!env.store.refresh_statistics().await.unwrap());
            for i in 0..storage::STATS_EVERY {
                env.create(&format!("app-{i}"), T0).await;
            }
            assert!(env.store.refresh_statistics().await.unwrap());
            assert!(!env.store.refresh_statistics().await.unwrap());
            if env.kind == DbKind::Postgres {
                // The planner now knows the rows are there (never analyzed: -1).
                let mut c = sqlx::PgConnection::connect(&env.url).await.unwrap();
                let tuples: f32 = sqlx::query_scalar(
                    "SELECT reltuples FROM pg_class WHERE relname = 'deploy_job'",
                )
                .fetch_one(&mut c)
                .await
                .unwrap();
                assert_eq!(tuples, storage::STATS_EVERY as f32);
            }
        })
    }
);
