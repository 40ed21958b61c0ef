//! Extractors whose refusals are `problem+json` with the reason: JSON bodies (unknown fields,
//! wrong types, bad syntax, wrong media type, over the size limit), path parameters and query
//! strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body, in bytes.
pub const BODY_LIMIT: usize = 256 * 1024;

/// A JSON body, refused with the reason when it does not fit `T`.
pub struct Body<T>(pub T);

/// A JSON body that may also be left out (then `T::default()`): `POST …/deployments` with or
/// without `{}`.
pub struct OptionalBody<T>(pub T);

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Option<Bytes>, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    let bytes = Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::Rejected(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is larger than the {} KiB limit",
                    BODY_LIMIT / 1024
                ),
            )
        } else {
            ApiError::Rejected(e.status(), e.body_text())
        }
    })?;
    if bytes.is_empty() {
        return Ok(None);
    }
    if !is_json {
        return Err(ApiError::Rejected(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with Content-Type: application/json".into(),
        ));
    }
    Ok(Some(bytes))
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "the body is not valid JSON"
        } else {
            "the JSON body does not fit"
        };
        ApiError::BadRequest(format!("{what}: {e}"))
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match read_body(req, state).await? {
            Some(bytes) => parse(&bytes).map(Self),
            None => Err(ApiError::BadRequest(
                "this request needs a JSON body".into(),
            )),
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match read_body(req, state).await? {
            Some(bytes) => parse(&bytes).map(Self),
            None => Ok(Self(T::default())),
        }
    }
}

/// Path parameters, refused with the reason.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|e| ApiError::BadRequest(format!("bad path parameter: {}", e.body_text())))
    }
}

/// A query string, refused with the reason.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))
    }
}
