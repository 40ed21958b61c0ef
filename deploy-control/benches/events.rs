//! Events benchmark: events per second through the outbox relay (read batch, publish with
//! confirms, mark published) beside a raw lapin publish loop with confirms of the same bodies
//! and batch size; and the wake-up latency of a waiting runner when the job is created on
//! another replica (through RabbitMQ, through PostgreSQL `NOTIFY`) beside the same replica.
//! All in one run, ratios printed.
//!
//! ```sh
//! cargo bench -p berth-control --bench events
//! BERTH_BENCH_EVENTS=50000 BERTH_BENCH_WAKE_SAMPLES=200 cargo bench -p berth-control --bench events
//! ```
//! Needs PostgreSQL and RabbitMQ on 127.0.0.1 as `scripts/ensure-services.sh` leaves them.

use std::time::{Duration, Instant};

use berth_control::config::EventSettings;
use berth_control::events::relay;
use berth_control::state::AppState;
use berth_shared::secret::Secret;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::BasicProperties;
use serde_json::json;
use sqlx::Connection;

mod support;

use support::{
    drop_db, env_usize, fresh_db, heartbeat, replica, settings, AMQP, DEPLOY_SECRET, RUNNER_TOKEN,
};

fn broker() -> EventSettings {
    EventSettings {
        amqp_url: Some(Secret::new(AMQP)),
        ..EventSettings::default()
    }
}

/// Writes `n` job events straight into the outbox (what `n` job changes would leave).
async fn fill_outbox(url: &str, n: usize) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    // One statement: the trigger's NOTIFYs collapse to one.
    sqlx::query(
        "INSERT INTO outbox_event (event_id, routing_key, body, created_at) \
         SELECT id::text, 'job.created', json_build_object('eventId', id::text, 'type', 'job.created', \
         'jobId', gen_random_uuid()::text, 'appId', 'bench-' || i, 'state', 'PENDING', 'version', 1)::text, 0 \
         FROM (SELECT gen_random_uuid() AS id, i FROM generate_series(1, $1) AS i) s",
    )
    .bind(n as i64)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Events/s through the relay: every row of the outbox read, published with confirms and
/// marked, a batch at a time.
async fn relay_rate(state: &AppState, n: usize) -> anyhow::Result<f64> {
    let (_conn, channel) = relay::connect(&Secret::new(AMQP), "bench relay").await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let published = relay::publish_batch(state, &channel).await?;
        anyhow::ensure!(published > 0, "the outbox ran dry after {done} events");
        done += published;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Events/s of a bare publish loop with confirms: the same bodies and batch size, no database.
async fn raw_rate(url: &str, n: usize, batch: usize) -> anyhow::Result<f64> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let bodies: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, body FROM outbox_event ORDER BY seq LIMIT $1")
            .bind(n as i64)
            .fetch_all(&mut conn)
            .await?;
    let (_conn, channel) = relay::connect(&Secret::new(AMQP), "bench raw").await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    for chunk in bodies.chunks(batch) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for (id, body) in chunk {
            let props = BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2);
            confirms.push(
                channel
                    .basic_publish(
                        berth_control::events::EXCHANGE,
                        "job.created",
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        props,
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            anyhow::ensure!(
                matches!(confirm.await?, Confirmation::Ack(_)),
                "a publish was not acked"
            );
        }
    }
    Ok(bodies.len() as f64 / started.elapsed().as_secs_f64())
}

/// p50 and p99 (ms) of create-on-`creator` → the claim waiting on `waiter` returns.
async fn wake_latency(
    client: &reqwest::Client,
    creator: &str,
    waiter: &str,
    samples: usize,
    tag: &str,
) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let claim = {
            let client = client.clone();
            let url = format!("{waiter}/runner/jobs/claim");
            tokio::spawn(async move {
                let res = client
                    .post(url)
                    .header("X-Runner-Token", RUNNER_TOKEN)
                    .json(&json!({ "runnerId": "bench-runner", "wait": 10 }))
                    .send()
                    .await?;
                let at = Instant::now();
                anyhow::ensure!(res.status() == 200, "claim: {}", res.status());
                anyhow::Ok(at)
            })
        };
        // Let the claim reach its wait.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let res = client
            .post(format!("{creator}/deploy/jobs"))
            .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
            .json(&json!({ "appId": format!("{tag}-{i}"), "image": "img:1" }))
            .send()
            .await?;
        let created = Instant::now();
        anyhow::ensure!(res.status() == 201, "create: {}", res.status());
        let answered = claim.await??;
        times.push(answered.saturating_duration_since(created).as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Ok((at(0.50), at(0.99)))
}

async fn wait_remote(state: &AppState) -> anyhow::Result<()> {
    for _ in 0..400 {
        if state.wake().remote_connected() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("the replica never received remote wake-ups")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_usize("BERTH_BENCH_EVENTS", 20_000);
    let samples = env_usize("BERTH_BENCH_WAKE_SAMPLES", 100);
    let batch = EventSettings::default().relay_batch as usize;
    println!("Berth events benchmark on PostgreSQL and RabbitMQ: {n} events, batches of {batch}, {samples} wake-ups per case");

    // 1. Relay throughput. The relay here is driven by hand (no replica's own relay runs).
    let (url, name) = fresh_db().await?;
    let store = berth_control::storage::connect(&url).await?;
    let state = AppState::with_events(store, settings(&url), broker());
    fill_outbox(&url, n).await?;
    let raw = raw_rate(&url, n, batch).await?;
    let through_relay = relay_rate(&state, n).await?;
    println!("publish with confirms (persistent, exchange berth.events)");
    println!("  raw lapin loop, {batch} per confirm wait       {raw:>9.0} events/s");
    println!(
        "  outbox relay (claim, publish, mark)          {through_relay:>9.0} events/s   ratio {:.2}",
        through_relay / raw
    );
    drop(state);
    drop_db(&name).await;

    // 2. Wake-ups.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()?;
    let mut rows = Vec::new();
    for (label, events) in [
        ("RabbitMQ", broker()),
        ("PostgreSQL NOTIFY", EventSettings::default()),
    ] {
        let (url, name) = fresh_db().await?;
        let (a, a_state) = replica(&url, events.clone()).await?;
        let (b, b_state) = replica(&url, events).await?;
        wait_remote(&a_state).await?;
        wait_remote(&b_state).await?;
        heartbeat(&client, &a).await?;
        let same = wake_latency(&client, &b, &b, samples, "same").await?;
        let cross = wake_latency(&client, &a, &b, samples, "cross").await?;
        rows.push((label, same, cross));
        drop_db(&name).await;
    }
    println!("wake-up: job created → the claim waiting on replica B returns it (ms)");
    for (label, same, cross) in rows {
        println!(
            "  [{label}] same replica       p50 {:>6.2}   p99 {:>6.2}",
            same.0, same.1
        );
        println!(
            "  [{label}] across replicas    p50 {:>6.2}   p99 {:>6.2}   ratio p50 {:.2}, p99 {:.2}",
            cross.0,
            cross.1,
            cross.0 / same.0,
            cross.1 / same.1
        );
    }
    Ok(())
}
