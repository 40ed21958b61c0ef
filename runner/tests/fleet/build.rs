//! Builds from git: clone at a commit, build, push to the local registry, deploy; then a second
//! commit, then a rollback to the first build's image.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

fn dockerfile(msg: &str) -> String {
    format!("FROM {IMAGE}\nENV MSG={msg}\n")
}

async fn registry_tags(repo: &str) -> Vec<String> {
    let tags = get_json(&format!("http://{REGISTRY}/v2/{repo}/tags/list")).await;
    tags["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn build_push_deploy_then_a_second_commit_then_a_rollback() {
    let control = spawn_control(Duration::from_secs(5), 3).await;
    let agent = spawn_agent(&control).await;
    let runner = spawn_runner(runner_settings(&control, "build-runner"));
    let app = app_id("build");
    let path = format!("berth-runner-test/{app}");
    let image_repo = format!("{REGISTRY}/{path}");

    let repo = Repo::new();
    let first = repo.commit(&[("app/Dockerfile", &dockerfile("first-commit"))], "first");
    let job = control
        .run_job(
            json!({ "appId": app, "repoUrl": repo.url(), "commit": "main", "buildContext": "app", "imageRepo": image_repo }),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(job["state"], "SUCCEEDED", "{job:#}");
    let first_image = job["result"]["image"].as_str().unwrap().to_owned();
    assert_eq!(first_image, format!("{image_repo}:{first}"));
    assert!(
        registry_tags(&path).await.contains(&first),
        "the image was pushed"
    );
    assert_eq!(agent.get(&app).await, (200, "first-commit\n".to_owned()));
    let log = control.logs(job["jobId"].as_str().unwrap()).await;
    assert!(
        log.contains(&format!("checked out main at {first}"))
            && log.contains("build: ")
            && log.contains("pushed"),
        "{log}"
    );

    let second = repo.commit(
        &[("app/Dockerfile", &dockerfile("second-commit"))],
        "second",
    );
    let job = control
        .run_job(
            json!({ "appId": app, "repoUrl": repo.url(), "commit": second, "buildContext": "app", "imageRepo": image_repo }),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(job["state"], "SUCCEEDED", "{job:#}");
    assert_eq!(
        job["result"]["image"].as_str().unwrap(),
        format!("{image_repo}:{second}")
    );
    assert!(registry_tags(&path).await.contains(&second));
    assert_eq!(agent.get(&app).await, (200, "second-commit\n".to_owned()));

    // Rollback: deploy the first build's image again.
    let job = control
        .run_job(
            json!({ "appId": app, "image": first_image }),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(job["state"], "SUCCEEDED", "{job:#}");
    assert_eq!(job["result"]["image"].as_str().unwrap(), first_image);
    assert_eq!(agent.get(&app).await, (200, "first-commit\n".to_owned()));
    assert_eq!(
        agent.containers(&app).len(),
        1,
        "the replaced containers are gone"
    );

    runner.stop().await.unwrap();
    control.stop().await;
}
