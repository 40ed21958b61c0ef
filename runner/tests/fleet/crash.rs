//! Two runners, 200 jobs, one runner killed with SIGKILL midway: every job ends SUCCEEDED, and
//! none is acted on twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

const JOBS: usize = 200;
const APPS: usize = 8;
const CHILD: &str = "crash-child";

/// Records the `berth.job` label of every container the engine creates for `node`.
fn watch_creates(node: &str) -> (std::process::Child, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(DOCKER)
        .args([
            "events",
            "--format",
            "{{json .}}",
            "--filter",
            "type=container",
            "--filter",
            "event=create",
        ])
        .args(["--filter", &format!("label=berth.node={node}")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker events");
    let creates = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = creates.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                if let Some(job) = event["Actor"]["Attributes"]["berth.job"].as_str() {
                    sink.lock().unwrap().push(job.to_owned());
                }
            }
        }
    });
    (child, creates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_killed_midway_loses_nothing_and_nothing_runs_twice() {
    let started = Instant::now();
    let control = spawn_control(Duration::from_secs(2), 5).await;
    let agent = spawn_agent(&control).await;
    let (mut events, creates) = watch_creates(&agent.node_id);

    let log_path = std::env::temp_dir().join(format!(
        "berth-runner-crash-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth-runner"))
        .env("BERTH_CONTROL_URL", &control.base)
        .env("BERTH_RUNNER_TOKEN", RUNNER_TOKEN)
        .env("BERTH_RUNNER_ID", CHILD)
        .env("BERTH_RUNNER_CONCURRENCY", "4")
        .env("BERTH_RUNNER_CLAIM_WAIT_SECS", "2")
        .env("BERTH_RUNNER_RETRY_MIN_MS", "20")
        .env("BERTH_RUNNER_RETRY_MAX_MS", "200")
        .env("BERTH_RUNNER_METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("the berth-runner binary starts");
    let survivor = spawn_runner(runner_settings(&control, "survivor"));

    let apps: Vec<String> = (0..APPS).map(|i| app_id(&format!("crash{i}"))).collect();
    let mut job_app = HashMap::new();
    for i in 0..JOBS {
        let app = &apps[i % APPS];
        let job = control
            .create_job(
                json!({ "appId": app, "image": IMAGE, "env": { "MSG": format!("job-{i}") } }),
            )
            .await;
        job_app.insert(job["jobId"].as_str().unwrap().to_owned(), app.clone());
    }

    // Kill the child while it holds jobs, once a fair share of the work is done.
    let held = eventually(
        Duration::from_secs(90),
        "the child runner to hold a job midway",
        || async {
            let jobs = control.all_jobs().await;
            let done = jobs.iter().filter(|j| j["state"] == "SUCCEEDED").count();
            let held: Vec<String> = jobs
                .iter()
                .filter(|j| j["state"] == "RUNNING" && j["runnerId"] == CHILD)
                .map(|j| j["jobId"].as_str().unwrap().to_owned())
                .collect();
            (done >= JOBS / 5 && !held.is_empty()).then_some(held)
        },
    )
    .await;
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by SIGKILL"
    );

    let jobs = eventually(Duration::from_secs(150), "every job to end", || async {
        let jobs = control.all_jobs().await;
        (jobs.len() == JOBS
            && jobs
                .iter()
                .all(|j| matches!(j["state"].as_str(), Some("SUCCEEDED" | "FAILED"))))
        .then_some(jobs)
    })
    .await;
    let failed: Vec<&Value> = jobs.iter().filter(|j| j["state"] != "SUCCEEDED").collect();
    assert!(
        failed.is_empty(),
        "every job succeeds; these did not: {failed:#?}"
    );

    // The jobs the child held were finished by the survivor, on a later attempt.
    let by_id: HashMap<&str, &Value> = jobs
        .iter()
        .map(|j| (j["jobId"].as_str().unwrap(), j))
        .collect();
    let retried: Vec<&Value> = jobs
        .iter()
        .filter(|j| j["attempt"].as_i64() > Some(1))
        .collect();
    assert!(
        !retried.is_empty(),
        "the held jobs {held:?} came back after their leases expired"
    );
    for job in &retried {
        assert_eq!(job["runnerId"], "survivor", "{job:#}");
    }

    // Nothing ran twice: every job has its own container, a job's containers were created at
    // most once per attempt, and a retried job that had already deployed got the same container
    // back from the agent instead of a second one.
    let containers: HashSet<&str> = jobs
        .iter()
        .map(|j| j["result"]["containerId"].as_str().unwrap())
        .collect();
    assert_eq!(
        containers.len(),
        JOBS,
        "every job reported its own container"
    );
    // The engine's events arrive in order: once a container the test creates itself is seen,
    // every create before it was seen too.
    let sentinel = format!("berth-sentinel-{}", uuid::Uuid::new_v4().simple());
    let made = Command::new(DOCKER)
        .args(["create", "--name", &sentinel])
        .args(["--label", &format!("berth.node={}", agent.node_id)])
        .args(["--label", &format!("berth.job={sentinel}")])
        .arg(IMAGE)
        .output()
        .expect("docker create");
    assert!(made.status.success(), "docker create: {made:?}");
    eventually(
        Duration::from_secs(30),
        "the sentinel's create event",
        || async { creates.lock().unwrap().contains(&sentinel).then_some(()) },
    )
    .await;
    let _ = Command::new(DOCKER).args(["rm", "-f", &sentinel]).output();
    creates.lock().unwrap().retain(|job| *job != sentinel);
    let _ = events.kill();
    let mut per_job: BTreeMap<String, i64> = BTreeMap::new();
    for job in creates.lock().unwrap().iter() {
        *per_job.entry(job.clone()).or_default() += 1;
    }
    for (job_id, count) in &per_job {
        let job = by_id
            .get(job_id.as_str())
            .unwrap_or_else(|| panic!("a container for an unknown job {job_id}"));
        assert!(
            *count <= job["attempt"].as_i64().unwrap(),
            "job {job_id} created {count} containers in {} attempt(s)",
            job["attempt"]
        );
    }
    let mut same_container_again = 0;
    for job in &retried {
        let log = control.logs(job["jobId"].as_str().unwrap()).await;
        let running: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split(" is running in container ").nth(1))
            .collect();
        let distinct: HashSet<&str> = running
            .iter()
            .map(|r| r.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            distinct.len(),
            1,
            "job {} deployed one container: {log}",
            job["jobId"]
        );
        if running.len() > 1 {
            same_container_again += 1;
        }
        // The child's own lines may have died with it (they travel in batches); the survivor's are there.
        assert!(log.contains("runner survivor claimed"), "{log}");
    }
    // Each app ends with exactly one container: the one of its last job.
    for app in &apps {
        let last = jobs
            .iter()
            .filter(|j| job_app[j["jobId"].as_str().unwrap()] == *app)
            .max_by_key(|j| j["finishedAt"].as_str().unwrap().to_owned())
            .unwrap();
        assert_eq!(
            agent.containers(app),
            vec![last["result"]["containerId"].as_str().unwrap().to_owned()],
            "app {app}"
        );
    }
    eprintln!(
        "{JOBS} jobs in {:.1}s; child held {} at the kill; {} retried ({} answered again by the agent's idempotency); {} creates",
        started.elapsed().as_secs_f64(),
        held.len(),
        retried.len(),
        same_container_again,
        per_job.values().sum::<i64>()
    );
    survivor.stop().await.unwrap();
    let _ = std::fs::remove_file(&log_path);
    control.stop().await;
}
