//! RabbitMQ for tests: the broker at 127.0.0.1:5672 (guest/guest, started by
//! `scripts/ensure-services.sh`), a queue that records what reaches `berth.events`, and an
//! outage that always ends, even when the test fails.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use berth_control::config::EventSettings;
use berth_shared::secret::Secret;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde_json::Value;
use tokio::sync::Mutex;

/// Broker tests change the broker (outages) and measure latencies: one at a time.
pub static BROKER: Mutex<()> = Mutex::const_new(());

/// Where the test broker is (`BERTH_TEST_AMQP_URL` overrides).
pub fn amqp_url() -> String {
    std::env::var("BERTH_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Event settings that relay to the test broker, polling often so tests finish fast.
pub fn broker_events() -> EventSettings {
    EventSettings {
        amqp_url: Some(Secret::new(amqp_url())),
        relay_poll: Duration::from_millis(200),
        ..EventSettings::default()
    }
}

/// A connection and a channel, with `berth.events` declared as the control plane declares it.
async fn connect() -> (Connection, Channel) {
    let url = amqp_url();
    berth_control::events::relay::connect(&Secret::new(url.clone()), "berth tests")
        .await
        .unwrap_or_else(|e| {
            panic!("RabbitMQ is not reachable at {url} ({e:#}); run scripts/ensure-services.sh, which starts it")
        })
}

/// One message that reached the test queue.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its routing key.
    pub routing_key: String,
    /// AMQP `message_id`.
    pub message_id: Option<String>,
    /// AMQP content type.
    pub content_type: Option<String>,
    /// AMQP delivery mode (2 = persistent).
    pub delivery_mode: Option<u8>,
    /// The JSON body.
    pub body: Value,
}

/// A durable queue bound to `berth.events`, named for one test, deleted by [`Recorder::delete`].
/// Durable, so what was routed to it survives a broker restart.
pub struct Recorder {
    name: String,
    conn: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl Recorder {
    /// Declares the exchange and a fresh queue bound to `keys`.
    pub async fn bind(keys: &[&str]) -> Self {
        let name = format!("berth-test-{}", uuid::Uuid::new_v4().simple());
        let (conn, channel) = connect().await;
        channel
            .queue_declare(
                &name,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare the test queue");
        for key in keys {
            channel
                .queue_bind(
                    &name,
                    "berth.events",
                    key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind the test queue");
        }
        let (conn, channel, consumer) = Self::consume(&name, conn, channel).await;
        Self {
            name,
            conn,
            channel,
            consumer,
        }
    }

    async fn consume(
        name: &str,
        conn: Connection,
        channel: Channel,
    ) -> (Connection, Channel, lapin::Consumer) {
        let consumer = channel
            .basic_consume(
                name,
                "",
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume the test queue");
        (conn, channel, consumer)
    }

    /// Reconnects after a broker restart (the queue is durable, its messages persistent).
    pub async fn reconnect(&mut self) {
        let (conn, channel) = connect().await;
        let (conn, channel, consumer) = Self::consume(&self.name, conn, channel).await;
        self.conn = conn;
        self.channel = channel;
        self.consumer = consumer;
    }

    /// The next message, or `None` after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Received> {
        let delivery = tokio::time::timeout(within, self.consumer.next())
            .await
            .ok()??
            .expect("delivery");
        let p = &delivery.properties;
        Some(Received {
            routing_key: delivery.routing_key.as_str().to_owned(),
            message_id: p.message_id().as_ref().map(|s| s.as_str().to_owned()),
            content_type: p.content_type().as_ref().map(|s| s.as_str().to_owned()),
            delivery_mode: *p.delivery_mode(),
            body: serde_json::from_slice(&delivery.data).expect("JSON body"),
        })
    }

    /// Collects messages until `done` says so or `within` passes; returns them by event id.
    pub async fn collect_until(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&HashMap<String, Received>) -> bool,
    ) -> (HashMap<String, Received>, usize) {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = HashMap::new();
        let mut deliveries = 0;
        while !done(&seen) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match self.next(left).await {
                Some(m) => {
                    deliveries += 1;
                    let id = m.body["eventId"].as_str().expect("eventId").to_owned();
                    seen.insert(id, m);
                }
                None => break,
            }
        }
        (seen, deliveries)
    }

    /// Deletes the queue.
    pub async fn delete(self) {
        let _ = self
            .channel
            .queue_delete(&self.name, QueueDeleteOptions::default())
            .await;
        let _ = self.conn.close(0, "test done").await;
    }
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run rabbitmqctl {args:?} ({e}); is rabbitmq-server installed? run scripts/ensure-services.sh"));
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A broker outage: `rabbitmqctl stop_app` now, `start_app` when dropped — also when the test
/// panics, so a failed test never leaves RabbitMQ down for the next one.
pub struct Outage {
    over: bool,
}

impl Outage {
    /// Stops the RabbitMQ application (the Erlang node stays up).
    pub fn begin() -> Self {
        rabbitmqctl(&["-q", "stop_app"]);
        Self { over: false }
    }

    /// Starts it again and waits until it accepts connections.
    pub fn end(mut self) {
        self.restart();
    }

    fn restart(&mut self) {
        if !self.over {
            self.over = true;
            rabbitmqctl(&["-q", "start_app"]);
            rabbitmqctl(&["-q", "await_startup"]);
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.over {
            self.over = true;
            // Best effort while unwinding: no panic inside a panic.
            let _ = Command::new("rabbitmqctl")
                .args(["-q", "start_app"])
                .status();
            let _ = Command::new("rabbitmqctl")
                .args(["-q", "await_startup"])
                .status();
        }
    }
}
