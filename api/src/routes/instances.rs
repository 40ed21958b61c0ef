//! Templates and per-user instances.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;

use super::{answer, Made};
use crate::auth::Caller;
use crate::domain::spec::SpecRequest;
use crate::error::ApiResult;
use crate::extract::{Body, Path};
use crate::service::instances::CreateInstance;
use crate::service::Api;
use crate::storage::Created;

/// The template and instance routes.
pub fn router() -> Router<Api> {
    Router::new()
        .route(
            "/v1/templates/{template_id}",
            put(put_template).get(get_template),
        )
        .route("/v1/instances", post(create_instance))
        .route("/v1/instances/{slug}", get(get_instance))
}

async fn put_template(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<SpecRequest>,
) -> ApiResult<Response> {
    let (created, t) = api.put_template(&caller, &id, req).await?;
    Ok(answer(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        t,
    ))
}

async fn get_template(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(answer(StatusCode::OK, api.template(&caller, &id).await?))
}

async fn create_instance(
    State(api): State<Api>,
    caller: Caller,
    Body(req): Body<CreateInstance>,
) -> ApiResult<Response> {
    let (status, i) = match api.create_instance(&caller, req).await? {
        Created::New(i) => (StatusCode::CREATED, i),
        Created::Existing(i) => (StatusCode::OK, i),
    };
    let made = Made {
        app_id: i.app_id.clone(),
        deployment_id: i.deployment_id.clone(),
    };
    let mut response = answer(status, i);
    response.extensions_mut().insert(made);
    Ok(response)
}

async fn get_instance(
    State(api): State<Api>,
    caller: Caller,
    Path(slug): Path<String>,
) -> ApiResult<Response> {
    Ok(answer(StatusCode::OK, api.instance(&caller, &slug).await?))
}
