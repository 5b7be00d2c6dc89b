//! `gatehouse run`: wiring only. Watches the gatehouse kinds into reflector caches, and on
//! every change (or when a date boundary comes due) evaluates with the engine, plans per
//! target, applies through connectors and writes Identity status.
//!
//! Built so far: the Kubernetes RBAC target, Identity status, and a finalizer so that a
//! deleted Identity's access is revoked before it goes. Not yet: the other connectors,
//! leader election, metrics, events, status of the other kinds.

pub mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::sync::Notify;

use crate::api::{
    AccessPolicy, EntitlementRef, Exception, Identity, Mode, TargetSystem, TargetType,
};
use crate::engine::{AccountIntent, Engine, IdentityKey, NothingHeld, Settings, Snapshot};
use crate::http::{Health, Metrics, OperationLabels};
use crate::plan::{Action, Plan, plan};
use crate::targets::kubernetes::{FIELD_MANAGER, KubernetesRbac};
use crate::targets::{Connector, Subject};
use status::{ApplyState, identity_status};

/// Holds an Identity until its access is revoked everywhere.
pub const FINALIZER: &str = "gatehouse.dev/revoke-access";

/// How the controller runs.
#[derive(Clone)]
pub struct Options {
    /// Watch one namespace only; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Re-sync at least this often, to repair drift on the targets.
    pub resync: Duration,
    /// Engine settings.
    pub settings: Settings,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Readiness to report.
    pub health: Arc<Health>,
}

struct Caches {
    identities: Store<Identity>,
    policies: Store<AccessPolicy>,
    exceptions: Store<Exception>,
    targets: Store<TargetSystem>,
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Starts a watch feeding a cache; every event wakes the reconciler.
fn watch<K>(client: &Client, namespace: &Option<String>, wake: Arc<Notify>) -> Store<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = watcher(api::<K>(client, namespace), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(%error, kind = K::kind(&()).as_ref(), "watch error; retrying with backoff");
            }
            wake.notify_one();
        }
    });
    reader
}

/// Runs until `shutdown` completes.
pub async fn run(
    client: Client,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let caches = Caches {
        identities: watch(&client, &options.namespace, wake.clone()),
        policies: watch(&client, &options.namespace, wake.clone()),
        exceptions: watch(&client, &options.namespace, wake.clone()),
        targets: watch(&client, &options.namespace, wake.clone()),
    };
    for ready in [
        caches.identities.wait_until_ready().await,
        caches.policies.wait_until_ready().await,
        caches.exceptions.wait_until_ready().await,
        caches.targets.wait_until_ready().await,
    ] {
        ready.map_err(|e| anyhow::anyhow!("cache never filled: {e}"))?;
    }
    options.health.set_ready();
    tracing::info!(namespace = ?options.namespace, "caches ready; reconciling");
    futures::pin_mut!(shutdown);
    loop {
        let next = reconcile(&client, &caches, &options).await;
        let wait = next
            .map(|at| Duration::try_from(Timestamp::now().duration_until(at)).unwrap_or_default())
            .unwrap_or(options.resync)
            .min(options.resync);
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
            _ = wake.notified() => {
                // Let a burst of events (a `kubectl apply -f dir/`) settle into one pass.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn snapshot(caches: &Caches) -> Snapshot {
    fn cloned<K: Clone>(objects: Vec<Arc<K>>) -> Vec<K> {
        objects.into_iter().map(|o| (*o).clone()).collect()
    }
    Snapshot {
        identities: cloned(caches.identities.state()),
        policies: cloned(caches.policies.state()),
        exceptions: cloned(caches.exceptions.state()),
        targets: cloned(caches.targets.state()),
    }
}

/// One pass over everything; returns when the next date boundary falls due.
async fn reconcile(client: &Client, caches: &Caches, options: &Options) -> Option<Timestamp> {
    let started = std::time::Instant::now();
    let next = reconcile_once(client, caches, options).await;
    options.metrics.reconciles.inc();
    options
        .metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    next
}

async fn reconcile_once(client: &Client, caches: &Caches, options: &Options) -> Option<Timestamp> {
    let now = Timestamp::now();
    let mut snapshot = snapshot(caches);
    // An Identity being deleted is planned as a leaver: it is left out of the engine's input
    // (absent means revoke everything), but its subject is kept so its access can be found.
    let (deleting, present): (Vec<Identity>, Vec<Identity>) =
        std::mem::take(&mut snapshot.identities)
            .into_iter()
            .partition(|i| i.metadata.deletion_timestamp.is_some());
    snapshot.identities = present;
    let engine = Engine::new(&snapshot, options.settings.clone());
    let desired = engine.evaluate(now, &NothingHeld);
    let subject = |identity: &Identity, target: &str| -> Option<(IdentityKey, Subject)> {
        let key = IdentityKey::new(
            identity.metadata.namespace.clone()?,
            identity.metadata.name.clone()?,
        );
        let enabled = desired
            .identities
            .get(&key)
            .is_some_and(|a| a.account == AccountIntent::Enabled);
        let account = identity
            .spec
            .accounts
            .get(target)
            .cloned()
            .unwrap_or_else(|| key.name.clone());
        Some((
            key.clone(),
            Subject {
                identity: key,
                identity_type: identity.spec.type_,
                account,
                enabled,
            },
        ))
    };

    let mut applied: HashMap<IdentityKey, BTreeMap<EntitlementRef, ApplyState>> = HashMap::new();
    let mut unfinished: BTreeSet<IdentityKey> = BTreeSet::new();
    let mut revoked_leavers: BTreeSet<IdentityKey> = BTreeSet::new();
    for target in &snapshot.targets {
        let (Some(ns), Some(name)) = (
            target.metadata.namespace.clone(),
            target.metadata.name.clone(),
        ) else {
            continue;
        };
        let in_tenant: BTreeMap<IdentityKey, Subject> = snapshot
            .identities
            .iter()
            .chain(&deleting)
            .filter(|i| i.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter_map(|i| subject(i, &name))
            .collect();
        let pending = |why: String| ApplyState::Pending(why);
        let outcome = match (target.spec.type_, target.spec.mode) {
            (TargetType::Kubernetes, Mode::Enforce) => {
                let connector = KubernetesRbac::new(client.clone(), &ns, &name);
                sync_target(
                    &connector,
                    &engine,
                    now,
                    (&ns, &name),
                    &in_tenant,
                    &options.metrics,
                )
                .await
            }
            (TargetType::Kubernetes, Mode::Observe) => {
                Err(pending("target is in Observe mode".into()))
            }
            (other, _) => Err(pending(format!("no {other:?} connector in this build yet"))),
        };
        match &outcome {
            Ok(synced) => {
                unfinished.extend(synced.failed.iter().cloned());
                revoked_leavers.extend(synced.leavers.iter().cloned());
            }
            Err(state) => {
                // Pending (no connector yet, Observe mode) is not an error, but nothing on
                // this target is confirmed revoked either.
                if matches!(state, ApplyState::Failed(_)) {
                    options.metrics.errors.inc();
                }
                unfinished.extend(in_tenant.keys().cloned());
            }
        }
        for (key, access) in desired.identities.iter().filter(|(k, _)| k.namespace == ns) {
            let slot = applied.entry(key.clone()).or_default();
            for grant in access.enforced().filter(|g| g.entitlement.target == name) {
                let state = match &outcome {
                    Ok(synced) => synced
                        .failures
                        .get(&(key.clone(), (*grant.entitlement).clone()))
                        .cloned()
                        .unwrap_or(ApplyState::Applied),
                    Err(state) => state.clone(),
                };
                slot.insert((*grant.entitlement).clone(), state);
            }
        }
    }
    for identity in snapshot.identities.iter().chain(&deleting) {
        let key = IdentityKey::new(
            identity.metadata.namespace.clone().unwrap_or_default(),
            identity.metadata.name.clone().unwrap_or_default(),
        );
        if revoked_leavers.contains(&key) && !unfinished.contains(&key) {
            // The latest write to the Identity (an HR update or a delete) is what made them a leaver.
            let changed = identity
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .filter_map(|f| f.time.as_ref())
                .map(|t| t.0)
                .max();
            let since = identity
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(changed);
            if let Some(since) = since {
                let seconds = since
                    .duration_until(Timestamp::now())
                    .as_secs_f64()
                    .max(0.0);
                options.metrics.leaver_revocation_seconds.observe(seconds);
            }
        }
    }
    manage_finalizers(client, &snapshot.identities, &deleting, &unfinished).await;
    write_statuses(client, caches, &desired, &applied, now).await;
    desired.next_change
}

/// Holds every Identity with a finalizer so that deleting it revokes its access first;
/// releases a deleted one once every target revoked it.
async fn manage_finalizers(
    client: &Client,
    present: &[Identity],
    deleting: &[Identity],
    unfinished: &BTreeSet<IdentityKey>,
) {
    let has = |i: &Identity| {
        i.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER)
    };
    let key = |i: &Identity| {
        IdentityKey::new(
            i.metadata.namespace.clone().unwrap_or_default(),
            i.metadata.name.clone().unwrap_or_default(),
        )
    };
    let changes = present.iter().filter(|i| !has(i)).map(|i| (i, true)).chain(
        deleting
            .iter()
            .filter(|i| has(i) && !unfinished.contains(&key(i)))
            .map(|i| (i, false)),
    );
    for (identity, hold) in changes {
        let mut finalizers: Vec<String> = identity
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        if hold {
            finalizers.push(FINALIZER.to_string());
        }
        // The resourceVersion makes this a compare-and-swap: a stale cache loses, and the
        // next pass retries with fresh data.
        let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": identity.metadata.resource_version}});
        let k = key(identity);
        let api: Api<Identity> = Api::namespaced(client.clone(), &k.namespace);
        if let Err(error) = api
            .patch(&k.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(identity = %k, %error, "finalizer update deferred");
        }
    }
}

type Failures = BTreeMap<(IdentityKey, EntitlementRef), ApplyState>;

/// What one target's sync did.
#[derive(Default)]
struct Synced {
    /// Entitlements whose grant or revocation failed.
    failures: Failures,
    /// Identities any of whose operations failed.
    failed: BTreeSet<IdentityKey>,
    /// Leavers whose access this pass revoked.
    leavers: BTreeSet<IdentityKey>,
}

/// Observe, plan and apply one target. A failure to observe marks the whole target.
async fn sync_target(
    connector: &impl Connector,
    engine: &Engine,
    now: Timestamp,
    (namespace, target): (&str, &str),
    subjects: &BTreeMap<IdentityKey, Subject>,
    metrics: &Metrics,
) -> Result<Synced, ApplyState> {
    let observed = connector
        .observe(subjects)
        .await
        .map_err(|e| ApplyState::Failed(e.to_string()))?;
    let desired = engine.evaluate(now, &observed);
    let Plan { operations } = plan(&observed, &desired);
    let mut synced = Synced::default();
    for op in operations.iter().filter(|op| op.target == target) {
        let Some(subject) = subjects
            .get(&op.identity)
            .cloned()
            .or_else(|| gone(&op.identity))
        else {
            continue;
        };
        let result = connector.apply(op, &subject).await;
        let label = match &result {
            Ok(crate::targets::Applied::Done) => "ok",
            Ok(crate::targets::Applied::Unsupported) => "unsupported",
            Err(_) => "error",
        };
        let action = serde_json::to_value(&op.action)
            .ok()
            .and_then(|v| v["action"].as_str().map(str::to_string))
            .unwrap_or_default();
        metrics
            .operations
            .get_or_create(&OperationLabels {
                namespace: namespace.into(),
                target: target.into(),
                action,
                result: label.into(),
            })
            .inc();
        match result {
            Ok(_) if op.leaver && matches!(op.action, Action::Revoke { .. }) => {
                synced.leavers.insert((*op.identity).clone());
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(identity = %op.identity, ?op.action, %error, "apply failed");
                synced.failed.insert((*op.identity).clone());
                if let Action::Grant { entitlement } | Action::Revoke { entitlement } = &op.action {
                    synced.failures.insert(
                        ((*op.identity).clone(), (**entitlement).clone()),
                        ApplyState::Failed(error.to_string()),
                    );
                }
            }
        }
    }
    Ok(synced)
}

/// The subject of an identity deleted from the cluster: its access is revoked by name.
fn gone(identity: &IdentityKey) -> Option<Subject> {
    Some(Subject {
        identity: identity.clone(),
        identity_type: crate::api::IdentityType::Human,
        account: identity.name.clone(),
        enabled: false,
    })
}

async fn write_statuses(
    client: &Client,
    caches: &Caches,
    desired: &crate::engine::DesiredState,
    applied: &HashMap<IdentityKey, BTreeMap<EntitlementRef, ApplyState>>,
    now: Timestamp,
) {
    let empty = BTreeMap::new();
    for identity in caches.identities.state() {
        let (Some(ns), Some(name)) = (
            identity.metadata.namespace.clone(),
            identity.metadata.name.clone(),
        ) else {
            continue;
        };
        let key = IdentityKey::new(&ns, &name);
        let Some(access) = desired.identities.get(&key) else {
            continue;
        };
        let findings: Vec<_> = desired
            .violations
            .iter()
            .filter(|v| v.namespace == ns && v.identity.as_deref() == Some(name.as_str()))
            .collect();
        let status = identity_status(
            access,
            &findings,
            applied.get(&key).unwrap_or(&empty),
            identity.status.as_ref(),
            identity.metadata.generation,
            now,
        );
        if identity.status.as_ref() == Some(&status) {
            continue;
        }
        let patch = serde_json::json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "Identity", "status": status});
        let api: Api<Identity> = Api::namespaced(client.clone(), &ns);
        if let Err(error) = api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            tracing::warn!(%key, %error, "status write failed");
        }
    }
}
