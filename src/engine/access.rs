//! One identity's verdict: phase, effective entitlements with provenance, withheld
//! entitlements with reasons, and the findings about it.

use std::sync::Arc;

use jiff::Timestamp;

use super::index::{IdentityRecord, Namespace};
use super::lifecycle::{earliest, end_of, human_phase};
use super::model::{
    AccountIntent, ExceptionPhase, ExceptionVerdict, Grant, IdentityAccess, IdentityKey, OwnerExit,
    Phase, Source, SourceKind, Violation, ViolationKind, Withheld, WithheldReason,
};
use super::owner_exit::{owner_exit, rotates_credentials};
use super::{Engine, Held, Settings};
use crate::api::{EmploymentType, EntitlementRef, IdentityType, Mode, ProofingLevel};

/// A phase and the next instant it changes without an edit.
type Timed = (Phase, Option<Timestamp>);

/// The phase of a named identity at `now`, and when it next changes.
pub fn phase_of(
    ns: &Namespace,
    name: &str,
    now: Timestamp,
    settings: &Settings,
) -> Option<(Phase, Option<Timestamp>)> {
    let rec = ns.identities.get(name)?;
    Some(phase_with_owner(ns, rec, now, settings).0)
}

/// Phase of an identity; for non-humans also the owner's name and phase when one resolves.
fn phase_with_owner<'a>(
    ns: &'a Namespace,
    rec: &IdentityRecord,
    now: Timestamp,
    settings: &Settings,
) -> (Timed, Option<(&'a str, Phase)>) {
    match rec.identity_type {
        IdentityType::Human => match &rec.human {
            Some(human) => (human_phase(human, now), None),
            None => ((Phase::PreHire, None), None),
        },
        IdentityType::NonHuman => {
            let owner = rec
                .owner
                .as_deref()
                .and_then(|o| ns.identities.get_key_value(o))
                .and_then(|(name, owner)| owner.human.as_ref().map(|h| (name.as_str(), h)));
            let Some((owner_name, owner)) = owner else {
                return ((Phase::Unowned, None), None);
            };
            let (owner_phase, owner_next) = human_phase(owner, now);
            let phase = match owner_phase {
                Phase::Active | Phase::OnLeave => (Phase::Active, owner_next),
                Phase::Terminated => {
                    let grace_end = owner
                        .end_date
                        .map(end_of)
                        .and_then(|left| left.checked_add(settings.owner_grace).ok());
                    match grace_end {
                        Some(end) if end > now => (Phase::OwnerTerminated, Some(end)),
                        _ => (Phase::OwnerTerminated, None),
                    }
                }
                _ => (Phase::Unowned, owner_next),
            };
            (phase, Some((owner_name, owner_phase)))
        }
    }
}

/// Evaluates one identity. `matched` lists the policies whose selector matches it;
/// `verdicts` gives the verdict of each exception by index.
pub fn evaluate_identity(
    ns: &Namespace,
    rec: &IdentityRecord,
    now: Timestamp,
    settings: &Settings,
    held: &dyn Held,
    matched: &[usize],
    verdicts: &dyn Fn(usize) -> ExceptionVerdict,
) -> (IdentityAccess, Vec<Violation>) {
    let key = IdentityKey::new(&ns.name, &rec.name);
    let object = format!("Identity/{}", rec.name);
    let mut violations = Vec::new();
    let mut report = |kind, field: Option<&str>, message: String| {
        violations.push(Engine::violation(
            kind,
            &ns.name,
            Some(&rec.name),
            &object,
            field,
            message,
        ));
    };

    let ((phase, mut next_change), owner) = phase_with_owner(ns, rec, now, settings);
    let in_grace = phase == Phase::OwnerTerminated && next_change.is_some();
    let receives = matches!(phase, Phase::Active | Phase::OnLeave) || in_grace;

    // Findings about the record itself.
    for (field, msg) in &rec.invalid {
        report(
            ViolationKind::InvalidValue,
            Some(field),
            format!("{msg}: fix it in the HR record"),
        );
    }
    let mut missing: Vec<String> = rec
        .invalid
        .iter()
        .map(|(f, _)| f.trim_start_matches("spec.employment.").to_string())
        .collect();
    match rec.identity_type {
        IdentityType::Human => check_human(ns, rec, &mut missing, &mut report),
        IdentityType::NonHuman => match (rec.owner.as_deref(), owner) {
            (None, _) => report(
                ViolationKind::UnknownReference,
                Some("spec.owner"),
                "a non-human identity needs spec.owner, an active human Identity".into(),
            ),
            (Some(name), None) => report(
                ViolationKind::UnknownReference,
                Some("spec.owner"),
                format!(
                    "spec.owner names {name:?}, which is not a Human Identity in namespace {}",
                    ns.name
                ),
            ),
            (Some(name), Some((_, Phase::Terminated))) => report(
                ViolationKind::OwnerTerminated,
                Some("spec.owner"),
                match next_change {
                    Some(end) => format!(
                        "owner {name} has left: access is revoked at {end} unless spec.owner names an active human"
                    ),
                    None => format!(
                        "owner {name} has left: access revoked; set spec.owner to an active human to restore it"
                    ),
                },
            ),
            (Some(name), Some((_, Phase::OnLeave))) => report(
                ViolationKind::OwnerInactive,
                Some("spec.owner"),
                format!("owner {name} is on leave: access is kept; consider a deputy owner"),
            ),
            (Some(name), Some((_, Phase::PreHire))) => report(
                ViolationKind::OwnerInactive,
                Some("spec.owner"),
                format!("owner {name} has not started: no access until they do"),
            ),
            _ => {}
        },
    }
    if (receives || phase == Phase::PreHire) && !missing.is_empty() {
        report(
            ViolationKind::MissingAttributes,
            None,
            format!(
                "HR record lacks {}: policies grant nothing until HR completes it",
                missing.join(", ")
            ),
        );
    }

    // Candidate grants from policies and exceptions, by interned entitlement id.
    let mut offered: Vec<(u32, Arc<Source>, bool)> = Vec::new();
    let mut withheld = Vec::new();
    let mut withhold = |e: &Arc<EntitlementRef>, s: &Arc<Source>, reason: WithheldReason| {
        withheld.push(Withheld {
            entitlement: e.clone(),
            source: s.clone(),
            reason,
        });
    };
    for &i in matched {
        let policy = &ns.policies[i];
        let blocked = if !receives {
            Some(WithheldReason::Phase { phase })
        } else if !missing.is_empty() {
            Some(WithheldReason::MissingAttributes {
                attributes: missing.clone(),
            })
        } else {
            policy
                .required_proofing
                .filter(|req| rec.proofing.is_none_or(|have| have < *req))
                .map(|req| {
                    let level = |l: ProofingLevel| format!("{l:?}");
                    WithheldReason::InsufficientProofing {
                        required: level(req),
                        actual: rec.proofing.map(level),
                    }
                })
        };
        if let Some(WithheldReason::InsufficientProofing { required, actual }) = &blocked {
            report(
                ViolationKind::InsufficientProofing,
                Some("spec.proofing.level"),
                format!(
                    "AccessPolicy/{} requires {required}, identity has {}: its entitlements are withheld until proofing is raised",
                    policy.name,
                    actual.as_deref().unwrap_or("none")
                ),
            );
        }
        for (e, &id) in policy.entitlements.iter().zip(&policy.ids) {
            match &blocked {
                Some(reason) => withhold(e, &policy.source, reason.clone()),
                None if !ns.target_known_by_id[id as usize] => {
                    withhold(e, &policy.source, WithheldReason::UnknownTarget)
                }
                None => offered.push((id, policy.source.clone(), policy.mode == Mode::Enforce)),
            }
        }
    }
    for &i in ns
        .exceptions_by_subject
        .get(&rec.name)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let exc = &ns.exceptions[i];
        let verdict = verdicts(i);
        let break_glass = verdict.break_glass.iter().flat_map(|b| b.boundaries());
        for boundary in [exc.valid_from, exc.expires_at]
            .into_iter()
            .flatten()
            .chain(break_glass)
        {
            if boundary > now && verdict.phase != ExceptionPhase::Invalid {
                next_change = earliest(next_change, Some(boundary));
            }
        }
        if verdict.phase != ExceptionPhase::Active {
            continue;
        }
        for (e, &id) in exc.entitlements.iter().zip(&exc.ids) {
            if receives {
                offered.push((id, exc.source.clone(), true));
            } else {
                withhold(e, &exc.source, WithheldReason::Phase { phase });
            }
        }
    }

    // Access reviews: a revoke (or a pending past its due date) withholds that source.
    if let Some(holds) = ns.reviews.holds.get(&rec.name) {
        offered.retain(|(id, source, _)| {
            let entitlement = &ns.entitlement_table[*id as usize];
            match super::review::hold_for(holds, entitlement, source.kind, &source.name) {
                Some(h) if h.from.is_none_or(|t| t <= now) => {
                    let review = h.review.clone();
                    withhold(entitlement, source, WithheldReason::Review { review });
                    false
                }
                Some(h) => {
                    next_change = earliest(next_change, h.from);
                    true
                }
                None => true,
            }
        });
    }

    // One grant per entitlement, sources policies first then by name; ids sort like entitlements.
    offered.sort_by(|a, b| (a.0, a.1.kind, &a.1.name).cmp(&(b.0, b.1.kind, &b.1.name)));
    let mut ids: Vec<u32> = Vec::new();
    let mut grants: Vec<Grant> = Vec::new();
    for (id, source, enforcing) in offered {
        match grants.last_mut() {
            Some(grant) if ids.last() == Some(&id) => {
                if grant
                    .sources
                    .last()
                    .is_none_or(|s| s.kind != source.kind || s.name != source.name)
                {
                    grant.sources.push(source);
                }
                grant.enforced |= enforcing;
            }
            _ => {
                ids.push(id);
                grants.push(Grant {
                    entitlement: ns.entitlement_table[id as usize].clone(),
                    sources: smallvec::smallvec![source],
                    enforced: enforcing,
                });
            }
        }
    }

    // Separation of duties over the enforced grants.
    for rule in &ns.sod {
        let position = |id: &u32| ids.binary_search(id).ok();
        let complete = rule
            .ids
            .iter()
            .all(|id| position(id).is_some_and(|i| grants[i].enforced));
        if !complete {
            continue;
        }
        let already: Vec<bool> = rule
            .entitlements
            .iter()
            .map(|e| held.holds(&key, e))
            .collect();
        let all_held = already.iter().all(|h| *h);
        let names: Vec<String> = rule
            .entitlements
            .iter()
            .zip(&rule.ids)
            .filter_map(|(e, id)| {
                let from: Vec<String> = grants[position(id)?]
                    .sources
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                Some(format!("{e} (from {})", from.join(", ")))
            })
            .collect();
        // The completing grant: of the sides not held yet, one granted only by exceptions
        // before one a policy grants (the baseline stays), else the side listed last.
        let completing = rule
            .entitlements
            .iter()
            .zip(&rule.ids)
            .zip(&already)
            .filter(|(_, was_held)| !**was_held)
            .map(|((e, id), _)| (e, *id))
            .min_by_key(|(_, id)| {
                let from_policy = position(id).is_some_and(|i| {
                    grants[i]
                        .sources
                        .iter()
                        .any(|s| s.kind == SourceKind::AccessPolicy)
                });
                let listed = rule.ids.iter().position(|x| x == id).unwrap_or(0);
                (from_policy, std::cmp::Reverse(listed))
            });
        let what = if all_held {
            "already holds the toxic combination"
        } else {
            "toxic combination"
        };
        let then = match completing {
            None => "remove one side".to_string(),
            Some((e, _)) => format!("the completing grant {e} is withheld"),
        };
        report(
            ViolationKind::SeparationOfDuties,
            None,
            format!(
                "{what} {} of AccessPolicy/{}: {}; {then}",
                rule.rule,
                rule.policy,
                names.join(" + ")
            ),
        );
        let Some((e, id)) = completing else {
            continue;
        };
        if let Ok(i) = ids.binary_search(&id) {
            ids.remove(i);
            let grant = grants.remove(i);
            for s in &grant.sources {
                let reason = WithheldReason::SeparationOfDuties {
                    rule: rule.rule.clone(),
                    policy: rule.policy.clone(),
                };
                withhold(e, s, reason);
            }
        }
    }
    let entitlements = grants;
    // Exceptions are visited in snapshot order; findings must not depend on it.
    withheld.sort_by(|a, b| {
        (&a.entitlement, a.source.kind, &a.source.name).cmp(&(
            &b.entitlement,
            b.source.kind,
            &b.source.name,
        ))
    });
    let account = match phase {
        Phase::PreHire => AccountIntent::None,
        Phase::Active => AccountIntent::Enabled,
        Phase::OnLeave => AccountIntent::Disabled,
        Phase::OwnerTerminated if in_grace => AccountIntent::Enabled,
        Phase::Terminated | Phase::OwnerTerminated | Phase::Unowned => AccountIntent::Revoked,
    };
    let owner_exit = match (phase, owner) {
        (Phase::OwnerTerminated, Some((name, _))) => {
            let exit = owner_exit(ns, name, now);
            report_owner_exit(ns, &exit, &entitlements, next_change, false, &mut report);
            Some(exit)
        }
        // Re-owned because the owner left: that exit still rotates the credentials.
        (Phase::Active, Some((current, _))) => {
            let exit = rec
                .previous_owner
                .as_deref()
                .filter(|previous| *previous != current)
                .filter(|previous| left(ns, previous, now))
                .map(|previous| OwnerExit {
                    proposed_owner: None,
                    ..owner_exit(ns, previous, now)
                });
            if let Some(exit) = &exit {
                report_owner_exit(ns, exit, &entitlements, None, true, &mut report);
            }
            exit
        }
        _ => None,
    };
    let access = IdentityAccess {
        key,
        identity_type: rec.identity_type,
        phase,
        account,
        entitlements,
        withheld,
        next_change,
        owner_exit,
        profile: rec.profile.clone(),
    };
    (access, violations)
}

/// Whether a named human has left at `now`.
fn left(ns: &Namespace, name: &str, now: Timestamp) -> bool {
    ns.identities
        .get(name)
        .and_then(|r| r.human.as_ref())
        .is_some_and(|h| human_phase(h, now).0 == Phase::Terminated)
}

/// The owner-exit findings: the proposed interim owner (unless already `reowned`), and
/// each target of the identity's grants that cannot rotate its credentials.
fn report_owner_exit(
    ns: &Namespace,
    exit: &OwnerExit,
    grants: &[Grant],
    grace_end: Option<Timestamp>,
    reowned: bool,
    report: &mut dyn FnMut(ViolationKind, Option<&str>, String),
) {
    if !reowned {
        let until = match grace_end {
            Some(end) => format!("to keep its access after {end}"),
            None => "to restore its access".to_string(),
        };
        let direct = ns
            .identities
            .get(&exit.owner)
            .and_then(|r| r.human.as_ref())
            .and_then(|h| h.manager.as_deref());
        let message = match exit.proposed_owner.as_deref() {
            Some(manager) => format!(
                "owner {} has left: proposed interim owner {manager} ({}); set spec.owner: {manager} in Git {until}",
                exit.owner,
                if direct == Some(manager) {
                    "their manager"
                } else {
                    "the first active manager above them"
                }
            ),
            None => format!(
                "owner {} has left and no active manager of theirs can be proposed: set spec.owner to an active human in Git {until}",
                exit.owner
            ),
        };
        report(
            ViolationKind::InterimOwnerProposed,
            Some("spec.owner"),
            message,
        );
    }
    let then = if reowned {
        format!(
            ", then remove its {} annotation",
            crate::api::annotations::PREVIOUS_OWNER
        )
    } else {
        String::new()
    };
    let mut targets: Vec<&str> = grants
        .iter()
        .map(|g| g.entitlement.target.as_str())
        .collect();
    targets.dedup();
    for target in targets {
        let Some(info) = ns.targets.get(target) else {
            continue;
        };
        if !rotates_credentials(info.target_type) {
            report(
                ViolationKind::CredentialsNotRotated,
                None,
                format!(
                    "owner {} has left, and TargetSystem/{target} ({:?}) cannot rotate this identity's credentials: rotate its tokens or passwords there by hand{then}",
                    exit.owner, info.target_type
                ),
            );
        }
    }
}

/// Attribute checks for a human: department, a valid manager for employees and interns,
/// an end date for contractors and vendors.
fn check_human(
    ns: &Namespace,
    rec: &IdentityRecord,
    missing: &mut Vec<String>,
    report: &mut dyn FnMut(ViolationKind, Option<&str>, String),
) {
    let Some(human) = &rec.human else {
        missing.push("employment".into());
        return;
    };
    if human.department.is_none() {
        missing.push("department".into());
    }
    let needs_manager = matches!(
        human.employment_type,
        EmploymentType::Employee | EmploymentType::Intern
    );
    match human.manager.as_deref() {
        None if needs_manager => missing.push("manager".into()),
        None => {}
        Some(manager) => {
            let target = ns.identities.get(manager);
            if manager == rec.name {
                // Its own manager: the head of the organisation, by explicit, reviewed choice.
            } else if target.is_none_or(|m| m.identity_type != IdentityType::Human) {
                report(
                    ViolationKind::UnknownReference,
                    Some("spec.employment.manager"),
                    format!(
                        "manager {manager:?} is not a Human Identity in namespace {}",
                        ns.name
                    ),
                );
                // Contractors and vendors need no manager: a dangling one is an error to
                // fix, not a reason to withhold their access.
                if needs_manager {
                    missing.push("manager".into());
                }
            } else if ns.in_manager_cycle.contains(&rec.name) {
                report(
                    ViolationKind::ManagerCycle,
                    Some("spec.employment.manager"),
                    format!(
                        "the manager chain through {manager} loops back to {}: fix one manager in the loop",
                        rec.name
                    ),
                );
                missing.push("manager".into());
            }
        }
    }
    if matches!(
        human.employment_type,
        EmploymentType::Contractor | EmploymentType::Vendor
    ) && human.end_date.is_none()
        && !missing.iter().any(|m| m == "endDate")
    {
        missing.push("endDate".into());
    }
}
