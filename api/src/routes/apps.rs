//! Tenants' apps: desired spec, deployments, rollback, config, stop, delete.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::Router;

use super::{answer, deployment_answer, idempotency_key};
use crate::auth::Caller;
use crate::domain::spec::{ConfigPatch, SpecRequest};
use crate::error::ApiResult;
use crate::extract::{Body, OptionalBody, Path, Query};
use crate::service::apps::{app_id, DeployRequest, RollbackRequest};
use crate::service::{Api, PageQuery};
use crate::storage::Created;

/// The apps routes.
pub fn router() -> Router<Api> {
    Router::new()
        .route("/v1/apps", get(list_apps))
        .route(
            "/v1/apps/{app_id}",
            put(put_app).get(get_app).delete(delete_app),
        )
        .route(
            "/v1/apps/{app_id}/deployments",
            post(deploy).get(list_deployments),
        )
        .route("/v1/apps/{app_id}/rollback", post(rollback))
        .route("/v1/apps/{app_id}/config", patch(patch_config))
        .route("/v1/apps/{app_id}/stop", post(stop))
}

async fn put_app(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<SpecRequest>,
) -> ApiResult<Response> {
    let (created, app) = api.put_app(&caller, &app_id(&id)?, req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(answer(status, app))
}

async fn get_app(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let json = api.app_json(&caller, &app_id(&id)?).await?;
    let kind = HeaderValue::from_static("application/json");
    Ok(([(header::CONTENT_TYPE, kind)], json).into_response())
}

async fn list_apps(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    Ok(answer(StatusCode::OK, api.apps(&caller, q).await?))
}

async fn deploy(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalBody(req): OptionalBody<DeployRequest>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let made = api.deploy_app(&caller, &app_id(&id)?, req, key).await?;
    Ok(match made {
        Created::New(d) => deployment_answer(StatusCode::CREATED, d),
        Created::Existing(d) => {
            let mut response = deployment_answer(StatusCode::CREATED, d);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
    })
}

async fn list_deployments(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    Ok(answer(
        StatusCode::OK,
        api.app_deployments(&caller, &app_id(&id)?, q).await?,
    ))
}

async fn rollback(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<RollbackRequest>,
) -> ApiResult<Response> {
    Ok(deployment_answer(
        StatusCode::CREATED,
        api.rollback(&caller, &app_id(&id)?, req).await?,
    ))
}

async fn patch_config(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<ConfigPatch>,
) -> ApiResult<Response> {
    Ok(deployment_answer(
        StatusCode::CREATED,
        api.patch_config(&caller, &app_id(&id)?, req).await?,
    ))
}

async fn stop(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(deployment_answer(
        StatusCode::ACCEPTED,
        api.stop_app(&caller, &app_id(&id)?).await?,
    ))
}

async fn delete_app(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(deployment_answer(
        StatusCode::ACCEPTED,
        api.delete_app(&caller, &app_id(&id)?).await?,
    ))
}
