//! A tenant's connectors, kept between passes: built through a [`Factory`] (the real one
//! reads the TargetSystem's Secret and dials the target; tests pass their own), rebuilt
//! only when the spec or the Secret changes, with a retry schedule per target (for
//! observation) and per operation (for operations that failed).
//!
//! A slot also keeps the target's observed state: the last full listing, kept in step
//! with the operations the target confirmed since ([`Slot::applied`]). A pass plans
//! against it; what it cannot vouch for (an operation that failed or whose outcome is
//! unknown, a revocation acknowledged but not yet seen, a new or renamed subject) is
//! re-read first ([`Slot::to_read`]). The full listing runs again at the resync, every
//! `spec.driftInterval`, and whenever a re-read would touch too many accounts.
//!
//! Once the cache exists, a full listing (or a re-read of more accounts than a pass waits
//! for) runs in the background ([`Slot::start_read`]) while passes go on planning against
//! the cache: a leaver's cut-off never waits behind one. The operations confirmed and the
//! accounts re-read meanwhile are replayed on its result when it is installed
//! ([`Slot::install`]), so that it never brings back a state older than the cache's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use crate::api::TargetSystem;
use crate::engine::IdentityKey;
use crate::plan::{AccessState, Action, Operation};
use crate::targets::{
    AnyConnector, Applied, Connector, Credentials, Reread, Subject, TargetConfig, TargetError,
};
use tokio::sync::oneshot;

/// What a connector was built from: the TargetSystem's generation and its Secret's
/// resourceVersion. A change builds a new connector and clears every retry schedule.
pub type Fingerprint = (Option<i64>, Option<String>);

/// What a factory read about a target before connecting.
pub struct Loaded {
    /// What the connector would be built from.
    pub fingerprint: Fingerprint,
    /// The configuration, or why there is none (a missing Secret).
    pub config: Result<TargetConfig, TargetError>,
}

/// Builds connectors. The controller's factory reads Secrets from the API server and dials
/// real targets; tests substitute one that returns connectors they script.
pub trait Factory: Send + Sync {
    /// The connector type built.
    type Connector: Connector + Send + Sync + 'static;

    /// Reads what a connector for `target` is built from (cheap: done every pass, so a
    /// rotated Secret is noticed).
    fn load(&self, target: &TargetSystem) -> impl Future<Output = Loaded> + Send;

    /// Builds and connects a connector.
    fn connect(
        &self,
        config: &TargetConfig,
    ) -> impl Future<Output = Result<Self::Connector, TargetError>> + Send;
}

/// The controller's factory: Secrets from the API server, real connectors.
pub struct KubeFactory {
    /// The controller's own cluster (Kubernetes targets without a kubeconfig use it).
    pub client: Client,
}

impl Factory for KubeFactory {
    type Connector = AnyConnector;

    async fn load(&self, target: &TargetSystem) -> Loaded {
        let namespace = target.metadata.namespace.clone().unwrap_or_default();
        let name = target.metadata.name.clone().unwrap_or_default();
        let secret_name = TargetConfig::secret_name(&target.spec).map(str::to_string);
        let secret = match &secret_name {
            None => Ok(None),
            Some(s) => Api::<Secret>::namespaced(self.client.clone(), &namespace)
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
        let credentials = match (secret, &secret_name) {
            (Err(e), _) => Err(TargetError::Transient(e)),
            (Ok(None), Some(s)) => Err(TargetError::Config(format!(
                "Secret {namespace}/{s} named by TargetSystem {namespace}/{name} does not exist; create it"
            ))),
            (Ok(None), None) => Ok(Credentials::default()),
            (Ok(Some(secret)), _) => Ok(Credentials::new(
                secret.metadata.name.clone().unwrap_or_default(),
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
            )),
        };
        Loaded {
            fingerprint,
            config: credentials.map(|credentials| TargetConfig {
                namespace,
                name,
                spec: target.spec.clone(),
                credentials,
            }),
        }
    }

    async fn connect(&self, config: &TargetConfig) -> Result<AnyConnector, TargetError> {
        AnyConnector::connect(&self.client, config).await
    }
}

/// A failure, as kept for status and for the retry schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Retrying will not help until someone changes something (a spec, a Secret, the
    /// target's own configuration): retried only at the resync or after such a change.
    pub permanent: bool,
    /// The reason for `Stalled`: `Rejected`, `InvalidConfiguration`; `None` if transient.
    pub reason: Option<&'static str>,
    /// The error, as the connector put it.
    pub message: String,
    /// The earliest retry the target asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// Classifies a connector error.
    pub fn of(error: &TargetError) -> Self {
        let (permanent, reason) = match error {
            TargetError::Transient(_) | TargetError::RetryAfter(..) => (false, None),
            TargetError::Permanent(_) => (true, Some("Rejected")),
            TargetError::Config(_) => (true, Some("InvalidConfiguration")),
        };
        Self {
            permanent,
            reason,
            message: error.to_string(),
            retry_after: error.retry_after(),
        }
    }

    /// How long to wait after the `failures`-th consecutive failure: the resync for a
    /// permanent one; otherwise the backoff, or the target's own hint when it is longer.
    fn wait(&self, failures: u32, resync: Duration) -> Duration {
        if self.permanent {
            resync
        } else {
            backoff(failures).max(self.retry_after.unwrap_or_default().min(BACKOFF_MAX))
        }
    }
}

/// An operation, as the retry schedule knows it (the target is the slot's).
pub type OperationKey = (IdentityKey, Action);

/// A failed operation waiting for its retry.
#[derive(Clone, Debug)]
pub struct Parked {
    /// The last failure.
    pub failure: Failure,
    /// Consecutive failures.
    pub failures: u32,
    /// Not retried before.
    pub until: Instant,
}

/// A read of the target running in the background, and what happened on the target since
/// it began (what its result is brought up to date with when it is installed).
pub struct Background {
    /// `None` for a full listing; else the identities re-read.
    pub only: Option<BTreeSet<IdentityKey>>,
    /// The subjects it reads with.
    expected: Arc<BTreeMap<IdentityKey, Subject>>,
    /// When it began: the drift interval counts from here.
    started: Instant,
    /// Operations the target confirmed since it began, in order, as a listing shows them.
    confirmed: Vec<Operation>,
    /// Identities re-read since it began: the cache's state of them is newer than its.
    reread: BTreeSet<IdentityKey>,
    /// Identities whose state became unsure since it began: still re-read after it.
    unsure: BTreeSet<IdentityKey>,
    result: oneshot::Receiver<Result<Reread, TargetError>>,
    _task: AbortOnDrop,
}

/// Stops a background read nobody waits for any more (a slot reset by a new spec or
/// Secret, a target gone).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The target's answers to a round: one result per operation, in order.
pub type Answers = Vec<Result<Applied, TargetError>>;

/// A round of operations a pass stopped waiting for when a newer change was queued (a
/// leaver): the target answers it meanwhile, and the next pass records the answers. Until
/// then the target gets nothing else but cut-offs.
pub struct InFlight {
    /// The operations sent, in order.
    pub operations: Vec<Operation>,
    /// One result per operation.
    answer: oneshot::Receiver<Answers>,
}

impl InFlight {
    /// Goes on waiting for `task`, which answers `operations`, and calls `done` once it
    /// has (the controller queues the tenant, so that the answers are recorded at once).
    /// What was sent completes even if nobody waits for it any more.
    pub fn watch(
        operations: Vec<Operation>,
        task: tokio::task::JoinHandle<Answers>,
        done: impl FnOnce() + Send + 'static,
    ) -> Self {
        let (send, answer) = oneshot::channel();
        tokio::spawn(async move {
            if let Ok(results) = task.await {
                let _ = send.send(results);
            }
            done();
        });
        Self { operations, answer }
    }
}

/// A finished background read: what it was, and the target's answer.
pub type Finished = (Background, Result<Reread, TargetError>);

/// How the next plan gets what it needs read ([`Slot::choose`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// Nothing to read (or what there is waits for the background read in progress).
    Nothing,
    /// Read now, before the plan: `None` for a full listing, else these identities.
    Now(Option<BTreeSet<IdentityKey>>),
    /// Start a background read: `None` for a full listing, else these identities.
    Background(Option<BTreeSet<IdentityKey>>),
}

/// A re-read of at most this many identities is made before the plan; a larger one (a
/// large HR import's joiners) runs in the background.
pub const INLINE_REREAD_MAX: usize = 32;

/// One target's connector and schedules.
pub struct Slot<C> {
    fingerprint: Fingerprint,
    /// The connector, while it works.
    pub connector: Option<Arc<C>>,
    /// Consecutive failures to connect or observe.
    failures: u32,
    /// Not observed again before this (after a failure).
    retry_at: Option<Instant>,
    /// The last failure to connect or observe.
    pub last_error: Option<Failure>,
    /// The observed state: the last full listing, plus the operations confirmed since and
    /// the accounts re-read since. `None` until the first listing.
    pub last_held: Option<Arc<AccessState>>,
    /// When the last full listing was made.
    listed_at: Option<Instant>,
    /// The next pass lists the target in full (the resync).
    list_due: bool,
    /// Identities whose holdings on the target the cache cannot vouch for: re-read before
    /// the next plan.
    pub stale: BTreeSet<IdentityKey>,
    /// Each subject the cache was read with (a hash of its account name and type): a
    /// subject that changes is re-read.
    subjects: HashMap<IdentityKey, u64>,
    /// Orphans and findings of the last successful observation.
    pub last_orphans: Vec<String>,
    /// Findings of the last successful observation.
    pub last_findings: Vec<String>,
    /// Operations that failed, until their retry.
    pub parked: BTreeMap<OperationKey, Parked>,
    /// Cut-offs and revocations the target acknowledged in the last pass, awaiting the
    /// re-observation that confirms them.
    pub acknowledged: BTreeMap<OperationKey, Instant>,
    /// The read running in the background, if any.
    pub background: Option<Background>,
    /// A round of operations still being answered, if any.
    pub in_flight: Option<InFlight>,
}

impl<C> Slot<C> {
    fn new(fingerprint: Fingerprint) -> Self {
        Self {
            fingerprint,
            connector: None,
            failures: 0,
            retry_at: None,
            last_error: None,
            last_held: None,
            listed_at: None,
            list_due: false,
            stale: BTreeSet::new(),
            subjects: HashMap::new(),
            last_orphans: Vec::new(),
            last_findings: Vec::new(),
            parked: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            background: None,
            in_flight: None,
        }
    }

    /// The round in flight with the target's answers, once it has answered: one result
    /// per operation (a task that died answers each with a transient failure).
    pub fn landed(&mut self) -> Option<(Vec<Operation>, Answers)> {
        let mut results = match self.in_flight.as_mut()?.answer.try_recv() {
            Ok(results) => results,
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Err(oneshot::error::TryRecvError::Closed) => Vec::new(),
        };
        let InFlight { operations, .. } = self.in_flight.take()?;
        results.resize_with(operations.len(), || {
            Err(TargetError::Transient(
                "the operation in flight ended without an answer".into(),
            ))
        });
        Some((operations, results))
    }

    /// Records a failure to connect or observe; returns when the target is tried again.
    /// Even a permanent one (permission denied, a bad Secret) backs off rather than
    /// waiting for the resync: reading the target is one cheap request, and the fix
    /// (an operator granting the connector's role) is often made outside the
    /// TargetSystem, so the target recovers within the backoff, not the resync.
    pub fn failed(&mut self, failure: Failure, resync: Duration) -> Instant {
        self.connector = None;
        self.failures = self.failures.saturating_add(1);
        let wait = if failure.permanent {
            backoff(self.failures).min(resync)
        } else {
            failure.wait(self.failures, resync)
        };
        let at = Instant::now() + wait;
        self.retry_at = Some(at);
        self.last_error = Some(failure);
        at
    }

    /// Records a successful full listing, made with `expected`: the cache starts afresh.
    pub fn observed(
        &mut self,
        held: AccessState,
        orphans: Vec<String>,
        findings: Vec<String>,
        expected: &BTreeMap<IdentityKey, Subject>,
    ) {
        self.failures = 0;
        self.retry_at = None;
        self.last_error = None;
        self.last_held = Some(Arc::new(held));
        self.last_orphans = orphans;
        self.last_findings = findings;
        self.listed_at = Some(Instant::now());
        self.list_due = false;
        self.background = None;
        self.stale.clear();
        self.subjects = expected
            .iter()
            .map(|(k, s)| (k.clone(), subject_hash(s)))
            .collect();
    }

    /// Records a successful re-read of the identities in `only`: their holdings in the
    /// cache are replaced by what the target showed (absent: nothing held).
    pub fn reread(
        &mut self,
        only: &BTreeSet<IdentityKey>,
        mut held: AccessState,
        expected: &BTreeMap<IdentityKey, Subject>,
    ) {
        self.failures = 0;
        self.retry_at = None;
        self.last_error = None;
        if let Some(background) = self.background.as_mut() {
            background.reread.extend(only.iter().cloned());
        }
        let cache = Arc::make_mut(self.last_held.get_or_insert_with(Default::default));
        for key in only {
            match held.identities.remove(key) {
                Some(holding) => cache.identities.insert(key.clone(), holding),
                None => cache.identities.remove(key),
            };
            self.stale.remove(key);
            match expected.get(key) {
                Some(s) => self.subjects.insert(key.clone(), subject_hash(s)),
                None => self.subjects.remove(key),
            };
        }
    }

    /// What the next plan needs read first, given every subject of the target now:
    /// `None` when the cache vouches for everything; `Some(None)` for a full listing (none
    /// yet, the resync, the drift interval passed, or more re-reads than a listing costs);
    /// `Some(Some(identities))` for a targeted re-read.
    pub fn to_read(
        &mut self,
        expected: &BTreeMap<IdentityKey, Subject>,
        drift: Duration,
        now: Instant,
    ) -> Option<Option<BTreeSet<IdentityKey>>> {
        for (key, subject) in expected {
            if self.subjects.get(key) != Some(&subject_hash(subject)) {
                self.stale.insert(key.clone());
            }
        }
        // An identity gone from the tenant altogether: nothing to plan for it any more.
        let gone: Vec<IdentityKey> = self
            .subjects
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .cloned()
            .collect();
        if !gone.is_empty()
            && let Some(cache) = self.last_held.as_mut()
        {
            let cache = Arc::make_mut(cache);
            for key in &gone {
                cache.identities.remove(key);
                self.subjects.remove(key);
                self.stale.remove(key);
            }
        }
        let listed = self.listed_at.filter(|at| now < *at + drift);
        if self.last_held.is_none() || self.list_due || listed.is_none() {
            Some(None)
        } else if self.stale.is_empty() {
            None
        } else if self.stale.len() > REREAD_MAX.max(expected.len() / 10) {
            Some(None)
        } else {
            Some(Some(self.stale.clone()))
        }
    }

    /// Brings the cache in step with operations the target confirmed (`Done` or
    /// `Unsupported`), and marks for a re-read the identities of `unsure` ones: failed,
    /// of unknown outcome, or acknowledged revocations and attribute writes that only a
    /// re-read confirms.
    pub fn applied<'a>(
        &mut self,
        confirmed: impl IntoIterator<Item = &'a Operation>,
        unsure: impl IntoIterator<Item = &'a IdentityKey>,
    ) {
        // Held as a listing would show it: without the sources of the grant.
        let as_seen: Vec<Operation> = confirmed
            .into_iter()
            .map(|op| Operation {
                sources: Default::default(),
                ..op.clone()
            })
            .collect();
        if let Some(cache) = self.last_held.as_mut() {
            Arc::make_mut(cache).apply_in_place(&as_seen);
        }
        let unsure: Vec<IdentityKey> = unsure.into_iter().cloned().collect();
        if let Some(background) = self.background.as_mut() {
            background.unsure.extend(unsure.iter().cloned());
            background.confirmed.extend(as_seen);
        }
        self.stale.extend(unsure);
    }

    /// How to get what [`Slot::to_read`] asked for. Before the first listing there is
    /// nothing to plan against, so it is made now; after it, a full listing or a large
    /// re-read runs in the background and the plan goes on against the cache, and while
    /// one runs only a few accounts it will not settle are re-read now.
    /// `reads_accounts`: the connector reads single accounts (else a re-read lists).
    pub fn choose(
        &self,
        read: Option<Option<BTreeSet<IdentityKey>>>,
        reads_accounts: bool,
    ) -> Choice {
        let Some(read) = read else {
            return Choice::Nothing;
        };
        if self.last_held.is_none() {
            return Choice::Now(None);
        }
        if let Some(background) = &self.background {
            let extra: BTreeSet<IdentityKey> = match &background.only {
                None => self.stale.clone(),
                Some(only) => self.stale.difference(only).cloned().collect(),
            };
            return if reads_accounts && !extra.is_empty() && extra.len() <= INLINE_REREAD_MAX {
                Choice::Now(Some(extra))
            } else {
                Choice::Nothing
            };
        }
        match read {
            None => Choice::Background(None),
            Some(_) if !reads_accounts => Choice::Background(None),
            Some(only) if only.len() <= INLINE_REREAD_MAX => Choice::Now(Some(only)),
            Some(only) => Choice::Background(Some(only)),
        }
    }

    /// The identities the cache cannot vouch for while a background read is running: an
    /// operation of theirs (but a leaver's cut-off) waits for it.
    pub fn waiting(&self) -> BTreeSet<IdentityKey> {
        let mut waiting = self.stale.clone();
        if let Some(Some(only)) = self.background.as_ref().map(|b| &b.only) {
            waiting.extend(only.iter().cloned());
        }
        waiting
    }

    /// The background read, once it has finished (successfully or not).
    pub fn finished(&mut self) -> Option<Finished> {
        let background = self.background.as_mut()?;
        let result = match background.result.try_recv() {
            Ok(result) => result,
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Err(oneshot::error::TryRecvError::Closed) => Err(TargetError::Transient(
                "the background read of the target ended without an answer".into(),
            )),
        };
        let background = self.background.take()?;
        Some((background, result))
    }

    /// Installs a finished background read: the target's answer, brought up to date with
    /// what was confirmed and re-read since it began. `Err` when the answer is not the
    /// kind asked for (a connector owes a listing when asked for one).
    pub fn install(&mut self, background: Background, answer: Reread) -> Result<(), TargetError> {
        let Background {
            only,
            expected,
            started,
            confirmed,
            reread,
            unsure,
            ..
        } = background;
        self.failures = 0;
        self.retry_at = None;
        self.last_error = None;
        let old = self.last_held.take().unwrap_or_default();
        let still_unsure: BTreeSet<IdentityKey> =
            self.stale.intersection(&unsure).cloned().collect();
        match (answer, only) {
            (Reread::Full(observed), _) => {
                let mut held = observed.held;
                held.apply_in_place(&confirmed);
                for key in &reread {
                    match old.identities.get(key) {
                        Some(holding) => held.identities.insert(key.clone(), holding.clone()),
                        None => held.identities.remove(key),
                    };
                }
                self.last_held = Some(Arc::new(held));
                self.last_orphans = observed.orphans;
                self.last_findings = observed.findings;
                self.listed_at = Some(started);
                let mut subjects: HashMap<IdentityKey, u64> = expected
                    .iter()
                    .map(|(k, s)| (k.clone(), subject_hash(s)))
                    .collect();
                for key in &reread {
                    match self.subjects.get(key) {
                        Some(hash) => subjects.insert(key.clone(), *hash),
                        None => subjects.remove(key),
                    };
                }
                self.subjects = subjects;
                self.stale = still_unsure;
            }
            (Reread::Accounts(mut held), Some(only)) => {
                let fresh: BTreeSet<&IdentityKey> = only.difference(&reread).collect();
                held.identities.retain(|k, _| fresh.contains(k));
                held.apply_in_place(confirmed.iter().filter(|op| fresh.contains(&*op.identity)));
                let mut cache = old;
                let state = Arc::make_mut(&mut cache);
                for key in fresh {
                    match held.identities.remove(key) {
                        Some(holding) => state.identities.insert(key.clone(), holding),
                        None => state.identities.remove(key),
                    };
                    if !still_unsure.contains(key) {
                        self.stale.remove(key);
                    }
                    match expected.get(key) {
                        Some(s) => self.subjects.insert(key.clone(), subject_hash(s)),
                        None => self.subjects.remove(key),
                    };
                }
                self.last_held = Some(cache);
            }
            (Reread::Accounts(_), None) => {
                self.last_held = Some(old);
                return Err(TargetError::Transient(
                    "the connector answered a full observation with a partial one".into(),
                ));
            }
        }
        Ok(())
    }

    /// Why the target is not to be tried now, if it is backing off.
    pub fn backing_off(&self, now: Instant) -> Option<String> {
        let at = self.retry_at.filter(|at| *at > now)?;
        let error = self
            .last_error
            .as_ref()
            .map(|f| f.message.as_str())
            .unwrap_or("an earlier failure");
        Some(format!(
            "retrying in {}s after: {error}",
            at.saturating_duration_since(now).as_secs().max(1)
        ))
    }

    /// Records an operation's failure and parks it until its retry: permanent failures
    /// wait for the resync (or a change to the spec or Secret), transient ones back off.
    pub fn park(&mut self, key: OperationKey, failure: Failure, resync: Duration) {
        let failures = self.parked.get(&key).map_or(0, |p| p.failures) + 1;
        let wait = failure.wait(failures, resync);
        self.parked.insert(
            key,
            Parked {
                failure,
                failures,
                until: Instant::now() + wait,
            },
        );
    }

    /// The earliest instant something on this target is due again.
    pub fn next_due(&self) -> Option<Instant> {
        self.retry_at
            .into_iter()
            .chain(self.parked.values().map(|p| p.until))
            .min()
    }
}

impl<C: Connector + Send + Sync + 'static> Slot<C> {
    /// Starts a read of the target in the background (`only`: `None` for a full
    /// listing); `done` is called once its answer is ready to install.
    pub fn start_read(
        &mut self,
        connector: Arc<C>,
        expected: Arc<BTreeMap<IdentityKey, Subject>>,
        only: Option<BTreeSet<IdentityKey>>,
        done: impl FnOnce() + Send + 'static,
    ) {
        let (send, result) = oneshot::channel();
        let reading = expected.clone();
        let accounts = only.clone();
        let task = tokio::spawn(async move {
            let answer = match &accounts {
                None => connector.observe(&reading).await.map(Reread::Full),
                Some(accounts) => connector.observe_accounts(&reading, accounts).await,
            };
            let _ = send.send(answer);
            done();
        });
        if only.is_none() {
            // Being served; a resync asked for meanwhile asks again.
            self.list_due = false;
        }
        self.background = Some(Background {
            only,
            expected,
            started: Instant::now(),
            confirmed: Vec::new(),
            reread: BTreeSet::new(),
            unsure: BTreeSet::new(),
            result,
            _task: AbortOnDrop(task.abort_handle()),
        });
    }
}

/// More identities to re-read than this (and than a tenth of the target's subjects) lists
/// the target in full instead.
const REREAD_MAX: usize = 256;

/// What of a subject its observation depends on: its account name and type.
fn subject_hash(subject: &Subject) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    subject.account.hash(&mut h);
    subject.identity_type.hash(&mut h);
    h.finish()
}

/// Every target's slot, by (namespace, name).
pub struct Slots<F: Factory> {
    /// The factory connectors are built with.
    pub factory: F,
    slots: HashMap<(String, String), Slot<F::Connector>>,
    /// Called with the tenant when a background read has an answer to install.
    wake: Arc<dyn Fn(&str) + Send + Sync>,
}

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The wait after `failures` consecutive transient failures: 1 s doubling up to 5 min.
pub fn backoff(failures: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

impl<F: Factory> Slots<F> {
    /// No connectors yet.
    pub fn new(factory: F) -> Self {
        Self {
            factory,
            slots: HashMap::new(),
            wake: Arc::new(|_| {}),
        }
    }

    /// Has `wake` called with the tenant whenever a background read finishes (the
    /// controller queues the tenant, so that its answer is installed at once).
    pub fn waking(mut self, wake: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.wake = Arc::new(wake);
        self
    }

    /// What a background read of the tenant calls when it finishes.
    pub fn waker(&self, namespace: &str) -> impl FnOnce() + Send + 'static {
        let wake = self.wake.clone();
        let namespace = namespace.to_string();
        move || wake(&namespace)
    }

    /// The slot of a target, reset when its fingerprint changed.
    pub fn slot(
        &mut self,
        namespace: &str,
        name: &str,
        fingerprint: &Fingerprint,
    ) -> &mut Slot<F::Connector> {
        let slot = self
            .slots
            .entry((namespace.to_string(), name.to_string()))
            .or_insert_with(|| Slot::new(fingerprint.clone()));
        if slot.fingerprint != *fingerprint {
            // A changed spec or a rotated Secret: a new connector and clean schedules.
            *slot = Slot::new(fingerprint.clone());
        }
        slot
    }

    /// An existing slot.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Slot<F::Connector>> {
        self.slots.get(&(namespace.to_string(), name.to_string()))
    }

    /// An existing slot, mutably.
    pub fn get_mut(&mut self, namespace: &str, name: &str) -> Option<&mut Slot<F::Connector>> {
        self.slots
            .get_mut(&(namespace.to_string(), name.to_string()))
    }

    /// Forgets the tenant's targets that no longer exist.
    pub fn retain(&mut self, namespace: &str, live: &BTreeSet<String>) {
        self.slots
            .retain(|(ns, name), _| ns != namespace || live.contains(name));
    }

    /// The earliest instant a target of the tenant is due again.
    pub fn next_due(&self, namespace: &str) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .filter_map(|(_, s)| s.next_due())
            .min()
    }

    /// Waits until every background read and every round in flight has its answer (left
    /// for the next pass to install or record).
    #[cfg(test)]
    pub async fn settle(&mut self) {
        for slot in self.slots.values_mut() {
            if let Some(background) = slot.background.as_mut() {
                let answer = (&mut background.result).await.unwrap_or_else(|_| {
                    Err(TargetError::Transient(
                        "the read ended without an answer".into(),
                    ))
                });
                let (send, result) = oneshot::channel();
                let _ = send.send(answer);
                background.result = result;
            }
            if let Some(in_flight) = slot.in_flight.as_mut() {
                let answers = (&mut in_flight.answer).await.unwrap_or_default();
                let (send, answer) = oneshot::channel();
                let _ = send.send(answers);
                in_flight.answer = answer;
            }
        }
    }

    /// Clears the permanent parks of a tenant (the resync retries them) and has its
    /// targets listed in full at its next pass.
    pub fn resync(&mut self, namespace: &str) {
        for ((ns, _), slot) in &mut self.slots {
            if ns == namespace {
                slot.parked.retain(|_, p| !p.failure.permanent);
                slot.list_due = true;
                if slot.last_error.as_ref().is_some_and(|e| e.permanent) {
                    slot.retry_at = None;
                }
            }
        }
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

    #[test]
    fn errors_are_classified_for_the_retry_schedule() {
        let cases = [
            (TargetError::Transient("t".into()), false, None),
            (TargetError::Permanent("p".into()), true, Some("Rejected")),
            (
                TargetError::Config("c".into()),
                true,
                Some("InvalidConfiguration"),
            ),
        ];
        for (error, permanent, reason) in cases {
            let f = Failure::of(&error);
            assert_eq!((f.permanent, f.reason), (permanent, reason), "{error}");
        }
    }

    #[test]
    fn a_retry_after_hint_is_honoured_when_longer_than_the_backoff() {
        let key = (IdentityKey::new("t", "a"), Action::DisableAccount);
        let mut slot: Slot<()> = Slot::new((Some(1), None));
        let resync = Duration::from_secs(300);
        let throttled = TargetError::RetryAfter("429".into(), Duration::from_secs(30));
        assert!(throttled.is_transient());
        slot.park(key.clone(), Failure::of(&throttled), resync);
        let until = slot.parked[&key].until;
        assert!(
            until >= Instant::now() + Duration::from_secs(29),
            "not before the hint"
        );
        assert!(
            until <= Instant::now() + Duration::from_secs(31),
            "and not the resync"
        );
    }

    #[test]
    fn a_permanent_failure_waits_for_the_resync_and_a_transient_one_backs_off() {
        let key = (IdentityKey::new("t", "a"), Action::DisableAccount);
        let mut slot: Slot<()> = Slot::new((Some(1), None));
        let resync = Duration::from_secs(300);
        slot.park(
            key.clone(),
            Failure::of(&TargetError::Transient("x".into())),
            resync,
        );
        let first = slot.parked[&key].until;
        assert!(first <= Instant::now() + Duration::from_secs(2));
        slot.park(
            key.clone(),
            Failure::of(&TargetError::Permanent("501".into())),
            resync,
        );
        assert!(slot.parked[&key].until >= Instant::now() + Duration::from_secs(299));
        assert_eq!(slot.parked[&key].failures, 2);
    }
}
