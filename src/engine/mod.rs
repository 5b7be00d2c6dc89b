//! The pure lifecycle engine: HR records, policies and exceptions in, each identity's
//! effective access (with provenance), withheld access (with reasons) and findings out.
//!
//! No I/O and no clock: `now` is an argument, so the same input always gives the same
//! output. Every lifecycle rule of ARCHITECTURE.md lives here.

mod access;
pub mod attributes;
mod exceptions;
pub mod index;
pub mod lifecycle;
mod model;
pub mod owner_exit;
pub mod review;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::{SignedDuration, Timestamp};

pub use model::*;

use crate::api::{EntitlementRef, Identity};
use index::{IdentityRecord, Namespace};

/// Tunables that are not part of any object.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a non-human identity keeps its access after its owner's end date.
    pub owner_grace: SignedDuration,
    /// Longest exception window when no policy granting the entitlement sets one.
    pub default_max_exception: SignedDuration,
    /// Longest a break-glass exception is in force (`--break-glass-max`, at most 24 h).
    pub break_glass_max: SignedDuration,
    /// How long a break-glass exception created outside Git may wait for the Git commit
    /// that ratifies it before it is revoked (`--break-glass-ratify`).
    pub break_glass_ratify: SignedDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            owner_grace: SignedDuration::from_hours(7 * 24),
            default_max_exception: SignedDuration::from_hours(90 * 24),
            break_glass_max: SignedDuration::from_hours(4),
            break_glass_ratify: SignedDuration::from_hours(1),
        }
    }
}

/// What an identity holds now, so that separation of duties withholds only the grant
/// that would complete a toxic combination.
pub trait Held {
    /// Whether the identity currently holds the entitlement.
    fn holds(&self, identity: &IdentityKey, entitlement: &EntitlementRef) -> bool;
}

/// Nothing is held: of a would-be toxic combination, the completing grant is withheld (one
/// granted only by an exception before the policy baseline, else the side listed last).
pub struct NothingHeld;

impl Held for NothingHeld {
    fn holds(&self, _: &IdentityKey, _: &EntitlementRef) -> bool {
        false
    }
}

/// A snapshot indexed for evaluation. Build once; update identities incrementally.
#[derive(Clone, Debug)]
pub struct Engine {
    settings: Settings,
    namespaces: BTreeMap<String, Namespace>,
}

impl Engine {
    /// Indexes a snapshot.
    pub fn new(snapshot: &Snapshot, settings: Settings) -> Self {
        let mut namespaces: BTreeMap<String, Namespace> = BTreeMap::new();
        let namespace_of =
            |meta: &kube::api::ObjectMeta| meta.namespace.clone().unwrap_or_default();
        fn tenant(all: &mut BTreeMap<String, Namespace>, name: String) -> &mut Namespace {
            all.entry(name.clone())
                .or_insert_with(|| Namespace::new(&name))
        }
        for t in &snapshot.targets {
            tenant(&mut namespaces, namespace_of(&t.metadata)).add_target(t);
        }
        for p in &snapshot.policies {
            tenant(&mut namespaces, namespace_of(&p.metadata)).add_policy(p);
        }
        for e in &snapshot.exceptions {
            tenant(&mut namespaces, namespace_of(&e.metadata)).add_exception(e);
        }
        let mut records: BTreeMap<String, Vec<IdentityRecord>> = BTreeMap::new();
        for i in &snapshot.identities {
            records
                .entry(namespace_of(&i.metadata))
                .or_default()
                .push(IdentityRecord::new(i));
        }
        for (name, list) in records {
            tenant(&mut namespaces, name).set_identities(list);
        }
        for ns in namespaces.values_mut() {
            ns.index_policies();
            ns.find_manager_cycles();
        }
        if !snapshot.reviews.is_empty() || !snapshot.responses.is_empty() {
            for r in &snapshot.reviews {
                tenant(&mut namespaces, namespace_of(&r.metadata));
            }
            for r in &snapshot.responses {
                tenant(&mut namespaces, namespace_of(&r.metadata));
            }
            for ns in namespaces.values_mut() {
                let here = |meta: &kube::api::ObjectMeta| {
                    meta.namespace.as_deref().unwrap_or_default() == ns.name
                };
                let reviews: Vec<_> = snapshot
                    .reviews
                    .iter()
                    .filter(|r| here(&r.metadata))
                    .collect();
                let responses: Vec<_> = snapshot
                    .responses
                    .iter()
                    .filter(|r| here(&r.metadata))
                    .collect();
                ns.reviews = review::Reviews::build(ns, snapshot, &reviews, &responses);
            }
        }
        Self {
            settings,
            namespaces,
        }
    }

    /// Evaluates every identity at `now`.
    pub fn evaluate(&self, now: Timestamp, held: &dyn Held) -> DesiredState {
        self.evaluate_where(now, held, |_| true)
    }

    /// Evaluates the identities of one namespace (a tenant) at `now`: what the controller
    /// decides for one tenant's pass. Empty when the namespace has no objects.
    pub fn evaluate_namespace(
        &self,
        namespace: &str,
        now: Timestamp,
        held: &dyn Held,
    ) -> DesiredState {
        self.evaluate_where(now, held, |ns| ns == namespace)
    }

    fn evaluate_where(
        &self,
        now: Timestamp,
        held: &dyn Held,
        include: impl Fn(&str) -> bool,
    ) -> DesiredState {
        let mut state = DesiredState {
            now,
            ..DesiredState::default()
        };
        let mut violations = Vec::new();
        let mut verdicts_by_identity = Vec::new();
        for ns in self.namespaces.values().filter(|ns| include(&ns.name)) {
            let verdicts = self.judge_exceptions(ns, now, &mut violations);
            for (name, info) in &ns.targets {
                state
                    .targets
                    .insert((ns.name.clone(), name.clone()), info.clone());
            }
            for (exc, verdict) in ns.exceptions.iter().zip(&verdicts) {
                if verdict.break_glass.is_some()
                    && matches!(
                        verdict.phase,
                        ExceptionPhase::Expired | ExceptionPhase::Revoked
                    )
                {
                    state
                        .break_glass_ended
                        .entry(IdentityKey::new(&ns.name, &exc.subject))
                        .or_default()
                        .extend(exc.entitlements.iter().cloned());
                }
                state
                    .exceptions
                    .insert((ns.name.clone(), exc.name.clone()), verdict.clone());
            }
            violations.extend(policy_findings(ns));
            let (found, progress) = ns.reviews.at(&ns.name, now);
            violations.extend(found);
            for (name, p) in progress {
                state.reviews.insert((ns.name.clone(), name), p);
            }
            let mut matches = vec![0usize; ns.policies.len()];
            for rec in ns.identities.values() {
                let matched = ns.matching_policies(rec);
                for &i in &matched {
                    matches[i] += 1;
                }
                let verdict = |i: usize| verdicts[i].clone();
                let (access, found) = access::evaluate_identity(
                    ns,
                    rec,
                    now,
                    &self.settings,
                    held,
                    &matched,
                    &verdict,
                );
                violations.extend(found);
                state.next_change = lifecycle::earliest(state.next_change, access.next_change);
                verdicts_by_identity.push((access.key.clone(), access));
            }
            for (policy, count) in ns.policies.iter().zip(matches) {
                state
                    .policy_matches
                    .insert((ns.name.clone(), policy.name.clone()), count);
            }
        }
        // Namespaces and identities were visited in key order: this builds the map in bulk.
        state.identities = verdicts_by_identity.into_iter().collect();
        violations.extend(unresolved_managers(&state));
        violations.sort();
        violations.dedup();
        state.violations = violations;
        state
    }

    /// When the identity became a leaver by its record alone: the instant its (inclusive)
    /// end date passed, if it has. `None` when it is no leaver by date (HR's status, a
    /// deletion or an owner's exit make a leaver at the moment the change is seen).
    pub fn leaver_since(&self, key: &IdentityKey, now: Timestamp) -> Option<Timestamp> {
        let rec = self
            .namespaces
            .get(&key.namespace)?
            .identities
            .get(&key.name)?;
        let end = lifecycle::end_of(rec.human.as_ref()?.end_date?);
        (end <= now).then_some(end)
    }

    /// Evaluates one identity at `now`, with the findings about it (exception findings
    /// are reported by [`Engine::evaluate`]).
    pub fn evaluate_identity(
        &self,
        key: &IdentityKey,
        now: Timestamp,
        held: &dyn Held,
    ) -> Option<(IdentityAccess, Vec<Violation>)> {
        let ns = self.namespaces.get(&key.namespace)?;
        let rec = ns.identities.get(&key.name)?;
        let verdict = |i: usize| self.judge(ns, i, now).0;
        let matched = ns.matching_policies(rec);
        Some(access::evaluate_identity(
            ns,
            rec,
            now,
            &self.settings,
            held,
            &matched,
            &verdict,
        ))
    }

    /// Inserts or replaces an identity and returns every identity whose verdict may change:
    /// itself, its reports, the machines it owns, the subjects of exceptions it requested
    /// or approved, and anyone on a manager cycle it joins or leaves.
    pub fn upsert_identity(&mut self, identity: &Identity) -> Vec<IdentityKey> {
        let namespace = identity.metadata.namespace.clone().unwrap_or_default();
        let ns = self
            .namespaces
            .entry(namespace.clone())
            .or_insert_with(|| Namespace::new(&namespace));
        let rec = IdentityRecord::new(identity);
        let name = rec.name.clone();
        let old_manager = ns
            .identities
            .get(&name)
            .and_then(|r| r.human.as_ref())
            .and_then(|h| h.manager.clone());
        let new_manager = rec.human.as_ref().and_then(|h| h.manager.clone());
        let mut affected: BTreeSet<String> = BTreeSet::from([name.clone()]);
        if old_manager != new_manager {
            // Only the cycle through this identity can break or close (a newcomer with a
            // manager can close one that others' links already point into).
            let before = ns.cycle_through(&name);
            ns.insert_identity(rec);
            let after = ns.cycle_through(&name);
            affected.extend(ns.update_cycle(before, after));
        } else {
            ns.insert_identity(rec);
        }
        Self::dependents(ns, &name, &mut affected);
        affected
            .into_iter()
            .map(|n| IdentityKey::new(&namespace, n))
            .collect()
    }

    /// Removes an identity; returns the identities whose verdict may change.
    pub fn remove_identity(&mut self, key: &IdentityKey) -> Vec<IdentityKey> {
        let Some(ns) = self.namespaces.get_mut(&key.namespace) else {
            return vec![];
        };
        let before = ns.cycle_through(&key.name);
        if ns.remove_identity(&key.name).is_none() {
            return vec![];
        }
        let mut affected: BTreeSet<String> =
            ns.update_cycle(before, Vec::new()).into_iter().collect();
        Self::dependents(ns, &key.name, &mut affected);
        affected.remove(&key.name);
        affected
            .into_iter()
            .map(|n| IdentityKey::new(&key.namespace, n))
            .collect()
    }

    fn dependents(ns: &Namespace, name: &str, out: &mut BTreeSet<String>) {
        out.extend(ns.referrers.get(name).into_iter().flatten().cloned());
        // An owner exit's proposed interim owner is looked for up the owner's manager
        // chain: the machines owned anywhere below `name` (that far) depend on it too.
        let mut frontier: Vec<&str> = vec![name];
        let mut seen: HashSet<&str> = HashSet::from([name]);
        for _ in 0..=owner_exit::MAX_CHAIN {
            let mut next = Vec::new();
            for person in frontier {
                for r in ns.referrers.get(person).into_iter().flatten() {
                    let Some(rec) = ns.identities.get(r) else {
                        continue;
                    };
                    if rec.identity_type == crate::api::IdentityType::NonHuman {
                        out.insert(r.clone());
                    } else if seen.insert(r.as_str()) {
                        next.push(r.as_str());
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        for &i in ns.exceptions_by_party.get(name).into_iter().flatten() {
            out.insert(ns.exceptions[i].subject.clone());
        }
    }

    fn judge_exceptions(
        &self,
        ns: &Namespace,
        now: Timestamp,
        violations: &mut Vec<Violation>,
    ) -> Vec<ExceptionVerdict> {
        (0..ns.exceptions.len())
            .map(|i| {
                let (verdict, found) = self.judge(ns, i, now);
                violations.extend(found);
                verdict
            })
            .collect()
    }

    /// Judges exception `i` of a namespace at `now`.
    fn judge(
        &self,
        ns: &Namespace,
        i: usize,
        now: Timestamp,
    ) -> (ExceptionVerdict, Vec<Violation>) {
        let phase = |name: &str| access::phase_of(ns, name, now, &self.settings).map(|p| p.0);
        exceptions::judge(ns, &ns.exceptions[i], now, &self.settings, &phase)
    }

    /// Builds a finding with the kind's default severity.
    pub fn violation(
        kind: ViolationKind,
        namespace: &str,
        identity: Option<&str>,
        object: &str,
        field: Option<&str>,
        message: String,
    ) -> Violation {
        Violation {
            kind,
            severity: kind.severity(),
            namespace: namespace.to_string(),
            identity: identity.map(str::to_string),
            object: object.to_string(),
            field: field.map(str::to_string),
            message,
        }
    }
}

/// Findings about policies alone: unknown targets, malformed entitlements and durations.
fn policy_findings(ns: &Namespace) -> Vec<Violation> {
    let mut out = Vec::new();
    for policy in &ns.policies {
        let object = format!("AccessPolicy/{}", policy.name);
        for (field, msg) in &policy.invalid {
            out.push(Engine::violation(
                ViolationKind::InvalidValue,
                &ns.name,
                None,
                &object,
                Some(field),
                msg.clone(),
            ));
        }
        for (i, e) in policy.entitlements.iter().enumerate() {
            if let Some((kind, suffix, msg)) = ns.entitlement_problem(e) {
                out.push(Engine::violation(
                    kind,
                    &ns.name,
                    None,
                    &object,
                    Some(&format!("spec.entitlements[{i}].{suffix}")),
                    msg,
                ));
            }
        }
    }
    for (target, field, message) in &ns.target_invalid {
        out.push(Engine::violation(
            ViolationKind::InvalidValue,
            &ns.name,
            None,
            &format!("TargetSystem/{target}"),
            Some(field),
            message.clone(),
        ));
    }
    let mut seen = HashSet::new();
    for rule in &ns.sod {
        for e in &rule.entitlements {
            if !ns.has_target(&e.target) && seen.insert((rule.policy.clone(), e.target.clone())) {
                out.push(Engine::violation(
                    ViolationKind::UnknownReference,
                    &ns.name,
                    None,
                    &format!("AccessPolicy/{}", rule.policy),
                    Some("spec.separationOfDuties"),
                    format!(
                        "rule {} names target {:?}, which is not a TargetSystem in namespace {}",
                        rule.rule, e.target, ns.name
                    ),
                ));
            }
        }
    }
    out
}

/// An identity whose mapped `manager` attribute cannot be written because the manager has
/// no account on that target: the attribute is left unset, and this says why.
fn unresolved_managers(state: &DesiredState) -> Vec<Violation> {
    let mut out = Vec::new();
    for (key, access) in &state.identities {
        let Some(manager) = access.profile.manager() else {
            continue;
        };
        for target in access.account_targets() {
            let uses = state
                .targets
                .get(&(key.namespace.clone(), target.to_string()))
                .is_some_and(|t| t.attributes.uses_manager());
            if uses && attributes::manager_account(state, key, target).is_none() {
                out.push(Engine::violation(
                    ViolationKind::UnresolvedAttribute,
                    &key.namespace,
                    Some(&key.name),
                    &format!("Identity/{}", key.name),
                    Some("spec.employment.manager"),
                    format!(
                        "manager {manager} has no account on {target}, so the manager attribute there is left unset; it is written once {manager} gets access on {target}"
                    ),
                ));
            }
        }
    }
    out
}

/// Evaluates a snapshot at `now` in one call.
pub fn evaluate(
    snapshot: &Snapshot,
    now: Timestamp,
    settings: &Settings,
    held: &dyn Held,
) -> DesiredState {
    Engine::new(snapshot, settings.clone()).evaluate(now, held)
}

impl Engine {
    /// For `explain`: every policy in the identity's namespace and, when its selector does
    /// not match, the first failing term.
    pub fn selector_report(&self, key: &IdentityKey) -> Vec<(String, Option<String>)> {
        let Some(ns) = self.namespaces.get(&key.namespace) else {
            return vec![];
        };
        let Some(rec) = ns.identities.get(&key.name) else {
            return vec![];
        };
        ns.policies
            .iter()
            .map(|p| (p.name.clone(), p.selector.first_mismatch(rec)))
            .collect()
    }

    /// For `explain`: the exceptions naming the identity as subject.
    pub fn exceptions_of(&self, key: &IdentityKey) -> Vec<String> {
        let Some(ns) = self.namespaces.get(&key.namespace) else {
            return vec![];
        };
        ns.exceptions_by_subject
            .get(&key.name)
            .map(|ids| ids.iter().map(|&i| ns.exceptions[i].name.clone()).collect())
            .unwrap_or_default()
    }
}
