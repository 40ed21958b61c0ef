//! Building and running the service from a bound listener and a shutdown future, so tests
//! and `berth dev` run the real control plane on any port.

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::config::{EventSettings, Settings};
use crate::routes;
use crate::state::AppState;
use crate::storage;

/// A control plane ready to serve: storage opened and migrated, listener bound.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Opens the database named in `settings` (applying migrations) and prepares to serve on
    /// `listener`.
    pub async fn build(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        Self::build_with_events(settings, EventSettings::default(), listener).await
    }

    /// [`Application::build`] with event settings: the relay to RabbitMQ when
    /// `events.amqp_url` is set.
    pub async fn build_with_events(
        settings: Settings,
        events: EventSettings,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let store = storage::connect(&settings.database_url).await?;
        Ok(Self {
            listener,
            state: AppState::with_events(store, settings, events),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The shared state (tests use its store directly).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let sweeps = tokio::spawn(crate::background::run(
            self.state.clone(),
            stop.clone().cancelled_owned(),
        ));
        let events = tokio::spawn(crate::events::run(
            self.state.clone(),
            stop.clone().cancelled_owned(),
        ));
        let retention = tokio::spawn(crate::retention::run(
            self.state.clone(),
            stop.clone().cancelled_owned(),
        ));
        // The listener is bound: heartbeats that come meanwhile wait for this read.
        self.state.beats().seed(self.state.store()).await;
        let beats = tokio::spawn(crate::service::beats::run(
            self.state.clone(),
            stop.clone().cancelled_owned(),
        ));
        let app = app(self.state);
        tracing::info!(addr = ?self.listener.local_addr().ok(), "control plane listening");
        // `into_make_service`: every connection shares the router. Handing `axum::serve` the
        // `Router` itself rebuilds its routes for each connection, which a held long poll or
        // event stream then keeps (docs/benchmarks-scale.md, watchers).
        let served = axum::serve(self.listener, app.into_make_service())
            .with_graceful_shutdown(shutdown)
            .await;
        stop.cancel();
        let _ = sweeps.await;
        let _ = events.await;
        let _ = retention.await;
        let _ = beats.await;
        served?;
        Ok(())
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    routes::router(state)
        .layer(DefaultBodyLimit::max(berth_shared::wire::limits::MAX_BODY))
        .layer(TraceLayer::new_for_http())
}
