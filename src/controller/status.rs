//! Identity status from the engine's verdict and the apply results: what is written back
//! to the API server. Pure; the writer compares and only patches on change.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    AccessPolicyStatus, Condition, EntitlementRef, EntitlementStatus, ExceptionStatus,
    IdentityStatus, IdentityTargetStatus, SourceStatus, TargetSystemStatus, condition_types,
};
use crate::engine::{
    AccountIntent, ExceptionPhase, ExceptionVerdict, IdentityAccess, Severity, Violation,
    ViolationKind,
};

/// Where one entitlement stands on its target after a sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyState {
    /// Present on the target as desired.
    Applied,
    /// Not applied yet, with the reason (no connector, target in Observe mode, ...).
    Pending(String),
    /// The target refused or failed, with the error.
    Failed(String),
}

/// Builds a list of conditions with metav1.Condition semantics: `lastTransitionTime`
/// moves only when a condition's status does.
pub struct Conditions<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: Timestamp,
    out: Vec<Condition>,
}

impl<'a> Conditions<'a> {
    /// Starts from the conditions last written.
    pub fn new(previous: Option<&'a [Condition]>, generation: Option<i64>, now: Timestamp) -> Self {
        Self {
            previous: previous.unwrap_or_default(),
            generation,
            now,
            out: Vec::new(),
        }
    }

    /// Sets `type_` to True or False.
    pub fn set(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        self.set_status(type_, if ok { "True" } else { "False" }, reason, message);
    }

    /// Sets `type_` to `True`, `False` or `Unknown`.
    pub fn set_status(
        &mut self,
        type_: &str,
        status: &str,
        reason: &str,
        message: impl Into<String>,
    ) {
        let last = self
            .previous
            .iter()
            .find(|c| c.type_ == type_)
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(self.now));
        self.out.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: last,
            observed_generation: self.generation,
        });
    }

    /// Sets an abnormal-true condition (`Stalled`, `Reconciling`): present only while true.
    pub fn set_if(&mut self, type_: &str, when: Option<(&str, String)>) {
        if let Some((reason, message)) = when {
            self.set(type_, true, reason, message);
        }
    }

    /// The conditions, in the order set.
    pub fn finish(self) -> Vec<Condition> {
        self.out
    }
}

/// Where an identity stands on one target after a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// The target holds what it should: nothing was planned against a fresh observation
    /// (`confirmed`), or the target acknowledged every planned operation.
    Applied {
        /// Seen on a fresh observation, not only acknowledged.
        confirmed: bool,
    },
    /// Operations not carried out yet: (the first one, why).
    Pending(String, String),
    /// An operation failed: (the operation, the target's answer, permanent).
    Failed(String, String, bool),
}

/// One target of an identity, for its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetLine {
    /// The state.
    pub state: TargetState,
    /// Operations planned and not done.
    pub outstanding: usize,
}

/// Everything an Identity's status is built from.
pub struct IdentityFacts<'a> {
    /// The engine's verdict (for a deleted identity: a leaver with nothing).
    pub access: &'a IdentityAccess,
    /// Findings naming the identity.
    pub findings: &'a [&'a Violation],
    /// Per target the identity has (or had, or should have) something on.
    pub targets: &'a BTreeMap<String, TargetLine>,
    /// Apply state per entitlement.
    pub entitlements: &'a BTreeMap<EntitlementRef, ApplyState>,
    /// When it became a leaver, if it is one.
    pub leaver_since: Option<Timestamp>,
}

/// Builds an Identity's status. `previous` keeps `lastTransitionTime` of conditions whose
/// status did not change, and each target's `revokedAt`.
pub fn identity_status(
    facts: &IdentityFacts<'_>,
    previous: Option<&IdentityStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> IdentityStatus {
    let access = facts.access;
    let state_of = |e: &EntitlementRef| {
        facts
            .entitlements
            .get(e)
            .cloned()
            .unwrap_or(ApplyState::Pending("not synced yet".into()))
    };
    let entitlements: Vec<EntitlementStatus> = access
        .entitlements
        .iter()
        .map(|g| {
            let source = &g.sources[0];
            let state = if !g.enforced {
                "Observe".to_string()
            } else {
                match state_of(&g.entitlement) {
                    ApplyState::Applied => "Applied".into(),
                    ApplyState::Pending(_) => "Pending".into(),
                    ApplyState::Failed(_) => "Failed".into(),
                }
            };
            EntitlementStatus {
                entitlement: (*g.entitlement).clone(),
                source: SourceStatus {
                    kind: format!("{:?}", source.kind),
                    name: source.name.clone(),
                    commit: source.provenance.commit.clone(),
                    path: source.provenance.path.clone(),
                    author: source.provenance.author.clone(),
                    signer: source.provenance.signer.clone(),
                },
                state: Some(state),
            }
        })
        .collect();
    let leaver = access.account == AccountIntent::Revoked;
    let previous_targets: BTreeMap<&str, &IdentityTargetStatus> = previous
        .map(|p| p.targets.iter().map(|t| (t.target.as_str(), t)).collect())
        .unwrap_or_default();
    let leaver_since = facts.leaver_since.filter(|_| leaver);
    let mut failed = Vec::new();
    let mut pending = Vec::new();
    let mut permanent = false;
    let mut unconfirmed = Vec::new();
    let targets: Vec<IdentityTargetStatus> = facts
        .targets
        .iter()
        .map(|(target, line)| {
            let before = previous_targets.get(target.as_str());
            let (state, operation, message) = match &line.state {
                TargetState::Applied { confirmed } => {
                    if !confirmed {
                        unconfirmed.push(target.clone());
                    }
                    ("Applied", None, None)
                }
                TargetState::Pending(op, why) => {
                    pending.push(format!("{target}: {op} pending: {why}"));
                    ("Pending", Some(op.clone()), Some(why.clone()))
                }
                TargetState::Failed(op, why, is_permanent) => {
                    permanent |= is_permanent;
                    failed.push(format!("{target}: {op} failed: {why}"));
                    ("Failed", Some(op.clone()), Some(why.clone()))
                }
            };
            let confirmed = line.state == TargetState::Applied { confirmed: true };
            let (revoked_at, revocation_seconds) = match (leaver, confirmed) {
                (true, true) => match before.and_then(|b| b.revoked_at.clone()) {
                    Some(at) => (Some(at), before.and_then(|b| b.revocation_seconds)),
                    None => (
                        Some(Time(now)),
                        leaver_since.map(|since| seconds_between(since, now)),
                    ),
                },
                _ => (None, None),
            };
            IdentityTargetStatus {
                target: target.clone(),
                state: state.into(),
                pending_operations: (line.outstanding > 0).then_some(line.outstanding as i64),
                operation,
                message,
                revoked_at,
                revocation_seconds,
            }
        })
        .collect();
    // An entitlement pending or failed on a target with no line (not expected) still counts.
    let mut problems: Vec<String> = failed.iter().chain(&pending).cloned().collect();
    for g in access.enforced() {
        match state_of(&g.entitlement) {
            ApplyState::Applied => {}
            ApplyState::Pending(why) if !facts.targets.contains_key(&g.entitlement.target) => {
                problems.push(format!("{} pending: {why}", g.entitlement))
            }
            ApplyState::Failed(why) if !facts.targets.contains_key(&g.entitlement.target) => {
                problems.push(format!("{} failed: {why}", g.entitlement))
            }
            _ => {}
        }
    }
    let attribute_problems: Vec<&str> = facts
        .findings
        .iter()
        .filter(|v| v.kind.is_attribute_problem())
        .map(|v| v.message.as_str())
        .collect();
    let errors: Vec<&str> = facts
        .findings
        .iter()
        .filter(|v| v.severity == Severity::Error)
        .map(|v| v.message.as_str())
        .collect();
    // A leaver is revoked only when every target showed, on a fresh observation, that
    // nothing of theirs is left: an acknowledgement alone is not enough.
    let revoked = leaver && problems.is_empty() && unconfirmed.is_empty();

    let mut conditions =
        Conditions::new(previous.map(|p| p.conditions.as_slice()), generation, now);
    let ready = errors.is_empty() && problems.is_empty() && (!leaver || revoked);
    let reason = if !errors.is_empty() {
        "Invalid"
    } else if !failed.is_empty() {
        "ApplyFailed"
    } else if !ready {
        "Pending"
    } else {
        "Reconciled"
    };
    let waiting = || {
        if unconfirmed.is_empty() {
            String::new()
        } else {
            format!(
                "acknowledged; awaiting a re-observation of {}",
                unconfirmed.join(", ")
            )
        }
    };
    conditions.set(
        condition_types::READY,
        ready,
        reason,
        if ready {
            format!(
                "{} with {} entitlements in force",
                access.phase,
                access.enforced().count()
            )
        } else {
            let mut parts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            parts.extend(problems.iter().cloned());
            if parts.is_empty() {
                parts.push(waiting());
            }
            parts.join("; ")
        },
    );
    // kstatus reads `Reconciling` and `Stalled`, not `Ready`: work that will be retried is
    // in progress; a refusal that needs a person is stalled.
    let in_progress = errors.is_empty() && !ready && !permanent;
    conditions.set_if(
        condition_types::RECONCILING,
        in_progress.then(|| {
            let mut parts = problems.clone();
            if parts.is_empty() {
                parts.push(waiting());
            }
            ("Pending", parts.join("; "))
        }),
    );
    conditions.set_if(
        condition_types::STALLED,
        (errors.is_empty() && permanent).then(|| ("ApplyFailed", failed.join("; "))),
    );
    conditions.set(
        condition_types::ATTRIBUTES_VALID,
        attribute_problems.is_empty(),
        if attribute_problems.is_empty() {
            "Complete"
        } else {
            "Incomplete"
        },
        attribute_problems.join("; "),
    );
    if leaver {
        conditions.set(
            condition_types::REVOKED,
            revoked,
            if revoked {
                "Confirmed"
            } else if !failed.is_empty() {
                "ApplyFailed"
            } else {
                "Pending"
            },
            if revoked {
                format!("phase {}: nothing left on any target", access.phase)
            } else {
                let mut parts = problems.clone();
                if parts.is_empty() {
                    parts.push(waiting());
                }
                parts.join("; ")
            },
        );
    } else {
        let provisioned = problems.is_empty()
            && matches!(
                access.account,
                AccountIntent::Enabled | AccountIntent::Disabled
            );
        conditions.set(
            condition_types::PROVISIONED,
            provisioned,
            &access.phase.to_string(),
            problems.join("; "),
        );
    }
    IdentityStatus {
        observed_generation: generation,
        phase: Some(access.phase.to_string()),
        entitlement_count: Some(entitlements.len() as i64),
        entitlements,
        targets,
        leaver_since: leaver_since.map(Time),
        conditions: conditions.finish(),
    }
}

/// Seconds from `since` to `now`, never negative.
pub fn seconds_between(since: Timestamp, now: Timestamp) -> f64 {
    since.duration_until(now).as_secs_f64().max(0.0)
}

/// What one target's sync found, for its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetReport {
    /// Why the target could not be reached or configured (`Connected=False`).
    pub unreachable: Option<String>,
    /// Why progress needs a person (`Stalled=True`): bad configuration, permission denied,
    /// the blast-radius guard.
    pub stalled: Option<(String, String)>,
    /// Whether the target is in Observe mode (nothing is applied).
    pub observe_only: bool,
    /// Operations planned this pass.
    pub planned: usize,
    /// Of those, how many failed.
    pub failed: usize,
    /// The first failure, for the message.
    pub first_failure: Option<String>,
    /// Accounts in the managed scope with no Identity.
    pub orphans: Vec<String>,
    /// Operations planned and not carried out (held, failed or waiting for a retry).
    pub outstanding: usize,
    /// What the connector found that a person should look at.
    pub findings: Vec<String>,
    /// Failed operations waiting for their retry, with the target's answer.
    pub failed_operations: Vec<String>,
}

impl TargetReport {
    /// Operations planned but not carried out.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }
}

/// How many failed operations a TargetSystem status lists.
pub const FAILED_LISTED: usize = 20;

/// How many orphan account names the status lists (the count is always complete).
pub const ORPHANS_LISTED: usize = 50;

/// Builds a TargetSystem's status from its last sync.
pub fn target_status(
    report: &TargetReport,
    previous: Option<&TargetSystemStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> TargetSystemStatus {
    let mut c = Conditions::new(previous.map(|p| p.conditions.as_slice()), generation, now);
    let connected = report.unreachable.is_none();
    c.set(
        condition_types::READY,
        connected && report.stalled.is_none() && report.failed == 0,
        if !connected {
            "Unreachable"
        } else if let Some((reason, _)) = &report.stalled {
            reason
        } else if report.failed > 0 {
            "ApplyFailed"
        } else if report.observe_only {
            "Observing"
        } else {
            "Reconciled"
        },
        match (&report.unreachable, &report.stalled, &report.first_failure) {
            (Some(why), _, _) => why.clone(),
            (None, Some((_, why)), _) => why.clone(),
            (None, None, Some(why)) => {
                format!(
                    "{} of {} operations failed; first: {why}",
                    report.failed, report.planned
                )
            }
            (None, None, None) if report.observe_only => format!(
                "Observe mode: {} operations would be applied",
                report.planned
            ),
            (None, None, None) => String::new(),
        },
    );
    c.set(
        condition_types::CONNECTED,
        connected,
        if connected {
            "Connected"
        } else {
            "Unreachable"
        },
        report.unreachable.clone().unwrap_or_default(),
    );
    let in_sync = connected
        && report.failed == 0
        && report.stalled.is_none()
        && !(report.observe_only && report.planned > 0);
    c.set(
        condition_types::IN_SYNC,
        in_sync,
        if in_sync {
            "InSync"
        } else if !connected {
            "Unknown"
        } else if report.observe_only || report.stalled.is_some() {
            "DriftDetected"
        } else {
            "ApplyFailed"
        },
        if in_sync || !connected {
            String::new()
        } else {
            format!("{} operations outstanding", report.outstanding())
        },
    );
    c.set_if(
        condition_types::STALLED,
        report
            .stalled
            .as_ref()
            .map(|(r, m)| (r.as_str(), m.clone())),
    );
    TargetSystemStatus {
        observed_generation: generation,
        conditions: c.finish(),
        orphan_count: Some(report.orphans.len() as i64),
        orphans: report
            .orphans
            .iter()
            .take(ORPHANS_LISTED)
            .cloned()
            .collect(),
        pending_operations: Some(report.outstanding() as i64),
        findings: report.findings.clone(),
        failed_operations: report
            .failed_operations
            .iter()
            .take(FAILED_LISTED)
            .cloned()
            .collect(),
    }
}

/// Builds an AccessPolicy's status from the engine's findings about it.
pub fn policy_status(
    matched: usize,
    findings: &[&Violation],
    previous: Option<&AccessPolicyStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> AccessPolicyStatus {
    let mut c = Conditions::new(previous.map(|p| p.conditions.as_slice()), generation, now);
    let errors: Vec<&&Violation> = findings
        .iter()
        .filter(|v| v.severity == Severity::Error)
        .collect();
    let reason = match errors.first().map(|v| v.kind) {
        None => "Valid",
        Some(ViolationKind::UnknownReference) => "UnknownReference",
        Some(ViolationKind::SeparationOfDuties) => "SeparationOfDuties",
        Some(_) => "Invalid",
    };
    c.set(
        condition_types::READY,
        errors.is_empty(),
        reason,
        if errors.is_empty() {
            format!("matches {matched} identities")
        } else {
            messages(&errors)
        },
    );
    AccessPolicyStatus {
        observed_generation: generation,
        matched_identities: Some(matched as i64),
        conditions: c.finish(),
    }
}

/// Builds an Exception's status from the engine's verdict.
pub fn exception_status(
    verdict: &ExceptionVerdict,
    previous: Option<&ExceptionStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> ExceptionStatus {
    let mut c = Conditions::new(previous.map(|p| p.conditions.as_slice()), generation, now);
    let phase = format!("{:?}", verdict.phase);
    let approved = verdict.phase != ExceptionPhase::Invalid;
    let problems = verdict.problems.join("; ");
    c.set(
        condition_types::READY,
        approved,
        &phase,
        match verdict.phase {
            ExceptionPhase::Invalid => problems.clone(),
            ExceptionPhase::Pending => "approved; its window has not opened yet".into(),
            ExceptionPhase::Active => "approved and in force".into(),
            ExceptionPhase::Expired => {
                "expired: its access is revoked; the object can be deleted".into()
            }
            ExceptionPhase::Revoked => {
                "break-glass access not ratified by a Git commit in time: revoked".into()
            }
        },
    );
    c.set(
        condition_types::APPROVED,
        approved,
        if approved { "Approved" } else { "RulesBroken" },
        problems,
    );
    c.set(
        condition_types::ACTIVE,
        verdict.phase == ExceptionPhase::Active,
        &phase,
        String::new(),
    );
    ExceptionStatus {
        observed_generation: generation,
        break_glass: break_glass_status(verdict, previous, now),
        phase: Some(phase),
        conditions: c.finish(),
    }
}

/// A break-glass exception's record: the verdict's facts, plus when it was first found in
/// force and when and how it ended (kept from `previous` once set).
fn break_glass_status(
    verdict: &ExceptionVerdict,
    previous: Option<&ExceptionStatus>,
    now: Timestamp,
) -> Option<crate::api::BreakGlassStatus> {
    let bg = verdict.break_glass.as_ref()?;
    let before = previous.and_then(|p| p.break_glass.as_ref());
    let kept =
        |f: fn(&crate::api::BreakGlassStatus) -> &Option<String>| before.and_then(|b| f(b).clone());
    let activated_at = kept(|b| &b.activated_at)
        .or_else(|| (verdict.phase == ExceptionPhase::Active).then(|| now.to_string()));
    let outcome = match verdict.phase {
        ExceptionPhase::Expired => Some("Expired"),
        ExceptionPhase::Revoked => Some("RevokedUnratified"),
        _ => None,
    };
    let (ended_at, outcome) = match (kept(|b| &b.outcome), outcome) {
        (Some(was), Some(is)) if was == is => (kept(|b| &b.ended_at), Some(was)),
        (_, Some(is)) => (Some(now.to_string()), Some(is.to_string())),
        (_, None) => (None, None),
    };
    Some(crate::api::BreakGlassStatus {
        by: bg.by.clone(),
        from: bg.from.to_string(),
        until: bg.until.to_string(),
        ratified: bg.ratified,
        ratify_by: bg.ratify_by.map(|t| t.to_string()),
        activated_at,
        ended_at,
        outcome,
    })
}

fn messages(findings: &[&&Violation]) -> String {
    findings
        .iter()
        .map(|v| match &v.field {
            Some(field) => format!("{field}: {}", v.message),
            None => v.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{NothingHeld, Settings, Snapshot, evaluate};

    fn alice(status: &str) -> IdentityAccess {
        let snapshot = Snapshot {
            identities: vec![serde_yaml::from_str(&format!("apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: alice, namespace: t}}\nspec: {{type: Human, employment: {{status: {status}, department: d, manager: alice}}}}")).unwrap()],
            policies: vec![serde_yaml::from_str("apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p, namespace: t}\nspec: {entitlements: [{target: k8s, kind: ClusterRole, name: view}]}").unwrap()],
            targets: vec![serde_yaml::from_str("apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {name: k8s, namespace: t}\nspec: {type: Kubernetes}").unwrap()],
            exceptions: vec![],
            ..Default::default()
        };
        let now = "2026-12-01T00:00:00Z".parse().unwrap();
        evaluate(&snapshot, now, &Settings::default(), &NothingHeld)
            .identities
            .into_values()
            .next()
            .unwrap()
    }

    fn condition<'a>(s: &'a IdentityStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn facts<'a>(
        access: &'a IdentityAccess,
        targets: &'a BTreeMap<String, TargetLine>,
        entitlements: &'a BTreeMap<EntitlementRef, ApplyState>,
    ) -> IdentityFacts<'a> {
        IdentityFacts {
            access,
            findings: &[],
            targets,
            entitlements,
            leaver_since: Some("2026-12-01T00:00:00Z".parse().unwrap()),
        }
    }

    fn line(state: TargetState, outstanding: usize) -> BTreeMap<String, TargetLine> {
        BTreeMap::from([("k8s".to_string(), TargetLine { state, outstanding })])
    }

    #[test]
    fn ready_follows_apply_state_and_keeps_transition_times() {
        let a = alice("Active");
        let view = (*a.entitlements[0].entitlement).clone();
        let t0: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-12-01T00:05:00Z".parse().unwrap();
        let none = BTreeMap::new();
        let waiting = line(
            TargetState::Pending("grant view".into(), "queued".into()),
            1,
        );
        let pending = identity_status(&facts(&a, &waiting, &none), None, Some(1), t0);
        assert_eq!(condition(&pending, "Ready").status, "False");
        assert_eq!(condition(&pending, "Ready").reason, "Pending");
        assert_eq!(pending.entitlements[0].state.as_deref(), Some("Pending"));
        assert_eq!(pending.targets[0].state, "Pending");
        assert_eq!(pending.targets[0].pending_operations, Some(1));
        assert_eq!(
            condition(&pending, "Reconciling").status,
            "True",
            "kstatus sees work in progress"
        );
        let applied = BTreeMap::from([(view.clone(), ApplyState::Applied)]);
        let done = line(TargetState::Applied { confirmed: true }, 0);
        let ready = identity_status(&facts(&a, &done, &applied), Some(&pending), Some(1), t1);
        assert_eq!(condition(&ready, "Ready").status, "True");
        assert!(
            ready.conditions.iter().all(|c| c.type_ != "Reconciling"),
            "Reconciling appears only while true"
        );
        assert_eq!(
            condition(&ready, "Ready").last_transition_time,
            Time(t1),
            "status changed: new time"
        );
        assert_eq!(
            condition(&ready, "AttributesValid").last_transition_time,
            Time(t0),
            "unchanged: time kept"
        );
        assert_eq!(ready.entitlements[0].source.name, "p");
        assert_eq!(ready.phase.as_deref(), Some("Active"));
        assert!(ready.leaver_since.is_none(), "not a leaver");
        let again = identity_status(
            &facts(&a, &done, &applied),
            Some(&ready),
            Some(1),
            "2026-12-01T01:00:00Z".parse().unwrap(),
        );
        assert_eq!(
            again, ready,
            "nothing changed: the same status, so nothing is written"
        );
    }

    #[test]
    fn a_leaver_is_revoked_only_when_every_target_confirms() {
        let gone = alice("Terminated");
        let none = BTreeMap::new();
        let at: Timestamp = "2026-12-01T00:10:00Z".parse().unwrap();
        // (target state, Revoked, Ready reason, Stalled present)
        let cases = [
            (
                TargetState::Applied { confirmed: true },
                "True",
                "Reconciled",
                false,
            ),
            (
                TargetState::Applied { confirmed: false },
                "False",
                "Pending",
                false,
            ),
            (
                TargetState::Pending("disable alice".into(), "Observe mode".into()),
                "False",
                "Pending",
                false,
            ),
            (
                TargetState::Failed("revoke view".into(), "501 Not Implemented".into(), true),
                "False",
                "ApplyFailed",
                true,
            ),
            (
                TargetState::Failed("revoke view".into(), "503".into(), false),
                "False",
                "ApplyFailed",
                false,
            ),
        ];
        for (state, revoked, reason, stalled) in cases {
            let targets = line(state.clone(), 0);
            let status = identity_status(&facts(&gone, &targets, &none), None, Some(2), at);
            assert_eq!(condition(&status, "Revoked").status, revoked, "{state:?}");
            assert_eq!(condition(&status, "Ready").reason, reason, "{state:?}");
            assert_eq!(
                condition(&status, "Ready").status == "True",
                revoked == "True",
                "{state:?}: Ready on a leaver means cut off"
            );
            assert_eq!(
                status.conditions.iter().any(|c| c.type_ == "Stalled"),
                stalled,
                "{state:?}"
            );
            assert!(status.conditions.iter().all(|c| c.type_ != "Provisioned"));
            assert_eq!(status.entitlement_count, Some(0));
            let target = &status.targets[0];
            if revoked == "True" {
                assert_eq!(target.revoked_at, Some(Time(at)));
                assert_eq!(target.revocation_seconds, Some(600.0));
            } else {
                assert_eq!(target.revoked_at, None, "{state:?}");
            }
        }
    }

    #[test]
    fn revoked_at_is_kept_once_confirmed() {
        let gone = alice("Terminated");
        let none = BTreeMap::new();
        let done = line(TargetState::Applied { confirmed: true }, 0);
        let first = identity_status(
            &facts(&gone, &done, &none),
            None,
            Some(2),
            "2026-12-01T00:10:00Z".parse().unwrap(),
        );
        let later = identity_status(
            &facts(&gone, &done, &none),
            Some(&first),
            Some(2),
            "2026-12-01T05:00:00Z".parse().unwrap(),
        );
        assert_eq!(later, first, "the SLA figure does not grow on later passes");
    }

    #[test]
    fn target_status_by_situation() {
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let base = TargetReport {
            planned: 4,
            ..TargetReport::default()
        };
        let cases = [
            // (report, Ready, InSync, Stalled reason, pending)
            (base.clone(), "True", "True", None, 0),
            (
                TargetReport {
                    observe_only: true,
                    outstanding: 4,
                    ..base.clone()
                },
                "True",
                "False",
                None,
                4,
            ),
            (
                TargetReport {
                    stalled: Some(("BlastRadiusExceeded".into(), "4 revocations".into())),
                    outstanding: 4,
                    ..base.clone()
                },
                "False",
                "False",
                Some("BlastRadiusExceeded"),
                4,
            ),
            (
                TargetReport {
                    failed: 1,
                    first_failure: Some("grant x: refused".into()),
                    outstanding: 1,
                    ..base.clone()
                },
                "False",
                "False",
                None,
                1,
            ),
            (
                TargetReport {
                    unreachable: Some("connection refused".into()),
                    ..TargetReport::default()
                },
                "False",
                "False",
                None,
                0,
            ),
        ];
        for (report, ready, in_sync, stalled, pending) in cases {
            let status = target_status(&report, None, Some(1), now);
            let get = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
            assert_eq!(get("Ready").unwrap().status, ready, "{report:?}");
            assert_eq!(get("InSync").unwrap().status, in_sync, "{report:?}");
            assert_eq!(
                get("Stalled").map(|c| c.reason.as_str()),
                stalled,
                "{report:?}"
            );
            assert_eq!(status.pending_operations, Some(pending), "{report:?}");
        }
    }
}
