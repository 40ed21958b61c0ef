//! What every Berth service's Prometheus metrics share: the `outcome` label set, and the text
//! a `GET /metrics` answers with.
//!
//! Each service keeps its own `Metrics` struct of counters resolved once at start-up (so the
//! hot path bumps an atomic and never looks a label up); this module only holds the parts
//! that would otherwise be written again in each of them.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics text exposition `encode` writes.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label set with one `outcome` value (`ok`, `failed`, `2xx`, …).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// The value.
    pub outcome: &'static str,
}

/// The counter of `family` for one outcome, created on first use; keep the handle, so later
/// increments skip the family's lock.
pub fn outcome_counter(family: &Family<Outcome, Counter>, outcome: &'static str) -> Counter {
    family.get_or_create(&Outcome { outcome }).clone()
}

/// The text exposition of every metric in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}

/// A `GET /metrics` answer: the exposition of `registry` with its content type.
pub fn answer(registry: &Registry) -> Response {
    ([(CONTENT_TYPE, OPENMETRICS_TEXT)], render(registry)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_counter_is_one_series_of_its_family() {
        let mut registry = Registry::default();
        let family = Family::<Outcome, Counter>::default();
        registry.register("berth_test_calls", "Calls by outcome", family.clone());
        let ok = outcome_counter(&family, "ok");
        ok.inc();
        outcome_counter(&family, "ok").inc();
        outcome_counter(&family, "failed");
        let text = render(&registry);
        assert!(
            text.contains(r#"berth_test_calls_total{outcome="ok"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"berth_test_calls_total{outcome="failed"} 0"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
