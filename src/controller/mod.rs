//! `gatehouse run`: wiring only. Watches the gatehouse kinds into reflector caches, and on
//! every change (or when a date boundary or a target's retry comes due) evaluates with the
//! engine, plans and applies per target through connectors, and writes status and Events.
//!
//! Every replica keeps its caches warm; with leader election only the leader reconciles.

pub mod leader;
mod sources;
pub mod status;
pub mod targets;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::sync::Notify;

use crate::api::{AccessPolicy, EntitlementRef, Exception, Identity, TargetSystem};
use crate::engine::{AccountIntent, Engine, IdentityKey, NothingHeld, Settings, Snapshot};
use crate::http::{Health, Metrics};
use crate::targets::Subject;
pub use leader::LeaderOptions;
use status::{ApplyState, identity_status};
use targets::Targets;
use writer::Writer;

/// Status writes in flight at once.
const STATUS_WRITERS: usize = 16;

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
    /// Leader election; `None` runs as the only writer.
    pub leader: Option<LeaderOptions>,
    /// This replica's name, for Events (the pod name).
    pub instance: Option<String>,
    /// Added to the wall clock for every lifecycle decision. Zero in production; tests use
    /// it to stand seconds before a date boundary (a contractor's last day) and watch the
    /// controller cross it.
    pub clock_offset: jiff::SignedDuration,
    /// Where PolicySources keep their bare Git repositories (outside the image's root
    /// filesystem: an emptyDir in the chart).
    pub source_cache_dir: std::path::PathBuf,
}

impl Default for Options {
    /// All namespaces, a 5-minute resync, default engine settings, fresh metrics and health,
    /// no leader election, the wall clock.
    fn default() -> Self {
        Self {
            namespace: None,
            resync: Duration::from_secs(300),
            settings: Settings::default(),
            metrics: Default::default(),
            health: Default::default(),
            leader: None,
            instance: None,
            clock_offset: jiff::SignedDuration::ZERO,
            source_cache_dir: std::env::temp_dir().join("gatehouse-sources"),
        }
    }
}

impl Options {
    /// The instant lifecycle rules are evaluated at.
    pub fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.clock_offset)
            .unwrap_or_else(|_| Timestamp::now())
    }
}

/// Reflector caches. Objects that fail to deserialize stay in them as errors, so one bad
/// object never breaks a watch.
struct Caches {
    identities: Store<DeserializeGuard<Identity>>,
    policies: Store<DeserializeGuard<AccessPolicy>>,
    exceptions: Store<DeserializeGuard<Exception>>,
    targets: Store<DeserializeGuard<TargetSystem>>,
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
fn watch<K>(
    client: &Client,
    namespace: &Option<String>,
    wake: Arc<Notify>,
) -> Store<DeserializeGuard<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<DeserializeGuard<K>>();
    let stream = watcher(
        api::<DeserializeGuard<K>>(client, namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    // managedFields are most of an object's size and the controller needs only their latest
    // time (the leaver-latency metric): keep that, drop the rest before caching.
    .modify(|object| {
        let meta = object.meta_mut();
        let latest = meta
            .managed_fields
            .take()
            .into_iter()
            .flatten()
            .filter(|f| f.time.is_some())
            .max_by_key(|f| f.time.as_ref().map(|t| t.0));
        meta.managed_fields = latest.map(|mut f| {
            f.fields_v1 = None;
            vec![f]
        });
    })
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
    let caches = Arc::new(Caches {
        identities: watch(&client, &options.namespace, wake.clone()),
        policies: watch(&client, &options.namespace, wake.clone()),
        exceptions: watch(&client, &options.namespace, wake.clone()),
        targets: watch(&client, &options.namespace, wake.clone()),
    });
    for ready in [
        caches.identities.wait_until_ready().await,
        caches.policies.wait_until_ready().await,
        caches.exceptions.wait_until_ready().await,
        caches.targets.wait_until_ready().await,
    ] {
        ready.map_err(|e| anyhow::anyhow!("cache never filled: {e}"))?;
    }
    options.health.set_ready();
    let (mut leading, released) = match &options.leader {
        Some(leader) => {
            let election = leader::elect(client.clone(), leader).await?;
            (Some(election.leading), Some(election.released))
        }
        None => (None, None),
    };
    tracing::info!(namespace = ?options.namespace, "caches ready");
    // Aborted at shutdown, so that it lets go of its handle on the Lease channel with the
    // reconciler's: the Lease is released only once every receiver is dropped.
    let sources = tokio::spawn(run_sources_while_leading(
        client.clone(),
        options.clone(),
        caches.clone(),
        leading.clone(),
    ));
    let mut reconciler = Reconciler {
        writer: Writer::new(client.clone(), options.instance.clone()),
        client,
        targets: Targets::default(),
    };
    futures::pin_mut!(shutdown);
    let mut was_leading = false;
    loop {
        let leads = leading.as_ref().is_none_or(|l| *l.borrow());
        if leads != was_leading {
            tracing::info!(leading = leads, "leadership changed");
            was_leading = leads;
        }
        let wait = if leads {
            let next = reconciler.pass(&caches, &options).await;
            let until_boundary = next
                .map(|at| Duration::try_from(options.now().duration_until(at)).unwrap_or_default());
            let until_retry = reconciler
                .targets
                .next_retry()
                .map(|at| at.saturating_duration_since(Instant::now()));
            [until_boundary, until_retry]
                .into_iter()
                .flatten()
                .fold(options.resync, Duration::min)
        } else {
            options.resync
        };
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                sources.abort();
                let _ = sources.await;
                // Dropping the last receiver makes the keeper release the Lease, so that a
                // standby takes over at once; wait (briefly) for that write.
                drop(leading.take());
                if let Some(released) = released {
                    let _ = tokio::time::timeout(Duration::from_secs(5), released).await;
                }
                return Ok(());
            }
            _ = wake.notified() => {
                // Let a burst of events (a `kubectl apply -f dir/`) settle into one pass.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ = async {
                match leading.as_mut() {
                    Some(l) => { let _ = l.changed().await; }
                    None => std::future::pending().await,
                }
            } => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs the PolicySource controller whenever this replica leads, stopping it when the
/// Lease is lost.
async fn run_sources_while_leading(
    client: Client,
    options: Options,
    caches: Arc<Caches>,
    mut leading: Option<tokio::sync::watch::Receiver<bool>>,
) {
    loop {
        if let Some(l) = leading.as_mut() {
            while !*l.borrow_and_update() {
                if l.changed().await.is_err() {
                    return;
                }
            }
        }
        // Stops the PolicySource controller when this replica loses the Lease.
        let lost = leading.clone().map(|mut l| async move {
            while *l.borrow_and_update() {
                if l.changed().await.is_err() {
                    break;
                }
            }
        });
        sources::run(
            client.clone(),
            options.namespace.clone(),
            options.source_cache_dir.clone(),
            options.metrics.clone(),
            caches.clone(),
            options.instance.clone(),
            async move {
                match lost {
                    Some(lost) => lost.await,
                    // Without election this replica leads for good.
                    None => std::future::pending().await,
                }
            },
        )
        .await;
        if leading.is_none() {
            return;
        }
    }
}

/// The objects that deserialized, and the metadata and error of those that did not.
fn split<K: Clone>(
    objects: Vec<Arc<DeserializeGuard<K>>>,
) -> (Vec<K>, Vec<(kube::api::ObjectMeta, String)>) {
    let mut valid = Vec::with_capacity(objects.len());
    let mut invalid = Vec::new();
    for object in objects {
        match &object.0 {
            Ok(k) => valid.push(k.clone()),
            Err(e) => invalid.push((e.metadata.clone(), e.error.clone())),
        }
    }
    (valid, invalid)
}

/// Objects of each kind that failed to deserialize.
#[derive(Default)]
struct Invalid {
    identities: Vec<(kube::api::ObjectMeta, String)>,
    policies: Vec<(kube::api::ObjectMeta, String)>,
    exceptions: Vec<(kube::api::ObjectMeta, String)>,
    targets: Vec<(kube::api::ObjectMeta, String)>,
}

fn snapshot(caches: &Caches) -> (Snapshot, Invalid) {
    let (identities, bad_identities) = split(caches.identities.state());
    let (policies, bad_policies) = split(caches.policies.state());
    let (exceptions, bad_exceptions) = split(caches.exceptions.state());
    let (targets, bad_targets) = split(caches.targets.state());
    (
        Snapshot {
            identities,
            policies,
            exceptions,
            targets,
        },
        Invalid {
            identities: bad_identities,
            policies: bad_policies,
            exceptions: bad_exceptions,
            targets: bad_targets,
        },
    )
}

fn key_of(meta: &kube::api::ObjectMeta) -> IdentityKey {
    IdentityKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// State kept between passes.
struct Reconciler {
    client: Client,
    writer: Writer,
    targets: Targets,
}

impl Reconciler {
    /// One pass over everything; returns when the next date boundary falls due.
    async fn pass(&mut self, caches: &Caches, options: &Options) -> Option<Timestamp> {
        let started = std::time::Instant::now();
        let next = self.pass_once(caches, options).await;
        tracing::debug!(took = ?started.elapsed(), "reconcile pass");
        options.metrics.reconciles.inc();
        options
            .metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        next
    }

    async fn pass_once(&mut self, caches: &Caches, options: &Options) -> Option<Timestamp> {
        let now = options.now();
        let (mut snapshot, invalid) = snapshot(caches);
        // An Identity being deleted is planned as a leaver: it is left out of the engine's
        // input (absent means revoke everything), but its subject is kept so its access can
        // be found.
        let (deleting, present): (Vec<Identity>, Vec<Identity>) =
            std::mem::take(&mut snapshot.identities)
                .into_iter()
                .partition(|i| i.metadata.deletion_timestamp.is_some());
        snapshot.identities = present;
        let engine = Engine::new(&snapshot, options.settings.clone());
        let desired = engine.evaluate(now, &NothingHeld);
        let subject = |identity: &Identity, target: &str| -> (IdentityKey, Subject) {
            let key = key_of(&identity.metadata);
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
            (
                key.clone(),
                Subject {
                    identity: key,
                    identity_type: identity.spec.type_,
                    account,
                    enabled,
                },
            )
        };

        let mut applied: HashMap<IdentityKey, BTreeMap<EntitlementRef, ApplyState>> =
            HashMap::new();
        let mut unfinished: BTreeSet<IdentityKey> = BTreeSet::new();
        let mut revoked_leavers: BTreeSet<IdentityKey> = BTreeSet::new();
        let live: BTreeSet<(String, String)> = snapshot
            .targets
            .iter()
            .map(|t| {
                let k = key_of(&t.metadata);
                (k.namespace, k.name)
            })
            .collect();
        self.targets.retain(&live);
        for target in &snapshot.targets {
            let IdentityKey {
                namespace: ns,
                name,
            } = key_of(&target.metadata);
            let in_tenant: BTreeMap<IdentityKey, Subject> = snapshot
                .identities
                .iter()
                .chain(&deleting)
                .filter(|i| i.metadata.namespace.as_deref() == Some(ns.as_str()))
                .map(|i| subject(i, &name))
                .collect();
            let synced = self
                .targets
                .sync(
                    &self.client,
                    target,
                    &engine,
                    now,
                    &in_tenant,
                    &options.metrics,
                )
                .await;
            if synced.report.unreachable.is_some() || synced.report.failed > 0 {
                options.metrics.errors.inc();
            }
            options
                .metrics
                .pending_operations
                .get_or_create(&crate::http::TargetLabels {
                    namespace: ns.clone(),
                    target: name.clone(),
                })
                .set(synced.report.outstanding() as i64);
            unfinished.extend(synced.unfinished.iter().cloned());
            revoked_leavers.extend(synced.leavers.iter().cloned());
            for (key, access) in desired.identities.iter().filter(|(k, _)| k.namespace == ns) {
                let slot = applied.entry(key.clone()).or_default();
                for grant in access.enforced().filter(|g| g.entitlement.target == name) {
                    let state = synced.blanket.clone().unwrap_or_else(|| {
                        synced
                            .failures
                            .get(&(key.clone(), (*grant.entitlement).clone()))
                            .cloned()
                            .unwrap_or(ApplyState::Applied)
                    });
                    slot.insert((*grant.entitlement).clone(), state);
                }
            }
            let status = status::target_status(
                &synced.report,
                target.status.as_ref(),
                target.metadata.generation,
                now,
            );
            self.writer
                .status(target, target.status.as_ref(), &status, |s| &s.conditions)
                .await;
        }
        self.observe_leaver_latency(
            &snapshot.identities,
            &deleting,
            &revoked_leavers,
            &unfinished,
            options,
        );
        manage_finalizers(&self.client, &snapshot.identities, &deleting, &unfinished).await;
        self.write_statuses(&snapshot, &desired, &applied, now)
            .await;
        for (meta, error) in &invalid.identities {
            self.writer.invalid::<Identity>(meta, error, now).await;
        }
        for (meta, error) in &invalid.policies {
            self.writer.invalid::<AccessPolicy>(meta, error, now).await;
        }
        for (meta, error) in &invalid.exceptions {
            self.writer.invalid::<Exception>(meta, error, now).await;
        }
        for (meta, error) in &invalid.targets {
            self.writer.invalid::<TargetSystem>(meta, error, now).await;
        }
        desired.next_change
    }

    /// Leaver revocation latency: from the latest write to the Identity (an HR update or a
    /// delete, which is what made them a leaver) to the pass that revoked them everywhere.
    fn observe_leaver_latency(
        &self,
        present: &[Identity],
        deleting: &[Identity],
        revoked: &BTreeSet<IdentityKey>,
        unfinished: &BTreeSet<IdentityKey>,
        options: &Options,
    ) {
        for identity in present.iter().chain(deleting) {
            let key = key_of(&identity.metadata);
            if !revoked.contains(&key) || unfinished.contains(&key) {
                continue;
            }
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

    async fn write_statuses(
        &self,
        snapshot: &Snapshot,
        desired: &crate::engine::DesiredState,
        applied: &HashMap<IdentityKey, BTreeMap<EntitlementRef, ApplyState>>,
        now: Timestamp,
    ) {
        let empty = BTreeMap::new();
        // Statuses are computed here and only the changed ones written, several at a time:
        // after a mass change (a re-org, the first start) thousands may be due.
        let changed: Vec<_> = snapshot
            .identities
            .iter()
            .filter_map(|identity| {
                let key = key_of(&identity.metadata);
                let access = desired.identities.get(&key)?;
                let findings: Vec<_> = desired
                    .violations
                    .iter()
                    .filter(|v| {
                        v.namespace == key.namespace
                            && v.identity.as_deref() == Some(key.name.as_str())
                    })
                    .collect();
                let status = identity_status(
                    access,
                    &findings,
                    applied.get(&key).unwrap_or(&empty),
                    identity.status.as_ref(),
                    identity.metadata.generation,
                    now,
                );
                (identity.status.as_ref() != Some(&status)).then_some((identity, status))
            })
            .collect();
        let writes: Vec<_> = changed
            .into_iter()
            .map(|(identity, status)| write_identity_status(&self.writer, identity, status))
            .collect();
        futures::stream::iter(writes)
            .buffer_unordered(STATUS_WRITERS)
            .collect::<Vec<()>>()
            .await;
        for policy in &snapshot.policies {
            let key = key_of(&policy.metadata);
            let object = format!("AccessPolicy/{}", key.name);
            let findings: Vec<_> = desired
                .violations
                .iter()
                .filter(|v| v.namespace == key.namespace && v.object == object)
                .collect();
            let matched = desired
                .policy_matches
                .get(&(key.namespace.clone(), key.name.clone()))
                .copied()
                .unwrap_or(0);
            let status = status::policy_status(
                matched,
                &findings,
                policy.status.as_ref(),
                policy.metadata.generation,
                now,
            );
            self.writer
                .status(policy, policy.status.as_ref(), &status, |s| &s.conditions)
                .await;
        }
        for exception in &snapshot.exceptions {
            let key = key_of(&exception.metadata);
            let Some(verdict) = desired.exceptions.get(&(key.namespace, key.name)) else {
                continue;
            };
            let status = status::exception_status(
                verdict,
                exception.status.as_ref(),
                exception.metadata.generation,
                now,
            );
            self.writer
                .status(exception, exception.status.as_ref(), &status, |s| {
                    &s.conditions
                })
                .await;
        }
    }
}

/// Writes one Identity's status, and an Event when its phase changed.
async fn write_identity_status(
    writer: &Writer,
    identity: &Identity,
    status: crate::api::IdentityStatus,
) {
    let previous_phase = identity.status.as_ref().and_then(|s| s.phase.clone());
    writer
        .status(identity, identity.status.as_ref(), &status, |s| {
            &s.conditions
        })
        .await;
    if let (Some(before), Some(after)) = (previous_phase, &status.phase)
        && before != *after
    {
        writer
            .event(
                writer::object_ref::<Identity>(&identity.metadata),
                true,
                "PhaseChanged",
                &format!("{before} -> {after}"),
            )
            .await;
    }
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
    let changes = present.iter().filter(|i| !has(i)).map(|i| (i, true)).chain(
        deleting
            .iter()
            .filter(|i| has(i) && !unfinished.contains(&key_of(&i.metadata)))
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
        let k = key_of(&identity.metadata);
        let api: Api<Identity> = Api::namespaced(client.clone(), &k.namespace);
        if let Err(error) = api
            .patch(&k.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(identity = %k, %error, "finalizer update deferred");
        }
    }
}
