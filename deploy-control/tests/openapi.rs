//! `GET /openapi.json` describes every route, with schemas generated from the wire types.

mod common;

use common::app::spawn_app;
use common::db::DbKind;
use serde_json::Value;

#[tokio::test]
async fn openapi_document_lists_every_route_with_schemas() {
    let app = spawn_app(DbKind::Sqlite).await;
    let res = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/deploy/jobs", "post"),
        ("/deploy/jobs/{jobId}", "get"),
        ("/deploy/apps/{appId}", "get"),
        ("/runner/jobs/claim", "post"),
        ("/runner/jobs/{jobId}/report", "post"),
        ("/internal/runtime-nodes/heartbeat", "post"),
        ("/admin/runtime-nodes/list", "get"),
        ("/admin/runtime-nodes/{nodeId}/drain", "post"),
        ("/admin/apps/{appId}/evacuate", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let create = &doc["components"]["schemas"]["CreateJobRequest"];
    assert!(create["properties"]["appId"].is_object(), "{create}");
    assert_eq!(
        create["properties"]["removeVolumes"]["type"], "boolean",
        "a STOP that deletes the app's volumes is documented: {create}"
    );
    assert_eq!(
        create["additionalProperties"], false,
        "unknown fields are refused, and the schema says so"
    );
    assert_eq!(
        doc["paths"]["/deploy/jobs"]["post"]["security"][0]["deploySecret"],
        serde_json::json!([])
    );
    let answer = &doc["components"]["schemas"]["HeartbeatAnswer"];
    assert_eq!(
        answer["properties"]["remove"]["type"], "array",
        "a heartbeat's answer names the containers the node removes: {answer}"
    );
    let reported = &doc["components"]["schemas"]["NodeHeartbeat"];
    assert!(
        reported["properties"]["removed"].is_object(),
        "a heartbeat reports what it removed: {reported}"
    );
    // Every schema reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
    app.stop().await;
}
