//! OpenAPI 3.1 documents built from the routes themselves.
//!
//! An [`ApiRouter`] registers each handler with axum and, from the same call, documents it:
//! the path and query parameters and the body come from the handler's own extractor types
//! ([`ApiPath`], [`ApiQuery`], [`ApiJson`] of types deriving [`JsonSchema`]), so a parameter the
//! handler takes cannot be missing from the document, nor have another type. What the handler
//! answers is declared beside it in a [`Doc`]; the schemathesis run in CI checks the answers
//! against it. Problems (`application/problem+json`) are documented for every status an input
//! can be refused with (400 for a path, query or body; 413 and 415 for a body; 401 for a role
//! header), for the statuses the [`Doc`] names, and for 5xx.

use std::future::Future;
use std::sync::Arc;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::problem::{Problem, PROBLEM_JSON};

/// What an operation answers and how it is protected, declared next to its route.
#[derive(Debug, Clone)]
pub struct Doc {
    summary: &'static str,
    security: Option<&'static str>,
    answers: Vec<(u16, &'static str, Option<Content>)>,
    problems: Vec<(u16, &'static str)>,
    headers: Vec<Value>,
}

/// One answer's body: its media type and schema.
#[derive(Debug, Clone)]
enum Content {
    Json(fn(&mut SchemaGenerator) -> Schema),
    Other(&'static str),
}

impl Doc {
    /// An operation with this one-line summary.
    pub fn new(summary: &'static str) -> Self {
        Self {
            summary,
            security: None,
            answers: Vec::new(),
            problems: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Answers `status` with a JSON body of `T`.
    pub fn json<T: JsonSchema>(mut self, status: u16, description: &'static str) -> Self {
        self.answers.push((
            status,
            description,
            Some(Content::Json(|g| g.subschema_for::<T>())),
        ));
        self
    }

    /// Answers `status` with a body of `media_type` (text, HTML, an event stream).
    pub fn body(
        mut self,
        status: u16,
        media_type: &'static str,
        description: &'static str,
    ) -> Self {
        self.answers
            .push((status, description, Some(Content::Other(media_type))));
        self
    }

    /// Answers `status` without a body.
    pub fn empty(mut self, status: u16, description: &'static str) -> Self {
        self.answers.push((status, description, None));
        self
    }

    /// May answer `status` with a problem, for the reason `description` gives.
    pub fn problem(mut self, status: u16, description: &'static str) -> Self {
        self.problems.push((status, description));
        self
    }

    /// Takes an optional request header with a string value matching `pattern`.
    pub fn header(mut self, name: &'static str, description: &'static str, pattern: &str) -> Self {
        self.headers.push(json!({
            "name": name, "in": "header", "required": false, "description": description,
            "schema": { "type": "string", "pattern": pattern },
        }));
        self
    }
}

/// What an operation's inputs contribute to its document.
#[derive(Debug)]
pub struct OperationDoc<'a> {
    generator: &'a mut SchemaGenerator,
    path: &'a str,
    parameters: Vec<Value>,
    body: Option<Value>,
    problems: Vec<(u16, &'static str)>,
}

impl OperationDoc<'_> {
    /// Adds a problem answer the input may cause.
    pub fn problem(&mut self, status: u16, description: &'static str) {
        self.problems.push((status, description));
    }
}

/// An extractor that documents what it takes; the ones that take nothing a client sends
/// (state, the request's headers as a whole) contribute nothing.
pub trait DocInput {
    /// Adds this input's parameters, body and problems to `op`.
    fn document(op: &mut OperationDoc<'_>);
}

impl<T: JsonSchema> DocInput for ApiJson<T> {
    fn document(op: &mut OperationDoc<'_>) {
        let schema = op.generator.subschema_for::<T>();
        op.body = Some(json!({
            "required": true,
            "content": { "application/json": { "schema": schema } },
        }));
        op.problem(400, "The body is not valid JSON or does not fit the schema");
        op.problem(413, "The body is larger than the limit");
        op.problem(415, "The body is not sent as application/json");
    }
}

impl<T: JsonSchema> DocInput for ApiPath<T> {
    fn document(op: &mut OperationDoc<'_>) {
        let names = placeholders(op.path);
        let schema = T::json_schema(op.generator).to_value();
        for (i, name) in names.iter().enumerate() {
            let param = match &schema["properties"] {
                Value::Object(props) => props.get(*name).cloned(),
                _ if names.len() == 1 => Some(schema.clone()),
                _ => schema["prefixItems"].get(i).cloned(),
            };
            let param = param.unwrap_or_else(|| json!({ "type": "string" }));
            op.parameters.push(parameter(name, "path", true, param));
        }
        op.problem(400, "A path parameter is not valid");
    }
}

impl<T: JsonSchema> DocInput for ApiQuery<T> {
    fn document(op: &mut OperationDoc<'_>) {
        let schema = T::json_schema(op.generator).to_value();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = schema["properties"].as_object() {
            for (name, param) in props {
                let required = required.contains(&name.as_str());
                op.parameters
                    .push(parameter(name, "query", required, param.clone()));
            }
        }
        op.problem(400, "A query parameter is not valid");
    }
}

impl<S> DocInput for axum::extract::State<S> {
    fn document(_: &mut OperationDoc<'_>) {}
}

impl DocInput for axum::http::HeaderMap {
    fn document(_: &mut OperationDoc<'_>) {}
}

/// What a guard put in the request (the caller it authenticated): nothing to document.
impl<T> DocInput for axum::Extension<T> {
    fn document(_: &mut OperationDoc<'_>) {}
}

/// A handler whose every argument documents itself.
pub trait DocHandler<Args> {
    /// Adds every argument's contribution to `op`.
    fn document(op: &mut OperationDoc<'_>);
}

macro_rules! doc_handler {
    ($($arg:ident),*) => {
        impl<F, Fut, $($arg,)*> DocHandler<($($arg,)*)> for F
        where
            F: FnOnce($($arg,)*) -> Fut,
            Fut: Future,
            $($arg: DocInput,)*
        {
            #[allow(unused_variables)]
            fn document(op: &mut OperationDoc<'_>) {
                $(<$arg as DocInput>::document(op);)*
            }
        }
    };
}

doc_handler!();
doc_handler!(A1);
doc_handler!(A1, A2);
doc_handler!(A1, A2, A3);
doc_handler!(A1, A2, A3, A4);
doc_handler!(A1, A2, A3, A4, A5);

/// `{name}` segments of an axum path, in order.
fn placeholders(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// A parameter object; `null` is taken out of its schema (an absent parameter is how a
/// client leaves it out) and its description moves up to the parameter.
fn parameter(name: &str, place: &str, required: bool, mut schema: Value) -> Value {
    let description = schema
        .as_object_mut()
        .and_then(|o| o.remove("description"))
        .unwrap_or(Value::Null);
    strip_null(&mut schema);
    let mut param = json!({ "name": name, "in": place, "required": required, "schema": schema });
    if !description.is_null() {
        param["description"] = description;
    }
    param
}

fn strip_null(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            object.insert("type".into(), only);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(options)) = object.get_mut(key) {
            options.retain(|o| o.get("type").and_then(Value::as_str) != Some("null"));
            if options.len() == 1 {
                let only = options.remove(0);
                object.remove(key);
                if let Value::Object(inner) = only {
                    object.extend(inner);
                }
            }
        }
    }
}

/// One documented route, documented when the whole document is built.
struct Pending {
    method: Method,
    path: &'static str,
    doc: Doc,
    inputs: fn(&mut OperationDoc<'_>),
}

/// An axum router that documents every route it is given.
pub struct ApiRouter<S = ()> {
    router: Router<S>,
    pending: Vec<Pending>,
    security: Option<&'static str>,
}

impl<S: Clone + Send + Sync + 'static> Default for ApiRouter<S> {
    fn default() -> Self {
        Self {
            router: Router::new(),
            pending: Vec::new(),
            security: None,
        }
    }
}

impl<S: Clone + Send + Sync + 'static> ApiRouter<S> {
    /// An empty router whose routes require no role.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty router whose routes require the security scheme named `scheme`.
    pub fn secured(scheme: &'static str) -> Self {
        Self {
            security: Some(scheme),
            ..Self::default()
        }
    }

    /// Routes `method path` to `handler` and documents it with `doc` and the handler's inputs.
    pub fn route<H, T, A>(
        mut self,
        method: Method,
        path: &'static str,
        handler: H,
        doc: Doc,
    ) -> Self
    where
        H: Handler<T, S> + DocHandler<A>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        self.router = self.router.route(path, on(filter, handler));
        let doc = Doc {
            security: doc.security.or(self.security),
            ..doc
        };
        self.pending.push(Pending {
            method,
            path,
            doc,
            inputs: <H as DocHandler<A>>::document,
        });
        self
    }

    /// Changes the axum router (a layer, the state) and keeps the documents.
    pub fn map<S2>(self, change: impl FnOnce(Router<S>) -> Router<S2>) -> ApiRouter<S2> {
        ApiRouter {
            router: change(self.router),
            pending: self.pending,
            security: self.security,
        }
    }

    /// Adds `other`'s routes and documents.
    pub fn merge(mut self, other: ApiRouter<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.pending.extend(other.pending);
        self
    }
}

/// A service's name, version and role headers, for its document.
#[derive(Debug, Clone)]
pub struct Info {
    /// The document's title.
    pub title: &'static str,
    /// The service's version.
    pub version: &'static str,
    /// Security schemes: (name, header) pairs, each an API key sent in a header.
    pub header_keys: Vec<(&'static str, &'static str)>,
}

/// Where every service serves its document.
pub const DOCUMENT_PATH: &str = "/openapi.json";

impl ApiRouter<()> {
    /// The axum router, serving the OpenAPI document of every route at [`DOCUMENT_PATH`].
    pub fn finish(mut self, info: &Info) -> Router {
        self.pending.push(Pending {
            method: Method::GET,
            path: DOCUMENT_PATH,
            doc: Doc::new("This document").body(
                200,
                "application/json",
                "The OpenAPI 3.1 document",
            ),
            inputs: |_| {},
        });
        let document = Arc::new(self.document(info));
        self.router.route(
            DOCUMENT_PATH,
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(Value::clone(&document)) }
            }),
        )
    }

    fn document(&self, info: &Info) -> Value {
        let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "#/components/schemas/".into();
        }));
        let problem = generator.subschema_for::<Problem>();
        let mut paths = Map::new();
        for p in &self.pending {
            let operation = operation(&mut generator, &problem, p);
            let item = paths
                .entry(p.path)
                .or_insert_with(|| Value::Object(Map::new()));
            item[p.method.as_str().to_ascii_lowercase()] = operation;
        }
        let schemes: Map<String, Value> = info
            .header_keys
            .iter()
            .map(|(name, header)| {
                (
                    (*name).to_owned(),
                    json!({ "type": "apiKey", "in": "header", "name": header }),
                )
            })
            .collect();
        let schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
        json!({
            "openapi": "3.1.0",
            "info": { "title": info.title, "version": info.version },
            "paths": paths,
            "components": { "schemas": schemas, "securitySchemes": schemes },
        })
    }
}

fn operation(generator: &mut SchemaGenerator, problem: &Schema, p: &Pending) -> Value {
    let mut op = OperationDoc {
        generator,
        path: p.path,
        parameters: p.doc.headers.clone(),
        body: None,
        problems: Vec::new(),
    };
    (p.inputs)(&mut op);
    let mut responses = Map::new();
    for (status, description, content) in &p.doc.answers {
        let mut answer = json!({ "description": description });
        match content {
            Some(Content::Json(schema)) => {
                answer["content"] =
                    json!({ "application/json": { "schema": schema(op.generator) } })
            }
            Some(Content::Other(media)) => answer["content"] = json!({ *media: {} }),
            None => {}
        }
        responses.insert(status.to_string(), answer);
    }
    let mut problems = op.problems.clone();
    problems.extend(p.doc.problems.iter().copied());
    if p.doc.security.is_some() {
        problems.push((401, "The role header is missing or wrong"));
    }
    let problem_answer = |description: &str| json!({ "description": description, "content": { PROBLEM_JSON: { "schema": problem } } });
    // One answer per status; the reasons of every input that may cause it, in order.
    let mut reasons: Vec<(u16, Vec<&str>)> = Vec::new();
    for (status, description) in problems {
        match reasons.iter_mut().find(|(s, _)| *s == status) {
            Some((_, list)) => list.push(description),
            None => reasons.push((status, vec![description])),
        }
    }
    for (status, list) in reasons {
        responses
            .entry(status.to_string())
            .or_insert_with(|| problem_answer(&list.join("; ")));
    }
    responses.insert(
        "5XX".into(),
        problem_answer("The service failed; the detail says whether to retry"),
    );
    let mut operation = json!({ "summary": p.doc.summary, "responses": responses });
    if !op.parameters.is_empty() {
        operation["parameters"] = Value::Array(op.parameters);
    }
    if let Some(body) = op.body {
        operation["requestBody"] = body;
    }
    if let Some(scheme) = p.doc.security {
        operation["security"] = json!([{ scheme: [] }]);
    }
    operation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_leaves_parameter_schemas() {
        let mut s = json!({ "type": ["integer", "null"], "minimum": 1 });
        strip_null(&mut s);
        assert_eq!(s, json!({ "type": "integer", "minimum": 1 }));
        let mut s =
            json!({ "anyOf": [{ "$ref": "#/components/schemas/AppId" }, { "type": "null" }] });
        strip_null(&mut s);
        assert_eq!(s, json!({ "$ref": "#/components/schemas/AppId" }));
    }

    #[test]
    fn placeholders_are_found_in_order() {
        assert_eq!(placeholders("/a/{jobId}/b/{x}"), vec!["jobId", "x"]);
    }
}
