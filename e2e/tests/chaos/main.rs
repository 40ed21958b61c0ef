//! The chaos suite (SPEC §5 and §8, issue 14): faults injected at random moments of batches of
//! deploys across the real processes (see [`fleet`]), on a PostgreSQL and a RabbitMQ the suite
//! owns, so it can stop them. One fleet, six faults in a row, each in the middle of a batch of
//! two deploys per app:
//! 1. a runner killed (SIGKILL) and started again;
//! 2. an agent killed and started again;
//! 3. the control plane killed and started again;
//! 4. PostgreSQL stopped (`-m immediate`) for 30 s, right after a deploy was posted, then
//!    started on the same data (no job may be claimed twice: a runner keeps its claim);
//! 5. RabbitMQ killed, down for 10 s, then started on the same data;
//! 6. node `b`'s host cut off: the link of the network namespace its agent runs in dropped
//!    until the node is lost (`BERTH_NODE_LOST_SECS`), then back.
//!
//! After each, until it holds (the time that takes is the time to heal):
//! - every job ended, and each `FAILED` one says why;
//! - none ran twice: no job started more containers than it had claims (`docker events`);
//! - each app has exactly one container, running, of its last successful job, on the node its
//!   app record names, and that node's gateway serves that job's message;
//! - every job's `job.created` and final event arrived through RabbitMQ at least once.
//!
//! Each fault's figures (jobs, retries, time to heal, longest pause between two jobs ending)
//! are printed; `docs/reliability.md` records them. Rerun:
//! `cargo build --workspace --bins && cargo test -p berth-e2e --test chaos -- --nocapture`
//! (as root: the suite makes a network namespace and runs PostgreSQL as `postgres`).

mod fleet;
mod netns;
mod services;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use berth_e2e::is_final;
use fleet::{random_below, Fleet, NODE_LOST_SECS, NODE_TTL_SECS};

/// Apps in the fleet.
const APPS: usize = 6;
/// Deploys of each app per batch.
const DEPLOYS_PER_APP: usize = 2;
/// How long a fault's aftermath may take to heal before the suite fails.
const HEAL_LIMIT: Duration = Duration::from_secs(90);

/// The faults.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    KillRunner,
    KillAgent,
    KillControl,
    StopPostgres,
    StopRabbit,
    CutHost,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillRunner => "runner killed",
            Fault::KillAgent => "agent killed",
            Fault::KillControl => "control plane killed",
            Fault::StopPostgres => "PostgreSQL stopped 30 s",
            Fault::StopRabbit => "RabbitMQ stopped 10 s",
            Fault::CutHost => "host cut off",
        }
    }
}

/// The faults to inject: all, in order, or those `BERTH_CHAOS_FAULTS` names (comma-separated:
/// `runner`, `agent`, `control`, `postgres`, `rabbitmq`, `cut`).
fn chosen_faults() -> Vec<Fault> {
    let all = [
        ("runner", Fault::KillRunner),
        ("agent", Fault::KillAgent),
        ("control", Fault::KillControl),
        ("postgres", Fault::StopPostgres),
        ("rabbitmq", Fault::StopRabbit),
        ("cut", Fault::CutHost),
    ];
    match std::env::var("BERTH_CHAOS_FAULTS") {
        Ok(names) => names
            .split(',')
            .map(|name| {
                all.iter()
                    .find(|(n, _)| *n == name.trim())
                    .unwrap_or_else(|| panic!("BERTH_CHAOS_FAULTS: unknown fault {name:?}"))
                    .1
            })
            .collect(),
        Err(_) => all.iter().map(|(_, f)| *f).collect(),
    }
}

/// What one fault did.
#[derive(Debug, Default)]
struct Figures {
    fault: String,
    /// Jobs created during the fault's batch (its own and any the control plane queued).
    jobs: usize,
    /// Of them, the jobs claimed more than once, and the claims beyond the first.
    retried: usize,
    extra_claims: i64,
    failed: usize,
    /// Jobs the control plane queued because a node was lost.
    node_lost: usize,
    /// Apps on another node after the batch than before.
    moved: usize,
    /// Containers the batch's jobs started, and the jobs that started more than one (one
    /// after the other: a deploy redone after its agent was killed).
    containers: usize,
    restarted: usize,
    /// How long the fault lasted (killed → started again, stopped → started, cut → back).
    down: Duration,
    /// From the fault's end until every check held.
    heal: Duration,
    /// The longest time, from the fault's start, during which no job ended.
    longest_pause: Duration,
    /// What else was seen (a restart's time, an API answer during the outage, …).
    notes: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_the_middle_of_batches_heal() {
    let suite = Instant::now();
    let mut fleet = Fleet::start(APPS).await;
    let first: Vec<String> = {
        let mut ids = Vec::new();
        for app in fleet.apps.clone() {
            ids.push(
                fleet
                    .deploy(&app, &format!("v0 {app}"), &format!("v0-{app}"))
                    .await,
            );
        }
        ids
    };
    let started = Instant::now();
    heal(&fleet, &first, HEAL_LIMIT).await;
    println!(
        "first deploy of {APPS} apps healthy in {:?}",
        started.elapsed()
    );

    let mut all = Vec::new();
    for (round, fault) in chosen_faults().into_iter().enumerate() {
        let figures = run_fault(&mut fleet, round + 1, fault).await;
        println!(
            "chaos: {:<24} jobs {:>3}  retried {:>2} (+{} claims)  failed {}  node-lost jobs {}  moved {}  containers {} (jobs with 2+: {})  down {:>5.1} s  heal {:>5.1} s  longest pause {:>5.1} s  {}",
            figures.fault,
            figures.jobs,
            figures.retried,
            figures.extra_claims,
            figures.failed,
            figures.node_lost,
            figures.moved,
            figures.containers,
            figures.restarted,
            figures.down.as_secs_f64(),
            figures.heal.as_secs_f64(),
            figures.longest_pause.as_secs_f64(),
            figures.notes.join("; ")
        );
        all.push(figures);
    }
    fleet.assert_all_alive();
    println!(
        "chaos suite: {} faults, {} jobs, all healed, in {:?}",
        all.len(),
        all.iter().map(|f| f.jobs).sum::<usize>(),
        suite.elapsed()
    );
}

/// One batch with `fault` injected at a random moment of it; the figures once it healed.
async fn run_fault(fleet: &mut Fleet, round: usize, fault: Fault) -> Figures {
    let mut figures = Figures {
        fault: fault.name().into(),
        ..Figures::default()
    };
    let before: Vec<String> = fleet
        .jobs()
        .await
        .expect("the control plane lists the jobs")
        .into_keys()
        .collect();
    let placed = placements(fleet).await;
    // When node b is cut off, one of its apps gets no deploy in the batch: nothing but the
    // lost-node sweep moves it.
    let idle: Option<&String> = (fault == Fault::CutHost)
        .then(|| placed.iter().find(|(_, n)| **n == fleet.agents[1].node_id))
        .flatten()
        .map(|(app, _)| app);
    let deploys: Vec<(String, String)> = (0..DEPLOYS_PER_APP)
        .flat_map(|n| {
            fleet
                .apps
                .iter()
                .filter(|app| Some(*app) != idle)
                .map(move |app| (app.clone(), format!("r{round}v{} {app}", n + 1)))
        })
        .collect();
    // The fault strikes after a random number of the batch's deploys, a random moment later;
    // deploys go on being posted while it lasts (those the control plane cannot take then are
    // posted again, under the same Idempotency-Key, once it is lifted).
    let strike_after = 1 + random_below(deploys.len() as u64 - 2) as usize;
    let mut ids = Vec::new();
    let mut next = 0;
    while next < strike_after {
        post(fleet, round, &deploys, &mut next, &mut ids).await;
    }
    if fault != Fault::StopPostgres {
        tokio::time::sleep(Duration::from_millis(random_below(1500))).await;
    }
    // (The database goes right after a deploy was posted: that job ends during the outage.)
    let fault_at = Utc::now();
    let struck = Instant::now();
    let window = strike(fleet, fault, &mut figures).await;
    while next < deploys.len() {
        let left = window.saturating_sub(struck.elapsed());
        let posting = post(fleet, round, &deploys, &mut next, &mut ids);
        if tokio::time::timeout(left, posting).await.is_err() {
            break;
        }
    }
    tokio::time::sleep(window.saturating_sub(struck.elapsed())).await;
    lift(fleet, fault, &mut figures).await;
    figures.down = struck.elapsed();
    let restored = Instant::now();
    while next < deploys.len() {
        post(fleet, round, &deploys, &mut next, &mut ids).await;
    }
    heal(fleet, &ids, HEAL_LIMIT).await;
    figures.heal = restored.elapsed();

    let jobs = fleet
        .jobs()
        .await
        .expect("the control plane lists the jobs");
    let batch: Vec<&Value> = jobs
        .iter()
        .filter(|(id, _)| !before.contains(id))
        .map(|(_, j)| j)
        .collect();
    figures.jobs = batch.len();
    figures.retried = batch.iter().filter(|j| attempt(j) > 1).count();
    figures.extra_claims = batch.iter().map(|j| attempt(j) - 1).sum();
    figures.failed = batch.iter().filter(|j| j["state"] == "FAILED").count();
    figures.node_lost = batch
        .iter()
        .filter(|j| reason(j) == Some("node lost"))
        .count();
    figures.longest_pause = longest_pause(fault_at, &batch);
    if fault == Fault::StopPostgres {
        // A lease is not lost to the control plane's own outage: runners keep their claims and
        // report once it is back.
        let reclaimed: Vec<&&Value> = batch.iter().filter(|j| attempt(j) > 1).collect();
        assert!(
            reclaimed.is_empty(),
            "jobs claimed again after the database outage (a runner gave its claim up): {reclaimed:#?}"
        );
    }
    let now = placements(fleet).await;
    figures.moved = now
        .iter()
        .filter(|(app, n)| placed.get(*app) != Some(n))
        .count();
    let per_job = fleet.containers_per_job();
    let started: Vec<usize> = batch
        .iter()
        .map(|j| {
            per_job
                .get(j["jobId"].as_str().unwrap_or_default())
                .map_or(0, |c| c.started)
        })
        .collect();
    figures.containers = started.iter().sum();
    figures.restarted = started.iter().filter(|n| **n > 1).count();
    if std::env::var_os("BERTH_CHAOS_VERBOSE").is_some() {
        let mut batch = batch;
        batch.sort_by_key(|j| (j["appId"].as_str(), j["createdAt"].as_str()));
        for j in batch {
            println!(
                "  {} {} {} attempt {} on {} started {} finished {} {}",
                j["appId"],
                j["jobId"],
                j["state"],
                j["attempt"],
                j["nodeId"],
                j["startedAt"],
                j["finishedAt"],
                j["error"]
            );
        }
    }
    figures
}

/// The node each app's record names.
async fn placements(fleet: &Fleet) -> BTreeMap<String, String> {
    let mut placed = BTreeMap::new();
    for app in &fleet.apps {
        let run = fleet.api.app_run(app).await.unwrap_or_default();
        if let Some(node) = run["nodeId"].as_str() {
            placed.insert(app.clone(), node.to_owned());
        }
    }
    placed
}

/// Posts deploy `*next` of the batch (retried until the control plane takes it), then moves on.
async fn post(
    fleet: &Fleet,
    round: usize,
    deploys: &[(String, String)],
    next: &mut usize,
    ids: &mut Vec<String>,
) {
    let (app, msg) = &deploys[*next];
    ids.push(
        fleet
            .deploy(app, msg, &format!("r{round}-{next}-{app}"))
            .await,
    );
    *next += 1;
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Injects the fault; how long it lasts before [`lift`].
async fn strike(fleet: &mut Fleet, fault: Fault, figures: &mut Figures) -> Duration {
    match fault {
        Fault::KillRunner => {
            let i = random_below(2) as usize;
            fleet.runners[i]
                .proc
                .take()
                .expect("the runner runs")
                .kill();
            figures.notes.push(format!("runner {} killed", i + 1));
            Duration::from_millis(500)
        }
        Fault::KillAgent => {
            let i = random_below(2) as usize;
            fleet.agents[i].proc.take().expect("the agent runs").kill();
            figures
                .notes
                .push(format!("{} killed", fleet.agents[i].node_id));
            Duration::from_millis(500)
        }
        Fault::KillControl => {
            fleet.control.take().expect("the control plane runs").kill();
            Duration::from_millis(500)
        }
        Fault::StopPostgres => {
            fleet.pg.stop();
            tokio::time::sleep(Duration::from_secs(2)).await;
            // How the API answers while its database is away (SPEC: 503 within seconds).
            let asked = Instant::now();
            let answer = fleet.jobs_status().await.unwrap_or_else(|e| e);
            figures.notes.push(format!(
                "GET /deploy/jobs during the outage: {answer} after {:.1} s",
                asked.elapsed().as_secs_f64()
            ));
            Duration::from_secs(30)
        }
        Fault::StopRabbit => {
            fleet.rabbit.kill();
            Duration::from_secs(10)
        }
        Fault::CutHost => {
            fleet.ns.set_link(false);
            // Lost once OFFLINE (after the TTL) for BERTH_NODE_LOST_SECS; a moment more for
            // the sweep.
            Duration::from_secs(NODE_TTL_SECS + NODE_LOST_SECS + 3)
        }
    }
}

/// Lifts the fault: what was killed or stopped starts again, the link comes back.
async fn lift(fleet: &mut Fleet, fault: Fault, figures: &mut Figures) {
    match fault {
        Fault::KillRunner => {
            let i = fleet
                .runners
                .iter()
                .position(|r| r.proc.is_none())
                .expect("the killed runner");
            fleet.start_runner(i);
        }
        Fault::KillAgent => {
            let i = fleet
                .agents
                .iter()
                .position(|a| a.proc.is_none())
                .expect("the killed agent");
            fleet.start_agent(i);
        }
        Fault::KillControl => {
            let started = Instant::now();
            fleet.start_control().await;
            figures.notes.push(format!(
                "control plane answered {:.2} s after its start",
                started.elapsed().as_secs_f64()
            ));
        }
        Fault::StopPostgres => {
            let up = fleet.pg.resume();
            figures.notes.push(format!(
                "PostgreSQL took {:.1} s to start",
                up.as_secs_f64()
            ));
        }
        Fault::StopRabbit => {
            let up = fleet.rabbit.resume();
            figures
                .notes
                .push(format!("RabbitMQ took {:.1} s to start", up.as_secs_f64()));
        }
        Fault::CutHost => {
            let node = fleet.agents[1].node_id.clone();
            let state = fleet.api.nodes().await.and_then(|n| n.get(&node).cloned());
            figures.notes.push(format!(
                "node b {} at the end of the cut",
                state.map_or(Value::Null, |n| n["state"].clone())
            ));
            fleet.ns.set_link(true);
            let online = fleet
                .wait_node_state(1, "ONLINE", Duration::from_secs(15))
                .await;
            figures.notes.push(format!(
                "ONLINE again {:.1} s after the link came back",
                online.as_secs_f64()
            ));
        }
    }
}

/// The job's claims so far.
fn attempt(job: &Value) -> i64 {
    job["attempt"].as_i64().unwrap_or(0)
}

/// Why the control plane queued the job itself (its `reason` label), if it did.
fn reason(job: &Value) -> Option<&str> {
    job["payload"]["labels"]["reason"].as_str()
}

fn finished_at(job: &Value) -> Option<DateTime<Utc>> {
    job["finishedAt"].as_str()?.parse().ok()
}

/// The longest time from `from` during which none of `jobs` ended.
fn longest_pause(from: DateTime<Utc>, jobs: &[&Value]) -> Duration {
    let mut ends: Vec<DateTime<Utc>> = jobs
        .iter()
        .filter_map(|j| finished_at(j))
        .filter(|t| *t >= from)
        .collect();
    ends.sort();
    let mut last = from;
    let mut longest = chrono::Duration::zero();
    for end in ends {
        longest = longest.max(end - last);
        last = end;
    }
    longest.to_std().unwrap_or_default()
}

/// Waits until every check holds (see the module's comment), failing with the last broken one
/// after `limit`.
async fn heal(fleet: &Fleet, ids: &[String], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let broken = match check(fleet, ids).await {
            Ok(()) => return,
            Err(broken) => broken,
        };
        assert!(
            Instant::now() < deadline,
            "not healed after {limit:?}: {broken}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The checks, once: `Err` says the first that does not hold yet.
async fn check(fleet: &Fleet, ids: &[String]) -> Result<(), String> {
    let jobs = fleet
        .jobs()
        .await
        .ok_or("the control plane does not list the jobs")?;
    for id in ids {
        jobs.get(id)
            .ok_or_else(|| format!("job {id} is not listed (lost?)"))?;
    }
    let open: Vec<String> = jobs
        .values()
        .filter(|j| !is_final(j))
        .map(|j| {
            format!(
                "{} {} {} (attempt {}, waiting: {})",
                j["jobId"], j["appId"], j["state"], j["attempt"], j["waitingReason"]
            )
        })
        .collect();
    if !open.is_empty() {
        return Err(format!("{} jobs not ended: {open:?}", open.len()));
    }
    for job in jobs.values() {
        if job["state"] == "FAILED" && job["error"].as_str().is_none_or(str::is_empty) {
            return Err(format!(
                "job {} FAILED without a reason: {job}",
                job["jobId"]
            ));
        }
    }
    // None ran twice: never two containers of one job at a time (a job's deploy redone after
    // a crash starts a new one only once the first is gone), and each job that succeeded
    // started one (so the evidence is there).
    let containers = fleet.containers_per_job();
    for (job_id, job) in &jobs {
        let seen = containers.get(job_id).copied().unwrap_or_default();
        assert!(
            seen.most_at_once <= 1,
            "job {job_id} ran {} containers at once: it ran twice ({job})",
            seen.most_at_once
        );
        if job["state"] == "SUCCEEDED" && seen.started == 0 {
            return Err(format!(
                "docker events show no container of job {job_id} yet"
            ));
        }
    }
    check_apps(fleet, &jobs).await?;
    check_events(fleet, &jobs)
}

/// Each app: exactly one container, running, of its last successful job, on its node, served
/// by that node's gateway.
async fn check_apps(fleet: &Fleet, jobs: &HashMap<String, Value>) -> Result<(), String> {
    let containers = fleet.containers();
    let nodes = fleet
        .api
        .nodes()
        .await
        .ok_or("the control plane does not list the nodes")?;
    for app in &fleet.apps {
        let mut succeeded: Vec<&Value> = jobs
            .values()
            .filter(|j| j["appId"] == app.as_str() && j["state"] == "SUCCEEDED")
            .collect();
        succeeded.sort_by_key(|j| (j["createdAt"].as_str(), j["jobId"].as_str()));
        let Some(last) = succeeded.last() else {
            return Err(format!("app {app} has no successful job"));
        };
        let last_id = last["jobId"].as_str().unwrap_or_default();
        let run = fleet
            .api
            .app_run(app)
            .await
            .ok_or_else(|| format!("GET /deploy/apps/{app} does not answer"))?;
        let node = run["nodeId"].as_str().unwrap_or_default();
        if run["state"] != "RUNNING" || run["lastJobId"] != last_id {
            return Err(format!(
                "app {app}: its record is not RUNNING of its last successful job {last_id}: {run}"
            ));
        }
        let listed = nodes.get(node).is_some_and(|n| {
            n["apps"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == app.as_str()))
        });
        if !listed {
            return Err(format!(
                "app {app} is not among the apps of its node {node}"
            ));
        }
        let mine: Vec<_> = containers.iter().filter(|c| &c.app == app).collect();
        let right = mine.len() == 1
            && mine[0].job == last_id
            && mine[0].node == node
            && mine[0].state == "running";
        if !right {
            return Err(format!(
                "app {app}: want one running container of job {last_id} on {node}, found {mine:?}"
            ));
        }
        let msg = last["payload"]["env"]["MSG"].as_str().unwrap_or_default();
        match fleet.through_gateway(node, app).await {
            Ok(body) if body.contains(msg) => {}
            Ok(body) => {
                return Err(format!(
                    "the gateway of {node} serves {app} with {body:?}, not {msg:?}"
                ))
            }
            Err(e) => return Err(format!("the gateway of {node} does not serve {app}: {e}")),
        }
    }
    Ok(())
}

/// Every job's `job.created` and final event arrived at least once.
fn check_events(fleet: &Fleet, jobs: &HashMap<String, Value>) -> Result<(), String> {
    let events = fleet.events.lock().unwrap_or_else(|p| p.into_inner());
    let arrived: std::collections::HashSet<(&str, &str)> = events
        .iter()
        .filter_map(|e| Some((e.kind.as_str(), e.job_id.as_deref()?)))
        .collect();
    for (id, job) in jobs {
        let last = match job["state"].as_str() {
            Some("SUCCEEDED") => "job.succeeded",
            Some("FAILED") => "job.failed",
            _ => "job.cancelled",
        };
        for kind in ["job.created", last] {
            if !arrived.contains(&(kind, id.as_str())) {
                return Err(format!("event {kind} of job {id} has not arrived"));
            }
        }
    }
    Ok(())
}
