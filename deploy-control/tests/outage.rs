//! The database goes away under a running control plane: calls answer `503` problem+json with
//! `Retry-After` at once (not after sqlx's 30 s wait for a connection), and the control plane
//! answers normally again once the database is back, without a restart.
//!
//! The database is reached through a TCP relay of the test's own, which can cut every
//! connection and then leave new ones hanging unanswered: what a stopped, hung or partitioned
//! database server looks like from the client side.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::app::spawn_app_with;
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
    // Back: the pool makes new connections on the next calls (the first may still meet a
    // connection the cut broke, which the pool then drops).
    let mut status = 0;
    for _ in 0..20 {
        status = app
            .deploy(reqwest::Method::GET, unknown)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 404 {
            break;
        }
    }
    assert_eq!(
        status, 404,
        "the control plane heals once the database is back"
    );
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
