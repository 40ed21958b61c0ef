//! Thin HTTP handlers, one module per group of SPEC §6, and the guards in front of them:
//! operators by `X-Admin-Token`; tenants by key, then the key's rate limit, with every change
//! written to the usage log whatever its answer.

pub mod admin;
pub mod apps;
pub mod deployments;
pub mod instances;
pub mod open;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use berth_shared::ids::is_dns_label;
use serde::Serialize;

use crate::auth::{check_admin, Caller};
use crate::domain::deployment::Deployment;
use crate::error::{ApiError, Refusal};
use crate::service::{now_millis, Api};
use crate::storage::UsageRecord;

/// The whole router over `api`.
pub fn router(api: Api) -> Router {
    let admin = admin::router().layer(from_fn_with_state(api.clone(), require_admin));
    let tenant = Router::new()
        .merge(apps::router())
        .merge(deployments::router())
        .merge(instances::router())
        .layer(from_fn_with_state(api.clone(), require_key));
    Router::new()
        .merge(admin)
        .merge(tenant)
        .merge(open::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(api)
}

async fn require_admin(
    State(api): State<Api>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_admin(&api.settings.admin_token, request.headers())?;
    Ok(next.run(request).await)
}

/// What a change made, for the usage log: handlers put it in their answer's extensions.
#[derive(Debug, Clone)]
pub struct Made {
    /// The app it acted on.
    pub app_id: String,
    /// The deployment it made.
    pub deployment_id: Option<String>,
}

/// A JSON answer that made a deployment.
pub fn deployment_answer(status: StatusCode, d: Deployment) -> Response {
    let made = Made {
        app_id: d.app_id.clone(),
        deployment_id: Some(d.deployment_id.clone()),
    };
    let mut response = (status, Json(d)).into_response();
    response.extensions_mut().insert(made);
    response
}

/// A JSON answer with a status.
pub fn answer<T: Serialize>(status: StatusCode, body: T) -> Response {
    (status, Json(body)).into_response()
}

/// The name a change has in the usage log.
fn action(method: &Method, path: &str) -> String {
    let known = match (method.as_str(), path) {
        ("PUT", "/v1/apps/{app_id}") => "app.put",
        ("DELETE", "/v1/apps/{app_id}") => "app.delete",
        ("POST", "/v1/apps/{app_id}/deployments") => "deployment.create",
        ("POST", "/v1/apps/{app_id}/rollback") => "app.rollback",
        ("PATCH", "/v1/apps/{app_id}/config") => "app.config",
        ("POST", "/v1/apps/{app_id}/stop") => "app.stop",
        ("PUT", "/v1/templates/{template_id}") => "template.put",
        ("POST", "/v1/instances") => "instance.create",
        _ => "",
    };
    if known.is_empty() {
        format!("{method} {path}").chars().take(64).collect()
    } else {
        known.to_owned()
    }
}

async fn require_key(State(api): State<Api>, mut request: Request, next: Next) -> Response {
    let now = now_millis();
    let caller = match api.keys.authenticate(request.headers(), now).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    // What the usage log needs, taken only for a change: a read writes no line.
    let change = (!matches!(*request.method(), Method::GET | Method::HEAD)).then(|| {
        let path = request.extensions().get::<MatchedPath>().map_or_else(
            || request.uri().path().to_owned(),
            |m| m.as_str().to_owned(),
        );
        let path_app = request
            .uri()
            .path()
            .strip_prefix("/v1/apps/")
            .and_then(|rest| rest.split('/').next())
            .filter(|id| is_dns_label(id))
            .map(str::to_owned);
        (request.method().clone(), path, path_app)
    });
    request.extensions_mut().insert(caller.clone());
    let response = match api.keys.rate_limit(&caller, now) {
        Ok(()) => next.run(request).await,
        Err(retry_after) => {
            api.metrics.refused("rateLimitPerMinute");
            ApiError::TooManyRequests {
                detail: format!(
                    "rate limit rateLimitPerMinute ({}) reached for this key",
                    caller.tenant.rate_limit_per_minute
                ),
                retry_after,
            }
            .into_response()
        }
    };
    if let Some((method, path, path_app)) = change {
        let made = response.extensions().get::<Made>();
        let line = UsageRecord {
            id: 0,
            at: now,
            key_id: caller.key_id.clone(),
            action: action(&method, &path),
            app_id: made.map(|m| m.app_id.clone()).or(path_app),
            deployment_id: made.and_then(|m| m.deployment_id.clone()),
            status: response.status().as_u16(),
            detail: response.extensions().get::<Refusal>().map(|r| r.0.clone()),
        };
        api.record_usage(&caller, line).await;
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Unauthorized("missing the Authorization: Bearer <key> header".into())
        })
    }
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(berth_shared::headers::IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })
}
