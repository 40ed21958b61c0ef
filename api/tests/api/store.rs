//! The api's storage contract, the same on PostgreSQL, MariaDB and SQLite.

use berth_api::domain::deployment::{new_deployment, DeploymentKind};
use berth_api::domain::spec::AppSpec;
use berth_api::domain::tenant::Quotas;
use berth_api::storage::{
    AppRecord, Created, InstanceRecord, KeyRecord, PutApp, TemplateRecord, TenantRecord,
    UsageRecord,
};
use berth_shared::wire::JobState;

use crate::common::db::DbKind;
use crate::common::fresh_store;
use crate::per_database;

fn tenant(id: &str) -> TenantRecord {
    TenantRecord {
        tenant_id: id.into(),
        name: id.into(),
        quotas: Quotas::default(),
        rate_limit_per_minute: 60,
        created_at: 1,
        updated_at: 1,
    }
}

fn app(tenant: &str, id: &str) -> AppRecord {
    AppRecord {
        app_id: id.into(),
        tenant_id: tenant.into(),
        spec: AppSpec {
            image: Some("127.0.0.1:5000/a:v1".into()),
            ..Default::default()
        },
        secret_env: [("TOKEN".to_string(), "s3cret".to_string())].into(),
        deleting: false,
        created_at: 1,
        updated_at: 1,
    }
}

per_database!(tenants_and_keys, |kind: DbKind| async move {
    let (store, db) = fresh_store(kind).await;
    assert!(store.create_tenant(&tenant("t1")).await.unwrap());
    assert!(
        !store.create_tenant(&tenant("t1")).await.unwrap(),
        "a taken id is refused"
    );
    let mut t = store.tenant("t1").await.unwrap().unwrap();
    t.quotas.max_apps = 3;
    t.name = "renamed".into();
    store.update_tenant(&t).await.unwrap();
    assert_eq!(store.tenant("t1").await.unwrap().unwrap(), t);
    assert_eq!(store.tenants().await.unwrap().len(), 1);
    assert!(store.tenant("nope").await.unwrap().is_none());

    let key = KeyRecord {
        key_id: "00ff00ff00ff00ff".into(),
        tenant_id: "t1".into(),
        name: "k".into(),
        key_hash: "h".into(),
        created_at: 5,
        last_used_at: None,
        revoked_at: None,
    };
    store.create_key(&key).await.unwrap();
    store.touch_keys(&[(key.key_id.clone(), 10)]).await.unwrap();
    store.touch_keys(&[(key.key_id.clone(), 7)]).await.unwrap();
    assert_eq!(
        store.key(&key.key_id).await.unwrap().unwrap().last_used_at,
        Some(10),
        "lastUsedAt never goes back"
    );
    assert!(
        !store.revoke_key("other", &key.key_id, 11).await.unwrap(),
        "another tenant cannot revoke it"
    );
    assert!(store.revoke_key("t1", &key.key_id, 11).await.unwrap());
    assert!(
        !store.revoke_key("t1", &key.key_id, 12).await.unwrap(),
        "revoked once"
    );
    assert_eq!(store.keys("t1").await.unwrap()[0].revoked_at, Some(11));
    // Migrations run again on the next start-up and change nothing.
    berth_api::storage::migrate::run(&store).await.unwrap();
    db.drop_db().await;
});

per_database!(
    apps_are_one_namespace_with_quotas,
    |kind: DbKind| async move {
        let (store, db) = fresh_store(kind).await;
        assert_eq!(
            store.put_app(&app("t1", "a1"), 2).await.unwrap(),
            PutApp::Created
        );
        assert_eq!(
            store.put_app(&app("t1", "a1"), 2).await.unwrap(),
            PutApp::Updated
        );
        assert_eq!(
            store.put_app(&app("t2", "a1"), 2).await.unwrap(),
            PutApp::HeldByOther
        );
        assert_eq!(
            store.put_app(&app("t1", "a2"), 2).await.unwrap(),
            PutApp::Created
        );
        assert_eq!(
            store.put_app(&app("t1", "a3"), 2).await.unwrap(),
            PutApp::OverQuota
        );
        assert!(
            store.app("t2", "a1").await.unwrap().is_none(),
            "another tenant's app is not there"
        );
        let stored = store.app("t1", "a1").await.unwrap().unwrap();
        assert_eq!(stored.secret_env["TOKEN"], "s3cret");
        let page = store.apps("t1", "", 1).await.unwrap();
        assert_eq!(page[0].app_id, "a1");
        assert_eq!(store.apps("t1", "a1", 10).await.unwrap()[0].app_id, "a2");

        store.mark_deleting("t1", "a1", 2).await.unwrap();
        assert_eq!(
            store.put_app(&app("t1", "a1"), 5).await.unwrap(),
            PutApp::Deleting
        );
        store.remove_app("t1", "a1").await.unwrap();
        assert_eq!(
            store.put_app(&app("t2", "a1"), 5).await.unwrap(),
            PutApp::Created,
            "the id is free again"
        );

        let template = TemplateRecord {
            template_id: "tpl".into(),
            spec: AppSpec::default(),
            secret_env: Default::default(),
            created_at: 1,
            updated_at: 1,
        };
        assert!(store.put_template("t1", &template).await.unwrap());
        assert!(!store.put_template("t1", &template).await.unwrap());
        assert!(store.template("t2", "tpl").await.unwrap().is_none());
        db.drop_db().await;
    }
);

per_database!(
    deployments_history_and_idempotency,
    |kind: DbKind| async move {
        let (store, db) = fresh_store(kind).await;
        let spec = AppSpec {
            image: Some("img:1".into()),
            ..Default::default()
        };
        let first = new_deployment(
            "t1",
            "a",
            DeploymentKind::Deploy,
            &spec,
            Some("k1".into()),
            1000,
        );
        assert!(matches!(
            store.create_deployment(&first).await.unwrap(),
            Created::New(_)
        ));
        let retry = new_deployment(
            "t1",
            "a",
            DeploymentKind::Deploy,
            &spec,
            Some("k1".into()),
            1001,
        );
        assert_eq!(
            store.create_deployment(&retry).await.unwrap(),
            Created::Existing(first.clone())
        );
        let second = new_deployment("t1", "a", DeploymentKind::Stop, &spec, None, 2000);
        store.create_deployment(&second).await.unwrap();
        assert_eq!(store.in_flight("t1").await.unwrap(), 2);
        assert_eq!(store.deployments_since("t1", 1500).await.unwrap(), 1);
        assert_eq!(store.unfinished_deployments().await.unwrap().len(), 2);

        let done = berth_api::storage::DeploymentRecord {
            state: JobState::Succeeded,
            job_id: Some("j".into()),
            version: 3,
            finished_at: Some(3000),
            url: Some("http://u/".into()),
            ..first.clone()
        };
        store.update_deployment(&done).await.unwrap();
        let stale = berth_api::storage::DeploymentRecord {
            state: JobState::Running,
            version: 2,
            ..first.clone()
        };
        store.update_deployment(&stale).await.unwrap();
        assert_eq!(
            store
                .deployment("t1", &first.deployment_id)
                .await
                .unwrap()
                .unwrap(),
            done,
            "an older snapshot changes nothing"
        );
        assert!(store
            .deployment("t2", &first.deployment_id)
            .await
            .unwrap()
            .is_none());
        assert_eq!(store.in_flight("t1").await.unwrap(), 1);

        let newest = store.deployments("t1", "a", None, 1).await.unwrap();
        assert_eq!(
            newest[0].deployment_id, second.deployment_id,
            "newest first"
        );
        let older = store
            .deployments("t1", "a", Some(&second.deployment_id), 10)
            .await
            .unwrap();
        assert_eq!(older.len(), 1);
        assert_eq!(older[0].deployment_id, first.deployment_id);
        assert_eq!(
            store
                .latest_deployment("t1", "a")
                .await
                .unwrap()
                .unwrap()
                .deployment_id,
            second.deployment_id
        );
        db.drop_db().await;
    }
);

per_database!(
    one_instance_per_slug_under_concurrency,
    |kind: DbKind| async move {
        let (store, db) = fresh_store(kind).await;
        let mut calls = Vec::new();
        for _ in 0..10 {
            let store = store.clone();
            calls.push(tokio::spawn(async move {
                let a = app("t1", "alice");
                let d = new_deployment("t1", "alice", DeploymentKind::Deploy, &a.spec, None, 1);
                let i = InstanceRecord {
                    slug: "alice".into(),
                    template_id: "tpl".into(),
                    app_id: "alice".into(),
                    deployment_id: d.deployment_id.clone(),
                    created_at: 1,
                };
                store.create_instance(&i, &a, &d).await.unwrap()
            }));
        }
        let mut new = Vec::new();
        let mut existing = Vec::new();
        for c in calls {
            match c.await.unwrap() {
                Created::New(i) => new.push(i),
                Created::Existing(i) => existing.push(i),
            }
        }
        assert_eq!(new.len(), 1, "exactly one call creates the instance");
        assert!(
            existing.iter().all(|i| *i == new[0]),
            "the others read the winner's"
        );
        assert_eq!(store.app_count("t1").await.unwrap(), 1);
        assert_eq!(
            store
                .deployments("t1", "alice", None, 50)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(store.instance("t2", "alice").await.unwrap().is_none());
        db.drop_db().await;
    }
);

per_database!(usage_is_paged_newest_first, |kind: DbKind| async move {
    let (store, db) = fresh_store(kind).await;
    for n in 0..5 {
        let line = UsageRecord {
            id: 0,
            at: n,
            key_id: "k".into(),
            action: "app.put".into(),
            app_id: Some("a".into()),
            deployment_id: None,
            status: 201,
            detail: None,
        };
        store.record_usage("t1", &line).await.unwrap();
    }
    store
        .record_usage(
            "t2",
            &UsageRecord {
                id: 0,
                at: 9,
                key_id: "k2".into(),
                action: "app.put".into(),
                app_id: None,
                deployment_id: None,
                status: 403,
                detail: Some("quota".into()),
            },
        )
        .await
        .unwrap();
    let page = store.usage("t1", None, 3).await.unwrap();
    assert_eq!(page.iter().map(|u| u.at).collect::<Vec<_>>(), [4, 3, 2]);
    let rest = store.usage("t1", Some(page[2].id), 3).await.unwrap();
    assert_eq!(rest.iter().map(|u| u.at).collect::<Vec<_>>(), [1, 0]);
    assert_eq!(
        store.usage("t2", None, 10).await.unwrap()[0]
            .detail
            .as_deref(),
        Some("quota")
    );
    db.drop_db().await;
});

per_database!(
    secret_values_are_sealed_in_the_database,
    |kind: DbKind| async move {
        let (store, db) = fresh_store(kind).await;
        store.create_tenant(&tenant("t1")).await.unwrap();
        store.put_app(&app("t1", "a1"), 5).await.unwrap();
        let template = TemplateRecord {
            template_id: "blog".into(),
            spec: AppSpec::default(),
            secret_env: [("TOKEN".to_string(), "s3cret".to_string())].into(),
            created_at: 1,
            updated_at: 1,
        };
        store.put_template("t1", &template).await.unwrap();
        // What someone reading the database (or a backup) sees.
        sqlx::any::install_default_drivers();
        let url = db.url.replacen("mariadb://", "mysql://", 1);
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        for table in ["api_app", "api_template"] {
            let row = sqlx::query(&format!("SELECT secret_env FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap();
            // MariaDB's TEXT arrives as bytes through the Any driver.
            let stored = sqlx::Row::try_get::<String, _>(&row, 0).unwrap_or_else(|_| {
                String::from_utf8_lossy(&sqlx::Row::get::<Vec<u8>, _>(&row, 0)).into_owned()
            });
            assert!(stored.starts_with("berth-sealed:v1:"), "{table}: {stored}");
            assert!(
                !stored.contains("s3cret") && !stored.contains("TOKEN"),
                "{table}: {stored}"
            );
        }
        pool.close().await;
        // The api reads them in clear.
        assert_eq!(
            store.app("t1", "a1").await.unwrap().unwrap().secret_env,
            app("t1", "a1").secret_env
        );
        assert_eq!(
            store
                .template("t1", "blog")
                .await
                .unwrap()
                .unwrap()
                .secret_env,
            template.secret_env
        );
        db.drop_db().await;
    }
);

per_database!(
    the_app_read_cache_sees_every_write_of_this_process,
    |kind: DbKind| async move {
        let (store, db) = fresh_store(kind).await;
        let read = |tenant: &'static str| {
            let store = store.clone();
            async move { store.app_read(tenant, "a").await.unwrap() }
        };
        assert!(read("t1").await.is_none());
        store.put_app(&app("t1", "a"), 5).await.unwrap();
        let first = read("t1").await.expect("a new app is read at once");
        assert_eq!(first.secret_env_names, vec!["TOKEN".to_string()]);
        assert!(first.latest.is_none());
        assert!(
            read("t2").await.is_none(),
            "another tenant's app is not there"
        );

        let mut changed = app("t1", "a");
        changed.spec.image = Some("127.0.0.1:5000/a:v2".into());
        changed.updated_at = 2;
        store.put_app(&changed, 5).await.unwrap();
        assert_eq!(
            read("t1").await.unwrap().spec,
            changed.spec,
            "a changed spec"
        );

        let d = new_deployment("t1", "a", DeploymentKind::Deploy, &changed.spec, None, 10);
        store.create_deployment(&d).await.unwrap();
        let latest = read("t1").await.unwrap().latest.clone();
        assert_eq!(latest.as_ref(), Some(&d), "a new deployment");

        let done = berth_api::storage::DeploymentRecord {
            state: JobState::Succeeded,
            job_id: Some("j".into()),
            version: 2,
            finished_at: Some(20),
            ..d.clone()
        };
        store.update_deployment(&done).await.unwrap();
        assert_eq!(
            read("t1").await.unwrap().latest,
            Some(done),
            "a followed change"
        );

        store.mark_deleting("t1", "a", 30).await.unwrap();
        assert!(read("t1").await.unwrap().deleting, "marked as deleting");
        store.remove_app("t1", "a").await.unwrap();
        assert!(read("t1").await.is_none(), "a deleted app is gone at once");

        let again = new_deployment("t2", "a", DeploymentKind::Deploy, &changed.spec, None, 40);
        let i = InstanceRecord {
            slug: "a".into(),
            template_id: "tpl".into(),
            app_id: "a".into(),
            deployment_id: again.deployment_id.clone(),
            created_at: 40,
        };
        store
            .create_instance(&i, &app("t2", "a"), &again)
            .await
            .unwrap();
        assert!(read("t1").await.is_none());
        assert!(
            read("t2").await.is_some(),
            "an instance's app, under its new tenant"
        );
        db.drop_db().await;
    }
);
