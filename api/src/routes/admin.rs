//! Operators (`X-Admin-Token`): tenants and keys.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::answer;
use crate::domain::tenant::{CreateTenant, PatchTenant};
use crate::error::ApiResult;
use crate::extract::{Body, Path};
use crate::service::views::TenantList;
use crate::service::Api;

/// `POST /v1/tenants/{tenantId}/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKey {
    /// A name for the key (1 to 200 characters), e.g. the portal that holds it.
    pub name: String,
}

/// The operators' routes.
pub fn router() -> Router<Api> {
    Router::new()
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/v1/tenants/{tenant_id}",
            get(get_tenant).patch(patch_tenant),
        )
        .route(
            "/v1/tenants/{tenant_id}/keys",
            post(create_key).get(list_keys),
        )
        .route("/v1/tenants/{tenant_id}/keys/{key_id}", delete(revoke_key))
}

async fn create_tenant(
    State(api): State<Api>,
    Body(req): Body<CreateTenant>,
) -> ApiResult<Response> {
    Ok(answer(StatusCode::CREATED, api.create_tenant(req).await?))
}

async fn list_tenants(State(api): State<Api>) -> ApiResult<Response> {
    let items = api.tenants().await?;
    Ok(answer(StatusCode::OK, TenantList { items }))
}

async fn get_tenant(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(answer(StatusCode::OK, api.tenant(&id).await?))
}

async fn patch_tenant(
    State(api): State<Api>,
    Path(id): Path<String>,
    Body(req): Body<PatchTenant>,
) -> ApiResult<Response> {
    Ok(answer(StatusCode::OK, api.patch_tenant(&id, req).await?))
}

async fn create_key(
    State(api): State<Api>,
    Path(id): Path<String>,
    Body(req): Body<CreateKey>,
) -> ApiResult<Response> {
    Ok(answer(
        StatusCode::CREATED,
        api.create_key(&id, req.name).await?,
    ))
}

async fn list_keys(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(answer(StatusCode::OK, api.keys(&id).await?))
}

async fn revoke_key(
    State(api): State<Api>,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    api.revoke_key(&id, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
