//! Attribute flow in the pure core: what a joiner is created with, a mover's attribute
//! change planned with their access change, manager references, template findings.

mod common;

use common::*;
use gatehouse::engine::attributes::AttrValue;
use gatehouse::engine::{Severity, ViolationKind};
use gatehouse::plan::{AccessState, Action, Plan, plan};

fn org(amy: &str, amy_extra: &str) -> Org {
    Org::empty()
        .target(NS, "ldap", "LDAP", "Disable")
        .target_spec(
            "app",
            "type: SCIM, scim: {url: 'http://x'}, attributes: {nickName: '{{ attributes.nick | default(name) }}'}",
        )
        .human_x(
            NS,
            "boss",
            "status: Active, department: exec, manager: boss, title: CEO",
            "displayName: Bea Boss",
        )
        .human_x(NS, "carl", "status: Active, department: exec, manager: boss", "")
        .human_x(NS, "amy", amy, amy_extra)
        .policy("all", "entitlements: [{target: ldap, name: all}, {target: app, name: users}]")
        .policy(
            "fin",
            "selector: {matchAttributes: {department: fin}}, entitlements: [{target: ldap, name: fin}]",
        )
}

fn text(s: &str) -> AttrValue {
    AttrValue::Text(s.into())
}

fn ops_of<'a>(p: &'a Plan, who: &str) -> Vec<&'a Action> {
    p.operations
        .iter()
        .filter(|o| o.identity.name == who)
        .map(|o| &o.action)
        .collect()
}

#[test]
fn a_joiner_is_created_with_its_attributes_and_then_its_manager_reference() {
    let head = org(
        "status: Active, department: fin, manager: boss, title: Accountant",
        "displayName: Amy Adams, email: amy@acme.example, attributes: {costCenter: '4100'}",
    );
    let d = head.eval(NOW);
    let p = plan(&AccessState::default(), &d);
    let amy: Vec<_> = p
        .operations
        .iter()
        .filter(|o| o.identity.name == "amy" && o.target == "ldap")
        .collect();
    let Action::CreateAccount { attributes, .. } = &amy[0].action else {
        panic!("{amy:?}")
    };
    assert_eq!(attributes["displayName"], text("Amy Adams"));
    assert_eq!(attributes["cn"], text("Amy Adams"));
    assert_eq!(attributes["sn"], text("Adams"));
    assert_eq!(attributes["givenName"], text("Amy"));
    assert_eq!(attributes["mail"], text("amy@acme.example"));
    assert_eq!(attributes["title"], text("Accountant"));
    assert_eq!(attributes["departmentNumber"], text("fin"));
    assert!(
        !attributes.contains_key("manager"),
        "references wait for the creations"
    );
    let Action::UpdateAttributes { changes } = &amy[1].action else {
        panic!("{amy:?}")
    };
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].name, "manager");
    assert_eq!(
        changes[0].to,
        Some(AttrValue::Account {
            account: "boss".into()
        })
    );
    // The manager's own creation comes before any attribute update that refers to it.
    let boss_create = p
        .operations
        .iter()
        .position(|o| o.identity.name == "boss" && matches!(o.action, Action::CreateAccount { .. }))
        .unwrap();
    let amy_ref = p
        .operations
        .iter()
        .position(|o| {
            o.identity.name == "amy" && matches!(o.action, Action::UpdateAttributes { .. })
        })
        .unwrap();
    assert!(boss_create < amy_ref);
    // A target's own mapping is used (SCIM here: `spec.attributes` over the defaults).
    let app = p
        .operations
        .iter()
        .find(|o| o.identity.name == "amy" && o.target == "app")
        .unwrap();
    let Action::CreateAccount { attributes, .. } = &app.action else {
        panic!()
    };
    assert_eq!(attributes["nickName"], text("amy"));
    assert_eq!(
        attributes["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter"],
        text("4100")
    );
    assert_eq!(
        attributes["emails[type eq \"work\"].value"],
        text("amy@acme.example")
    );
    // Applied, nothing more to do.
    assert!(plan(&AccessState::default().apply(&p), &d).is_empty());
}

#[test]
fn a_movers_title_department_and_manager_change_with_their_access_in_one_plan() {
    let base = org(
        "status: Active, department: fin, manager: boss, title: Accountant",
        "displayName: Amy Adams",
    );
    let head = org(
        "status: Active, department: eng, manager: carl, title: Engineer",
        "displayName: Amy Adams",
    );
    let state = AccessState::from_desired(&base.eval(NOW));
    let d = head.eval_held(NOW, &state);
    let p = plan(&state, &d);
    let amy: Vec<&Action> = p
        .operations
        .iter()
        .filter(|o| o.identity.name == "amy" && o.target == "ldap")
        .map(|o| &o.action)
        .collect();
    let names: Vec<&str> = amy.iter().map(|a| a.name()).collect();
    assert_eq!(names, ["revoke", "updateAttributes"], "{amy:#?}");
    // The SCIM app gets its own update (title, department, manager), in the same plan.
    assert!(p.operations.iter().any(|o| o.identity.name == "amy"
        && o.target == "app"
        && matches!(o.action, Action::UpdateAttributes { .. })));
    let Action::UpdateAttributes { changes } = amy[1] else {
        panic!()
    };
    let changed: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        changed,
        [
            "departmentNumber: \"fin\" → \"eng\"",
            "manager: account boss → account carl",
            "title: \"Accountant\" → \"Engineer\"",
        ]
    );
    assert!(plan(&state.apply(&p), &d).is_empty());
}

#[test]
fn unchanged_people_and_unmapped_targets_plan_no_attribute_update() {
    let o = org("status: Active, department: fin, manager: boss", "");
    let d = o.eval(NOW);
    let p = plan(&AccessState::from_desired(&d), &d);
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn a_manager_without_an_account_leaves_the_reference_unset_with_a_finding() {
    // boss gets nothing on ldap: only a policy for the fin department grants there.
    let o = Org::empty()
        .target(NS, "ldap", "LDAP", "Disable")
        .human("boss", "status: Active, department: exec, manager: boss")
        .human("amy", "status: Active, department: fin, manager: boss")
        .policy(
            "fin",
            "selector: {matchAttributes: {department: fin}}, entitlements: [{target: ldap, name: fin}]",
        );
    let d = o.eval(NOW);
    let p = plan(&AccessState::default(), &d);
    assert!(
        !p.operations
            .iter()
            .any(|o| matches!(o.action, Action::UpdateAttributes { .. })),
        "{p:#?}"
    );
    let found = attribute_findings_on(&d, NS, "Identity/amy");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].severity, Severity::Warning);
    assert_eq!(found[0].field.as_deref(), Some("spec.employment.manager"));
    assert!(found[0].message.contains("boss has no account on ldap"));
    // No failure: amy gets her access.
    assert_eq!(ents(access(&d, "amy")), ["ldap:fin"]);
}

#[test]
fn a_bad_template_is_an_error_on_the_target_and_never_blocks_access() {
    let o = Org::empty()
        .target_spec(
            "ldap",
            "type: LDAP, ldap: {url: 'ldap://x', baseDN: 'dc=a'}, attributes: {title: '{{ job }}', userPassword: x}",
        )
        .human("amy", "status: Active, department: fin, manager: amy, title: Clerk")
        .policy("all", "entitlements: [{target: ldap, name: all}]");
    let d = o.eval(NOW);
    let errors: Vec<_> = d
        .violations
        .iter()
        .filter(|v| v.object == "TargetSystem/ldap")
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors
            .iter()
            .all(|v| v.severity == Severity::Error && v.kind == ViolationKind::InvalidValue)
    );
    assert!(
        errors
            .iter()
            .any(|v| v.field.as_deref() == Some("spec.attributes.title")
                && v.message.contains("unknown field `job`"))
    );
    assert!(
        errors
            .iter()
            .any(|v| v.field.as_deref() == Some("spec.attributes.userPassword"))
    );
    // The broken entries are left out; the rest of the mapping and the access still apply.
    let p = plan(&AccessState::default(), &d);
    let Action::CreateAccount { attributes, .. } = &p.operations[0].action else {
        panic!("{p:#?}")
    };
    assert!(!attributes.contains_key("title") && attributes.contains_key("cn"));
    assert_eq!(ents(access(&d, "amy")), ["ldap:all"]);
}

#[test]
fn leavers_get_no_attribute_writes() {
    let base = org(
        "status: Active, department: fin, manager: boss, title: Clerk",
        "",
    );
    let head = org(
        "status: Terminated, department: fin, manager: boss, title: Gone",
        "",
    );
    let state = AccessState::from_desired(&base.eval(NOW));
    let p = plan(&state, &head.eval_held(NOW, &state));
    let amy = ops_of(&p, "amy");
    assert!(!amy.is_empty());
    assert!(
        amy.iter().all(|a| a.is_revocation()),
        "a leaver is only cut off: {amy:#?}"
    );
}
