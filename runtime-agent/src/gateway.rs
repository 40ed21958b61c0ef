//! The gateway: end users' requests to the app containers on this host.
//!
//! `/apps/{appId}/…` (prefix stripped, `X-Forwarded-Prefix` set) and `Host: {appId}.{domain}`
//! reach `127.0.0.1:{hostPort}` of the app's container. Built on hyper and hyper-util: the
//! server speaks HTTP/1.1 and h2c with upgrades, the upstream client pools connections per
//! container. The hot path takes a route-table snapshot, rewrites headers and streams both
//! bodies through without buffering; upgrades (WebSocket) are spliced byte for byte.
//!
//! Like nginx's worker processes, the gateway runs one worker thread per core, each with its
//! own single-threaded runtime and upstream pool, all accepting from the one listening socket:
//! a request, its client connection and its upstream connection stay on one thread, so proxying
//! costs no cross-thread wake-ups.
//!
//! A request for a sleeping app is held until the app has woken (see [`crate::sleep::hold`]);
//! the request, its response body and an upgraded connection count as the app's activity.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::routes::RouteTable;
use crate::sleep::hold::{hold, Refusal};
use crate::sleep::{ActivityGuard, Sleeps};

/// What the gateway answers with: an app's streamed body, or a short text of its own.
pub type GatewayBody = Either<Tracked<Incoming>, Full<Bytes>>;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The gateway's shared state: what every worker reads.
#[derive(Debug)]
pub struct Gateway {
    routes: Arc<RouteTable>,
    /// `.{base domain}`, lowercase, for Host routing.
    domain_suffix: String,
    metrics: Arc<Metrics>,
    sleeps: Arc<Sleeps>,
}

/// One worker thread's part: the shared state and its own upstream connection pool.
#[derive(Debug)]
struct Worker {
    gateway: Arc<Gateway>,
    client: Client<HttpConnector, Incoming>,
}

/// Which app a request is for, and how its path changes on the way.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    app_id: String,
    /// The path and query to send upstream, when the prefix was stripped.
    path_and_query: Option<String>,
    /// `/apps/{appId}` when routed by path.
    prefix: Option<String>,
}

impl Gateway {
    /// A gateway over `routes`, answering `{appId}.{base_domain}` by host and waking sleeping
    /// apps through `sleeps`.
    pub fn new(
        routes: Arc<RouteTable>,
        base_domain: &str,
        metrics: Arc<Metrics>,
        sleeps: Arc<Sleeps>,
    ) -> Self {
        Self {
            routes,
            domain_suffix: format!(".{}", base_domain.to_ascii_lowercase()),
            metrics,
            sleeps,
        }
    }

    /// Serves connections from `listener` on `workers` threads (at least one) until
    /// `shutdown`, then lets open connections finish (5 s at most). Fails only when no worker
    /// thread could be started.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        workers: usize,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let listener = listener.into_std()?;
        let span = tracing::Span::current();
        // The workers also stop when this future is dropped (its runtime shuts down).
        let stop = shutdown.child_token();
        let _stop_when_dropped = stop.clone().drop_guard();
        // Each worker holds a sender; `recv` answers `None` once every worker has finished.
        let (running, mut finished) = tokio::sync::mpsc::channel::<()>(1);
        let mut started = 0;
        for n in 0..workers.max(1) {
            let spawned = listener.try_clone().and_then(|listener| {
                let worker = Worker::new(self.clone());
                let (stop, span, running) = (stop.clone(), span.clone(), running.clone());
                std::thread::Builder::new()
                    .name(format!("gateway-{n}"))
                    .spawn(move || {
                        worker.run(listener, stop, span);
                        drop(running);
                    })
            });
            match spawned {
                Ok(_) => started += 1,
                Err(e) if started == 0 => return Err(e),
                Err(e) => tracing::warn!(error = %e, "gateway worker {n} could not start"),
            }
        }
        drop(running);
        let _ = finished.recv().await;
        Ok(())
    }
}

impl Worker {
    fn new(gateway: Arc<Gateway>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Self { gateway, client }
    }

    /// The worker thread: its own single-threaded runtime, serving until `shutdown`.
    fn run(
        self,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
        span: tracing::Span,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(parent: &span, error = %e, "gateway worker runtime failed to start");
                return;
            }
        };
        runtime.block_on(
            async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => Arc::new(self).serve(listener, shutdown).await,
                    Err(e) => tracing::error!(error = %e, "gateway worker cannot listen"),
                }
            }
            .instrument(span),
        );
    }

    /// Accepts and serves connections until `shutdown`, then lets open ones finish (5 s at most).
    async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "gateway accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            let worker = self.clone();
            // Formatted once per connection, not per request.
            let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
            let service = hyper::service::service_fn(move |req| {
                let worker = worker.clone();
                let peer_ip = peer_ip.clone();
                async move { Ok::<_, Infallible>(worker.handle(req, &peer_ip).await) }
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "gateway connection ended with an error");
                }
            });
        }
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }

    /// Answers one request: proxies it to its app or says why not.
    async fn handle(&self, req: Request<Incoming>, peer_ip: &HeaderValue) -> Response<GatewayBody> {
        let response = self.proxy(req, peer_ip).await;
        self.gateway
            .metrics
            .gateway_response(response.status().as_u16());
        response
    }

    async fn proxy(
        &self,
        mut req: Request<Incoming>,
        peer_ip: &HeaderValue,
    ) -> Response<GatewayBody> {
        let host = request_host(&req);
        let host_str = host.as_ref().and_then(|h| h.to_str().ok());
        let Some(target) = resolve(&self.gateway.domain_suffix, host_str, req.uri()) else {
            return text(
                StatusCode::NOT_FOUND,
                "no app named here: use /apps/{appId}/ or the host {appId}.{domain}\n".into(),
            );
        };
        let held = hold(
            &self.gateway.sleeps,
            &self.gateway.routes,
            &target.app_id,
            wants_html(&req),
        )
        .await;
        let (route, activity) = match held {
            Ok(admitted) => admitted,
            Err(Refusal::Unknown) => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "unknown app: no app {} is deployed on this node\n",
                        target.app_id
                    ),
                )
            }
            Err(Refusal::WaitingPage) => return waiting_page(&target.app_id),
            Err(Refusal::Unavailable(why)) => {
                return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
            }
        };
        if !route.up {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "app {} is down: its container is not running\n",
                    target.app_id
                ),
            );
        }
        let guard = InflightGuard::new(&route.inflight);

        let path_and_query = match &target.path_and_query {
            Some(p) => p.as_str(),
            None => req.uri().path_and_query().map_or("/", |p| p.as_str()),
        };
        let uri = match Uri::builder()
            .scheme("http")
            .authority(route.authority.clone())
            .path_and_query(path_and_query)
            .build()
        {
            Ok(uri) => uri,
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "the request path is not valid\n".into(),
                )
            }
        };
        let upgrade = is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        let upgrade_value = headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(headers);
        if let (true, Some(value)) = (upgrade, upgrade_value) {
            headers.insert(header::UPGRADE, value);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        } else {
            headers.remove(header::UPGRADE);
        }
        if let Some(host) = host {
            if !headers.contains_key(&X_FORWARDED_HOST) {
                headers.insert(X_FORWARDED_HOST, host.clone());
            }
            if !headers.contains_key(header::HOST) {
                // HTTP/2 clients name the host in the URI; HTTP/1.1 upstreams need the header.
                headers.insert(header::HOST, host);
            }
        }
        append_forwarded_for(headers, peer_ip);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        if let Some(prefix) = &target.prefix {
            if let Ok(value) = HeaderValue::from_str(prefix) {
                headers.insert(X_FORWARDED_PREFIX, value);
            }
        }

        let mut response = match self.client.request(req).await {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(app_id = %target.app_id, error = %e, "upstream failed");
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!("app {} is not answering\n", target.app_id),
                );
            }
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                let app_id = target.app_id.clone();
                tokio::spawn(async move {
                    // The guards live as long as the spliced connection.
                    let _guards = (guard, activity);
                    match tokio::try_join!(client_upgrade, upstream_upgrade) {
                        Ok((client, upstream)) => {
                            let mut client = TokioIo::new(client);
                            let mut upstream = TokioIo::new(upstream);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                        Err(e) => tracing::debug!(app_id = %app_id, error = %e, "upgrade failed"),
                    }
                });
                return response.map(|body| {
                    Either::Left(Tracked {
                        inner: body,
                        _guard: None,
                        _activity: None,
                    })
                });
            }
        }
        strip_hop_by_hop(response.headers_mut());
        response.headers_mut().remove(header::UPGRADE);
        response.map(|body| {
            Either::Left(Tracked {
                inner: body,
                _guard: Some(guard),
                _activity: activity,
            })
        })
    }
}

/// Finds the app: by `Host: {appId}{domain_suffix}` first, else by the `/apps/{appId}` prefix.
fn resolve(domain_suffix: &str, host: Option<&str>, uri: &Uri) -> Option<Target> {
    if let Some(host) = host {
        let name = strip_port(host);
        if name.len() > domain_suffix.len() {
            let (label, suffix) = name.split_at(name.len() - domain_suffix.len());
            if suffix.eq_ignore_ascii_case(domain_suffix) && !label.contains('.') {
                return Some(Target {
                    app_id: label.to_ascii_lowercase(),
                    path_and_query: None,
                    prefix: None,
                });
            }
        }
    }
    let rest = uri.path().strip_prefix("/apps/")?;
    let (app_id, path) = match rest.split_once('/') {
        Some((app, tail)) => (app, format!("/{tail}")),
        None => (rest, "/".to_owned()),
    };
    if app_id.is_empty() {
        return None;
    }
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    Some(Target {
        app_id: app_id.to_owned(),
        path_and_query: Some(path_and_query),
        prefix: Some(format!("/apps/{app_id}")),
    })
}

/// The host the client asked for: the `Host` header, or the URI's authority (HTTP/2). A
/// received header value shares the request's buffer, so this copies nothing.
fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.headers().get(header::HOST) {
        Some(host) => Some(host.clone()),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, peer_ip: &HeaderValue) {
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => {
            let ip = peer_ip.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{existing}, {ip}")).ok()
        }
        _ => Some(peer_ip.clone()),
    };
    if let Some(value) = value {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// Whether a browser asks for a page (`GET` with `Accept: text/html`).
fn wants_html<B>(req: &Request<B>) -> bool {
    req.method() == hyper::Method::GET
        && req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/html"))
}

/// The small page a browser gets while the app wakes (when its deploy asks for one): it reloads
/// itself every second until the app answers instead.
fn waiting_page(app_id: &str) -> Response<GatewayBody> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"1\">\
         <title>{app_id} is waking up</title></head><body style=\"font-family:sans-serif;margin:4em\">\
         <p>{app_id} was asleep and is waking up; this page reloads by itself.</p></body></html>\n"
    );
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: String) -> Response<GatewayBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Counts a request in flight to one container for as long as it lives.
#[derive(Debug)]
pub struct InflightGuard(Arc<AtomicUsize>);

impl InflightGuard {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted in flight, and as its app's activity, until
/// it is fully sent (or dropped).
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    _guard: Option<InflightGuard>,
    _activity: Option<ActivityGuard>,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_host_then_by_path() {
        let suffix = ".apps.example";
        let uri: Uri = "/apps/shop/a/b?x=1".parse().unwrap();
        let by_host = resolve(suffix, Some("blog.apps.example:8088"), &uri).unwrap();
        assert_eq!(by_host.app_id, "blog");
        assert_eq!(by_host.path_and_query, None);
        let by_path = resolve(suffix, Some("127.0.0.1:8088"), &uri).unwrap();
        assert_eq!(
            by_path,
            Target {
                app_id: "shop".into(),
                path_and_query: Some("/a/b?x=1".into()),
                prefix: Some("/apps/shop".into())
            }
        );
        let bare = resolve(suffix, None, &"/apps/shop?q".parse().unwrap()).unwrap();
        assert_eq!(bare.path_and_query.as_deref(), Some("/?q"));
        assert!(resolve(suffix, Some("a.b.apps.example"), &"/".parse().unwrap()).is_none());
        assert!(resolve(suffix, None, &"/apps/".parse().unwrap()).is_none());
        assert!(resolve(suffix, None, &"/other".parse().unwrap()).is_none());
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, &HeaderValue::from_static("10.0.0.1"));
        append_forwarded_for(&mut headers, &HeaderValue::from_static("10.0.0.2"));
        assert_eq!(headers[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2");
    }
}
