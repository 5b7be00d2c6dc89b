//! Exception validity: approvers, time window and maximum duration.

use jiff::{SignedDuration, Timestamp};

use super::index::{ExceptionRecord, Namespace};
use super::model::{ExceptionPhase, ExceptionVerdict, Phase, Violation, ViolationKind};
use super::{Engine, Settings};
use crate::api::IdentityType;

/// Judges one exception at `now`; `phase_of` gives the current phase of a named identity.
pub fn judge(
    ns: &Namespace,
    exc: &ExceptionRecord,
    now: Timestamp,
    settings: &Settings,
    phase_of: &dyn Fn(&str) -> Option<Phase>,
) -> (ExceptionVerdict, Vec<Violation>) {
    let object = format!("Exception/{}", exc.name);
    let mut violations = Vec::new();
    let mut problems = Vec::new();
    let mut flag = |kind: ViolationKind, field: &str, message: String| {
        problems.push(message.clone());
        violations.push(Engine::violation(
            kind,
            &ns.name,
            Some(&exc.subject),
            &object,
            Some(field),
            message,
        ));
    };
    for (field, msg) in &exc.invalid {
        flag(ViolationKind::InvalidValue, field, msg.clone());
    }
    let subject = ns.identities.get(&exc.subject);
    if subject.is_none() {
        flag(
            ViolationKind::UnknownReference,
            "spec.identity",
            format!(
                "spec.identity names {:?}, which is not an Identity in namespace {}",
                exc.subject, ns.name
            ),
        );
    }
    // The subject's reporting line: a human's manager, or a machine's owner.
    let line_manager = subject.and_then(|s| match s.identity_type {
        IdentityType::Human => s.human.as_ref().and_then(|h| h.manager.as_deref()),
        IdentityType::NonHuman => s.owner.as_deref(),
    });
    if !ns.identities.contains_key(&exc.requested_by) {
        flag(
            ViolationKind::UnknownReference,
            "spec.requestedBy",
            format!(
                "spec.requestedBy names {:?}, which is not an Identity in namespace {}",
                exc.requested_by, ns.name
            ),
        );
    }
    if exc.approved_by.is_empty() {
        flag(
            ViolationKind::InvalidException,
            "spec.approvedBy",
            "no approver: add at least one person outside the subject's reporting line to spec.approvedBy".into(),
        );
    }
    for approver in &exc.approved_by {
        let field = "spec.approvedBy";
        let Some(rec) = ns.identities.get(approver) else {
            flag(
                ViolationKind::UnknownReference,
                field,
                format!(
                    "approver {approver:?} is not an Identity in namespace {}",
                    ns.name
                ),
            );
            continue;
        };
        if approver == &exc.requested_by {
            flag(
                ViolationKind::InvalidException,
                field,
                format!("{approver} requested this exception and may not approve it"),
            );
        }
        if approver == &exc.subject {
            flag(
                ViolationKind::InvalidException,
                field,
                format!("{approver} is the subject and may not approve their own exception"),
            );
        }
        if Some(approver.as_str()) == line_manager {
            flag(
                ViolationKind::InvalidException,
                field,
                format!(
                    "{approver} is the subject's manager: a manager may request but never approve; ask someone outside the reporting line"
                ),
            );
        }
        if rec.identity_type != IdentityType::Human {
            flag(
                ViolationKind::InvalidException,
                field,
                format!("approver {approver} is not a Human identity"),
            );
        } else if let Some(phase) = phase_of(approver).filter(|p| *p != Phase::Active) {
            flag(
                ViolationKind::InvalidException,
                field,
                format!("approver {approver} is not active ({phase})"),
            );
        }
    }
    for (i, e) in exc.entitlements.iter().enumerate() {
        if let Some((kind, suffix, msg)) = ns.entitlement_problem(e) {
            flag(kind, &format!("spec.entitlements[{i}].{suffix}"), msg);
        }
    }
    if let (Some(from), Some(until)) = (exc.valid_from, exc.expires_at) {
        let length = from.duration_until(until);
        if length <= SignedDuration::ZERO {
            flag(
                ViolationKind::InvalidException,
                "spec.expiresAt",
                "spec.expiresAt must be after spec.validFrom".into(),
            );
        } else {
            let (limit, by) = max_duration(ns, exc, settings);
            if length > limit {
                flag(
                    ViolationKind::InvalidException,
                    "spec.expiresAt",
                    format!(
                        "the window lasts {}h, longer than the {}h allowed by {by}: shorten it or split it into reviewed renewals",
                        length.as_secs() / 3600,
                        limit.as_secs() / 3600
                    ),
                );
            }
        }
    }
    let phase = if !problems.is_empty() {
        ExceptionPhase::Invalid
    } else {
        match (exc.valid_from, exc.expires_at) {
            (Some(from), _) if now < from => ExceptionPhase::Pending,
            (_, Some(until)) if now >= until => ExceptionPhase::Expired,
            _ => ExceptionPhase::Active,
        }
    };
    if phase == ExceptionPhase::Expired {
        violations.push(Engine::violation(
            ViolationKind::ExpiredException,
            &ns.name,
            Some(&exc.subject),
            &object,
            Some("spec.expiresAt"),
            format!(
                "expired at {}: it grants nothing; delete the file or renew it with a new approval",
                exc.expires_at.unwrap_or_default()
            ),
        ));
    }
    (ExceptionVerdict { phase, problems }, violations)
}

/// The longest window allowed: the strictest `maxDuration` among policies granting any of
/// the exception's entitlements, else the engine default. Returns the limit and its origin.
fn max_duration(
    ns: &Namespace,
    exc: &ExceptionRecord,
    settings: &Settings,
) -> (SignedDuration, String) {
    exc.ids
        .iter()
        .filter_map(|&id| ns.max_exception_by_id.get(id as usize).copied().flatten())
        .min_by_key(|(limit, policy)| (*limit, *policy))
        .map(|(limit, policy)| {
            (
                limit,
                format!(
                    "AccessPolicy/{} exceptionPolicy.maxDuration",
                    ns.policies[policy].name
                ),
            )
        })
        .unwrap_or((
            settings.default_max_exception,
            "the default maximum (--max-exception-duration)".into(),
        ))
}
