//! Exception validity: approvers, time window and maximum duration; break-glass windows
//! and their ratification.

use jiff::{SignedDuration, Timestamp};

use super::index::{ExceptionRecord, Namespace};
use super::model::{
    BreakGlassVerdict, ExceptionPhase, ExceptionVerdict, Phase, Violation, ViolationKind,
};
use super::{Engine, Settings};
use crate::api::{BREAK_GLASS_HARD_MAX_HOURS, IdentityType};

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
    if exc.approved_by.is_empty() && !exc.break_glass {
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
    let break_glass = exc
        .break_glass
        .then(|| break_glass_window(exc, settings))
        .flatten();
    if let (Some(from), Some(until)) = (exc.valid_from, exc.expires_at) {
        let length = from.duration_until(until);
        if length <= SignedDuration::ZERO {
            flag(
                ViolationKind::InvalidException,
                "spec.expiresAt",
                "spec.expiresAt must be after spec.validFrom".into(),
            );
        } else if exc.break_glass {
            let hard = SignedDuration::from_hours(BREAK_GLASS_HARD_MAX_HOURS);
            if length > hard {
                flag(
                    ViolationKind::InvalidException,
                    "spec.expiresAt",
                    format!(
                        "a break-glass window lasts at most {BREAK_GLASS_HARD_MAX_HOURS}h and this one lasts {}h: bring spec.expiresAt within {BREAK_GLASS_HARD_MAX_HOURS}h of spec.validFrom",
                        length.as_secs() / 3600
                    ),
                );
            }
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
    let ends = break_glass.as_ref().map(|b| b.until).or(exc.expires_at);
    let phase = if !problems.is_empty() {
        ExceptionPhase::Invalid
    } else {
        match (exc.valid_from, ends) {
            (Some(from), _) if now < from => ExceptionPhase::Pending,
            (_, Some(until)) if now >= until => ExceptionPhase::Expired,
            _ if break_glass
                .as_ref()
                .and_then(|b| b.ratify_by)
                .is_some_and(|by| now >= by) =>
            {
                ExceptionPhase::Revoked
            }
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
                ends.unwrap_or_default()
            ),
        ));
    }
    if let Some(bg) = &break_glass {
        violations.extend(break_glass_findings(ns, exc, phase, bg));
    }
    (
        ExceptionVerdict {
            phase,
            problems,
            break_glass,
        },
        violations,
    )
}

/// A break-glass exception's real window and ratification deadline; `None` when its
/// timestamps do not parse (reported as invalid values).
fn break_glass_window(exc: &ExceptionRecord, settings: &Settings) -> Option<BreakGlassVerdict> {
    let from = exc.valid_from?;
    let expires = exc.expires_at?;
    let max = settings
        .break_glass_max
        .min(SignedDuration::from_hours(BREAK_GLASS_HARD_MAX_HOURS));
    let until = expires.min(from.saturating_add(max).unwrap_or(expires));
    // Made outside Git until a Git commit of it is applied (commit annotation, label).
    let ratified = exc.from_git;
    let ratify_by = (!ratified).then(|| {
        let start = exc.created_at.map_or(from, |c| c.max(from));
        start
            .saturating_add(settings.break_glass_ratify)
            .unwrap_or(start)
    });
    Some(BreakGlassVerdict {
        by: exc
            .created_by
            .clone()
            .or_else(|| exc.source.provenance.author.clone()),
        from,
        until,
        ratified,
        ratify_by,
    })
}

/// Findings that make emergency access visible: one while it is in force, one when it
/// was revoked for want of ratification.
fn break_glass_findings(
    ns: &Namespace,
    exc: &ExceptionRecord,
    phase: ExceptionPhase,
    bg: &BreakGlassVerdict,
) -> Option<Violation> {
    let object = format!("Exception/{}", exc.name);
    let by = bg.by.as_deref().unwrap_or("an unknown user");
    let (kind, message) = match (phase, bg.ratify_by) {
        (ExceptionPhase::Active, Some(deadline)) => (
            ViolationKind::BreakGlassActive,
            format!(
                "break-glass access used by {by}, in force until {}; commit this Exception to Git before {deadline} or it is revoked then",
                bg.until
            ),
        ),
        (ExceptionPhase::Active, None) => (
            ViolationKind::BreakGlassActive,
            format!(
                "break-glass access used by {by}, ratified in Git, in force until {}",
                bg.until
            ),
        ),
        (ExceptionPhase::Revoked, Some(deadline)) => (
            ViolationKind::BreakGlassUnratified,
            format!(
                "break-glass access used by {by} was not ratified by a Git commit of this Exception before {deadline}: revoked early, sessions ended where the target can; review the use and delete the object"
            ),
        ),
        _ => return None,
    };
    Some(Engine::violation(
        kind,
        &ns.name,
        Some(&exc.subject),
        &object,
        Some("spec.breakGlass"),
        message,
    ))
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
