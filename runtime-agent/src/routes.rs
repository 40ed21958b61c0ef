//! The route table: which container serves which app.
//!
//! The gateway reads it on every request, deploys and stops change it a few times a day, so
//! readers take a snapshot (`Arc` clone under a short read lock) and writers replace the whole
//! map. The committed part is kept in `routes.json` in the state folder so a restarted agent
//! knows which of its containers are live and which are leftovers of an interrupted deploy.
//!
//! Writers take turns (deploys of different apps and the sync loop update at the same time): each
//! writes the file, then swaps the map in, so the file always holds the table the gateway uses
//! and a failed write changes nothing. Two writers once shared the temporary file, and one of them
//! failed after its new route was already live, leaving the replaced container running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::sleep::{SleepPolicy, Sleeper};

/// The committed facts about one app's live container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRecord {
    /// The app.
    pub app_id: String,
    /// Its live container.
    pub container_id: String,
    /// The job that made it.
    pub job_id: String,
    /// The image it runs.
    pub image: String,
    /// Where the container port is published on 127.0.0.1.
    pub host_port: u16,
    /// The readiness path, for status checks.
    #[serde(default)]
    pub health_check_path: Option<String>,
    /// When and how the app sleeps (SPEC §8); kept so a restarted agent knows a stopped or
    /// paused container of this app is asleep, not dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<SleepPolicy>,
}

/// A route as the gateway uses it.
#[derive(Debug)]
pub struct Route {
    /// What was committed.
    pub record: RouteRecord,
    /// `127.0.0.1:{hostPort}`, prepared once.
    pub authority: hyper::http::uri::Authority,
    /// False while the container is not running (the gateway answers 503).
    pub up: bool,
    /// Requests in flight to this container; a redeploy waits for them before stopping it.
    pub inflight: Arc<AtomicUsize>,
    /// The app's sleep state, when it sleeps when idle.
    pub sleep: Option<Arc<Sleeper>>,
}

impl Route {
    /// A route to a container known to be running.
    pub fn new(record: RouteRecord, up: bool) -> Self {
        let authority = format!("127.0.0.1:{}", record.host_port)
            .parse()
            .expect("an IP and a port form an authority");
        Self {
            record,
            authority,
            up,
            inflight: Arc::default(),
            sleep: None,
        }
    }

    /// The same container's route with a changed record or state: it keeps counting the same
    /// requests in flight and keeps its sleeper.
    pub fn carry(&self, record: RouteRecord, up: bool) -> Self {
        let mut route = Self::new(record, up);
        route.inflight = self.inflight.clone();
        route.sleep = self.sleep.clone();
        route
    }

    /// Waits until no request is in flight to this route's container, at most `max`.
    pub async fn drain(&self, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        while self.inflight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Immutable view of every route.
pub type Snapshot = Arc<HashMap<String, Arc<Route>>>;

/// The shared, persisted route table.
#[derive(Debug)]
pub struct RouteTable {
    current: RwLock<Snapshot>,
    /// Held through a whole update (copy, change, write the file, swap): writers take turns, so
    /// none overwrites another's change or its temporary file.
    writer: Mutex<()>,
    file: PathBuf,
}

impl RouteTable {
    /// An empty table persisted to `routes.json` in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            current: RwLock::default(),
            writer: Mutex::default(),
            file: state_dir.join("routes.json"),
        }
    }

    /// The current routes; cheap, never blocks on a writer for long.
    pub fn snapshot(&self) -> Snapshot {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The route of one app.
    pub fn get(&self, app_id: &str) -> Option<Arc<Route>> {
        self.snapshot().get(app_id).cloned()
    }

    /// Applies `change` to a copy of the map, persists the copy, then makes it current. When the
    /// file cannot be written, the error is returned and nothing changes.
    pub fn update(
        &self,
        change: impl FnOnce(&mut HashMap<String, Arc<Route>>),
    ) -> anyhow::Result<()> {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = HashMap::clone(&self.snapshot());
        change(&mut next);
        let mut records: Vec<RouteRecord> = next.values().map(|r| r.record.clone()).collect();
        records.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        self.persist(&records)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// Reads the records a previous run committed (none when the file is absent).
    pub fn load_records(&self) -> anyhow::Result<Vec<RouteRecord>> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading the route table {}", self.file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.file.display())),
        }
    }

    fn persist(&self, records: &[RouteRecord]) -> anyhow::Result<()> {
        // Write then rename, so a crash leaves the old table or the new one, never half of one.
        let tmp = self.file.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(records)?;
        std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.file)
            .with_context(|| format!("replacing {}", self.file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(app: &str, port: u16) -> RouteRecord {
        RouteRecord {
            app_id: app.into(),
            container_id: format!("c-{app}"),
            job_id: "j".into(),
            image: "img".into(),
            host_port: port,
            health_check_path: None,
            sleep: None,
        }
    }

    #[test]
    fn updates_are_persisted_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("berth-routes-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let table = RouteTable::new(&dir);
        let before = table.snapshot();
        table
            .update(|m| {
                m.insert("a".into(), Arc::new(Route::new(record("a", 1234), true)));
            })
            .unwrap();
        assert!(before.is_empty(), "old snapshots do not change");
        assert_eq!(table.get("a").unwrap().authority.as_str(), "127.0.0.1:1234");
        assert_eq!(
            RouteTable::new(&dir).load_records().unwrap(),
            vec![record("a", 1234)]
        );
        table
            .update(|m| {
                m.remove("a");
            })
            .unwrap();
        assert!(RouteTable::new(&dir).load_records().unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_updates_all_land_in_memory_and_in_the_file() {
        let dir = std::env::temp_dir().join(format!("berth-routes-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let table = Arc::new(RouteTable::new(&dir));
        let writers: Vec<_> = (0..4u16)
            .map(|w| {
                let table = table.clone();
                std::thread::spawn(move || {
                    for i in 0..100u16 {
                        let app = format!("app{w}");
                        table
                            .update(|m| {
                                m.insert(
                                    app.clone(),
                                    Arc::new(Route::new(record(&app, 1000 + i), true)),
                                );
                            })
                            .expect("every update is persisted");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let mut in_memory: Vec<RouteRecord> = table
            .snapshot()
            .values()
            .map(|r| r.record.clone())
            .collect();
        in_memory.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        assert_eq!(in_memory.len(), 4);
        assert!(
            in_memory.iter().all(|r| r.host_port == 1099),
            "{in_memory:?}"
        );
        assert_eq!(RouteTable::new(&dir).load_records().unwrap(), in_memory);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("berth-routes-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let table = RouteTable::new(&dir);
        table
            .update(|m| {
                m.insert("a".into(), Arc::new(Route::new(record("a", 1), true)));
            })
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let failed = table.update(|m| {
            m.insert("a".into(), Arc::new(Route::new(record("a", 2), true)));
        });
        assert!(failed.is_err());
        assert_eq!(table.get("a").unwrap().record.host_port, 1);
    }
}
