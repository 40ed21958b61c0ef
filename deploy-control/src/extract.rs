//! Extractors whose rejections are `problem+json` with a clear detail, not axum's plain text.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body; unknown fields, wrong types, bad syntax, a wrong media type or a body over
/// the size limit are refused with the reason.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    // A body that parses but does not fit (unknown field, wrong type) is a plain 400 like
    // every other invalid field, not axum's 422.
    let status = match &rejection {
        JsonRejection::JsonDataError(_) => axum::http::StatusCode::BAD_REQUEST,
        other => other.status(),
    };
    let detail = match &rejection {
        JsonRejection::JsonDataError(e) => format!("the JSON body does not fit: {}", inner(e)),
        JsonRejection::JsonSyntaxError(e) => format!("the body is not valid JSON: {}", inner(e)),
        JsonRejection::MissingJsonContentType(_) => {
            "send the body as JSON with Content-Type: application/json".to_owned()
        }
        _ if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            format!(
                "the body is larger than the {} KiB limit",
                berth_shared::wire::limits::MAX_BODY / 1024
            )
        }
        other => other.body_text(),
    };
    ApiError::Rejected(status, detail)
}

/// The innermost cause of a serde error: "unknown field `imgae`, expected …".
fn inner(e: &dyn std::error::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A query string, refused with the reason when it does not parse.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::BadRequest(
                format!("bad query string: {}", inner(&e)),
            )),
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

/// Path parameters, refused with the reason (a job id that is not a UUID, say).
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::BadRequest(
                format!("bad path parameter: {}", inner(&e)),
            )),
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}
