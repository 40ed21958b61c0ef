//! Building and running the api from a bound listener and a shutdown future, so tests and
//! `berth dev` run the real service on any port.

use std::future::Future;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::extract::BODY_LIMIT;
use crate::routes;
use crate::service::Api;
use crate::storage::Store;

/// How often `lastUsedAt` of used keys is written.
pub const KEY_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// An api ready to serve: storage opened and migrated, listener bound.
pub struct Application {
    listener: TcpListener,
    api: Api,
}

impl Application {
    /// Opens the database named in `settings` (applying the api's migrations) and prepares to
    /// serve on `listener`.
    pub async fn build(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database_url, settings.secret_key.clone()).await?;
        Ok(Self {
            listener,
            api: Api::new(settings, store)?,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The service (tests read its store and followers).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Serves until `shutdown` completes: follows again the deployments in flight, writes
    /// `lastUsedAt` in batches, and writes the last batch on the way out.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let resumed = self.api.resume().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not follow the deployments in flight");
            0
        });
        let stop = CancellationToken::new();
        let flusher = tokio::spawn(flush_keys(self.api.clone(), stop.clone()));
        tracing::info!(addr = ?self.listener.local_addr().ok(), resumed, "api listening");
        // `into_make_service`: each connection shares the router (one `Arc`). Handing
        // `axum::serve` the `Router` itself would clone every route, and the state in each,
        // for every connection: ~50 KiB and hundreds of reference counts per held long poll.
        let served = axum::serve(self.listener, app(self.api.clone()).into_make_service())
            .with_graceful_shutdown(shutdown)
            .await;
        stop.cancel();
        let _ = flusher.await;
        served?;
        Ok(())
    }
}

async fn flush_keys(api: Api, stop: CancellationToken) {
    let mut tick = tokio::time::interval(KEY_FLUSH_INTERVAL);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        if let Err(e) = api.keys.flush().await {
            tracing::warn!(error = ?anyhow::Error::from(e), "could not write lastUsedAt; retrying");
        }
        if last {
            return;
        }
    }
}

/// The whole HTTP application.
pub fn app(api: Api) -> Router {
    routes::router(api)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
}

/// Serves the api on `listener` with `settings` until `shutdown`: the one call `berth dev`
/// and embedders need.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Application::build(settings, listener)
        .await?
        .run(shutdown)
        .await
}
