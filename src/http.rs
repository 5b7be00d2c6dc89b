//! `/livez`, `/readyz` and `/metrics` for the controller.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-target operation counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// Namespace of the TargetSystem.
    pub namespace: String,
    /// TargetSystem name.
    pub target: String,
    /// Plan action, e.g. `grant`, `revoke`, `disableAccount`.
    pub action: String,
    /// `ok`, `unsupported` or `error`.
    pub result: String,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    /// Reconcile passes.
    pub reconciles: Counter,
    /// Targets that failed to sync in a pass.
    pub errors: Counter,
    /// Duration of a reconcile pass.
    pub reconcile_seconds: Histogram,
    /// Operations applied per target.
    pub operations: Family<OperationLabels, Counter>,
    /// From the Identity update that made someone a leaver to the pass that revoked their
    /// last entitlement.
    pub leaver_revocation_seconds: Histogram,
    /// The work queue: operations planned on a target but not carried out (Observe mode,
    /// the blast-radius guard, failures awaiting their retry).
    pub pending_operations: Family<TargetLabels, Gauge>,
}

/// Labels of per-target series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// Tenant namespace.
    pub namespace: String,
    /// TargetSystem name.
    pub target: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let reconciles = Counter::default();
        let errors = Counter::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let operations = Family::<OperationLabels, Counter>::default();
        let leaver_revocation_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        let pending_operations = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "pending_operations",
            "Operations planned on a target but not carried out yet",
            pending_operations.clone(),
        );
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Targets that failed to sync",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile pass",
            reconcile_seconds.clone(),
        );
        registry.register(
            "target_operations",
            "Operations applied to targets",
            operations.clone(),
        );
        registry.register(
            "leaver_revocation_seconds",
            "From the Identity update making someone a leaver to their access revoked",
            leaver_revocation_seconds.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            reconcile_seconds,
            operations,
            leaver_revocation_seconds,
            pending_operations,
        }
    }
}

impl Metrics {
    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Liveness and readiness, shared between the controller and the HTTP server.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Marks the caches as filled.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the controller is serving.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The HTTP routes.
pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(health): State<Arc<Health>>| async move {
                if health.is_ready() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "caches not ready")
                }
            }),
        )
        .with_state(health)
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                        .into_response()
                }
            }),
        )
}
