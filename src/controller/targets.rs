//! One TargetSystem's sync: keep its connector (rebuilt only when its spec or Secret
//! changes), observe, plan against the engine's verdict, guard the blast radius, apply in
//! plan order, and back off per target after a failure so one broken system slows nobody
//! else down.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use super::status::{ApplyState, TargetReport};
use crate::api::{EntitlementRef, Mode, TargetSystem};
use crate::engine::{Engine, IdentityKey};
use crate::http::{Metrics, OperationLabels};
use crate::plan::{Action, Plan, guard, plan};
use crate::targets::{
    AnyConnector, Applied, Connector, Credentials, Subject, TargetConfig, TargetError,
};

/// Per-entitlement failures of one sync.
pub type Failures = BTreeMap<(IdentityKey, EntitlementRef), ApplyState>;

/// What one target's sync did.
#[derive(Clone, Debug, Default)]
pub struct Synced {
    /// For the TargetSystem status.
    pub report: TargetReport,
    /// Entitlements whose grant or revocation failed or was held back.
    pub failures: Failures,
    /// Identities whose access on this target is not confirmed as planned (any of their
    /// operations failed, or the whole target failed): their finalizers stay.
    pub unfinished: BTreeSet<IdentityKey>,
    /// When the whole target could not be worked on: the state of all its entitlements.
    pub blanket: Option<ApplyState>,
    /// Leavers whose access this pass revoked.
    pub leavers: BTreeSet<IdentityKey>,
}

/// A connector kept between passes, and the target's retry schedule.
struct Slot {
    /// The target's generation and its Secret's resourceVersion the connector was built from.
    fingerprint: (Option<i64>, Option<String>),
    connector: Option<Arc<AnyConnector>>,
    failures: u32,
    retry_at: Option<Instant>,
    last: Option<Synced>,
}

impl Slot {
    fn new(fingerprint: (Option<i64>, Option<String>)) -> Self {
        Self {
            fingerprint,
            connector: None,
            failures: 0,
            retry_at: None,
            last: None,
        }
    }
}

/// Every target's connector and backoff.
#[derive(Default)]
pub struct Targets {
    slots: HashMap<(String, String), Slot>,
}

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

fn backoff(failures: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

impl Targets {
    /// The earliest instant a target in backoff is due again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.slots.values().filter_map(|s| s.retry_at).min()
    }

    /// Forgets targets that no longer exist.
    pub fn retain(&mut self, live: &BTreeSet<(String, String)>) {
        self.slots.retain(|k, _| live.contains(k));
    }

    /// Syncs one target, unless it is backing off after a failure and nothing about it
    /// changed since (then its last result stands).
    pub async fn sync(
        &mut self,
        client: &Client,
        target: &TargetSystem,
        engine: &Engine,
        now: Timestamp,
        subjects: &BTreeMap<IdentityKey, Subject>,
        metrics: &Metrics,
    ) -> Synced {
        let namespace = target.metadata.namespace.clone().unwrap_or_default();
        let name = target.metadata.name.clone().unwrap_or_default();
        let secret_name = TargetConfig::secret_name(&target.spec).map(str::to_string);
        // Reading the Secret is a cheap GET; it tells whether credentials were rotated.
        let secret = match &secret_name {
            None => Ok(None),
            Some(s) => Api::<Secret>::namespaced(client.clone(), &namespace)
                .get_opt(s)
                .await
                .map_err(|e| format!("cannot read Secret {namespace}/{s}: {e}")),
        };
        let fingerprint = (
            target.metadata.generation,
            secret
                .as_ref()
                .ok()
                .and_then(|s| s.as_ref())
                .and_then(|s| s.metadata.resource_version.clone()),
        );
        let slot = self
            .slots
            .entry((namespace.clone(), name.clone()))
            .or_insert_with(|| Slot::new(fingerprint.clone()));
        if slot.fingerprint != fingerprint {
            // Changed spec or rotated Secret: a new connector and a clean retry schedule.
            *slot = Slot::new(fingerprint);
        }
        if let (Some(at), Some(last)) = (slot.retry_at, &slot.last)
            && Instant::now() < at
        {
            // Nothing was applied this time: the last result stands, but its revocations
            // are not news (the leaver-latency metric counts each once).
            let mut last = last.clone();
            last.leavers.clear();
            return last;
        }
        let synced = attempt(
            slot,
            client,
            target,
            secret,
            secret_name,
            engine,
            now,
            subjects,
            metrics,
        )
        .await;
        let failed = synced.report.unreachable.is_some()
            || synced.report.stalled.is_some()
            || synced.report.failed > 0;
        if failed {
            slot.failures = slot.failures.saturating_add(1);
            let wait = backoff(slot.failures);
            tracing::info!(%namespace, target = %name, retry_in = ?wait, "target sync incomplete; backing off");
            slot.retry_at = Some(Instant::now() + wait);
        } else {
            slot.failures = 0;
            slot.retry_at = None;
        }
        slot.last = Some(synced.clone());
        synced
    }
}

/// The whole target could not be worked on.
fn whole_target(
    report: TargetReport,
    state: ApplyState,
    subjects: &BTreeMap<IdentityKey, Subject>,
) -> Synced {
    Synced {
        report,
        unfinished: subjects.keys().cloned().collect(),
        blanket: Some(state),
        ..Synced::default()
    }
}

fn stalled_on(error: &TargetError) -> Option<(String, String)> {
    match error {
        TargetError::Transient(_) => None,
        TargetError::Permanent(m) => Some(("Rejected".into(), m.clone())),
        TargetError::Config(m) => Some(("InvalidConfiguration".into(), m.clone())),
    }
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    slot: &mut Slot,
    client: &Client,
    target: &TargetSystem,
    secret: Result<Option<Secret>, String>,
    secret_name: Option<String>,
    engine: &Engine,
    now: Timestamp,
    subjects: &BTreeMap<IdentityKey, Subject>,
    metrics: &Metrics,
) -> Synced {
    let namespace = target.metadata.namespace.clone().unwrap_or_default();
    let name = target.metadata.name.clone().unwrap_or_default();
    let unreachable = |error: TargetError| {
        let message = error.to_string();
        let report = TargetReport {
            unreachable: Some(message.clone()),
            stalled: stalled_on(&error),
            ..TargetReport::default()
        };
        whole_target(report, ApplyState::Failed(message), subjects)
    };
    let connector = match &slot.connector {
        Some(c) => c.clone(),
        None => {
            let credentials = match (secret, &secret_name) {
                (Err(e), _) => return unreachable(TargetError::Transient(e)),
                (Ok(None), Some(s)) => {
                    return unreachable(TargetError::Config(format!(
                        "Secret {namespace}/{s} named by TargetSystem {namespace}/{name} does not exist; create it"
                    )));
                }
                (Ok(None), None) => Credentials::default(),
                (Ok(Some(secret)), _) => Credentials::new(
                    secret.metadata.name.clone().unwrap_or_default(),
                    secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect(),
                ),
            };
            let config = TargetConfig {
                namespace: namespace.clone(),
                name: name.clone(),
                spec: target.spec.clone(),
                credentials,
            };
            match AnyConnector::connect(client, &config).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    slot.connector = Some(c.clone());
                    c
                }
                Err(error) => return unreachable(error),
            }
        }
    };
    let clock = Instant::now();
    let observed = match connector.observe(subjects).await {
        Ok(o) => o,
        Err(error) => {
            // A connection may have gone stale: build a fresh one next time.
            slot.connector = None;
            return unreachable(error);
        }
    };
    let mut held = observed.held;
    let mut desired = engine.evaluate(now, &held);
    if connector.capabilities().case_insensitive_names && held.respell(&desired, &name) {
        // Evaluated again: separation-of-duties checks look at what is held.
        desired = engine.evaluate(now, &held);
    }
    let observed_in = clock.elapsed();
    let Plan { operations } = plan(&held, &desired);
    let operations: Vec<_> = operations
        .into_iter()
        .filter(|op| op.target == name && op.identity.namespace == namespace)
        .collect();
    let mut synced = Synced {
        report: TargetReport {
            planned: operations.len(),
            orphans: observed.orphans,
            observe_only: target.spec.mode == Mode::Observe,
            ..TargetReport::default()
        },
        ..Synced::default()
    };
    let held_back = |synced: &mut Synced, why: ApplyState| {
        for op in &operations {
            synced.unfinished.insert((*op.identity).clone());
            if let Action::Grant { entitlement } | Action::Revoke { entitlement } = &op.action {
                synced.failures.insert(
                    ((*op.identity).clone(), (**entitlement).clone()),
                    why.clone(),
                );
            }
        }
    };
    if synced.report.observe_only {
        held_back(
            &mut synced,
            ApplyState::Pending("target is in Observe mode".into()),
        );
        return synced;
    }
    let limit = target
        .spec
        .limits
        .as_ref()
        .and_then(|l| l.max_revocations_per_sync);
    if let Err(exceeded) = guard::check(&operations, limit) {
        tracing::warn!(%namespace, target = %name, %exceeded, "blast-radius guard stopped the sync");
        synced.report.stalled = Some(("BlastRadiusExceeded".into(), exceeded.to_string()));
        held_back(&mut synced, ApplyState::Pending(exceeded.to_string()));
        return synced;
    }
    let planned_in = clock.elapsed() - observed_in;
    // The whole plan goes to the connector at once, in order: one that can group work
    // (SCIM Bulk) does; the others apply one operation at a time. Results stay per operation.
    let owned: Vec<(&crate::plan::Operation, Subject)> = operations
        .iter()
        .map(|op| {
            let subject = subjects
                .get(&op.identity)
                .cloned()
                .unwrap_or_else(|| gone(&op.identity));
            (op, subject)
        })
        .collect();
    let batch: Vec<(&crate::plan::Operation, &Subject)> =
        owned.iter().map(|(op, s)| (*op, s)).collect();
    let mut results = connector.apply_batch(&batch).await;
    // A connector owes one result per operation; a missing one counts as a failure.
    results.resize_with(batch.len(), || {
        Err(TargetError::Transient(
            "the connector returned no result for this operation".into(),
        ))
    });
    for ((op, _), result) in batch.iter().zip(results) {
        metrics
            .operations
            .get_or_create(&OperationLabels {
                namespace: namespace.clone(),
                target: name.clone(),
                action: op.action.name().into(),
                result: match &result {
                    Ok(Applied::Done) => "ok",
                    Ok(Applied::Unsupported) => "unsupported",
                    Err(_) => "error",
                }
                .into(),
            })
            .inc();
        match result {
            Ok(_) if op.leaver && matches!(op.action, Action::Revoke { .. }) => {
                synced.leavers.insert((*op.identity).clone());
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(identity = %op.identity, action = op.action.name(), %error, "apply failed");
                synced.report.failed += 1;
                if synced.report.first_failure.is_none() {
                    synced.report.first_failure =
                        Some(format!("{} {}: {error}", op.action.name(), op.identity));
                }
                if synced.report.stalled.is_none() {
                    synced.report.stalled = stalled_on(&error);
                }
                synced.unfinished.insert((*op.identity).clone());
                if let Action::Grant { entitlement } | Action::Revoke { entitlement } = &op.action {
                    synced.failures.insert(
                        ((*op.identity).clone(), (**entitlement).clone()),
                        ApplyState::Failed(error.to_string()),
                    );
                }
            }
        }
    }
    tracing::debug!(
        %namespace,
        target = %name,
        operations = operations.len(),
        observe = ?observed_in,
        plan = ?planned_in,
        apply = ?(clock.elapsed() - observed_in - planned_in),
        "target synced"
    );
    synced
}

/// The subject of an identity deleted from the cluster: its access is revoked by name.
fn gone(identity: &IdentityKey) -> Subject {
    Subject {
        identity: identity.clone(),
        identity_type: crate::api::IdentityType::Human,
        account: identity.name.clone(),
        enabled: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
