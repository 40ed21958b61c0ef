//! `GET /openapi.json`: the api as an OpenAPI 3.1 document. Bodies and answers are schemas
//! generated from the very types the handlers parse and return; every path and query
//! parameter is declared with its format; operations are listed here, one entry each.

use berth_shared::problem::Problem;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::domain::deployment::Deployment;
use crate::domain::spec::{ConfigPatch, SpecRequest};
use crate::domain::tenant::{CreateTenant, PatchTenant, Tenant};
use crate::routes::admin::CreateKey;
use crate::service::apps::{DeployRequest, RollbackRequest};
use crate::service::instances::CreateInstance;
use crate::service::views::{
    AppView, CreatedKey, InstanceView, KeyList, Page, TemplateView, TenantList, UsageView,
};

/// Who may call an operation.
#[derive(Clone, Copy)]
enum Who {
    Operator,
    Tenant,
    Anyone,
}

/// One operation of the document.
struct Op {
    method: &'static str,
    path: &'static str,
    who: Who,
    summary: &'static str,
    query: &'static [&'static str],
    body: Option<Value>,
    status: u16,
    answer: Answer,
}

/// What a success carries.
enum Answer {
    Json(Value),
    Text(&'static str),
    Empty,
}

fn label(description: &str) -> Value {
    json!({ "type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", "description": description })
}

/// The schema of a path parameter, by name.
fn path_param(name: &str) -> Value {
    match name {
        "deploymentId" => {
            json!({ "type": "string", "format": "uuid", "description": "A deployment id" })
        }
        "keyId" => {
            json!({ "type": "string", "pattern": "^[0-9a-f]{16}$", "description": "A key id" })
        }
        "tenantId" => label("A tenant id (DNS label)"),
        "templateId" => label("A template id (DNS label)"),
        "slug" => label("An instance's slug (DNS label)"),
        _ => label("An app id (DNS label)"),
    }
}

/// A query parameter, by name.
fn query_param(name: &str) -> Value {
    let schema = match name {
        "limit" => {
            json!({ "type": "integer", "minimum": 1, "maximum": crate::service::MAX_PAGE, "default": 50 })
        }
        "wait" => {
            json!({ "type": "integer", "minimum": 0, "maximum": crate::service::deployments::MAX_WAIT_SECS })
        }
        "version" => json!({ "type": "integer", "format": "int64" }),
        _ => json!({ "type": "string", "description": "nextCursor of the previous page" }),
    };
    json!({ "name": name, "in": "query", "required": false, "schema": schema })
}

fn params(op: &Op) -> Vec<Value> {
    let in_path = op
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": path_param(name) }));
    let mut all: Vec<Value> = in_path
        .chain(op.query.iter().map(|q| query_param(q)))
        .collect();
    if op.path == "/v1/apps/{appId}/deployments" && op.method == "post" {
        all.push(json!({ "name": "Idempotency-Key", "in": "header", "required": false,
            "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$" } }));
    }
    if op.path == "/v1/deployments/{deploymentId}" {
        all.push(json!({ "name": "If-None-Match", "in": "header", "required": false, "schema": { "type": "string" } }));
    }
    all
}

/// The whole document.
pub fn document() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "#/components/schemas/".into();
    }));
    fn s<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
        g.subschema_for::<T>().to_value()
    }
    let g = &mut generator;
    let deployment = s::<Deployment>(g);
    let spec = s::<SpecRequest>(g);
    let op = |method, path, who, summary| Op {
        method,
        path,
        who,
        summary,
        query: &[],
        body: None,
        status: 200,
        answer: Answer::Empty,
    };
    let ops = vec![
        Op { body: Some(s::<CreateTenant>(g)), status: 201, answer: Answer::Json(s::<Tenant>(g)), ..op("post", "/v1/tenants", Who::Operator, "Create a tenant") },
        Op { answer: Answer::Json(s::<TenantList>(g)), ..op("get", "/v1/tenants", Who::Operator, "Every tenant") },
        Op { answer: Answer::Json(s::<Tenant>(g)), ..op("get", "/v1/tenants/{tenantId}", Who::Operator, "One tenant") },
        Op { body: Some(s::<PatchTenant>(g)), answer: Answer::Json(s::<Tenant>(g)), ..op("patch", "/v1/tenants/{tenantId}", Who::Operator, "Change a tenant's name, quotas or rate limit") },
        Op { body: Some(s::<CreateKey>(g)), status: 201, answer: Answer::Json(s::<CreatedKey>(g)), ..op("post", "/v1/tenants/{tenantId}/keys", Who::Operator, "Create a key (shown in this answer only)") },
        Op { answer: Answer::Json(s::<KeyList>(g)), ..op("get", "/v1/tenants/{tenantId}/keys", Who::Operator, "A tenant's keys") },
        Op { status: 204, ..op("delete", "/v1/tenants/{tenantId}/keys/{keyId}", Who::Operator, "Revoke a key") },
        Op { query: &["limit", "cursor"], answer: Answer::Json(s::<Page<AppView>>(g)), ..op("get", "/v1/apps", Who::Tenant, "The tenant's apps, by id") },
        Op { body: Some(spec.clone()), status: 201, answer: Answer::Json(s::<AppView>(g)), ..op("put", "/v1/apps/{appId}", Who::Tenant, "Write an app's desired spec (201 new, 200 changed); no deployment") },
        Op { answer: Answer::Json(s::<AppView>(g)), ..op("get", "/v1/apps/{appId}", Who::Tenant, "An app's spec and status") },
        Op { status: 202, answer: Answer::Json(deployment.clone()), ..op("delete", "/v1/apps/{appId}", Who::Tenant, "Stop the app and free its id once that ends") },
        Op { body: Some(s::<DeployRequest>(g)), status: 201, answer: Answer::Json(deployment.clone()), ..op("post", "/v1/apps/{appId}/deployments", Who::Tenant, "Deploy the current spec ({image} changes its image first); Idempotency-Key answers a retry with the first") },
        Op { query: &["limit", "cursor"], answer: Answer::Json(s::<Page<Deployment>>(g)), ..op("get", "/v1/apps/{appId}/deployments", Who::Tenant, "An app's deployments, newest first") },
        Op { body: Some(s::<RollbackRequest>(g)), status: 201, answer: Answer::Json(deployment.clone()), ..op("post", "/v1/apps/{appId}/rollback", Who::Tenant, "Deploy an earlier deployment's image and spec again") },
        Op { body: Some(s::<ConfigPatch>(g)), status: 201, answer: Answer::Json(deployment.clone()), ..op("patch", "/v1/apps/{appId}/config", Who::Tenant, "Merge env and secretEnv (null removes) and deploy") },
        Op { status: 202, answer: Answer::Json(deployment.clone()), ..op("post", "/v1/apps/{appId}/stop", Who::Tenant, "Stop the app (spec and volumes kept)") },
        Op { query: &["wait", "version"], answer: Answer::Json(deployment.clone()), ..op("get", "/v1/deployments/{deploymentId}", Who::Tenant, "A deployment; ?wait=&version= long-polls; ETag and If-None-Match (304)") },
        Op { answer: Answer::Text("text/event-stream"), ..op("get", "/v1/deployments/{deploymentId}/events", Who::Tenant, "Server-Sent Events, one per change, ending after the final state") },
        Op { answer: Answer::Text("text/plain"), ..op("get", "/v1/deployments/{deploymentId}/logs", Who::Tenant, "The deployment's log lines") },
        Op { body: Some(spec), status: 201, answer: Answer::Json(s::<TemplateView>(g)), ..op("put", "/v1/templates/{templateId}", Who::Tenant, "Write a template (201 new, 200 changed)") },
        Op { answer: Answer::Json(s::<TemplateView>(g)), ..op("get", "/v1/templates/{templateId}", Who::Tenant, "A template") },
        Op { body: Some(s::<CreateInstance>(g)), status: 201, answer: Answer::Json(s::<InstanceView>(g)), ..op("post", "/v1/instances", Who::Tenant, "Make and deploy the instance {slug} from a template (201), or answer the existing one (200)") },
        Op { answer: Answer::Json(s::<InstanceView>(g)), ..op("get", "/v1/instances/{slug}", Who::Tenant, "Resolve an instance") },
        Op { query: &["limit", "cursor"], answer: Answer::Json(s::<Page<UsageView>>(g)), ..op("get", "/v1/usage", Who::Tenant, "The tenant's usage log, newest first") },
        Op { answer: Answer::Json(json!({ "type": "object" })), ..op("get", "/internal/health", Who::Anyone, "Liveness") },
        Op { answer: Answer::Text("application/openmetrics-text"), ..op("get", "/metrics", Who::Anyone, "Prometheus metrics") },
        Op { answer: Answer::Json(json!({ "type": "object" })), ..op("get", "/openapi.json", Who::Anyone, "This document") },
    ];
    let problem =
        json!({ "content": { "application/problem+json": { "schema": s::<Problem>(g) } } });
    let mut paths = Map::new();
    for o in &ops {
        paths.entry(o.path).or_insert_with(|| json!({}))[o.method] = operation(o, &problem);
    }
    let schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Berth public api", "version": env!("CARGO_PKG_VERSION"),
                  "description": "For portals: tenants and keys (operators), apps, deployments, instances (tenants). See docs/api.md." },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminToken": { "type": "apiKey", "in": "header", "name": "X-Admin-Token" },
                "apiKey": { "type": "http", "scheme": "bearer", "description": "A tenant's key: bk_{keyId}_{secret}" }
            }
        }
    })
}

fn operation(o: &Op, problem: &Value) -> Value {
    let success = match &o.answer {
        Answer::Json(schema) => {
            json!({ "description": "Success", "content": { "application/json": { "schema": schema } } })
        }
        Answer::Text(media) => {
            json!({ "description": "Success", "content": { *media: { "schema": { "type": "string" } } } })
        }
        Answer::Empty => json!({ "description": "Success" }),
    };
    let mut responses = json!({ o.status.to_string(): success });
    // PUT answers 200 when it changed what was there, POST /v1/instances when it was there.
    if o.status == 201 && matches!(o.method, "put") || o.path == "/v1/instances" {
        responses["200"] = responses["201"].clone();
    }
    if o.path == "/v1/deployments/{deploymentId}" {
        responses["304"] =
            json!({ "description": "Not modified: If-None-Match names the current version" });
    }
    let mut refusals = vec![
        ("400", "Bad input"),
        ("404", "Not there, or not yours"),
        ("413", "Body too large"),
        ("415", "Body is not JSON"),
    ];
    if !matches!(o.who, Who::Anyone) {
        refusals.push(("401", "Missing or bad credential"));
    }
    if matches!(o.who, Who::Tenant) {
        refusals.extend([
            ("403", "Quota maxApps"),
            ("409", "An id another tenant holds, or an app being deleted"),
            ("429", "Rate limit or a deployment quota (Retry-After)"),
        ]);
    }
    if matches!(o.who, Who::Operator) {
        refusals.push(("409", "The tenant exists"));
    }
    for (status, description) in refusals {
        let mut r = problem.clone();
        r["description"] = json!(description);
        responses[status] = r;
    }
    let mut op = json!({ "summary": o.summary, "parameters": params(o), "responses": responses });
    if let Some(body) = &o.body {
        // Deployments also take no body at all ({} is implied).
        let required = o.path != "/v1/apps/{appId}/deployments";
        op["requestBody"] =
            json!({ "required": required, "content": { "application/json": { "schema": body } } });
    }
    match o.who {
        Who::Operator => op["security"] = json!([{ "adminToken": [] }]),
        Who::Tenant => op["security"] = json!([{ "apiKey": [] }]),
        Who::Anyone => op["security"] = json!([]),
    }
    op
}
