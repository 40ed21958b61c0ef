//! Failures that must end clearly: an agent nobody can reach, a build that breaks.

use std::time::Duration;

use berth_runner::retry::RetryPolicy;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_agent_fails_the_job_after_the_retries_saying_so() {
    let control = spawn_control(Duration::from_secs(5), 1).await;
    // A node whose agent address answers nothing (port 1 on loopback refuses connections).
    control.fake_node("ghost-node", "http://127.0.0.1:1").await;
    let mut settings = runner_settings(&control, "ghost-runner");
    settings.retry = RetryPolicy {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        max_times: 3,
    };
    let runner = spawn_runner(settings);

    let job = control
        .run_job(
            json!({ "appId": app_id("ghost"), "image": IMAGE }),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(job["state"], "FAILED", "{job:#}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("runtime agent of node ghost-node at http://127.0.0.1:1 cannot be reached")
            && error.contains("gave up after 4 tries"),
        "{error}"
    );
    let log = control.logs(job["jobId"].as_str().unwrap()).await;
    assert!(
        log.contains("job failed (retryable)") && log.contains("cannot be reached"),
        "{log}"
    );
    runner.stop().await.unwrap();
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_build_fails_the_job_with_its_last_lines_in_the_log() {
    let control = spawn_control(Duration::from_secs(5), 3).await;
    control.fake_node("build-node", "http://127.0.0.1:1").await;
    let runner = spawn_runner(runner_settings(&control, "broken-build-runner"));
    let repo = Repo::new();
    repo.commit(
        &[("Dockerfile", &format!("FROM {IMAGE}\nRUN echo compiling the app && echo 'error: the build broke here' && exit 7\n"))],
        "broken",
    );
    let app = app_id("broken");
    let job = control
        .run_job(
            json!({ "appId": app, "repoUrl": repo.url(), "imageRepo": format!("{REGISTRY}/berth-runner-test/{app}") }),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(job["state"], "FAILED", "{job:#}");
    assert_eq!(job["attempt"], 1, "a broken build is not retried");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("docker build failed") && error.contains("the build broke here"),
        "{error}"
    );
    let log = control.logs(job["jobId"].as_str().unwrap()).await;
    assert!(
        log.contains("build: ") && log.contains("the build broke here"),
        "{log}"
    );

    // A commit that is not in the repository fails without retries, naming it.
    let job = control
        .run_job(
            json!({ "appId": app, "repoUrl": repo.url(), "commit": "no-such-branch", "imageRepo": format!("{REGISTRY}/berth-runner-test/{app}") }),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(job["state"], "FAILED");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("\"no-such-branch\" is not in"),
        "{job:#}"
    );
    runner.stop().await.unwrap();
    control.stop().await;
}
