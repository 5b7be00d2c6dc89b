//! Identity status from the engine's verdict and the apply results: what is written back
//! to the API server. Pure; the writer compares and only patches on change.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    AccessPolicyStatus, Condition, EntitlementRef, EntitlementStatus, ExceptionStatus,
    IdentityStatus, SourceStatus, TargetSystemStatus, condition_types,
};
use crate::engine::{
    ExceptionPhase, ExceptionVerdict, IdentityAccess, Phase, Severity, Violation, ViolationKind,
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

/// Builds an Identity's status. `previous` keeps `lastTransitionTime` of conditions whose
/// status did not change.
pub fn identity_status(
    access: &IdentityAccess,
    findings: &[&Violation],
    applied: &BTreeMap<EntitlementRef, ApplyState>,
    previous: Option<&IdentityStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> IdentityStatus {
    let state_of = |e: &EntitlementRef| {
        applied
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
    let problems: Vec<String> = access
        .enforced()
        .filter_map(|g| match state_of(&g.entitlement) {
            ApplyState::Applied => None,
            ApplyState::Pending(why) => Some(format!("{} pending: {why}", g.entitlement)),
            ApplyState::Failed(why) => Some(format!("{} failed: {why}", g.entitlement)),
        })
        .collect();
    let attribute_problems: Vec<&str> = findings
        .iter()
        .filter(|v| {
            matches!(
                v.kind,
                ViolationKind::MissingAttributes
                    | ViolationKind::InvalidValue
                    | ViolationKind::UnknownReference
                    | ViolationKind::ManagerCycle
            )
        })
        .map(|v| v.message.as_str())
        .collect();
    let errors: Vec<&str> = findings
        .iter()
        .filter(|v| v.severity == Severity::Error)
        .map(|v| v.message.as_str())
        .collect();
    let leaver = matches!(access.phase, Phase::Terminated | Phase::Unowned)
        || (access.phase == Phase::OwnerTerminated && access.entitlements.is_empty());

    let mut conditions =
        Conditions::new(previous.map(|p| p.conditions.as_slice()), generation, now);
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        conditions.set(type_, ok, reason, message)
    };
    let ready = problems.is_empty() && errors.is_empty();
    set(
        condition_types::READY,
        ready,
        if !errors.is_empty() {
            "Invalid"
        } else if problems.is_empty() {
            "Reconciled"
        } else {
            "Pending"
        },
        if ready {
            format!(
                "{} with {} entitlements in force",
                access.phase,
                access.enforced().count()
            )
        } else {
            errors
                .iter()
                .copied()
                .map(str::to_string)
                .chain(problems.iter().cloned())
                .collect::<Vec<_>>()
                .join("; ")
        },
    );
    // kstatus reads `Reconciling`, not `Ready`: while operations are outstanding (and will be
    // retried) the Identity is in progress, not current.
    conditions.set_if(
        condition_types::RECONCILING,
        (errors.is_empty() && !problems.is_empty()).then(|| ("Pending", problems.join("; "))),
    );
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        conditions.set(type_, ok, reason, message)
    };
    set(
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
        set(
            condition_types::REVOKED,
            problems.is_empty(),
            "Leaver",
            format!("phase {}", access.phase),
        );
    } else {
        set(
            condition_types::PROVISIONED,
            problems.is_empty()
                && matches!(
                    access.phase,
                    Phase::Active | Phase::OnLeave | Phase::OwnerTerminated
                ),
            &access.phase.to_string(),
            problems.join("; "),
        );
    }
    IdentityStatus {
        observed_generation: generation,
        phase: Some(access.phase.to_string()),
        entitlement_count: Some(entitlements.len() as i64),
        entitlements,
        conditions: conditions.finish(),
    }
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
}

impl TargetReport {
    /// Operations planned but not carried out: all of them in Observe mode or when the
    /// sync stalled before applying, else the ones that failed.
    pub fn outstanding(&self) -> usize {
        if self.unreachable.is_some() {
            0
        } else if self.observe_only || (self.stalled.is_some() && self.failed == 0) {
            self.planned
        } else {
            self.failed
        }
    }
}

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
        phase: Some(phase),
        conditions: c.finish(),
    }
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

    #[test]
    fn ready_follows_apply_state_and_keeps_transition_times() {
        let a = alice("Active");
        let view = (*a.entitlements[0].entitlement).clone();
        let t0: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-12-01T00:05:00Z".parse().unwrap();
        let pending = identity_status(&a, &[], &BTreeMap::new(), None, Some(1), t0);
        assert_eq!(condition(&pending, "Ready").status, "False");
        assert_eq!(pending.entitlements[0].state.as_deref(), Some("Pending"));
        assert_eq!(
            condition(&pending, "Reconciling").status,
            "True",
            "kstatus sees work in progress"
        );
        let applied = BTreeMap::from([(view.clone(), ApplyState::Applied)]);
        let ready = identity_status(&a, &[], &applied, Some(&pending), Some(1), t1);
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
        let again = identity_status(
            &a,
            &[],
            &applied,
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
    fn a_leaver_reports_revoked() {
        let gone = identity_status(
            &alice("Terminated"),
            &[],
            &BTreeMap::new(),
            None,
            Some(2),
            "2026-12-01T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(condition(&gone, "Revoked").status, "True");
        assert_eq!(condition(&gone, "Ready").status, "True");
        assert!(gone.conditions.iter().all(|c| c.type_ != "Provisioned"));
        assert_eq!(gone.entitlement_count, Some(0));
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
