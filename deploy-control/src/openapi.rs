//! `GET /openapi.json`: the control plane's API as an OpenAPI 3.1 document. The schemas are
//! generated from the wire types in `berth-shared` (the same types the handlers parse and
//! return), so the document cannot drift from the bodies; the operations are listed here,
//! next to the router, one line each.

use berth_shared::problem::Problem;
use berth_shared::wire::{
    AppRun, ClaimRequest, ClaimResponse, CreateJobRequest, Items, Job, JobHeartbeatRequest,
    JobHeartbeatResponse, JobPage, LogsRequest, NodeHeartbeat, NodeView, ReportRequest,
};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// One operation: method, path, role, summary, request and answer schemas.
struct Operation {
    method: &'static str,
    path: &'static str,
    role: Option<&'static str>,
    summary: &'static str,
    request: Option<Value>,
    response: (u16, Option<Value>),
}

fn op(
    method: &'static str,
    path: &'static str,
    role: Option<&'static str>,
    summary: &'static str,
) -> Operation {
    Operation {
        method,
        path,
        role,
        summary,
        request: None,
        response: (200, None),
    }
}

impl Operation {
    fn body(mut self, schema: Value) -> Self {
        self.request = Some(schema);
        self
    }

    fn answers(mut self, status: u16, schema: Option<Value>) -> Self {
        self.response = (status, schema);
        self
    }
}

/// The whole document.
pub fn document() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "#/components/schemas/".into();
    }));
    let mut schema = |f: fn(&mut SchemaGenerator) -> schemars::Schema| f(&mut generator).to_value();
    fn of<T: JsonSchema>(g: &mut SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<T>()
    }
    let (deploy, runner, node, admin) = (
        Some("deploySecret"),
        Some("runnerToken"),
        Some("nodeToken"),
        Some("adminToken"),
    );
    let job = schema(of::<Job>);
    let operations = vec![
        op(
            "post",
            "/deploy/jobs",
            deploy,
            "Create a deploy or stop job (Idempotency-Key makes a retry return the first job)",
        )
        .body(schema(of::<CreateJobRequest>))
        .answers(201, Some(job.clone())),
        op(
            "get",
            "/deploy/jobs",
            deploy,
            "List jobs, newest first (appId, state, label=k:v, limit, cursor)",
        )
        .answers(200, Some(schema(of::<JobPage>))),
        op(
            "get",
            "/deploy/jobs/{jobId}",
            deploy,
            "Read a job; ?wait=SECS&version=V returns once the version differs",
        )
        .answers(200, Some(job.clone())),
        op(
            "post",
            "/deploy/jobs/{jobId}/cancel",
            deploy,
            "Cancel a PENDING job",
        )
        .answers(200, Some(job.clone())),
        op(
            "get",
            "/deploy/jobs/{jobId}/logs",
            deploy,
            "The lines runners sent for the job (text/plain)",
        ),
        op(
            "get",
            "/deploy/apps/{appId}",
            deploy,
            "The app's last known run and its URL",
        )
        .answers(200, Some(schema(of::<AppRun>))),
        op(
            "post",
            "/runner/jobs/claim",
            runner,
            "Claim a job (long poll); 204 when none came within wait",
        )
        .body(schema(of::<ClaimRequest>))
        .answers(200, Some(schema(of::<ClaimResponse>))),
        op(
            "post",
            "/runner/jobs/{jobId}/heartbeat",
            runner,
            "Renew the lease",
        )
        .body(schema(of::<JobHeartbeatRequest>))
        .answers(200, Some(schema(of::<JobHeartbeatResponse>))),
        op(
            "post",
            "/runner/jobs/{jobId}/logs",
            runner,
            "Append log lines",
        )
        .body(schema(of::<LogsRequest>))
        .answers(204, None),
        op(
            "post",
            "/runner/jobs/{jobId}/report",
            runner,
            "Report the attempt's outcome",
        )
        .body(schema(of::<ReportRequest>))
        .answers(200, Some(job)),
        op(
            "post",
            "/internal/runtime-nodes/heartbeat",
            node,
            "A runtime agent's heartbeat",
        )
        .body(schema(of::<NodeHeartbeat>)),
        op(
            "get",
            "/admin/runtime-nodes/list",
            admin,
            "Every node with its state and apps",
        )
        .answers(200, Some(schema(of::<Items<NodeView>>))),
        op(
            "post",
            "/admin/runtime-nodes/{nodeId}/cordon",
            admin,
            "Give the node no new apps",
        ),
        op(
            "post",
            "/admin/runtime-nodes/{nodeId}/uncordon",
            admin,
            "Let the node take new apps",
        ),
        op(
            "post",
            "/admin/runtime-nodes/{nodeId}/drain",
            admin,
            "Cordon the node and redeploy its apps elsewhere",
        ),
        op(
            "get",
            "/admin/jobs",
            admin,
            "List jobs (same filters as the deploy API)",
        )
        .answers(200, Some(schema(of::<JobPage>))),
        op("get", "/internal/health", None, "Liveness"),
        op("get", "/metrics", None, "Prometheus metrics (text)"),
    ];
    let problem = schema(of::<Problem>);
    let mut paths = Map::new();
    for o in operations {
        let mut responses = Map::new();
        let ok = match &o.response.1 {
            Some(s) => {
                json!({ "description": "OK", "content": { "application/json": { "schema": s } } })
            }
            None => json!({ "description": "OK" }),
        };
        responses.insert(o.response.0.to_string(), ok);
        responses.insert(
            "4XX".into(),
            json!({ "description": "Bad input, wrong token, unknown id or a conflict", "content": { "application/problem+json": { "schema": problem } } }),
        );
        let mut operation = json!({ "summary": o.summary, "responses": responses });
        if let Some(body) = o.request {
            operation["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": body } } });
        }
        if let Some(role) = o.role {
            operation["security"] = json!([{ role: [] }]);
        }
        let item = paths.entry(o.path).or_insert_with(|| json!({}));
        item[o.method] = operation;
    }
    let schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Berth control plane", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "deploySecret": { "type": "apiKey", "in": "header", "name": "X-DEPLOY-SECRET" },
                "runnerToken": { "type": "apiKey", "in": "header", "name": "X-Runner-Token" },
                "nodeToken": { "type": "apiKey", "in": "header", "name": "X-RT-Node-Token" },
                "adminToken": { "type": "apiKey", "in": "header", "name": "X-Admin-Token" }
            }
        }
    })
}
