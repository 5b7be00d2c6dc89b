//! One tenant's pass, as a staged pipeline with a type for each stage:
//! **observe** ([`observe`]: bring each target's cached state up to date: a full listing
//! when one is due, else a re-read of the accounts the cache cannot vouch for, else
//! nothing) → **decide** once, purely ([`crate::plan::decide`]) → **apply** ([`apply`]:
//! cut-offs first, then revocations, then grants, in rounds that yield to a newer change;
//! one outcome per operation) → **report** (pure, in [`super::status`]). Once a target's
//! cache exists, a full listing due (or a large re-read) runs in the background and the
//! pass plans against the cache meanwhile: an identity the cache cannot vouch for waits
//! for it, but a leaver's cut-off never does.
//!
//! Nothing here talks to the API server: connectors come from a [`Factory`], leadership
//! is a callback checked before every apply batch, so the whole path runs in unit tests
//! with scripted connectors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::connectors::{Choice, Factory, Failure, InFlight, OperationKey, Slot, Slots};
use crate::api::Identity;
use crate::engine::{AccountIntent, Engine, IdentityKey, Settings, Snapshot};
use crate::http::{Metrics, OperationLabels, TargetLabels};
use crate::plan::decide::{Decision, Hold, TargetView, decide, is_cut_off};
use crate::plan::{Action, Operation};
use crate::targets::{Applied, Connector, Reread, Subject, TargetError};
use kube::core::DeserializeGuard;

/// How long an acknowledgement waits for the re-observation that confirms it. A planned
/// operation that the target acknowledged less than this ago is not sent again: the
/// target said it did it, yet still shows the access, so the operation fails instead of
/// being repeated for ever.
const CONFIRM_WINDOW: Duration = Duration::from_secs(120);

/// The objects of one tenant (namespace) from the caches.
#[derive(Clone, Debug, Default)]
pub struct TenantObjects {
    /// The namespace.
    pub namespace: String,
    /// Identities not being deleted, shared with the watch cache.
    pub identities: Vec<SharedIdentity>,
    /// Identities being deleted: planned as leavers, their finalizer held until revoked.
    pub deleting: Vec<SharedIdentity>,
    /// Access policies.
    pub policies: Vec<crate::api::AccessPolicy>,
    /// Exceptions.
    pub exceptions: Vec<crate::api::Exception>,
    /// Target systems.
    pub targets: Vec<crate::api::TargetSystem>,
    /// Access reviews.
    pub reviews: Vec<crate::api::AccessReview>,
    /// Reviewers' answers.
    pub responses: Vec<crate::api::AccessReviewResponse>,
}

impl TenantObjects {
    /// Every identity of the tenant, present and being deleted.
    pub fn all_identities(&self) -> impl Iterator<Item = &Identity> {
        self.identities
            .iter()
            .chain(&self.deleting)
            .map(SharedIdentity::get)
    }

    /// The engine's input (the identities not being deleted and every other kind), copied:
    /// only for building an engine from scratch.
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            identities: self.identities.iter().map(|i| i.get().clone()).collect(),
            policies: self.policies.clone(),
            exceptions: self.exceptions.clone(),
            targets: self.targets.clone(),
            reviews: self.reviews.clone(),
            responses: self.responses.clone(),
        }
    }
}

/// An Identity shared with the watch cache rather than copied every pass.
#[derive(Clone, Debug)]
pub struct SharedIdentity(Arc<DeserializeGuard<Identity>>);

impl SharedIdentity {
    /// Wraps an Identity the caller owns.
    pub fn new(identity: Identity) -> Self {
        Self(Arc::new(DeserializeGuard(Ok(identity))))
    }

    /// Shares a cached object; `None` when it did not deserialize.
    pub fn from_cache(object: Arc<DeserializeGuard<Identity>>) -> Option<Self> {
        object.0.is_ok().then_some(Self(object))
    }

    /// The Identity.
    pub fn get(&self) -> &Identity {
        match &self.0.0 {
            Ok(identity) => identity,
            Err(_) => unreachable!("only deserialized objects are shared"),
        }
    }
}

/// What happened to one planned operation this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The target acknowledged it.
    Done,
    /// The target has no such notion (the sessions of a Kubernetes user): nothing to do.
    Unsupported,
    /// Tried this pass; the target refused or failed.
    Failed(Failure),
    /// Not tried: it failed before and waits for its retry.
    Parked(Failure),
    /// Not tried, with the reason (Observe mode, the guard, an unreachable target, a
    /// revocation of the same identity not done yet).
    Held(String),
}

impl Outcome {
    /// The target holds what the operation asked for.
    pub fn succeeded(&self) -> bool {
        matches!(self, Self::Done | Self::Unsupported)
    }
}

/// What the apply stage did on one target.
#[derive(Clone, Debug, Default)]
pub struct TargetOutcome {
    /// One outcome per operation of the target's plan, in the same order.
    pub outcomes: Vec<Outcome>,
    /// Why the target could not be observed (then nothing was applied).
    pub unreachable: Option<Failure>,
    /// Orphan accounts of the last observation.
    pub orphans: Vec<String>,
    /// Connector findings of the last observation.
    pub findings: Vec<String>,
    /// Every operation that failed and waits for its retry, including ones of earlier
    /// passes no longer planned the same way: `(operation, failure)`.
    pub parked: Vec<(String, Failure)>,
}

/// A tenant's pass: the decision and what applying it did.
#[derive(Clone, Debug)]
pub struct PassResult {
    /// The one decision of the pass.
    pub decision: Decision,
    /// Per target.
    pub targets: BTreeMap<String, TargetOutcome>,
    /// The subjects the pass used, by identity.
    pub subjects: BTreeMap<IdentityKey, crate::api::IdentityType>,
    /// Cut-offs or revocations were acknowledged this pass: a re-observation soon turns
    /// them into confirmed revocations.
    pub confirm_soon: bool,
    /// When something of this tenant is due again (a retry, a target's backoff).
    pub next_retry: Option<Instant>,
    /// Leavers by end date: the instant the date passed (the revocation SLA's start).
    pub leaver_dates: BTreeMap<IdentityKey, Timestamp>,
    /// A change queued meanwhile went first: the rest of the work was deferred (its
    /// outcomes say [`DEFERRED`]) to a pass due at once. Holds the identities that had an
    /// operation with another outcome: only theirs are worth reporting now.
    pub deferred: Option<BTreeSet<IdentityKey>>,
}

/// What the pass needs besides the objects.
pub struct PassContext<'a> {
    /// The instant lifecycle rules are evaluated at.
    pub now: Timestamp,
    /// Engine settings.
    pub settings: &'a Settings,
    /// How long a permanent failure waits before it is retried without a change.
    pub resync: Duration,
    /// Whether this replica still leads; checked before every apply batch.
    pub leading: &'a (dyn Fn() -> bool + Sync),
    /// Whether a change is queued (for any tenant): checked between apply rounds of
    /// revocations and grants, so that a newer change (a leaver) goes ahead of what is
    /// left of a large batch.
    pub preempted: &'a (dyn Fn() -> bool + Sync),
    /// Metrics to update.
    pub metrics: &'a Metrics,
}

/// The leader lost the Lease during the pass: nothing more was written.
#[derive(Debug, PartialEq, Eq)]
pub struct LostLeadership;

fn account_of(identity: &Identity, target: &str, name: &str) -> String {
    identity
        .spec
        .accounts
        .get(target)
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

fn key_of(meta: &kube::api::ObjectMeta) -> IdentityKey {
    IdentityKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The subjects of a target: every identity of the tenant, enabled as `intent` says.
fn subjects(
    tenant: &TenantObjects,
    target: &str,
    intent: &dyn Fn(&IdentityKey) -> bool,
) -> BTreeMap<IdentityKey, Subject> {
    tenant
        .all_identities()
        .map(|identity| {
            let key = key_of(&identity.metadata);
            let subject = Subject {
                identity: key.clone(),
                identity_type: identity.spec.type_,
                account: account_of(identity, target, &key.name),
                enabled: intent(&key),
            };
            (key, subject)
        })
        .collect()
}

/// Runs one tenant's pass with the tenant's engine (kept up to date by the caller). `Err`
/// when leadership was lost before an apply batch.
pub async fn run<F: Factory>(
    slots: &mut Slots<F>,
    tenant: &TenantObjects,
    engine: &Engine,
    ctx: &PassContext<'_>,
) -> Result<PassResult, LostLeadership> {
    let namespace = tenant.namespace.as_str();
    let live: BTreeSet<String> = tenant
        .targets
        .iter()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    slots.retain(namespace, &live);
    let started = Instant::now();
    let (views, waiting) = observe(slots, tenant, ctx).await;
    let observed = started.elapsed();
    let decision = decide(engine, namespace, ctx.now, &views);
    let decided = started.elapsed();
    // The views share the targets' caches; dropped so that the apply stage updates the
    // caches in place rather than copying them.
    drop(views);
    let outcomes = apply(slots, tenant, &decision, &waiting, ctx).await?;
    tracing::debug!(%namespace, ?observed, ?decided, applied = ?started.elapsed(), "pass stages");
    let (mut targets, confirm_soon, was_deferred) = outcomes;
    let deferred = was_deferred.then(|| {
        targets
            .iter()
            .flat_map(|(name, out)| {
                let plan = decision.targets.get(name);
                out.outcomes.iter().enumerate().filter_map(move |(i, o)| {
                    let deferred = matches!(o, Outcome::Held(why) if why == DEFERRED);
                    let op = plan?.operations.get(i)?;
                    (!deferred).then(|| (*op.identity).clone())
                })
            })
            .collect()
    });
    for target in &tenant.targets {
        let name = target.metadata.name.clone().unwrap_or_default();
        let out = targets.entry(name.clone()).or_default();
        if let Some(slot) = slots.get(namespace, &name) {
            out.orphans = slot.last_orphans.clone();
            out.findings = slot.last_findings.clone();
            out.unreachable = slot.last_error.clone();
            out.parked = slot
                .parked
                .iter()
                .map(|((identity, action), p)| (describe(identity, action), p.failure.clone()))
                .collect();
        }
    }
    let subjects = tenant
        .all_identities()
        .map(|i| (key_of(&i.metadata), i.spec.type_))
        .collect();
    let leaver_dates = decision
        .desired
        .identities
        .iter()
        .filter(|(_, a)| a.account == AccountIntent::Revoked)
        .filter_map(|(k, _)| engine.leaver_since(k, ctx.now).map(|t| (k.clone(), t)))
        .collect();
    Ok(PassResult {
        deferred,
        leaver_dates,
        decision,
        targets,
        subjects,
        confirm_soon,
        next_retry: slots.next_due(namespace),
    })
}

/// `revoke corp-ldap:finance for acme/alice`: an operation, for messages.
pub fn describe(identity: &IdentityKey, action: &Action) -> String {
    match action {
        Action::Grant { entitlement } | Action::Revoke { entitlement } => {
            format!("{} {entitlement} for {identity}", action.name())
        }
        _ => format!("{} for {identity}", action.name()),
    }
}

/// What one target needs read before the plan.
enum Read {
    /// The whole target.
    Full,
    /// A few accounts.
    Accounts(BTreeSet<IdentityKey>),
}

/// Identities per target whose operations (but a leaver's cut-off) wait for the read in
/// progress in the background: the cache cannot vouch for them.
pub type Waiting = BTreeMap<String, BTreeSet<IdentityKey>>;

/// Brings every target's observed state up to date (those not backing off), concurrently:
/// installs a background read that finished; then reads what the plan needs now (the
/// first listing, a few accounts) and starts in the background what it need not wait for
/// (a full listing due, a large re-read).
async fn observe<F: Factory>(
    slots: &mut Slots<F>,
    tenant: &TenantObjects,
    ctx: &PassContext<'_>,
) -> (Vec<TargetView>, Waiting) {
    let namespace = tenant.namespace.as_str();
    // Connect first (sequentially: it touches the slots), then read concurrently.
    let mut work = Vec::new();
    let mut views = Vec::new();
    for target in &tenant.targets {
        let name = target.metadata.name.clone().unwrap_or_default();
        let loaded = slots.factory.load(target).await;
        let labels = TargetLabels {
            namespace: namespace.to_string(),
            target: name.clone(),
        };
        let slot = slots.slot(namespace, &name, &loaded.fingerprint);
        if let Some((background, answer)) = slot.finished() {
            let full = background.only.is_none();
            match answer.and_then(|answer| slot.install(background, answer)) {
                Ok(()) if full => {
                    ctx.metrics.target_observations.get_or_create(&labels).inc();
                }
                Ok(()) => {
                    ctx.metrics.target_rereads.get_or_create(&labels).inc();
                }
                Err(error) => {
                    ctx.metrics.errors.inc();
                    tracing::info!(%namespace, target = %name, %error, "background read failed");
                    slot.failed(Failure::of(&error), ctx.resync);
                }
            }
        }
        if let Some((operations, answers)) = slot.landed() {
            // A round an earlier pass stopped waiting for: its answers go into the cache
            // (and what they leave unsure is re-read below) before anything is planned.
            record(slot, namespace, &name, operations.iter().zip(answers), ctx);
        }
        let now = Instant::now();
        let last = slot.last_held.clone().unwrap_or_default();
        if let Some(why) = slot.backing_off(now) {
            views.push(view(&name, last, Some(why), false));
            continue;
        }
        let expected = subjects(tenant, &name, &|_| false);
        let read = slot.to_read(&expected, target.spec.drift_interval(), now);
        let connector = match &slot.connector {
            Some(c) => Ok(c.clone()),
            None => match loaded.config {
                Err(e) => Err(e),
                Ok(config) => match slots.factory.connect(&config).await {
                    Ok(c) => {
                        let c = Arc::new(c);
                        slots.slot(namespace, &name, &loaded.fingerprint).connector =
                            Some(c.clone());
                        Ok(c)
                    }
                    Err(e) => Err(e),
                },
            },
        };
        match connector {
            Ok(c) => {
                let case_insensitive = c.capabilities().case_insensitive_names;
                let wake = slots.waker(namespace);
                let slot = slots.slot(namespace, &name, &loaded.fingerprint);
                let choice = match slot.choose(read, c.reads_accounts()) {
                    // Still answering an earlier round: a re-read would queue behind it and
                    // hold up this pass everywhere (a leaver's cut-offs too). The target gets
                    // only cut-offs meanwhile; the pass its answer wakes re-reads.
                    Choice::Now(Some(_)) if slot.in_flight.is_some() => Choice::Nothing,
                    choice => choice,
                };
                match choice {
                    Choice::Nothing => views.push(view(&name, last, None, case_insensitive)),
                    Choice::Now(None) => work.push((name, c, expected, Read::Full)),
                    Choice::Now(Some(only)) => {
                        work.push((name, c, expected, Read::Accounts(only)));
                    }
                    Choice::Background(only) => {
                        tracing::debug!(%namespace, target = %name, full = only.is_none(), "reading in the background");
                        slot.start_read(c, Arc::new(expected), only, wake);
                        views.push(view(&name, last, None, case_insensitive));
                    }
                }
            }
            Err(error) => {
                ctx.metrics.errors.inc();
                let failure = Failure::of(&error);
                let message = failure.message.clone();
                let slot = slots.slot(namespace, &name, &loaded.fingerprint);
                slot.failed(failure, ctx.resync);
                views.push(view(&name, last, Some(message), false));
            }
        }
    }
    let reads = futures::future::join_all(work.iter().map(|(_, connector, expected, read)| {
        let connector = connector.clone();
        async move {
            match read {
                Read::Full => connector.observe(expected).await.map(Reread::Full),
                Read::Accounts(only) => connector.observe_accounts(expected, only).await,
            }
        }
    }))
    .await;
    for ((name, connector, expected, read), result) in work.into_iter().zip(reads) {
        let labels = TargetLabels {
            namespace: namespace.to_string(),
            target: name.clone(),
        };
        let Some(slot) = slots.get_mut(namespace, &name) else {
            continue;
        };
        let case_insensitive = connector.capabilities().case_insensitive_names;
        match (result, read) {
            (Ok(Reread::Full(observed)), _) => {
                ctx.metrics.target_observations.get_or_create(&labels).inc();
                slot.observed(
                    observed.held,
                    observed.orphans,
                    observed.findings,
                    &expected,
                );
            }
            (Ok(Reread::Accounts(held)), Read::Accounts(only)) => {
                ctx.metrics.target_rereads.get_or_create(&labels).inc();
                slot.reread(&only, held, &expected);
            }
            (Ok(Reread::Accounts(_)), Read::Full) => {
                // A connector owes a full listing when asked for one.
                ctx.metrics.errors.inc();
                let failure = Failure::of(&TargetError::Transient(
                    "the connector answered a full observation with a partial one".into(),
                ));
                let message = failure.message.clone();
                let last = slot.last_held.clone().unwrap_or_default();
                slot.failed(failure, ctx.resync);
                views.push(view(&name, last, Some(message), case_insensitive));
                continue;
            }
            (Err(error), _) => {
                ctx.metrics.target_observations.get_or_create(&labels).inc();
                ctx.metrics.errors.inc();
                tracing::info!(%namespace, target = %name, %error, "observation failed");
                let failure = Failure::of(&error);
                let message = failure.message.clone();
                let last = slot.last_held.clone().unwrap_or_default();
                slot.failed(failure, ctx.resync);
                views.push(view(&name, last, Some(message), case_insensitive));
                continue;
            }
        }
        let held = slot.last_held.clone().unwrap_or_default();
        views.push(view(&name, held, None, case_insensitive));
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    let waiting = tenant
        .targets
        .iter()
        .filter_map(|t| t.metadata.name.as_deref())
        .filter_map(|name| {
            let slot = slots.get(namespace, name)?;
            slot.background.as_ref()?;
            Some((name.to_string(), slot.waiting()))
        })
        .filter(|(_, w)| !w.is_empty())
        .collect();
    (views, waiting)
}

fn view(
    name: &str,
    held: Arc<crate::plan::AccessState>,
    not_observed: Option<String>,
    case_insensitive: bool,
) -> TargetView {
    TargetView {
        name: name.to_string(),
        held,
        not_observed,
        case_insensitive,
    }
}

/// Which step of the apply stage an action belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    /// Account disables and session revocations: nothing waits in front of them.
    CutOff,
    /// Entitlement revocations and account deletions.
    Revoke,
    /// Account creation and enabling, grants: only for identities with nothing left to
    /// revoke.
    Grant,
}

fn step_of(action: &Action) -> Step {
    if is_cut_off(action) {
        Step::CutOff
    } else if action.is_revocation() {
        Step::Revoke
    } else {
        Step::Grant
    }
}

/// Outcomes per target, whether a re-observation should confirm soon, and whether work
/// was deferred to the next pass (a change queued meanwhile went first).
type Applied2 = (BTreeMap<String, TargetOutcome>, bool, bool);

/// Operations per target in one apply round of revocations or grants: a change queued
/// meanwhile (a leaver's cut-off) waits for at most one round.
pub const APPLY_BATCH: usize = 32;

/// How often a pass waiting for a target's answers looks at the queue: a change queued
/// meanwhile (a leaver) stops the wait (the answers are recorded by the next pass).
const PREEMPT_POLL: Duration = Duration::from_millis(20);

/// The outcome of operations left for the next pass when a newer change went first.
pub const DEFERRED: &str = "deferred: a newer change went first; continued in the next pass";

/// Applies the decision in three steps across all the tenant's targets at once: every
/// cut-off, then every revocation, then the grants of identities whose revocations all
/// succeeded. Each operation gets its own outcome; one failure never stops another.
async fn apply<F: Factory>(
    slots: &mut Slots<F>,
    tenant: &TenantObjects,
    decision: &Decision,
    waiting: &Waiting,
    ctx: &PassContext<'_>,
) -> Result<Applied2, LostLeadership> {
    let namespace = tenant.namespace.as_str();
    let now = Instant::now();
    let enabled = |key: &IdentityKey| {
        decision
            .desired
            .identities
            .get(key)
            .is_some_and(|a| a.account == AccountIntent::Enabled)
    };
    // `None`: still to be sent, in its step.
    let mut results: BTreeMap<String, Vec<Option<Outcome>>> = BTreeMap::new();
    let mut subjects_by_target: BTreeMap<String, BTreeMap<IdentityKey, Subject>> = BTreeMap::new();
    // Outcomes decided before anything is sent: holds, parks, unconfirmed acknowledgements.
    for (name, plan) in &decision.targets {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; plan.operations.len()];
        let slot = slots.get_mut(namespace, name);
        if let Some(slot) = slot {
            if plan.observed {
                let planned: BTreeSet<OperationKey> = plan
                    .operations
                    .iter()
                    .map(|op| ((*op.identity).clone(), op.action.clone()))
                    .collect();
                // What is no longer planned needs no retry; what was acknowledged and is
                // planned again was not done, whatever the target answered.
                slot.parked.retain(|k, _| planned.contains(k));
                let acknowledged = std::mem::take(&mut slot.acknowledged);
                let waits = |key: &IdentityKey| waiting.get(name).is_some_and(|w| w.contains(key));
                for (i, op) in plan.operations.iter().enumerate() {
                    let key = ((*op.identity).clone(), op.action.clone());
                    let acked = acknowledged
                        .get(&key)
                        .copied()
                        .filter(|at| now.saturating_duration_since(*at) < CONFIRM_WINDOW);
                    if waits(&op.identity) {
                        // Planned against a cache that cannot vouch for this identity: only
                        // a cut-off not yet acknowledged goes; the rest waits for the read
                        // in progress, which also settles what was acknowledged.
                        if let Some(at) = acked {
                            slot.acknowledged.insert(key, at);
                        }
                        if acked.is_some() || !is_cut_off(&op.action) {
                            outcomes[i] = Some(Outcome::Held(format!(
                                "waiting for the read of {name} in progress: its last observation cannot vouch for {}",
                                op.identity
                            )));
                        }
                        continue;
                    }
                    if acked.is_some() {
                        let failure = Failure {
                            permanent: true,
                            reason: Some("Rejected"),
                            message: format!(
                                "the target acknowledged {} but a re-observation still shows it undone; not sent again until the resync",
                                describe(&op.identity, &op.action)
                            ),
                            retry_after: None,
                        };
                        slot.park(key, failure.clone(), ctx.resync);
                        outcomes[i] = Some(Outcome::Failed(failure));
                    }
                }
            }
            // While a round of an earlier pass is still being answered, the target gets
            // nothing but cut-offs: at most one round is ever in flight besides them.
            let busy = slot.in_flight.as_ref().map(|f| f.operations.len());
            for (i, op) in plan.operations.iter().enumerate() {
                if outcomes[i].is_some() {
                    continue;
                }
                if let Some(n) = busy.filter(|_| !is_cut_off(&op.action)) {
                    outcomes[i] = Some(Outcome::Held(format!(
                        "waiting for {name} to answer {n} operations sent before a newer change went first"
                    )));
                    continue;
                }
                if !plan.may_apply(op) {
                    let why = plan.hold.as_ref().map(|h| h.message()).unwrap_or_default();
                    outcomes[i] = Some(Outcome::Held(why));
                    continue;
                }
                let key = ((*op.identity).clone(), op.action.clone());
                if let Some(p) = slot.parked.get(&key).filter(|p| p.until > now) {
                    outcomes[i] = Some(Outcome::Parked(p.failure.clone()));
                }
            }
        } else {
            for o in &mut outcomes {
                *o = Some(Outcome::Held("target not connected".into()));
            }
        }
        results.insert(name.clone(), outcomes);
        subjects_by_target.insert(name.clone(), subjects(tenant, name, &enabled));
    }
    let mut confirm_soon = false;
    // Rounds of work sent this pass, and whether the rest was deferred to the next pass.
    let mut rounds = 0usize;
    let mut deferred = false;
    for step in [Step::CutOff, Step::Revoke, Step::Grant] {
        // Identities with a revocation not done: their grants wait (revocations are
        // applied before grants, per identity, across every target).
        let blocked: BTreeSet<IdentityKey> = if step == Step::Grant {
            decision
                .targets
                .iter()
                .flat_map(|(name, plan)| {
                    let observe_only = plan.hold == Some(Hold::ObserveMode);
                    plan.operations
                        .iter()
                        .zip(&results[name])
                        .filter(move |(op, o)| {
                            op.action.is_revocation()
                                && !observe_only
                                && !o.as_ref().is_some_and(Outcome::succeeded)
                        })
                        .map(|(op, _)| (*op.identity).clone())
                })
                .collect()
        } else {
            BTreeSet::new()
        };
        let mut batches = Vec::new();
        for (name, plan) in &decision.targets {
            let outcome = results.get_mut(name).expect("inserted above");
            let subjects = &subjects_by_target[name];
            // An account whose creation already failed (or waits for its retry) gets nothing
            // else on this target: its grants would only fail for want of the account.
            let uncreated: BTreeSet<IdentityKey> = plan
                .operations
                .iter()
                .zip(outcome.iter())
                .filter(|(op, o)| {
                    matches!(op.action, Action::CreateAccount { .. })
                        && o.as_ref().is_some_and(|o| !o.succeeded())
                })
                .map(|(op, _)| (*op.identity).clone())
                .collect();
            let mut indices = Vec::new();
            for (i, op) in plan.operations.iter().enumerate() {
                if step_of(&op.action) != step || outcome[i].is_some() {
                    continue;
                }
                if !subjects.contains_key(&*op.identity) {
                    outcome[i] = Some(Outcome::Failed(Failure {
                        permanent: true,
                        reason: Some("Rejected"),
                        message: format!("no Identity {} is known to act for", op.identity),
                        retry_after: None,
                    }));
                    continue;
                }
                if blocked.contains(&*op.identity) {
                    outcome[i] = Some(Outcome::Held(format!(
                        "waiting until every revocation of {} succeeds",
                        op.identity
                    )));
                    continue;
                }
                if uncreated.contains(&*op.identity)
                    && !matches!(op.action, Action::CreateAccount { .. })
                {
                    outcome[i] = Some(Outcome::Held(format!(
                        "waiting until the account of {} is created on {name}",
                        op.identity
                    )));
                    continue;
                }
                indices.push(i);
            }
            if indices.is_empty() {
                continue;
            }
            let Some(connector) = slots.get(namespace, name).and_then(|s| s.connector.clone())
            else {
                for i in indices {
                    outcome[i] = Some(Outcome::Held("target not connected".into()));
                }
                continue;
            };
            batches.push((name.clone(), indices, connector));
        }
        // Cut-offs go in one round; other work in rounds of at most APPLY_BATCH operations
        // per target, and a change queued meanwhile (a leaver) goes ahead of what is left.
        let size = if step == Step::CutOff {
            usize::MAX
        } else {
            APPLY_BATCH
        };
        let mut offset = 0;
        loop {
            let round: Vec<_> = batches
                .iter()
                .filter(|(_, indices, _)| offset < indices.len())
                .map(|(name, indices, connector)| {
                    let end = indices.len().min(offset.saturating_add(size));
                    (name, &indices[offset..end], connector)
                })
                .collect();
            if round.is_empty() {
                break;
            }
            if step != Step::CutOff && rounds > 0 && (ctx.preempted)() {
                // What is left (here and in the later steps) is marked deferred below.
                deferred = true;
                break;
            }
            if !(ctx.leading)() {
                tracing::warn!(%namespace, "lost the Lease; stopping before the next apply batch");
                return Err(LostLeadership);
            }
            // Each target's share is sent as its own task. A change queued while a slow
            // target is still answering (a leaver) does not wait for it: the pass stops
            // waiting, the task goes on, and its answers are recorded by the next pass.
            let mut sending: Vec<(&String, &[usize], tokio::task::JoinHandle<_>)> = round
                .iter()
                .map(|(name, indices, connector)| {
                    let plan = &decision.targets[*name];
                    let subjects = &subjects_by_target[*name];
                    let owned: Vec<(Operation, Subject)> = indices
                        .iter()
                        .filter_map(|&i| {
                            let op = &plan.operations[i];
                            subjects.get(&op.identity).map(|s| (op.clone(), s.clone()))
                        })
                        .collect();
                    let connector = Arc::clone(connector);
                    let (namespace, target) = (namespace.to_string(), (*name).clone());
                    let task = tokio::spawn(async move {
                        let pairs: Vec<(&Operation, &Subject)> =
                            owned.iter().map(|(op, s)| (op, s)).collect();
                        let sent_at = Instant::now();
                        let out = connector.apply_batch(&pairs).await;
                        tracing::debug!(%namespace, %target, operations = pairs.len(), took = ?sent_at.elapsed(), "apply round");
                        out
                    });
                    (*name, *indices, task)
                })
                .collect();
            let mut answered = Vec::new();
            let mut detached: Vec<(&String, &[usize])> = Vec::new();
            while !sending.is_empty() {
                let next = futures::future::select_all(sending.iter_mut().map(|(_, _, t)| t));
                match tokio::time::timeout(PREEMPT_POLL, next).await {
                    Ok((joined, at, _)) => {
                        let (name, indices, _) = sending.swap_remove(at);
                        // A connector owes one result per operation; a missing one (or a
                        // task that died) is a failure.
                        let mut out = joined.unwrap_or_default();
                        out.resize_with(indices.len(), || {
                            Err(TargetError::Transient(
                                "the connector returned no result for this operation".into(),
                            ))
                        });
                        answered.push(((name, indices), out));
                    }
                    Err(_) if step != Step::CutOff && (ctx.preempted)() => {
                        for (name, indices, task) in sending.drain(..) {
                            let plan = &decision.targets[name];
                            let operations = indices
                                .iter()
                                .map(|&i| plan.operations[i].clone())
                                .collect();
                            let done = slots.waker(namespace);
                            if let Some(slot) = slots.get_mut(namespace, name) {
                                slot.in_flight = Some(InFlight::watch(operations, task, done));
                            }
                            detached.push((name, indices));
                        }
                    }
                    Err(_) => {}
                }
            }
            for ((name, indices), results_of) in answered {
                let plan = &decision.targets[name];
                let Some(slot) = slots.get_mut(namespace, name) else {
                    continue;
                };
                let outcome = results.get_mut(name).expect("inserted above");
                let ops = indices.iter().map(|&i| &plan.operations[i]);
                let (outcomes, confirm) = record(slot, namespace, name, ops.zip(results_of), ctx);
                confirm_soon |= confirm;
                for (&i, o) in indices.iter().zip(outcomes) {
                    outcome[i] = Some(o);
                }
            }
            if !detached.is_empty() {
                // The rest of the round is answered meanwhile and recorded by the next pass;
                // what was left of this one is marked deferred below.
                for (name, indices) in detached {
                    let outcome = results.get_mut(name).expect("inserted above");
                    for i in indices {
                        outcome[*i] = Some(Outcome::Held(DEFERRED.into()));
                    }
                }
                deferred = true;
                break;
            }
            rounds += 1;
            offset = offset.saturating_add(size);
        }
        if deferred {
            break;
        }
    }
    let results = results
        .into_iter()
        .map(|(name, outcomes)| {
            let outcomes = outcomes
                .into_iter()
                .map(|o| {
                    o.unwrap_or_else(|| {
                        Outcome::Held(if deferred { DEFERRED } else { "not sent" }.into())
                    })
                })
                .collect();
            (
                name,
                TargetOutcome {
                    outcomes,
                    ..TargetOutcome::default()
                },
            )
        })
        .collect();
    Ok((results, confirm_soon, deferred))
}

/// Records a target's answers to operations sent to it: metrics, parked failures,
/// acknowledgements that await the re-observation confirming them, and the cache.
/// Returns each operation's outcome, and whether a re-observation should confirm soon.
fn record<'a, C>(
    slot: &mut Slot<C>,
    namespace: &str,
    target: &str,
    answered: impl IntoIterator<Item = (&'a Operation, Result<Applied, TargetError>)>,
    ctx: &PassContext<'_>,
) -> (Vec<Outcome>, bool) {
    let mut confirm_soon = false;
    let mut outcomes = Vec::new();
    // For the cache: what the target confirmed, and whose state is now unsure.
    let mut confirmed: Vec<&Operation> = Vec::new();
    let mut unsure: Vec<&IdentityKey> = Vec::new();
    for (op, result) in answered {
        let key = ((*op.identity).clone(), op.action.clone());
        match &result {
            Ok(_) => confirmed.push(op),
            Err(_) => unsure.push(&op.identity),
        }
        ctx.metrics
            .operations
            .get_or_create(&OperationLabels {
                namespace: namespace.to_string(),
                target: target.to_string(),
                action: op.action.name().into(),
                result: match &result {
                    Ok(Applied::Done) => "ok",
                    Ok(Applied::Unsupported) => "unsupported",
                    Err(_) => "error",
                }
                .into(),
            })
            .inc();
        outcomes.push(match result {
            Ok(applied) => {
                slot.parked.remove(&key);
                // Revocations and attribute writes are confirmed by the next observation:
                // one the target acknowledged yet still shows undone is not sent again and
                // again (a target that rewrites a value).
                let confirmable = op.action.is_revocation()
                    || matches!(op.action, Action::UpdateAttributes { .. });
                if confirmable && applied == Applied::Done {
                    slot.acknowledged.insert(key, Instant::now());
                    unsure.push(&op.identity);
                    confirm_soon = true;
                }
                if applied == Applied::Done {
                    Outcome::Done
                } else {
                    Outcome::Unsupported
                }
            }
            Err(error) => {
                tracing::warn!(%namespace, %target, identity = %op.identity, action = op.action.name(), %error, "apply failed");
                let failure = Failure::of(&error);
                slot.park(key, failure.clone(), ctx.resync);
                Outcome::Failed(failure)
            }
        });
    }
    slot.applied(confirmed, unsure);
    (outcomes, confirm_soon)
}

#[cfg(test)]
mod tests;
