//! `/livez`, `/readyz` and `/metrics` for the controller, and the Git webhook receiver
//! `POST /hook/<namespace>/<source>`.

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
    /// Per target: from the moment an identity became a leaver (the HR change or deletion
    /// seen, or its end date passing) to the target confirming, on re-observation, that
    /// nothing of theirs is left enabled there.
    pub leaver_revocation_seconds: Family<TargetLabels, Histogram>,
    /// Reconcile passes per tenant.
    pub tenant_passes: Family<TenantLabels, Counter>,
    /// Full listings of a target (at start-up, the resync, its drift interval, or when
    /// more accounts need a re-read than a listing costs).
    pub target_observations: Family<TargetLabels, Counter>,
    /// Targeted re-reads of a few accounts of a target (before planning against the
    /// controller's cached state).
    pub target_rereads: Family<TargetLabels, Counter>,
    /// The work queue: operations planned on a target but not carried out (Observe mode,
    /// the blast-radius guard, failures awaiting their retry).
    pub pending_operations: Family<TargetLabels, Gauge>,
    /// PolicySource passes by outcome.
    pub source_syncs: Family<SourceLabels, Counter>,
    /// Duration of a PolicySource pass (poll, and when the head moved: fetch, verify, parse,
    /// apply, prune).
    pub source_sync_seconds: Histogram,
    /// Break-glass exceptions by event: `activated`, `expired`, `revoked` (unratified).
    pub break_glass: Family<BreakGlassLabels, Counter>,
}

/// Labels of the break-glass series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakGlassLabels {
    /// Tenant namespace.
    pub namespace: String,
    /// `activated`, `expired` or `revoked`.
    pub event: String,
}

/// Labels of per-PolicySource series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Namespace of the PolicySource.
    pub namespace: String,
    /// PolicySource name.
    pub source: String,
    /// `unchanged`, `applied`, `repaired`, `refused`, `fetch_failed` or `suspended` (a
    /// pass that found `spec.suspend` set and did nothing).
    pub result: String,
}

/// Labels of per-tenant series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// Tenant namespace.
    pub namespace: String,
}

/// Bucket bounds of the leaver revocation histogram, in seconds: fine below a minute (the
/// usual case), then up to the 4 h (FedRAMP PS-4) and 24 h (typical SOC 2) commitments.
pub const LEAVER_BUCKETS: [f64; 18] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 86400.0, 172800.0,
];

/// Labels of per-target series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// Tenant namespace.
    pub namespace: String,
    /// TargetSystem name.
    pub target: String,
}

fn leaver_histogram() -> Histogram {
    Histogram::new(LEAVER_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let reconciles = Counter::default();
        let errors = Counter::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let operations = Family::<OperationLabels, Counter>::default();
        let leaver_revocation_seconds = Family::<TargetLabels, Histogram>::new_with_constructor(
            leaver_histogram as fn() -> Histogram,
        );
        let tenant_passes = Family::<TenantLabels, Counter>::default();
        let target_observations = Family::<TargetLabels, Counter>::default();
        let target_rereads = Family::<TargetLabels, Counter>::default();
        let pending_operations = Family::<TargetLabels, Gauge>::default();
        let source_syncs = Family::<SourceLabels, Counter>::default();
        let source_sync_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let break_glass = Family::<BreakGlassLabels, Counter>::default();
        registry.register(
            "break_glass",
            "Break-glass exceptions activated, expired and revoked unratified",
            break_glass.clone(),
        );
        registry.register(
            "source_syncs",
            "PolicySource passes by outcome",
            source_syncs.clone(),
        );
        registry.register(
            "source_sync_duration_seconds",
            "Duration of a PolicySource pass",
            source_sync_seconds.clone(),
        );
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
            "Per target, from an identity becoming a leaver to the target confirming its cut-off",
            leaver_revocation_seconds.clone(),
        );
        registry.register(
            "tenant_passes",
            "Reconcile passes per tenant",
            tenant_passes.clone(),
        );
        registry.register(
            "target_observations",
            "Full observations of a target",
            target_observations.clone(),
        );
        registry.register(
            "target_rereads",
            "Targeted re-reads of a few accounts of a target",
            target_rereads.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            reconcile_seconds,
            operations,
            leaver_revocation_seconds,
            tenant_passes,
            target_observations,
            target_rereads,
            pending_operations,
            source_syncs,
            source_sync_seconds,
            break_glass,
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

/// Checks a webhook delivery against the shared secret: GitHub's and Gitea's
/// `X-Hub-Signature-256: sha256=<hex>`, Gitea's `X-Gitea-Signature: <hex>` (HMAC-SHA256 of
/// the body), or GitLab's `X-Gitlab-Token: <secret>`. Comparisons are constant-time.
pub fn check_webhook(
    headers: &axum::http::HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<(), &'static str> {
    use hmac::{Hmac, Mac};
    use subtle::ConstantTimeEq;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let hex_signature = header("x-hub-signature-256")
        .map(|v| v.strip_prefix("sha256=").unwrap_or("").trim())
        .or_else(|| header("x-gitea-signature").map(str::trim));
    if let Some(hex_signature) = hex_signature {
        let Ok(expected) = hex::decode(hex_signature) else {
            return Err("the signature header is not hex");
        };
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(body);
        return mac
            .verify_slice(&expected)
            .map_err(|_| "the body's HMAC-SHA256 does not match the shared secret");
    }
    if let Some(token) = header("x-gitlab-token") {
        return if bool::from(token.as_bytes().ct_eq(secret)) {
            Ok(())
        } else {
            Err("X-Gitlab-Token does not match the shared secret")
        };
    }
    Err("no X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token header")
}

/// The webhook route: a valid delivery marks the PolicySource with
/// `gatehouse.dev/requested-at`, which wakes the leader's sync at once (any replica can
/// receive it).
pub fn hooks(client: kube::Client) -> Router {
    Router::new()
        .route(
            "/hook/{namespace}/{source}",
            axum::routing::post(receive_hook),
        )
        // Push payloads of large pushes exceed axum's default 2 MB; GitHub caps them at 25 MB.
        .layer(axum::extract::DefaultBodyLimit::max(25 * 1024 * 1024))
        .with_state(client)
}

async fn receive_hook(
    State(client): State<kube::Client>,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, Patch, PatchParams};
    let sources: Api<crate::api::PolicySource> = Api::namespaced(client.clone(), &namespace);
    let source = match sources.get_opt(&name).await {
        Ok(Some(source)) => source,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                format!("no PolicySource {namespace}/{name}\n"),
            );
        }
        Err(error) => {
            tracing::warn!(%error, namespace, name, "webhook: cannot read the PolicySource");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot read the PolicySource; retry\n".into(),
            );
        }
    };
    let Some(webhook) = &source.spec.webhook else {
        return (
            StatusCode::NOT_FOUND,
            format!("PolicySource {namespace}/{name} has no spec.webhook\n"),
        );
    };
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get_opt(&webhook.secret_ref.name)
        .await;
    let token = match secret {
        Ok(Some(secret)) => secret
            .data
            .unwrap_or_default()
            .get("token")
            .map(|t| t.0.clone()),
        _ => None,
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        tracing::warn!(namespace, name, secret = %webhook.secret_ref.name, "webhook: the Secret or its `token` key is missing");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook secret is not configured\n".into(),
        );
    };
    if let Err(why) = check_webhook(&headers, &body, &token) {
        tracing::warn!(namespace, name, why, "webhook: delivery refused");
        return (StatusCode::UNAUTHORIZED, format!("{why}\n"));
    }
    let patch = serde_json::json!({"metadata": {"annotations": {
        crate::api::annotations::REQUESTED_AT: jiff::Timestamp::now().to_string(),
    }}});
    match sources
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => (StatusCode::ACCEPTED, "sync requested\n".into()),
        Err(error) => {
            tracing::warn!(%error, namespace, name, "webhook: cannot request the sync");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot request the sync; retry\n".into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};
    use hmac::{Hmac, Mac};

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn webhook_signatures_of_github_gitea_and_gitlab() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"s3cret", body);
        let github = headers("x-hub-signature-256", &format!("sha256={good}"));
        assert_eq!(check_webhook(&github, body, b"s3cret"), Ok(()));
        assert!(check_webhook(&github, body, b"other").is_err());
        assert!(check_webhook(&github, b"{}", b"s3cret").is_err());
        let gitea = headers("x-gitea-signature", &good);
        assert_eq!(check_webhook(&gitea, body, b"s3cret"), Ok(()));
        let gitlab = headers("x-gitlab-token", "s3cret");
        assert_eq!(check_webhook(&gitlab, body, b"s3cret"), Ok(()));
        assert!(check_webhook(&gitlab, body, b"s3cret2").is_err());
        assert!(check_webhook(&HeaderMap::new(), body, b"s3cret").is_err());
        let not_hex = headers("x-hub-signature-256", "sha256=zz");
        assert_eq!(
            check_webhook(&not_hex, body, b"s3cret"),
            Err("the signature header is not hex")
        );
    }
}
