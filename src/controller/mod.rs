//! `gatehouse run`: wiring only. Watches the gatehouse kinds into reflector caches and
//! queues the tenant (namespace) of every object whose spec or metadata changed (status
//! writes, the controller's own included, wake nothing). A queued tenant gets one pass
//! ([`pass`]): bring its targets' cached state up to date, decide once with the tenant's
//! kept [`engines`] entry, apply, and write what [`report`] built. Queued tenants go
//! first; they are also due again at a date boundary, a retry, a pass that yielded to a
//! newer change, and the periodic resync (which lists every target in full).
//!
//! Every replica keeps its caches warm; with leader election only the leader reconciles,
//! and it checks the Lease before every apply batch.

pub mod break_glass;
pub mod connectors;
pub mod engines;
pub mod leader;
pub mod pass;
pub mod report;
pub mod review_status;
mod sources;
pub mod status;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::sync::Notify;

use crate::api::{
    AccessPolicy, AccessReview, AccessReviewResponse, Exception, Identity, TargetSystem,
};
use crate::engine::{IdentityKey, Settings};
use crate::http::{Health, Metrics, TargetLabels, TenantLabels};
use connectors::{Factory, KubeFactory, Slots};
pub use leader::LeaderOptions;
use pass::{PassContext, SharedIdentity, TenantObjects};
use writer::Writer;

/// Status writes in flight at once.
const STATUS_WRITERS: usize = 16;

/// Identity statuses written between two looks at the queue: a change queued meanwhile
/// (a leaver) waits for at most this many writes.
const STATUS_ROUND: usize = 4 * STATUS_WRITERS;

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
    reviews: Store<DeserializeGuard<AccessReview>>,
    responses: Store<DeserializeGuard<AccessReviewResponse>>,
}

/// The work queue: tenants with a change not yet reconciled.
#[derive(Default)]
pub struct Queue {
    tenants: Mutex<BTreeSet<String>>,
    wake: Notify,
}

impl Queue {
    /// Queues a tenant and wakes the reconciler.
    pub fn push(&self, namespace: &str) {
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(namespace.to_string());
        self.wake.notify_one();
    }

    /// Whether any tenant is queued.
    pub fn is_empty(&self) -> bool {
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Takes every queued tenant.
    fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.tenants.lock().unwrap_or_else(|e| e.into_inner()))
    }
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

/// What of an object can change a decision: everything but its status and the
/// controller's own finalizer. The controller's writes (status, adding its finalizer to a
/// joiner) hash the same and wake nothing; the resync restores a finalizer removed by hand.
fn relevant_hash(meta: &kube::api::ObjectMeta) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.finalizers
        .iter()
        .flatten()
        .filter(|f| *f != FINALIZER)
        .for_each(|f| f.hash(&mut h));
    meta.deletion_timestamp.as_ref().map(|t| t.0).hash(&mut h);
    h.finish()
}

/// Starts a watch feeding a cache; every relevant change queues the object's tenant.
fn watch<K>(
    client: &Client,
    namespace: &Option<String>,
    queue: Arc<Queue>,
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
    // managedFields are most of an object's size and the controller needs only the latest
    // write to the spec (the leaver SLA's start): keep that, drop the rest before caching.
    .modify(|object| {
        let meta = object.meta_mut();
        let latest = meta
            .managed_fields
            .take()
            .into_iter()
            .flatten()
            .filter(|f| f.time.is_some() && f.subresource.as_deref() != Some("status"))
            .max_by_key(|f| f.time.as_ref().map(|t| t.0));
        meta.managed_fields = latest.map(|mut f| {
            f.fields_v1 = None;
            vec![f]
        });
    })
    .reflect(writer);
    tokio::spawn(async move {
        let mut seen: HashMap<(String, String), u64> = HashMap::new();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let object = match event {
                Err(error) => {
                    tracing::warn!(%error, kind = K::kind(&()).as_ref(), "watch error; retrying with backoff");
                    continue;
                }
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
                Ok(watcher::Event::Delete(o)) => (o, true),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
            };
            let (object, deleted) = object;
            let meta = object.meta();
            let ns = meta.namespace.clone().unwrap_or_default();
            let id = (ns.clone(), meta.name.clone().unwrap_or_default());
            if deleted {
                seen.remove(&id);
                queue.push(&ns);
                continue;
            }
            let hash = relevant_hash(meta);
            if seen.insert(id, hash) != Some(hash) {
                queue.push(&ns);
            }
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
    let queue = Arc::new(Queue::default());
    let caches = Arc::new(Caches {
        identities: watch(&client, &options.namespace, queue.clone()),
        policies: watch(&client, &options.namespace, queue.clone()),
        exceptions: watch(&client, &options.namespace, queue.clone()),
        targets: watch(&client, &options.namespace, queue.clone()),
        reviews: watch(&client, &options.namespace, queue.clone()),
        responses: watch(&client, &options.namespace, queue.clone()),
    });
    for ready in [
        caches.identities.wait_until_ready().await,
        caches.policies.wait_until_ready().await,
        caches.exceptions.wait_until_ready().await,
        caches.targets.wait_until_ready().await,
        caches.reviews.wait_until_ready().await,
        caches.responses.wait_until_ready().await,
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
        client: client.clone(),
        slots: Slots::new(KubeFactory { client }).waking({
            let queue = queue.clone();
            move |namespace| queue.push(namespace)
        }),
        engines: engines::Engines::new(options.settings.clone()),
        due: BTreeMap::new(),
    };
    futures::pin_mut!(shutdown);
    let mut was_leading = false;
    let mut last_resync: Option<Instant> = None;
    loop {
        let leads = leading.as_ref().is_none_or(|l| *l.borrow());
        if leads != was_leading {
            tracing::info!(leading = leads, "leadership changed");
            was_leading = leads;
            // A new leader starts from a full pass over every tenant.
            last_resync = None;
        }
        let wait = if leads {
            let now = Instant::now();
            // Tenants with a change first (a leaver among them), then the resync, then
            // those due on a timer (a retry, a pass deferred behind a newer change).
            let mut due: Vec<String> = queue.take().into_iter().collect();
            let resync = last_resync.is_none_or(|at| now >= at + options.resync);
            if resync {
                let all = tenants(&caches);
                for ns in &all {
                    reconciler.slots.resync(ns);
                    reconciler.engines.resync(ns);
                }
                due.extend(all);
                last_resync = Some(now);
            }
            due.extend(
                reconciler
                    .due
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(ns, _)| ns.clone()),
            );
            let mut seen = BTreeSet::new();
            due.retain(|ns| seen.insert(ns.clone()));
            for ns in due {
                reconciler.due.remove(&ns);
                let is_leading = || leading.as_ref().is_none_or(|l| *l.borrow());
                let preempted = || !queue.is_empty();
                if let Some(at) = reconciler
                    .pass(&caches, &options, &ns, &is_leading, &preempted)
                    .await
                {
                    reconciler.due.insert(ns, at);
                }
            }
            let next_resync = last_resync.map_or(options.resync, |at| {
                (at + options.resync).saturating_duration_since(Instant::now())
            });
            reconciler
                .due
                .values()
                .map(|at| at.saturating_duration_since(Instant::now()))
                .fold(next_resync, Duration::min)
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
            _ = queue.wake.notified() => {
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

/// Every namespace with at least one gatehouse object.
fn tenants(caches: &Caches) -> BTreeSet<String> {
    fn namespaces<K>(store: &Store<DeserializeGuard<K>>) -> impl Iterator<Item = String>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned,
    {
        store
            .state()
            .into_iter()
            .map(|o| o.meta().namespace.clone().unwrap_or_default())
    }
    let mut out = BTreeSet::new();
    out.extend(namespaces(&caches.identities));
    out.extend(namespaces(&caches.policies));
    out.extend(namespaces(&caches.exceptions));
    out.extend(namespaces(&caches.targets));
    out
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

/// The objects of one namespace that deserialized, and the metadata and error of those
/// that did not.
fn split<K: Clone + Resource>(
    objects: Vec<Arc<DeserializeGuard<K>>>,
    namespace: &str,
) -> (Vec<K>, Vec<(kube::api::ObjectMeta, String)>) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for object in objects {
        match &object.0 {
            Ok(k) if k.meta().namespace.as_deref() == Some(namespace) => valid.push(k.clone()),
            Err(e) if e.metadata.namespace.as_deref() == Some(namespace) => {
                invalid.push((e.metadata.clone(), e.error.clone()))
            }
            _ => {}
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

/// One tenant's objects from the caches; identities being deleted apart.
fn tenant_objects(caches: &Caches, namespace: &str) -> (TenantObjects, Invalid) {
    // Identities (most of a tenant) are shared with the cache, not copied.
    let mut present = Vec::new();
    let mut deleting = Vec::new();
    let mut bad_identities = Vec::new();
    for object in caches.identities.state() {
        match &object.0 {
            Ok(i) if i.metadata.namespace.as_deref() == Some(namespace) => {
                // An Identity being deleted is planned as a leaver: it is left out of the
                // engine's input (absent means revoke everything), but kept so its access
                // can be found.
                let list = if i.metadata.deletion_timestamp.is_some() {
                    &mut deleting
                } else {
                    &mut present
                };
                list.extend(SharedIdentity::from_cache(object.clone()));
            }
            Err(e) if e.metadata.namespace.as_deref() == Some(namespace) => {
                bad_identities.push((e.metadata.clone(), e.error.clone()))
            }
            _ => {}
        }
    }
    let (policies, bad_policies) = split(caches.policies.state(), namespace);
    let (exceptions, bad_exceptions) = split(caches.exceptions.state(), namespace);
    let (targets, bad_targets) = split(caches.targets.state(), namespace);
    // Unreadable reviews and responses cannot be in the cluster: the API server checks
    // the schema, and `gatehouse validate` reports them in Git.
    let (reviews, _) = split(caches.reviews.state(), namespace);
    let (responses, _) = split(caches.responses.state(), namespace);
    (
        TenantObjects {
            namespace: namespace.to_string(),
            identities: present,
            reviews,
            responses,
            deleting,
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

/// State kept between passes.
struct Reconciler<F: Factory> {
    client: Client,
    writer: Writer,
    slots: Slots<F>,
    /// Each tenant's engine, kept between passes.
    engines: engines::Engines,
    /// When each tenant is due again without a change (a date boundary, a retry, the
    /// confirmation of revocations).
    due: BTreeMap<String, Instant>,
}

/// How soon a pass that applied revocations re-observes to confirm them.
const CONFIRM_AFTER: Duration = Duration::from_millis(250);

impl<F: Factory> Reconciler<F> {
    /// One pass over one tenant; returns when it is due again.
    async fn pass(
        &mut self,
        caches: &Caches,
        options: &Options,
        namespace: &str,
        leading: &(dyn Fn() -> bool + Sync),
        preempted: &(dyn Fn() -> bool + Sync),
    ) -> Option<Instant> {
        let started = Instant::now();
        // Counted as it starts, so that a status it writes is never seen before its pass.
        options
            .metrics
            .tenant_passes
            .get_or_create(&TenantLabels {
                namespace: namespace.to_string(),
            })
            .inc();
        let now = options.now();
        let (tenant, invalid) = tenant_objects(caches, namespace);
        let ctx = PassContext {
            now,
            settings: &options.settings,
            resync: options.resync,
            leading,
            preempted,
            metrics: &options.metrics,
        };
        let (engine, update) = self.engines.update(&tenant);
        tracing::debug!(%namespace, ?update, took = ?started.elapsed(), "engine");
        let result = match pass::run(&mut self.slots, &tenant, engine, &ctx).await {
            Ok(result) => result,
            Err(pass::LostLeadership) => return None,
        };
        let passed = started.elapsed();
        let mut report = report::report(&tenant, &result, &result.leaver_dates, now);
        let reported = started.elapsed();
        if let Some(sent) = &result.deferred {
            // The pass yielded to a newer change: report only the identities it did
            // something for, and leave the rest (still pending) to the pass due at once.
            report.identities.retain(|(key, _)| sent.contains(key));
            report.hold.retain(|key| sent.contains(key));
            report.events.retain(|event| sent.contains(&event.identity));
        }
        if !leading() {
            return None;
        }
        let cut = self.write(&tenant, report, options, preempted).await;
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
        options.metrics.reconciles.inc();
        options
            .metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(%namespace, ?passed, ?reported, took = ?started.elapsed(), "tenant pass");
        let boundary = result.decision.desired.next_change.map(|at| {
            Instant::now() + Duration::try_from(now.duration_until(at)).unwrap_or_default()
        });
        let confirm = result.confirm_soon.then(|| Instant::now() + CONFIRM_AFTER);
        let deferred = (result.deferred.is_some() || cut).then(Instant::now);
        [boundary, result.next_retry, confirm, deferred]
            .into_iter()
            .flatten()
            .min()
    }

    /// Writes what a pass reported: finalizers, statuses, Events, metrics.
    /// `true` when a change queued meanwhile cut the Identity statuses short: the rest
    /// are due at once.
    async fn write(
        &mut self,
        tenant: &TenantObjects,
        report: report::Report,
        options: &Options,
        preempted: &(dyn Fn() -> bool + Sync),
    ) -> bool {
        let namespace = tenant.namespace.as_str();
        let by_name: HashMap<&str, &Identity> = tenant
            .all_identities()
            .filter_map(|i| i.metadata.name.as_deref().map(|n| (n, i)))
            .collect();
        let identity = |key: &IdentityKey| by_name.get(key.name.as_str()).copied();
        for key in &report.hold {
            if let Some(i) = identity(key) {
                set_finalizer(&self.client, i, true).await;
            }
        }
        for key in &report.release {
            if let Some(i) = identity(key) {
                set_finalizer(&self.client, i, false).await;
            }
        }
        for (target, seconds) in &report.revocations {
            options
                .metrics
                .leaver_revocation_seconds
                .get_or_create(&TargetLabels {
                    namespace: namespace.to_string(),
                    target: target.clone(),
                })
                .observe(*seconds);
        }
        for (target, outstanding) in &report.outstanding {
            options
                .metrics
                .pending_operations
                .get_or_create(&TargetLabels {
                    namespace: namespace.to_string(),
                    target: target.clone(),
                })
                .set(*outstanding as i64);
        }
        for event in &report.events {
            if let Some(i) = identity(&event.identity) {
                self.writer
                    .event(
                        writer::object_ref::<Identity>(&i.metadata),
                        false,
                        event.reason,
                        &event.note,
                    )
                    .await;
            }
        }
        // Written a round at a time; a change queued meanwhile (a leaver) goes ahead of the
        // rest, which the next pass reports again (each is compared with what is stored).
        let mut writes = report
            .identities
            .into_iter()
            .filter_map(|(key, status)| identity(&key).map(|i| (i, status)))
            .peekable();
        let mut cut = false;
        while writes.peek().is_some() {
            let round: Vec<_> = writes
                .by_ref()
                .take(STATUS_ROUND)
                .map(|(i, status)| write_identity_status(&self.writer, i, status))
                .collect();
            futures::stream::iter(round)
                .buffer_unordered(STATUS_WRITERS)
                .collect::<Vec<()>>()
                .await;
            if writes.peek().is_some() && preempted() {
                cut = true;
                break;
            }
        }
        for (name, status) in &report.targets {
            if let Some(t) = tenant
                .targets
                .iter()
                .find(|t| t.metadata.name.as_ref() == Some(name))
            {
                self.writer
                    .status(t, t.status.as_ref(), status, |s| &s.conditions)
                    .await;
            }
        }
        for (name, status) in &report.policies {
            if let Some(p) = tenant
                .policies
                .iter()
                .find(|p| p.metadata.name.as_ref() == Some(name))
            {
                self.writer
                    .status(p, p.status.as_ref(), status, |s| &s.conditions)
                    .await;
            }
        }
        for (name, status) in &report.exceptions {
            if let Some(e) = tenant
                .exceptions
                .iter()
                .find(|e| e.metadata.name.as_ref() == Some(name))
            {
                self.writer
                    .status(e, e.status.as_ref(), status, |s| &s.conditions)
                    .await;
                break_glass::announce(&self.client, &self.writer, &options.metrics, e, status)
                    .await;
            }
        }
        for (name, status) in &report.reviews {
            if let Some(r) = tenant
                .reviews
                .iter()
                .find(|r| r.metadata.name.as_ref() == Some(name))
            {
                self.writer
                    .status(r, r.status.as_ref(), status, |s| &s.conditions)
                    .await;
            }
        }
        cut
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

/// Adds (`hold`) or removes the finalizer that keeps an Identity until its access is
/// revoked everywhere.
async fn set_finalizer(client: &Client, identity: &Identity, hold: bool) {
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
    let namespace = identity.metadata.namespace.clone().unwrap_or_default();
    let name = identity.metadata.name.clone().unwrap_or_default();
    let api: Api<Identity> = Api::namespaced(client.clone(), &namespace);
    if let Err(error) = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(identity = %format!("{namespace}/{name}"), %error, "finalizer update deferred");
    }
}
