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
use crate::targets::{AnyConnector, Connector, Credentials, Subject, TargetConfig, TargetError};

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
        }
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
        let listed = self.listed_at.filter(|at| now < *at + drift);
        if self.last_held.is_none() || self.list_due || listed.is_none() {
            return Some(None);
        }
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
        if self.stale.is_empty() {
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
        if let Some(cache) = self.last_held.as_mut() {
            // Held as a listing would show it: without the sources of the grant.
            let as_seen: Vec<Operation> = confirmed
                .into_iter()
                .map(|op| Operation {
                    sources: Default::default(),
                    ..op.clone()
                })
                .collect();
            Arc::make_mut(cache).apply_in_place(&as_seen);
        }
        self.stale.extend(unsure.into_iter().cloned());
    }

    /// Whether the next [`Slot::to_read`] with these arguments ends in a full listing
    /// (without marking anything): it asks for one, or it asks for a re-read and the
    /// connector cannot read a few accounts alone (`reads_accounts` false).
    pub fn lists_next(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
        drift: Duration,
        now: Instant,
        reads_accounts: bool,
    ) -> bool {
        let fresh = !self.list_due && self.listed_at.is_some_and(|at| now < at + drift);
        if self.last_held.is_none() || !fresh {
            return true;
        }
        let changed = expected
            .iter()
            .filter(|(k, s)| {
                self.subjects.get(*k) != Some(&subject_hash(s)) && !self.stale.contains(*k)
            })
            .count();
        let rereads = self.stale.len() + changed;
        rereads > REREAD_MAX.max(expected.len() / 10) || (rereads > 0 && !reads_accounts)
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
        }
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
