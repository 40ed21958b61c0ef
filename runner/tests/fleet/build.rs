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

/// The attack of issue 13: a repository holding `up -> ..` and `buildContext: up` made
/// `docker build` read the folder around the clone (where the registry login used to be).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_context_that_leaves_the_clone_fails_the_job_saying_why() {
    let control = spawn_control(Duration::from_secs(5), 3).await;
    let _agent = spawn_agent(&control).await;
    let runner = spawn_runner(runner_settings(&control, "escape-runner"));
    let app = app_id("escape");
    let image_repo = format!("{REGISTRY}/berth-runner-test/{app}");
    let repo = Repo::new();
    repo.commit(
        &[("Dockerfile", &format!("FROM {IMAGE}\nCOPY . /stolen/\n"))],
        "app",
    );
    repo.commit_symlink("up", "..", "a way out");
    repo.commit_symlink(
        "Dockerfile.outside",
        "../../../../../../etc/hostname",
        "another",
    );

    for (context, dockerfile, field) in [
        ("up", "src/Dockerfile", "buildContext \"up\""),
        (
            ".",
            "Dockerfile.outside",
            "dockerfilePath \"Dockerfile.outside\"",
        ),
    ] {
        let job = control
            .run_job(
                json!({ "appId": app, "repoUrl": repo.url(), "buildContext": context,
                        "dockerfilePath": dockerfile, "imageRepo": image_repo }),
                Duration::from_secs(120),
            )
            .await;
        assert_eq!(job["state"], "FAILED", "{job:#}");
        let error = job["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("{field} leads outside the repository")),
            "{error}"
        );
        assert_eq!(job["attempt"], 1, "a refusal is not retried: {job:#}");
        let log = control.logs(job["jobId"].as_str().unwrap()).await;
        assert!(!log.contains("building "), "no build ran:\n{log}");
    }
    runner.stop().await.unwrap();
    control.stop().await;
}

/// Only URLs the operator allows are cloned, and never with credentials in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repository_urls_outside_the_allow_list_or_with_credentials_are_refused() {
    let control = spawn_control(Duration::from_secs(5), 3).await;
    let mut settings = runner_settings(&control, "allow-runner");
    settings.repo_policy = berth_runner::build::git::RepoPolicy::parse("https://").unwrap();
    let _agent = spawn_agent(&control).await;
    let runner = spawn_runner(settings);
    let app = app_id("allow");
    let image_repo = format!("{REGISTRY}/berth-runner-test/{app}");
    let repo = Repo::new();
    repo.commit(&[("Dockerfile", &dockerfile("x"))], "app");
    for (url, why) in [
        (repo.url(), "is not allowed on this runner"),
        (
            "https://user:pw@example.com/r.git".to_owned(),
            "must not carry credentials",
        ),
        (
            "https://169.254.169.254/r.git".to_owned(),
            "loopback, private or numeric",
        ),
    ] {
        let job = control
            .run_job(
                json!({ "appId": app, "repoUrl": url, "imageRepo": image_repo }),
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(job["state"], "FAILED", "{job:#}");
        let error = job["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{url}: {error}");
        let log = control.logs(job["jobId"].as_str().unwrap()).await;
        assert!(!log.contains("cloning"), "git never ran:\n{log}");
    }
    runner.stop().await.unwrap();
    control.stop().await;
}
