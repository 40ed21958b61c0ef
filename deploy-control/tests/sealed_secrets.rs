//! Secrets at rest, on each database: a job's `secretEnv` reaches the database sealed under
//! `BERTH_SECRET_KEY` (what someone who reads the database or a backup sees), the idempotency
//! hash does not let a guess at a value be checked, the runner that claims the job gets the
//! values in clear, and a job whose values do not open fails with the reason instead of
//! reaching a runner.

mod common;

use berth_control::queue::now_millis;
use berth_control::storage::{JobSpec, NewJob};
use berth_shared::sealed::SealingKeys;
use berth_shared::wire::CreateJobRequest;
use common::app::spawn_app;
use serde_json::json;
use sha2::{Digest, Sha256};

const SECRET: &str = "s3cret-value-only-the-container-sees";

per_database!(
    secret_values_are_sealed_at_rest_and_opened_for_the_runner,
    |kind| async move {
        let app = spawn_app(kind).await;
        assert_eq!(app.node_heartbeat("node-a", 10).await.status(), 200);
        let body = json!({ "appId": "shop", "image": "shop:1", "secretEnv": { "TOKEN": SECRET } });
        let res = app
            .deploy(reqwest::Method::POST, "/deploy/jobs")
            .header("Idempotency-Key", "order-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let job: serde_json::Value = res.json().await.unwrap();
        let id: uuid::Uuid = job["jobId"].as_str().unwrap().parse().unwrap();

        // What the database holds.
        let stored = app.state.store().get_job(id).await.unwrap();
        let sealed = stored.secret_env.as_stored();
        assert!(
            sealed.starts_with("berth-sealed:v1:"),
            "not sealed: {sealed}"
        );
        assert!(
            !sealed.contains(SECRET) && !sealed.contains("TOKEN"),
            "{sealed}"
        );
        let request: CreateJobRequest = serde_json::from_value(body).unwrap();
        let unkeyed = hex::encode(Sha256::digest(serde_json::to_vec(&request).unwrap()));
        assert_ne!(stored.request_hash.as_deref(), Some(unkeyed.as_str()));

        // The runner that claims it gets the value.
        let claim = app.claim("runner-1", 0).await.expect("the job");
        assert_eq!(claim["secretEnv"]["TOKEN"], SECRET);
        app.stop().await;
    }
);

per_database!(
    a_job_sealed_under_a_key_that_is_gone_fails_with_the_reason,
    |kind| async move {
        let app = spawn_app(kind).await;
        assert_eq!(app.node_heartbeat("node-a", 10).await.status(), 200);
        let valid = CreateJobRequest {
            app_id: "shop".into(),
            image: Some("shop:1".into()),
            secret_env: [("TOKEN".to_owned(), SECRET.to_owned())].into(),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let gone = SealingKeys::generate();
        let new = NewJob {
            job_id: uuid::Uuid::now_v7(),
            job: JobSpec::seal(valid, &gone),
            idempotency_key: None,
            request_hash: "test".into(),
            max_attempts: 3,
            now: now_millis(),
        };
        let created = app.state.store().create_job(new).await.unwrap();
        let id = match created {
            berth_control::storage::Created::New(job) => job.job_id,
            berth_control::storage::Created::Existing(job) => panic!("existing {}", job.job_id),
        };
        assert!(
            app.claim("runner-1", 0).await.is_none(),
            "no runner gets it"
        );
        let job = app.get_job(&id.to_string()).await;
        assert_eq!(job["state"], "FAILED", "{job}");
        let error = job["error"].as_str().unwrap_or_default();
        assert!(error.contains("secretEnv cannot be opened"), "{error}");
        assert!(error.contains(gone.current_id()), "names the key: {error}");
        app.stop().await;
    }
);
