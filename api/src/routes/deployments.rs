//! Deployment status for portals: read, long poll, `ETag`/`304`, Server-Sent Events, logs; and
//! the usage log.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use serde::Deserialize;
use tokio_stream::wrappers::WatchStream;

use super::answer;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{Path, Query};
use crate::metrics::Watching;
use crate::service::{Api, PageQuery};

/// The deployment and usage routes.
pub fn router() -> Router<Api> {
    Router::new()
        .route("/v1/deployments/{deployment_id}", get(get_deployment))
        .route("/v1/deployments/{deployment_id}/events", get(events))
        .route("/v1/deployments/{deployment_id}/logs", get(logs))
        .route("/v1/usage", get(usage))
}

/// `?wait=SECS&version=V`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    wait: Option<u64>,
    version: Option<i64>,
}

/// The version an `If-None-Match` names (`W/"7"` or `"7"`).
fn known_version(headers: &HeaderMap) -> Option<i64> {
    headers
        .get(header::IF_NONE_MATCH)?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|t| {
            t.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse()
                .ok()
        })
}

async fn get_deployment(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    let known = known_version(&headers);
    let wait = q.wait.map(|secs| (secs, q.version.or(known).unwrap_or(-1)));
    let d = api.deployment(&caller, &id, wait).await?;
    let headers = [
        (header::ETAG, d.etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if known == Some(d.record.version) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    // The answer every watcher of this change shares.
    let json = HeaderValue::from_static("application/json");
    Ok((headers, [(header::CONTENT_TYPE, json)], d.json.clone()).into_response())
}

/// One event per change (`id` is the version), ending after the final state.
async fn events(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let rx = api.deployment_changes(&caller, &id).await?;
    let counted = Watching::new(&api.metrics);
    let stream = WatchStream::new(rx).scan(false, move |done, d| {
        // The stream owns the count: the watcher is counted while it is open.
        let _alive = &counted;
        if *done {
            return std::future::ready(None);
        }
        *done = d.record.state.is_final();
        let event = Event::default()
            .event("deployment")
            .id(d.record.version.to_string())
            .data(std::str::from_utf8(&d.json).unwrap_or_default());
        std::future::ready(Some(Ok::<_, Infallible>(event)))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn logs(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let text = api.deployment_logs(&caller, &id).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

async fn usage(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    Ok(answer(StatusCode::OK, api.usage(&caller, q).await?))
}
