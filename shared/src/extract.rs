//! Extractors whose rejections are `application/problem+json` with a clear detail, not axum's
//! plain text, for every Berth service. Each also says what it takes in the service's OpenAPI
//! document ([`crate::openapi::DocInput`]), so the document cannot drift from the handlers.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::problem::Problem;
use crate::wire::limits::MAX_BODY;

/// A JSON body; unknown fields, wrong types, bad syntax, a wrong media type or a body over
/// [`MAX_BODY`] are refused with the reason.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> Problem {
    // A body that parses but does not fit (unknown field, wrong type) is a plain 400 like
    // every other invalid field, not axum's 422.
    let status = match &rejection {
        JsonRejection::JsonDataError(_) => StatusCode::BAD_REQUEST,
        other => other.status(),
    };
    let detail = match &rejection {
        JsonRejection::JsonDataError(e) => format!("the JSON body does not fit: {}", inner(e)),
        JsonRejection::JsonSyntaxError(e) => format!("the body is not valid JSON: {}", inner(e)),
        JsonRejection::MissingJsonContentType(_) => {
            "send the body as JSON with Content-Type: application/json".to_owned()
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the body is larger than the {} KiB limit", MAX_BODY / 1024)
        }
        other => other.body_text(),
    };
    Problem::new(status, detail)
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
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("bad query string: {}", inner(&e)),
            )),
            Err(other) => Err(Problem::new(StatusCode::BAD_REQUEST, other.body_text())),
        }
    }
}

/// Path parameters, refused with the reason (a job id that is not a UUID, say).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("bad path parameter: {}", inner(&e)),
            )),
            Err(other) => Err(Problem::new(StatusCode::BAD_REQUEST, other.body_text())),
        }
    }
}

/// Gives an error answer that has no body of its own (axum's `404` for an unknown path, its
/// `405` for a method the path does not take) a problem+json body, keeping its headers
/// (`Allow`). For [`axum::middleware::map_response`] around the whole router.
pub async fn bare_errors_as_problems(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let detail = match status {
        StatusCode::NOT_FOUND => "no such endpoint".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => {
            "this endpoint does not take that method; the Allow header lists those it takes"
                .to_owned()
        }
        other => other.canonical_reason().unwrap_or("error").to_owned(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let problem = Problem::new(status, detail).into_response();
    let (problem_parts, body) = problem.into_parts();
    parts.headers.extend(problem_parts.headers);
    Response::from_parts(parts, body)
}
