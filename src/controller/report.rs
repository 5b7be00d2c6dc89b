//! The report stage of a tenant's pass (pure): every status, Event, finalizer release
//! and SLA measurement, from the pass's one decision and the outcome of each operation.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::pass::{Outcome, PassResult, TenantObjects, describe};
use super::status::{
    self, ApplyState, IdentityFacts, TargetLine, TargetReport, TargetState, identity_status,
};
use crate::api::{
    AccessPolicyStatus, EntitlementRef, ExceptionStatus, Identity, IdentityStatus,
    TargetSystemStatus,
};
use crate::engine::{AccountIntent, IdentityAccess, IdentityKey, Phase};
use crate::plan::Action;
use crate::plan::decide::Hold;

/// A Warning Event to record on an Identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityEvent {
    /// The Identity.
    pub identity: IdentityKey,
    /// Event reason.
    pub reason: &'static str,
    /// Event note.
    pub note: String,
}

/// Everything the wiring writes after a pass.
#[derive(Debug, Default)]
pub struct Report {
    /// New Identity statuses (only those that changed), by identity.
    pub identities: Vec<(IdentityKey, IdentityStatus)>,
    /// New TargetSystem statuses (only those that changed), by name.
    pub targets: Vec<(String, TargetSystemStatus)>,
    /// New AccessPolicy statuses (only those that changed), by name.
    pub policies: Vec<(String, AccessPolicyStatus)>,
    /// New Exception statuses (only those that changed), by name.
    pub exceptions: Vec<(String, ExceptionStatus)>,
    /// New AccessReview statuses (only those that changed), by name.
    pub reviews: Vec<(String, crate::api::AccessReviewStatus)>,
    /// Identities being deleted whose access every target confirmed revoked.
    pub release: Vec<IdentityKey>,
    /// Identities without the finalizer yet.
    pub hold: Vec<IdentityKey>,
    /// Warning Events on Identities (failed leaver operations, an owner's exit).
    pub events: Vec<IdentityEvent>,
    /// Leaver revocations confirmed this pass: (target, seconds since the identity became
    /// a leaver), for the SLA histogram.
    pub revocations: Vec<(String, f64)>,
    /// Operations outstanding per target, for the work-queue gauge.
    pub outstanding: BTreeMap<String, usize>,
}

/// Has the finalizer that holds an Identity until its access is revoked.
pub fn has_finalizer(identity: &Identity) -> bool {
    identity
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == super::FINALIZER)
}

fn key_of(meta: &kube::api::ObjectMeta) -> IdentityKey {
    IdentityKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// When an identity became a leaver: the previous status says so, or its deletion, its
/// end date passing (`by_date`, from the engine), or the latest write to its spec.
fn leaver_since(identity: &Identity, by_date: Option<Timestamp>, now: Timestamp) -> Timestamp {
    if let Some(kept) = identity
        .status
        .as_ref()
        .and_then(|s| s.leaver_since.as_ref())
    {
        return kept.0;
    }
    if let Some(deleted) = &identity.metadata.deletion_timestamp {
        return deleted.0;
    }
    if let Some(end) = by_date {
        return end;
    }
    identity
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.subresource.as_deref() != Some("status"))
        .filter_map(|f| f.time.as_ref().map(|t| t.0))
        .max()
        .map_or(now, |t| t.min(now))
}

/// Builds the report of a pass. `by_date` gives the engine's end-date instant of leavers.
pub fn report(
    tenant: &TenantObjects,
    pass: &PassResult,
    by_date: &BTreeMap<IdentityKey, Timestamp>,
    now: Timestamp,
) -> Report {
    let namespace = tenant.namespace.as_str();
    let decision = &pass.decision;
    let mut out = Report::default();
    // Per identity, per target: the operations and their outcomes.
    type Ops<'a> = Vec<(&'a Action, &'a Outcome, bool)>;
    let mut by_identity: BTreeMap<&IdentityKey, BTreeMap<&str, Ops<'_>>> = BTreeMap::new();
    // An operation without an outcome was not sent: never reported as done.
    let not_sent = Outcome::Held("not sent".into());
    for (target, plan) in &decision.targets {
        let outcomes = pass.targets.get(target).map(|t| t.outcomes.as_slice());
        for (i, op) in plan.operations.iter().enumerate() {
            let outcome = outcomes.and_then(|o| o.get(i)).unwrap_or(&not_sent);
            by_identity
                .entry(&*op.identity)
                .or_default()
                .entry(target.as_str())
                .or_default()
                .push((&op.action, outcome, op.leaver));
            if let Outcome::Failed(failure) = outcome
                && op.leaver
            {
                out.events.push(IdentityEvent {
                    identity: (*op.identity).clone(),
                    reason: "RevocationFailed",
                    note: format!(
                        "{} on {target} failed: {}",
                        describe(&op.identity, &op.action),
                        failure.message
                    ),
                });
            }
        }
    }
    let no_ops = BTreeMap::new();
    for identity in tenant.all_identities() {
        let key = key_of(&identity.metadata);
        let deleting = identity.metadata.deletion_timestamp.is_some();
        let gone;
        let access: &IdentityAccess = match decision.desired.identities.get(&key) {
            Some(a) if !deleting => a,
            _ => {
                gone = IdentityAccess {
                    key: key.clone(),
                    identity_type: identity.spec.type_,
                    phase: Phase::Terminated,
                    account: AccountIntent::Revoked,
                    entitlements: Vec::new(),
                    withheld: Vec::new(),
                    next_change: None,
                    owner_exit: None,
                    profile: Default::default(),
                };
                &gone
            }
        };
        let ops = by_identity.get(&key).unwrap_or(&no_ops);
        let leaver = access.account == AccountIntent::Revoked;
        // The targets the identity has, had or should have something on.
        let mut listed: BTreeSet<&str> = ops.keys().copied().collect();
        listed.extend(access.enforced().map(|g| g.entitlement.target.as_str()));
        if let Some(held) = decision.held.identities.get(&key) {
            listed.extend(held.accounts.keys().map(String::as_str));
            listed.extend(held.entitlements.keys().map(|e| e.target.as_str()));
        }
        if leaver && let Some(previous) = &identity.status {
            listed.extend(previous.targets.iter().map(|t| t.target.as_str()));
        }
        let mut lines: BTreeMap<String, TargetLine> = BTreeMap::new();
        let mut entitlements: BTreeMap<EntitlementRef, ApplyState> = BTreeMap::new();
        for target in listed {
            let Some(plan) = decision.targets.get(target) else {
                continue; // a target that no longer exists
            };
            let mine = ops.get(target).map(Vec::as_slice).unwrap_or_default();
            let outstanding = mine.iter().filter(|(_, o, _)| !o.succeeded()).count();
            let hold_message = || {
                plan.hold
                    .as_ref()
                    .map(Hold::message)
                    .unwrap_or_else(|| "not observed yet".into())
            };
            let first = |pick: fn(&Outcome) -> bool| {
                mine.iter()
                    .find(|(_, o, _)| pick(o))
                    .map(|(a, o, _)| (describe(&key, a), (*o).clone()))
            };
            // A target that refuses to be observed for good (permissions, configuration):
            // what it would take is a person, so the identity's line there is a failure.
            let refused = pass
                .targets
                .get(target)
                .and_then(|t| t.unreachable.as_ref())
                .filter(|f| f.permanent && !plan.observed);
            let state = if let Some(f) = refused {
                let op = mine
                    .first()
                    .map_or_else(|| "observe".to_string(), |(a, _, _)| describe(&key, a));
                TargetState::Failed(op, f.message.clone(), true)
            } else if mine.is_empty() {
                if plan.observed {
                    TargetState::Applied { confirmed: true }
                } else {
                    TargetState::Pending("observe".into(), hold_message())
                }
            } else if let Some((op, outcome)) =
                first(|o| matches!(o, Outcome::Failed(_) | Outcome::Parked(_)))
            {
                let (Outcome::Failed(f) | Outcome::Parked(f)) = outcome else {
                    unreachable!("picked above")
                };
                TargetState::Failed(op, f.message, f.permanent)
            } else if let Some((op, Outcome::Held(why))) = first(|o| matches!(o, Outcome::Held(_)))
            {
                TargetState::Pending(op, why)
            } else {
                TargetState::Applied { confirmed: false }
            };
            // Entitlement states on this target.
            for grant in access.enforced().filter(|g| g.entitlement.target == target) {
                let grant_op = mine.iter().find(|(a, _, _)| {
                    matches!(a, Action::Grant { entitlement } if **entitlement == *grant.entitlement)
                });
                let blocked_account = mine.iter().find(|(a, o, _)| {
                    matches!(a, Action::CreateAccount { .. } | Action::EnableAccount)
                        && !o.succeeded()
                });
                let applied = match (grant_op, blocked_account) {
                    (Some((_, o, _)), _) | (None, Some((_, o, _))) => match o {
                        Outcome::Done | Outcome::Unsupported => ApplyState::Applied,
                        Outcome::Failed(f) | Outcome::Parked(f) => {
                            ApplyState::Failed(f.message.clone())
                        }
                        Outcome::Held(why) => ApplyState::Pending(why.clone()),
                    },
                    (None, None) if plan.observed => ApplyState::Applied,
                    (None, None) => ApplyState::Pending(hold_message()),
                };
                entitlements.insert((*grant.entitlement).clone(), applied);
            }
            lines.insert(target.to_string(), TargetLine { state, outstanding });
        }
        let confirmed_everywhere = lines
            .values()
            .all(|l| l.state == TargetState::Applied { confirmed: true });
        if deleting {
            if has_finalizer(identity) && confirmed_everywhere {
                out.release.push(key.clone());
            }
        } else if !has_finalizer(identity) {
            out.hold.push(key.clone());
        }
        let findings: Vec<_> = decision
            .desired
            .violations
            .iter()
            .filter(|v| v.namespace == key.namespace && v.identity.as_deref() == Some(&key.name))
            .collect();
        out.events
            .extend(owner_exit_event(identity, access, &findings));
        let since = leaver.then(|| leaver_since(identity, by_date.get(&key).copied(), now));
        let facts = IdentityFacts {
            access,
            findings: if deleting { &[] } else { &findings },
            targets: &lines,
            entitlements: &entitlements,
            leaver_since: since,
        };
        let status = identity_status(
            &facts,
            identity.status.as_ref(),
            identity.metadata.generation,
            now,
        );
        for t in &status.targets {
            let before = identity
                .status
                .as_ref()
                .and_then(|s| s.targets.iter().find(|b| b.target == t.target));
            if t.revoked_at.is_some() && before.is_none_or(|b| b.revoked_at.is_none()) {
                out.revocations
                    .push((t.target.clone(), t.revocation_seconds.unwrap_or(0.0)));
            }
        }
        let released = out.release.last() == Some(&key);
        if identity.status.as_ref() != Some(&status) && !released {
            out.identities.push((key, status));
        }
    }
    // TargetSystems.
    for target in &tenant.targets {
        let name = target.metadata.name.clone().unwrap_or_default();
        let plan = decision.targets.get(&name);
        let outcome = pass.targets.get(&name);
        let outcomes = outcome.map(|o| o.outcomes.as_slice()).unwrap_or_default();
        let failed: Vec<(String, &super::connectors::Failure)> = outcome
            .map(|o| o.parked.iter().map(|(op, f)| (op.clone(), f)).collect())
            .unwrap_or_default();
        let unreachable = outcome.and_then(|o| o.unreachable.as_ref());
        let stalled = if let Some(f) = unreachable.filter(|f| f.permanent) {
            Some((
                f.reason.unwrap_or("Rejected").to_string(),
                f.message.clone(),
            ))
        } else if let Some(Hold::BlastRadius(exceeded)) = plan.and_then(|p| p.hold.as_ref()) {
            Some(("BlastRadiusExceeded".to_string(), exceeded.to_string()))
        } else {
            let permanent: Vec<_> = failed.iter().filter(|(_, f)| f.permanent).collect();
            permanent.first().map(|(op, f)| {
                (
                    f.reason.unwrap_or("Rejected").to_string(),
                    format!(
                        "{} operation(s) refused and not retried until the spec, the Secret or the resync changes something; first: {op}: {}",
                        permanent.len(),
                        f.message
                    ),
                )
            })
        };
        let outstanding = outcomes.iter().filter(|o| !o.succeeded()).count();
        let report = TargetReport {
            unreachable: unreachable.map(|f| f.message.clone()),
            stalled,
            observe_only: plan.is_some_and(|p| p.hold == Some(Hold::ObserveMode)),
            planned: outcomes.len(),
            failed: outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Failed(_) | Outcome::Parked(_)))
                .count(),
            first_failure: failed.first().map(|(op, f)| format!("{op}: {}", f.message)),
            orphans: outcome.map(|o| o.orphans.clone()).unwrap_or_default(),
            outstanding,
            findings: outcome.map(|o| o.findings.clone()).unwrap_or_default(),
            failed_operations: failed
                .iter()
                .map(|(op, f)| format!("{op}: {}", f.message))
                .collect(),
        };
        out.outstanding.insert(name.clone(), outstanding);
        let status = status::target_status(
            &report,
            target.status.as_ref(),
            target.metadata.generation,
            now,
        );
        if target.status.as_ref() != Some(&status) {
            out.targets.push((name, status));
        }
    }
    // AccessPolicies and Exceptions.
    for policy in &tenant.policies {
        let name = policy.metadata.name.clone().unwrap_or_default();
        let object = format!("AccessPolicy/{name}");
        let findings: Vec<_> = decision
            .desired
            .violations
            .iter()
            .filter(|v| v.namespace == namespace && v.object == object)
            .collect();
        let matched = decision
            .desired
            .policy_matches
            .get(&(namespace.to_string(), name.clone()))
            .copied()
            .unwrap_or(0);
        let status = status::policy_status(
            matched,
            &findings,
            policy.status.as_ref(),
            policy.metadata.generation,
            now,
        );
        if policy.status.as_ref() != Some(&status) {
            out.policies.push((name, status));
        }
    }
    for exception in &tenant.exceptions {
        let name = exception.metadata.name.clone().unwrap_or_default();
        let Some(verdict) = decision
            .desired
            .exceptions
            .get(&(namespace.to_string(), name.clone()))
        else {
            continue;
        };
        let status = status::exception_status(
            verdict,
            exception.status.as_ref(),
            exception.metadata.generation,
            now,
        );
        if exception.status.as_ref() != Some(&status) {
            out.exceptions.push((name, status));
        }
    }
    for review in &tenant.reviews {
        let name = review.metadata.name.clone().unwrap_or_default();
        let Some(progress) = decision
            .desired
            .reviews
            .get(&(namespace.to_string(), name.clone()))
        else {
            continue;
        };
        let status = super::review_status::review_status(
            progress,
            review.status.as_ref(),
            review.metadata.generation,
            now,
        );
        if review.status.as_ref() != Some(&status) {
            out.reviews.push((name, status));
        }
    }
    out
}
/// The Event of a non-human identity whose owner has just left (its status did not say
/// so yet): the proposed interim owner, and the targets that cannot rotate its
/// credentials, from the engine's findings.
fn owner_exit_event(
    identity: &Identity,
    access: &IdentityAccess,
    findings: &[&crate::engine::Violation],
) -> Option<IdentityEvent> {
    use crate::engine::ViolationKind;
    let exit = access
        .owner_exit
        .as_ref()
        .filter(|_| access.phase == Phase::OwnerTerminated)?;
    let before = identity.status.as_ref().and_then(|s| s.phase.as_deref());
    if before == Some("OwnerTerminated") {
        return None;
    }
    let notes: Vec<&str> = findings
        .iter()
        .filter(|v| {
            matches!(
                v.kind,
                ViolationKind::InterimOwnerProposed | ViolationKind::CredentialsNotRotated
            )
        })
        .map(|v| v.message.as_str())
        .collect();
    Some(IdentityEvent {
        identity: access.key.clone(),
        reason: "InterimOwnerProposed",
        note: if notes.is_empty() {
            format!("owner {} has left", exit.owner)
        } else {
            notes.join("; ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{NothingHeld, Settings, Snapshot, evaluate};

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn an_owner_exit_raises_one_event_proposing_the_manager() {
        let id = |name: &str, spec: &str| -> Identity {
            yaml(&format!(
                "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}, namespace: t}}\nspec: {spec}"
            ))
        };
        let snapshot = Snapshot {
            identities: vec![
                id(
                    "mgr",
                    "{type: Human, employment: {status: Active, department: d, manager: mgr}}",
                ),
                id(
                    "olga",
                    "{type: Human, employment: {status: Terminated, department: d, manager: mgr, endDate: '2026-11-30'}}",
                ),
                id("svc", "{type: NonHuman, owner: olga}"),
            ],
            policies: vec![yaml(
                "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p, namespace: t}\nspec: {selector: {matchAttributes: {type: NonHuman}}, entitlements: [{target: scim, name: g}]}",
            )],
            targets: vec![yaml(
                "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {name: scim, namespace: t}\nspec: {type: SCIM}",
            )],
            exceptions: vec![],
            ..Default::default()
        };
        let now = "2026-12-01T00:00:00Z".parse().unwrap();
        let desired = evaluate(&snapshot, now, &Settings::default(), &NothingHeld);
        let key = IdentityKey::new("t", "svc");
        let access = &desired.identities[&key];
        let findings: Vec<_> = desired
            .violations
            .iter()
            .filter(|v| v.identity.as_deref() == Some("svc"))
            .collect();
        let mut svc = snapshot.identities[2].clone();
        let event = owner_exit_event(&svc, access, &findings).expect("an event");
        assert_eq!(event.reason, "InterimOwnerProposed");
        assert!(
            event.note.contains("proposed interim owner mgr"),
            "{}",
            event.note
        );
        assert!(
            event
                .note
                .contains("TargetSystem/scim (SCIM) cannot rotate"),
            "{}",
            event.note
        );
        // Once the status says so, no more Events.
        svc.status = Some(IdentityStatus {
            phase: Some("OwnerTerminated".into()),
            ..Default::default()
        });
        assert_eq!(owner_exit_event(&svc, access, &findings), None);
        // A human, or a machine whose owner stays: none.
        let mgr = &desired.identities[&IdentityKey::new("t", "mgr")];
        assert_eq!(owner_exit_event(&snapshot.identities[0], mgr, &[]), None);
    }
}
