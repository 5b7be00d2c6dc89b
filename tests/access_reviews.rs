//! Access reviews against the pure engine and planner: every decision path of a review
//! item, the reviewer rules, the end of a revocation when its source changes, progress,
//! and the blast-radius guard stalling a campaign's no-response revocations.

mod common;

use gatehouse::api::AccessReviewResponse;
use gatehouse::engine::review::source_digest;
use gatehouse::engine::{Engine, Settings, ViolationKind, WithheldReason};
use gatehouse::plan::decide::{Hold, TargetView, decide};
use gatehouse::plan::{AccessState, AccountState, Holding};

use common::*;

const FINANCE: &str = "selector: {matchAttributes: {department: finance}}, entitlements: [{target: ldap, name: finance}]";
const LEDGER: &str = "identity: alice, entitlements: [{target: pg, name: ledger_admin}], justification: close, requestedBy: dave, approvedBy: [bob], validFrom: \"2026-06-01T00:00:00Z\", expiresAt: \"2026-07-01T00:00:00Z\"";
/// Cycle opened 2026-06-01, due 14 days later.
const DUE: &str = "2026-06-15T00:00:00Z";
const BEFORE: &str = "2026-06-10T00:00:00Z";
const AFTER: &str = "2026-06-20T00:00:00Z";

fn org() -> Org {
    Org::new()
        .human(
            "carol",
            "status: Active, department: finance, manager: carol",
        )
        .human(
            "alice",
            "status: Active, department: finance, manager: carol",
        )
        .human("bob", "status: Active, department: finance, manager: carol")
        .human("dave", "status: Active, department: it, manager: carol")
        .policy("finance", FINANCE)
        .exception("ledger", LEDGER)
}

fn review(spec: &str) -> gatehouse::api::AccessReview {
    object("AccessReview", NS, "q", spec)
}

fn policy_review(no_response: &str) -> String {
    format!(
        "scope: {{policies: [finance]}}, reviewers: {{by: Manager}}, every: 90d, duePeriod: 14d, onNoResponse: {no_response}"
    )
}

/// A response by `reviewer` with one item about `identity`'s access from `source`.
fn response(
    reviewer: &str,
    identity: &str,
    entitlement: &str,
    source: (&str, &str, Option<&str>),
    decision: &str,
) -> AccessReviewResponse {
    let digest = source
        .2
        .map(|d| format!(", digest: {d}"))
        .unwrap_or_default();
    let justification = if decision == "pending" {
        String::new()
    } else {
        ", justification: checked".into()
    };
    object(
        "AccessReviewResponse",
        NS,
        &format!("q-2026-06-01-{reviewer}"),
        &format!(
            "review: q, reviewer: {reviewer}, cycle: \"2026-06-01\", items: [{{identity: {identity}, entitlement: {entitlement}, source: {{kind: {}, name: {}{digest}}}, decision: {decision}{justification}}}]",
            source.0, source.1
        ),
    )
}

fn finance_digest() -> String {
    source_digest(&policy_in(NS, "finance", FINANCE).spec)
}

fn with(mut o: Org, review_spec: &str, responses: Vec<AccessReviewResponse>) -> Org {
    o.snap.reviews.push(review(review_spec));
    o.snap.responses.extend(responses);
    o
}

fn by_review() -> WithheldReason {
    WithheldReason::Review { review: "q".into() }
}

fn kinds_on(d: &gatehouse::engine::DesiredState, object: &str) -> Vec<ViolationKind> {
    findings_on(d, NS, object).iter().map(|v| v.kind).collect()
}

/// case, decision, onNoResponse, now, alice keeps ldap:finance, findings on the response.
type DecisionRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    Vec<ViolationKind>,
);

#[test]
fn every_decision_path_of_a_policy_item() {
    let digest = finance_digest();
    // case, decision, onNoResponse, now, alice keeps ldap:finance, findings on the response
    let rows: [DecisionRow; 7] = [
        ("revoke", "revoke", "Keep", BEFORE, false, vec![]),
        ("revoke, Revoke", "revoke", "Revoke", BEFORE, false, vec![]),
        ("keep", "keep", "Revoke", AFTER, true, vec![]),
        (
            "pending before due, Revoke",
            "pending",
            "Revoke",
            BEFORE,
            true,
            vec![],
        ),
        (
            "pending after due, Revoke",
            "pending",
            "Revoke",
            AFTER,
            false,
            vec![ViolationKind::ReviewOverdue],
        ),
        (
            "pending after due, Keep",
            "pending",
            "Keep",
            AFTER,
            true,
            vec![ViolationKind::ReviewOverdue],
        ),
        (
            "pending exactly at due, Revoke",
            "pending",
            "Revoke",
            DUE,
            false,
            vec![ViolationKind::ReviewOverdue],
        ),
    ];
    let mut fails = Vec::new();
    for (case, decision, no_response, now, kept, findings) in rows {
        let o = with(
            org(),
            &policy_review(no_response),
            vec![response(
                "carol",
                "alice",
                "{target: ldap, name: finance}",
                ("AccessPolicy", "finance", Some(&digest)),
                decision,
            )],
        );
        let d = o.eval(now);
        let alice = access(&d, "alice");
        let has = ents(alice).contains(&"ldap:finance".to_string());
        if has != kept {
            fails.push(format!("[{case}] holds ldap:finance: {has}, want {kept}"));
        }
        let want_withheld = if kept {
            vec![]
        } else {
            vec![(
                "ldap:finance".to_string(),
                "finance".to_string(),
                by_review(),
            )]
        };
        let got: Vec<_> = withheld(alice)
            .into_iter()
            .filter(|w| matches!(w.2, WithheldReason::Review { .. }))
            .collect();
        if got != want_withheld {
            fails.push(format!("[{case}] withheld {got:?}, want {want_withheld:?}"));
        }
        let got = kinds_on(&d, "AccessReviewResponse/q-2026-06-01-carol");
        if got != findings {
            fails.push(format!("[{case}] findings {got:?}, want {findings:?}"));
        }
        // Bob, not in the response, is untouched.
        if !ents(access(&d, "bob")).contains(&"ldap:finance".to_string()) {
            fails.push(format!("[{case}] bob lost ldap:finance"));
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

#[test]
fn a_pending_item_under_revoke_changes_the_verdict_at_its_due_date() {
    let o = with(
        org(),
        &policy_review("Revoke"),
        vec![response(
            "carol",
            "alice",
            "{target: ldap, name: finance}",
            ("AccessPolicy", "finance", Some(&finance_digest())),
            "pending",
        )],
    );
    let d = o.eval(BEFORE);
    assert_eq!(access(&d, "alice").next_change, Some(ts(DUE)));
}

#[test]
fn the_reviewer_may_not_be_the_subject_nor_someone_the_review_does_not_name() {
    let digest = finance_digest();
    // case, reviewer, decision, alice keeps it after the due date under Revoke, finding kinds
    let rows = [
        (
            "subject keeps own access",
            "alice",
            "keep",
            false,
            vec![ViolationKind::ReviewOverdue, ViolationKind::ReviewRefused],
        ),
        (
            "subject revokes own access (counts as pending)",
            "alice",
            "revoke",
            false,
            vec![ViolationKind::ReviewOverdue, ViolationKind::ReviewRefused],
        ),
        (
            "bob is not alice's manager",
            "bob",
            "keep",
            false,
            vec![ViolationKind::ReviewOverdue, ViolationKind::ReviewRefused],
        ),
        ("carol is", "carol", "keep", true, vec![]),
    ];
    let mut fails = Vec::new();
    for (case, reviewer, decision, kept, mut want) in rows {
        let o = with(
            org(),
            &policy_review("Revoke"),
            vec![response(
                reviewer,
                "alice",
                "{target: ldap, name: finance}",
                ("AccessPolicy", "finance", Some(&digest)),
                decision,
            )],
        );
        let d = o.eval(AFTER);
        let has = ents(access(&d, "alice")).contains(&"ldap:finance".to_string());
        if has != kept {
            fails.push(format!("[{case}] holds ldap:finance: {has}, want {kept}"));
        }
        let mut got = kinds_on(&d, &format!("AccessReviewResponse/q-2026-06-01-{reviewer}"));
        got.sort();
        want.sort();
        if got != want {
            fails.push(format!("[{case}] findings {got:?}, want {want:?}"));
        }
        if let Some(v) = d
            .violations
            .iter()
            .find(|v| v.kind == ViolationKind::ReviewRefused)
        {
            assert_eq!(v.severity, gatehouse::engine::Severity::Error, "[{case}]");
            assert_eq!(
                v.field.as_deref(),
                Some("spec.items[0].decision"),
                "[{case}]"
            );
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

#[test]
fn a_reviewer_who_approved_the_exception_is_reported_and_still_counts() {
    let exc_digest = source_digest(&exception_in(NS, "ledger", LEDGER).spec);
    let spec = "scope: {exceptions: true}, reviewers: {by: Identities, identities: [bob, dave]}, every: 90d, duePeriod: 14d, onNoResponse: Revoke";
    let o = with(
        org(),
        spec,
        vec![response(
            "bob",
            "alice",
            "{target: pg, name: ledger_admin}",
            ("Exception", "ledger", Some(&exc_digest)),
            "revoke",
        )],
    );
    let d = o.eval(BEFORE);
    assert!(!ents(access(&d, "alice")).contains(&"pg:ledger_admin".to_string()));
    assert_eq!(
        withheld(access(&d, "alice")),
        vec![("pg:ledger_admin".into(), "ledger".into(), by_review())]
    );
    let found = findings_on(&d, NS, "AccessReviewResponse/q-2026-06-01-bob");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, ViolationKind::ReviewerGranted);
    assert_eq!(found[0].severity, gatehouse::engine::Severity::Warning);
    assert!(
        found[0].message.contains("Exception/ledger"),
        "{}",
        found[0].message
    );
}

#[test]
fn a_change_to_the_source_ends_the_withholding() {
    let old = finance_digest();
    let revoked = |o: Org| {
        let d = o.eval(BEFORE);
        !ents(access(&d, "alice")).contains(&"ldap:finance".to_string())
    };
    let answer = |digest: Option<&str>| {
        vec![response(
            "carol",
            "alice",
            "{target: ldap, name: finance}",
            ("AccessPolicy", "finance", digest),
            "revoke",
        )]
    };
    assert!(revoked(with(
        org(),
        &policy_review("Keep"),
        answer(Some(&old))
    )));
    // The policy is edited after the review: its digest differs, the answer is spent.
    let mut edited = org();
    edited.snap.policies[0].spec.description = Some("re-approved by IAM".into());
    assert!(!revoked(with(
        edited.clone(),
        &policy_review("Keep"),
        answer(Some(&old))
    )));
    // An answer without a digest holds whatever the spec (hand-written files).
    assert!(revoked(with(edited, &policy_review("Keep"), answer(None))));
    // The policy is gone: nothing to withhold, nothing granted either.
    let gone = with(org(), &policy_review("Keep"), answer(Some(&old)));
    let mut gone = gone;
    gone.snap.policies.clear();
    let d = gone.eval(BEFORE);
    assert!(withheld(access(&d, "alice")).is_empty());
    // Another source granting the same entitlement keeps it granted.
    let twice = org().policy("finance-too", FINANCE);
    let d = with(twice, &policy_review("Keep"), answer(Some(&old))).eval(BEFORE);
    let alice = access(&d, "alice");
    let grant = alice
        .entitlements
        .iter()
        .find(|g| g.entitlement.name == "finance")
        .expect("still granted by finance-too");
    assert_eq!(
        grant
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["finance-too"]
    );
}

#[test]
fn a_later_cycle_replaces_an_earlier_answer() {
    let digest = finance_digest();
    let mut second = response(
        "carol",
        "alice",
        "{target: ldap, name: finance}",
        ("AccessPolicy", "finance", Some(&digest)),
        "keep",
    );
    second.metadata.name = Some("q-2026-09-01-carol".into());
    second.spec.cycle = "2026-09-01".into();
    let first = response(
        "carol",
        "alice",
        "{target: ldap, name: finance}",
        ("AccessPolicy", "finance", Some(&digest)),
        "revoke",
    );
    let d = with(org(), &policy_review("Keep"), vec![second, first]).eval("2026-09-02T00:00:00Z");
    assert!(ents(access(&d, "alice")).contains(&"ldap:finance".to_string()));
    let p = &d.reviews[&(NS.to_string(), "q".to_string())];
    assert_eq!(p.cycle.as_deref(), Some("2026-09-01"));
    assert_eq!((p.pending, p.kept, p.revoked), (0, 1, 0));
}

#[test]
fn progress_counts_the_latest_cycle() {
    let digest = finance_digest();
    let mut r = response(
        "carol",
        "alice",
        "{target: ldap, name: finance}",
        ("AccessPolicy", "finance", Some(&digest)),
        "keep",
    );
    let pending = |who: &str| gatehouse::api::ReviewItem {
        identity: who.into(),
        decision: gatehouse::api::ReviewDecision::Pending,
        justification: None,
        ..r.spec.items[0].clone()
    };
    let revoke = gatehouse::api::ReviewItem {
        identity: "dave".into(),
        decision: gatehouse::api::ReviewDecision::Revoke,
        justification: Some("left the team".into()),
        ..r.spec.items[0].clone()
    };
    let bob = pending("bob");
    r.spec.items.extend([bob, revoke]);
    let key = (NS.to_string(), "q".to_string());
    let before = with(org(), &policy_review("Revoke"), vec![r.clone()]).eval(BEFORE);
    let p = &before.reviews[&key];
    assert_eq!((p.pending, p.kept, p.revoked), (1, 1, 1));
    assert!(p.overdue_reviewers.is_empty());
    assert_eq!(p.due, Some(ts(DUE)));
    assert_eq!(p.next_cycle, Some(ts("2026-08-30T00:00:00Z")));
    let after = with(org(), &policy_review("Revoke"), vec![r.clone()]).eval(AFTER);
    let p = &after.reviews[&key];
    assert_eq!((p.pending, p.kept, p.revoked), (0, 1, 2));
    assert_eq!(p.overdue_reviewers, ["carol"]);
    let keep = with(org(), &policy_review("Keep"), vec![r]).eval(AFTER);
    let p = &keep.reviews[&key];
    assert_eq!((p.pending, p.kept, p.revoked), (1, 1, 1));
    assert_eq!(p.overdue_reviewers, ["carol"]);
}

#[test]
fn a_response_to_an_unknown_review_is_an_error_and_withholds_nothing() {
    let mut o = org();
    o.snap.responses.push(response(
        "carol",
        "alice",
        "{target: ldap, name: finance}",
        ("AccessPolicy", "finance", None),
        "revoke",
    ));
    let d = o.eval(BEFORE);
    assert!(ents(access(&d, "alice")).contains(&"ldap:finance".to_string()));
    let found = findings_on(&d, NS, "AccessReviewResponse/q-2026-06-01-carol");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, ViolationKind::UnknownReference);
    assert_eq!(found[0].field.as_deref(), Some("spec.review"));
}

/// Ten finance people, all still pending after the due date under `onNoResponse: Revoke`,
/// on a target whose limit is five revocations per sync: the plan stalls on that target.
#[test]
fn no_response_revocations_over_the_limit_stall_the_target() {
    let digest = finance_digest();
    let people: Vec<String> = (0..10).map(|i| format!("p{i:02}")).collect();
    let mut o = Org::empty()
        .target_spec("ldap", "type: LDAP, limits: {maxRevocationsPerSync: 5}")
        .human(
            "carol",
            "status: Active, department: finance, manager: carol",
        )
        .policy("finance", FINANCE);
    for p in &people {
        o = o.human(p, "status: Active, department: finance, manager: carol");
    }
    let mut answer = response(
        "carol",
        "p00",
        "{target: ldap, name: finance}",
        ("AccessPolicy", "finance", Some(&digest)),
        "pending",
    );
    let item = answer.spec.items[0].clone();
    answer.spec.items = people
        .iter()
        .map(|p| gatehouse::api::ReviewItem {
            identity: p.clone(),
            ..item.clone()
        })
        .collect();
    let mut held = AccessState::default();
    for p in people.iter().chain(std::iter::once(&"carol".to_string())) {
        let mut h = Holding::default();
        h.accounts.insert("ldap".into(), AccountState::Enabled);
        h.entitlements.insert(
            std::sync::Arc::new(gatehouse::api::EntitlementRef {
                target: "ldap".into(),
                kind: None,
                namespace: None,
                name: "finance".into(),
            }),
            Default::default(),
        );
        held.identities.insert(key(p), h);
    }
    let view = TargetView {
        name: "ldap".into(),
        held: held.into(),
        not_observed: None,
        case_insensitive: false,
    };
    for (case, spec, now, stalled) in [
        ("before due", policy_review("Revoke"), BEFORE, false),
        ("after due, Keep", policy_review("Keep"), AFTER, false),
        ("after due, Revoke", policy_review("Revoke"), AFTER, true),
    ] {
        let o = with(o.clone(), &spec, vec![answer.clone()]);
        let engine = Engine::new(&o.snap, Settings::default());
        let decision = decide(&engine, NS, ts(now), std::slice::from_ref(&view));
        let target = &decision.targets["ldap"];
        match (&target.hold, stalled) {
            (Some(Hold::BlastRadius(e)), true) => {
                assert_eq!((e.count, e.limit), (10, 5), "[{case}]");
                assert!(
                    target.operations.iter().all(|op| !target.may_apply(op)),
                    "[{case}]"
                );
            }
            (None, false) => assert!(
                !target.operations.iter().any(|op| op.action.is_revocation()),
                "[{case}] {:?}",
                target.operations
            ),
            (hold, _) => panic!("[{case}] hold {hold:?}, want stalled: {stalled}"),
        }
    }
}

/// The schema's CEL rules, as `gatehouse validate` evaluates them offline (the API server
/// accepts the same rules: the harness applies every CRD before the controller tests).
#[test]
fn schema_rules_refuse_ambiguous_scopes_and_unjustified_decisions() {
    use gatehouse::engine::Provenance;
    use gatehouse::source::Loader;
    let load = |text: &str| {
        let mut loader = Loader::new(NS);
        loader.add_file("reviews/x.yaml", text.as_bytes(), &Provenance::default());
        let loaded = loader.finish();
        loaded
            .diagnostics
            .0
            .iter()
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
    };
    let review = |scope: &str, reviewers: &str| {
        format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessReview\nmetadata: {{name: q}}\nspec: {{scope: {scope}, reviewers: {reviewers}, every: 90d, duePeriod: 14d}}\n"
        )
    };
    assert_eq!(
        load(&review("{policies: [finance]}", "{by: Manager}")),
        Vec::<String>::new()
    );
    assert_eq!(
        load(&review(
            "{exceptions: true}",
            "{by: Identities, identities: [carol]}"
        )),
        Vec::<String>::new()
    );
    let two = load(&review(
        "{policies: [finance], exceptions: true}",
        "{by: Manager}",
    ));
    assert!(
        two.iter()
            .any(|m| m.contains("exactly one of selector, policies, targets or exceptions")),
        "{two:?}"
    );
    let none = load(&review("{}", "{by: Manager}"));
    assert!(
        none.iter().any(|m| m.contains("exactly one of")),
        "{none:?}"
    );
    let named = load(&review("{exceptions: true}", "{by: Identities}"));
    assert!(
        named
            .iter()
            .any(|m| m.contains("spec.reviewers.identities is set exactly when")),
        "{named:?}"
    );
    let bad_every = load(
        &review("{exceptions: true}", "{by: Manager}").replace("every: 90d", "every: quarterly"),
    );
    assert!(!bad_every.is_empty());
    let response = |item: &str| {
        format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessReviewResponse\nmetadata: {{name: r}}\nspec: {{review: q, reviewer: carol, cycle: \"2026-06-01\", items: [{{identity: alice, entitlement: {{target: ldap, name: finance}}, source: {{kind: AccessPolicy, name: finance}}, {item}}}]}}\n"
        )
    };
    assert_eq!(load(&response("decision: pending")), Vec::<String>::new());
    assert_eq!(
        load(&response("decision: keep, justification: still in finance")),
        Vec::<String>::new()
    );
    let unjustified = load(&response("decision: revoke"));
    assert!(
        unjustified
            .iter()
            .any(|m| m.contains("needs a justification")),
        "{unjustified:?}"
    );
    let typo = load(&response("decision: approve"));
    assert!(!typo.is_empty());
}
