//! The database goes away under a running control plane: calls answer `503` problem+json with
//! `Retry-After` at once (not after sqlx's 30 s wait for a connection), and the control plane
//! answers normally again once the database is back, without a restart. Once back, it judges
//! nothing it could not watch (`berth_control::watch`): a lease that ran out during the outage
//! is still the runner's to renew, a node that could not heartbeat is not marked `OFFLINE`, and
//! no app moves off its node before that node had one TTL to heartbeat.
//!
//! The database is reached through a TCP relay of the test's own, which can cut every
//! connection and then leave new ones hanging unanswered: what a stopped, hung or partitioned
//! database server looks like from the client side.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_control::queue::now_millis;
use berth_shared::wire::NodeState;
use common::app::{spawn_app_with, TestApp};
use common::db::DbKind;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay to `upstream` that can be cut (`set(true)`) and mended (`set(false)`).
struct Relay {
    port: u16,
    down: Arc<watch::Sender<bool>>,
}

impl Relay {
    async fn start(upstream: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(watch::channel(false).0);
        let cut = down.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut state = cut.subscribe();
                tokio::spawn(async move {
                    if *state.borrow() {
                        // Down: hold the connection open and say nothing.
                        let _ = state.wait_for(|down| !*down).await;
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        // Cut: both sockets are dropped, so the client's connection breaks.
                        _ = state.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Self { port, down }
    }

    fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

async fn answers_503_at_once_and_heals(kind: DbKind, upstream: &'static str) {
    let relay = Relay::start(upstream).await;
    let app = spawn_app_with(kind, |s| {
        s.database_url = s
            .database_url
            .replace(upstream, &format!("127.0.0.1:{}", relay.port));
    })
    .await;
    let unknown = "/deploy/jobs/0192d6a4-0000-7000-8000-000000000000";
    let res = app
        .deploy(reqwest::Method::GET, unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "through the relay, the database answers");

    relay.set_down(true);
    // A generous bound: the promise is "a couple of seconds"; sqlx's default would wait 30.
    let res = app
        .deploy(reqwest::Method::GET, unknown)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the control plane answers while its database is away");
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "2");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body = res.text().await.unwrap();
    assert!(body.contains("database"), "{body}");
    assert!(
        !body.contains("127.0.0.1"),
        "no internals in the answer: {body}"
    );

    relay.set_down(false);
    // Back: the pool makes new connections on the next calls.
    until_answers(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn postgres_away_answers_503_at_once_and_heals() {
    answers_503_at_once_and_heals(DbKind::Postgres, "127.0.0.1:5432").await;
}

#[tokio::test]
async fn mariadb_away_answers_503_at_once_and_heals() {
    answers_503_at_once_and_heals(DbKind::MySql, "127.0.0.1:3306").await;
}

/// The lease and the node TTL of [`judges_nothing_it_could_not_watch`], seconds.
const SPAN_SECS: u64 = 3;

/// Cuts the database for longer than a lease and a TTL under a running job and a placed app.
async fn judges_nothing_it_could_not_watch(kind: DbKind, upstream: &'static str) {
    let relay = Relay::start(upstream).await;
    let app = spawn_app_with(kind, |s| {
        s.database_url = s
            .database_url
            .replace(upstream, &format!("127.0.0.1:{}", relay.port));
        s.lease = Duration::from_secs(SPAN_SECS);
        s.node_ttl = Duration::from_secs(SPAN_SECS);
    })
    .await;
    // Past the grace after the start: the sweeps judge, and see the outage.
    tokio::time::sleep(Duration::from_millis(SPAN_SECS * 1000 + 200)).await;
    assert_eq!(app.node_heartbeat("node-a", 10).await.status(), 200);
    app.deploy_image("alpha", "nginx:1.27").await;
    let alpha = app.claim("r1", 0).await.expect("alpha's first deploy");
    assert_eq!(alpha["node"]["nodeId"], "node-a");
    assert_eq!(app.succeed(&alpha, "r1").await.status(), 200);
    assert_eq!(app.node_heartbeat("node-b", 10).await.status(), 200);
    app.deploy_image("beta", "nginx:1.27").await;
    let beta = app.claim("r2", 0).await.expect("beta's deploy");

    // Away for longer than beta's lease and node-a's TTL.
    relay.set_down(true);
    tokio::time::sleep(Duration::from_secs(SPAN_SECS + 1)).await;
    let watch = app.state.watch().clone();
    assert!(!watch.watched(now_millis(), 0), "the sweeps saw the outage");
    relay.set_down(false);
    until_answers(&app).await;
    // Once a sweep reached the database again, the sweeps run every 100 ms: without the watch,
    // they would have expired beta's lease and marked node-a OFFLINE within half a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !watch.watched(now_millis(), 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sweep reached the database again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let renewed = app.renew(&beta, "r2").await;
    assert_eq!(
        renewed.status(),
        200,
        "the lease is still the runner's: {}",
        renewed.text().await.unwrap_or_default()
    );
    let nodes = app.state.store().list_nodes().await.unwrap();
    assert!(
        nodes.iter().all(|n| n.recorded_state == NodeState::Online),
        "no node is marked OFFLINE before it had a TTL to heartbeat: {nodes:?}"
    );

    // node-b heartbeats first; alpha's redeploy waits for node-a instead of moving.
    assert_eq!(app.node_heartbeat("node-b", 10).await.status(), 200);
    let redeploy = app.deploy_image("alpha", "nginx:1.28").await;
    assert!(
        app.claim("r1", 0).await.is_none(),
        "alpha moved on a stale view of the nodes"
    );
    let waiting = app.get_job(redeploy["jobId"].as_str().unwrap()).await;
    let reason = waiting["waitingReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("node-a") && reason.contains("TTL"),
        "{reason}"
    );
    assert_eq!(app.node_heartbeat("node-a", 10).await.status(), 200);
    let claimed = app.claim("r1", 0).await.expect("alpha's redeploy");
    assert_eq!(
        claimed["node"]["nodeId"], "node-a",
        "alpha stays where it runs"
    );
    app.stop().await;
}

/// Calls until the control plane answers from the database again (the first calls may meet
/// connections the cut broke, which the pool then drops).
async fn until_answers(app: &TestApp) {
    let unknown = "/deploy/jobs/0192d6a4-0000-7000-8000-000000000000";
    for _ in 0..20 {
        let res = app
            .deploy(reqwest::Method::GET, unknown)
            .send()
            .await
            .unwrap();
        if res.status() == 404 {
            return;
        }
    }
    panic!("the control plane did not heal once the database was back");
}

#[tokio::test]
async fn postgres_away_loses_no_lease_no_node_and_moves_no_app() {
    judges_nothing_it_could_not_watch(DbKind::Postgres, "127.0.0.1:5432").await;
}

#[tokio::test]
async fn mariadb_away_loses_no_lease_no_node_and_moves_no_app() {
    judges_nothing_it_could_not_watch(DbKind::MySql, "127.0.0.1:3306").await;
}
