//! Break-glass exceptions in the pure engine and planner: in force at once without an
//! approver, never beyond `--break-glass-max` (hard maximum 24 h), revoked early unless a
//! Git commit ratifies them in time, and their sessions ended when their grants go.

mod common;

use gatehouse::api::Exception;
use gatehouse::engine::{ExceptionPhase, Settings, ViolationKind};
use gatehouse::plan::{AccessState, Action, plan};
use jiff::SignedDuration;

use ExceptionPhase as E;
use ViolationKind as VK;
use common::*;

/// One break-glass exception as the API server would hold it.
#[derive(Clone, Copy)]
struct Bg {
    /// `spec.breakGlass`.
    flag: bool,
    approvers: &'static str,
    from: &'static str,
    until: &'static str,
    /// `metadata.creationTimestamp`.
    created: &'static str,
    /// The admission-checked creator annotation; empty: none (created in Git).
    by: &'static str,
    /// The commit annotation a Git apply sets; empty: none.
    commit: &'static str,
    /// The PolicySource label a Git apply sets.
    label: bool,
}

const BG: Bg = Bg {
    flag: true,
    approvers: "[]",
    from: "2026-06-15T10:00:00Z",
    until: "2026-06-15T14:00:00Z",
    created: "2026-06-15T10:00:00Z",
    by: "oncall-ana",
    commit: "",
    label: false,
};

impl Bg {
    fn object(&self) -> Exception {
        let mut notes = Vec::new();
        if !self.by.is_empty() {
            notes.push(format!("gatehouse.dev/break-glass-by: {}", self.by));
        }
        if !self.commit.is_empty() {
            notes.push(format!("gatehouse.dev/commit: '{}'", self.commit));
            notes.push("gatehouse.dev/author: iam-lead".to_string());
        }
        let mut meta = format!(
            "name: bg, namespace: {NS}, annotations: {{{}}}",
            notes.join(", ")
        );
        if !self.created.is_empty() {
            meta.push_str(&format!(", creationTimestamp: '{}'", self.created));
        }
        if self.label {
            meta.push_str(", labels: {gatehouse.dev/source: access}");
        }
        yaml(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Exception\nmetadata: {{{meta}}}\nspec: {{identity: alice, entitlements: [{{target: pg, name: ledger_admin}}], justification: incident INC-7, requestedBy: alice, approvedBy: {}, validFrom: '{}', expiresAt: '{}', breakGlass: {}}}\n",
            self.approvers, self.from, self.until, self.flag
        ))
    }
}

fn org(bg: &Bg) -> Org {
    let mut org = Org::new()
        .human("boss", "status: Active, department: exec, manager: boss")
        .human("alice", "status: Active, department: ops, manager: boss")
        .human("carol", "status: Active, department: sec, manager: boss")
        .policy(
            "ops",
            "selector: {matchAttributes: {department: ops}}, entitlements: [{target: pg, name: reader}]",
        );
    org.snap.exceptions.push(bg.object());
    org
}

/// Collects mismatches so that the table reports every failing case at once.
#[derive(Default)]
struct Fails(Vec<String>);

impl Fails {
    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, case: &str, what: &str, got: T, want: T) {
        if got != want {
            self.0.push(format!(
                "[{case}] {what}:\n    got  {got:?}\n    want {want:?}"
            ));
        }
    }

    fn done(self) {
        assert!(
            self.0.is_empty(),
            "{} mismatch(es):\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

type Row = (
    &'static str,
    Bg,
    &'static str,
    ExceptionPhase,
    Vec<ViolationKind>,
    Option<&'static str>,
);

#[test]
fn break_glass_decisions() {
    let ratified = Bg {
        commit: "0123abcd",
        ..BG
    };
    #[rustfmt::skip]
    let cases: Vec<Row> = vec![
        // (what, exception, now, phase, findings, next change of the subject)
        ("in force at once, no approver", BG, "2026-06-15T10:00:00Z", E::Active, vec![VK::BreakGlassActive], Some("2026-06-15T11:00:00Z")),
        ("unratified, one second before the deadline", BG, "2026-06-15T10:59:59Z", E::Active, vec![VK::BreakGlassActive], Some("2026-06-15T11:00:00Z")),
        ("unratified at the deadline: revoked early", BG, "2026-06-15T11:00:00Z", E::Revoked, vec![VK::BreakGlassUnratified], Some("2026-06-15T14:00:00Z")),
        ("unratified long after: still revoked", BG, "2026-06-15T13:00:00Z", E::Revoked, vec![VK::BreakGlassUnratified], Some("2026-06-15T14:00:00Z")),
        ("ratified in Git keeps it past the deadline", ratified, "2026-06-15T11:30:00Z", E::Active, vec![VK::BreakGlassActive], Some("2026-06-15T14:00:00Z")),
        ("ratified, at expiresAt: expired", ratified, "2026-06-15T14:00:00Z", E::Expired, vec![VK::ExpiredException], None),
        ("window past --break-glass-max ends at validFrom + 4h", Bg { until: "2026-06-15T20:00:00Z", ..ratified }, "2026-06-15T13:59:59Z", E::Active, vec![VK::BreakGlassActive], Some("2026-06-15T14:00:00Z")),
        ("window past --break-glass-max: expired at validFrom + 4h", Bg { until: "2026-06-15T20:00:00Z", ..ratified }, "2026-06-15T14:00:00Z", E::Expired, vec![VK::ExpiredException], Some("2026-06-15T20:00:00Z")),
        ("exactly the 24h hard maximum is accepted", Bg { until: "2026-06-16T10:00:00Z", ..ratified }, "2026-06-15T12:00:00Z", E::Active, vec![VK::BreakGlassActive], Some("2026-06-15T14:00:00Z")),
        ("over the 24h hard maximum: refused", Bg { until: "2026-06-16T10:00:01Z", ..ratified }, "2026-06-15T12:00:00Z", E::Invalid, vec![VK::InvalidException], None),
        ("read from files (no creation time, no creator): ratified", Bg { by: "", created: "", ..BG }, "2026-06-15T12:00:00Z", E::Active, vec![VK::BreakGlassActive], Some("2026-06-15T14:00:00Z")),
        ("in the cluster without creator annotation nor Git provenance: unratified", Bg { by: "", ..BG }, "2026-06-15T11:00:00Z", E::Revoked, vec![VK::BreakGlassUnratified], Some("2026-06-15T14:00:00Z")),
        ("applied by a PolicySource (source label): ratified", Bg { by: "", label: true, ..BG }, "2026-06-15T12:00:00Z", E::Active, vec![VK::BreakGlassActive], Some("2026-06-15T14:00:00Z")),
        ("window not open yet", Bg { from: "2026-06-15T13:00:00Z", until: "2026-06-15T15:00:00Z", ..BG }, "2026-06-15T12:00:00Z", E::Pending, vec![], Some("2026-06-15T13:00:00Z")),
        ("deadline counts from creation when later than validFrom", Bg { created: "2026-06-15T10:30:00Z", ..BG }, "2026-06-15T11:15:00Z", E::Active, vec![VK::BreakGlassActive], Some("2026-06-15T11:30:00Z")),
        ("deadline from creation passed", Bg { created: "2026-06-15T10:30:00Z", ..BG }, "2026-06-15T11:30:00Z", E::Revoked, vec![VK::BreakGlassUnratified], Some("2026-06-15T14:00:00Z")),
        ("without breakGlass an approver is still required", Bg { flag: false, ..BG }, "2026-06-15T10:30:00Z", E::Invalid, vec![VK::InvalidException], None),
    ];
    let mut f = Fails::default();
    for (what, bg, now, phase, kinds, next) in cases {
        let d = org(&bg).eval(now);
        let verdict = &d.exceptions[&(NS.to_string(), "bg".to_string())];
        f.eq(what, "phase", verdict.phase, phase);
        f.eq(what, "findings", kinds_on(&d, "Exception/bg"), kinds);
        let granted = ents(access(&d, "alice")).contains(&"pg:ledger_admin".to_string());
        f.eq(what, "granted", granted, phase == E::Active);
        f.eq(
            what,
            "next change",
            access(&d, "alice").next_change.map(|t| t.to_string()),
            next.map(str::to_string),
        );
        if bg.flag && phase != E::Invalid {
            let info = verdict.break_glass.as_ref().expect("break-glass verdict");
            let by = match (bg.by, bg.commit) {
                ("", "") => None,
                ("", _) => Some("iam-lead"),
                (by, _) => Some(by),
            };
            f.eq(what, "recorded user", info.by.as_deref(), by);
            f.eq(
                what,
                "ratified",
                info.ratified,
                (bg.by.is_empty() && bg.created.is_empty()) || !bg.commit.is_empty() || bg.label,
            );
        }
        let ended = d.break_glass_ended.contains_key(&key("alice"));
        f.eq(
            what,
            "listed as ended",
            ended,
            matches!(phase, E::Expired | E::Revoked),
        );
    }
    f.done();
}

#[test]
fn findings_name_the_user_and_the_deadline() {
    let d = org(&BG).eval("2026-06-15T10:30:00Z");
    let v = findings_on(&d, NS, "Exception/bg");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].field.as_deref(), Some("spec.breakGlass"));
    assert_eq!(v[0].identity.as_deref(), Some("alice"));
    assert!(v[0].message.contains("oncall-ana"), "{}", v[0].message);
    assert!(
        v[0].message.contains("2026-06-15T11:00:00Z"),
        "{}",
        v[0].message
    );
    let d = org(&BG).eval("2026-06-15T11:00:00Z");
    let v = findings_on(&d, NS, "Exception/bg");
    assert!(v[0].message.contains("not ratified"), "{}", v[0].message);
}

#[test]
fn break_glass_max_is_a_setting_capped_at_24h() {
    let long = Bg {
        until: "2026-06-16T10:00:00Z",
        commit: "0123abcd",
        ..BG
    };
    let one = Settings {
        break_glass_max: SignedDuration::from_hours(1),
        ..Settings::default()
    };
    let d = org(&long).eval_with(
        "2026-06-15T11:00:00Z",
        &one,
        &gatehouse::engine::NothingHeld,
    );
    assert_eq!(d.exceptions[&(NS.into(), "bg".into())].phase, E::Expired);
    // A setting beyond the hard maximum is held to 24h.
    let week = Settings {
        break_glass_max: SignedDuration::from_hours(7 * 24),
        ..Settings::default()
    };
    let verdict = org(&long).eval_with(
        "2026-06-15T11:00:00Z",
        &week,
        &gatehouse::engine::NothingHeld,
    );
    let info = verdict.exceptions[&(NS.into(), "bg".into())]
        .break_glass
        .clone()
        .unwrap();
    assert_eq!(info.until.to_string(), "2026-06-16T10:00:00Z");
    let ratify = Settings {
        break_glass_ratify: SignedDuration::from_mins(10),
        ..Settings::default()
    };
    let d = org(&BG).eval_with(
        "2026-06-15T10:10:00Z",
        &ratify,
        &gatehouse::engine::NothingHeld,
    );
    assert_eq!(d.exceptions[&(NS.into(), "bg".into())].phase, E::Revoked);
}

/// Operations of `alice` on `pg`, by action name.
fn pg_actions(p: &gatehouse::plan::Plan) -> Vec<&'static str> {
    p.operations
        .iter()
        .filter(|op| op.identity.name == "alice" && op.target == "pg")
        .map(|op| op.action.name())
        .collect()
}

#[test]
fn ending_break_glass_ends_its_sessions() {
    let ratified = Bg {
        commit: "0123abcd",
        ..BG
    };
    // Granted while in force.
    let during = org(&BG).eval("2026-06-15T10:30:00Z");
    let held = AccessState::from_desired(&during);
    assert_eq!(
        pg_actions(&plan(&AccessState::default(), &during)),
        vec!["createAccount", "grant", "grant"]
    );
    // Revoked unratified: the grant goes and so do the sessions on that target, though
    // the account stays (alice keeps pg:reader from her policy).
    let after = org(&BG).eval("2026-06-15T11:00:00Z");
    let p = plan(&held, &after);
    let ops = pg_actions(&p);
    assert_eq!(ops, vec!["revokeSessions", "revoke"]);
    // Expired after ratification: the same.
    let held = AccessState::from_desired(&org(&ratified).eval("2026-06-15T12:00:00Z"));
    let ops = pg_actions(&plan(&held, &org(&ratified).eval("2026-06-15T14:00:00Z")));
    assert!(ops.contains(&"revokeSessions"), "{ops:?}");
    // Nothing held any more: nothing to do, no repeated session revocation.
    let gone = org(&ratified).eval("2026-06-15T15:00:00Z");
    let ops = pg_actions(&plan(&AccessState::from_desired(&gone), &gone));
    assert!(ops.is_empty(), "{ops:?}");
    // An ordinary exception's expiry revokes the grant and leaves sessions alone.
    let plain = Bg {
        flag: false,
        approvers: "[carol]",
        by: "",
        ..BG
    };
    let held = AccessState::from_desired(&org(&plain).eval("2026-06-15T12:00:00Z"));
    let ops = pg_actions(&plan(&held, &org(&plain).eval("2026-06-15T14:00:00Z")));
    assert_eq!(ops, vec!["revoke"]);
    // In force and held: no operations.
    let now = org(&ratified).eval("2026-06-15T12:00:00Z");
    assert!(
        plan(&AccessState::from_desired(&now), &now)
            .operations
            .iter()
            .all(|op| op.action != Action::RevokeSessions)
    );
}
