//! The NHI owner-exit playbook, pure: when a non-human identity's owner leaves, the engine
//! proposes an interim owner and the planner rotates its credentials once on every target
//! that can (PostgreSQL, Kubernetes), reports the ones that cannot (SCIM, LDAP), keeps its
//! access through the grace period and revokes it after, unless it is re-owned in Git.

mod common;

use gatehouse::engine::{AccountIntent, OwnerExit, Phase, Settings, ViolationKind as VK};
use gatehouse::plan::decide::{Hold, TargetPlan};
use gatehouse::plan::guard::BlastRadiusExceeded;
use gatehouse::plan::{AccessState, Action, Plan, plan};

use common::*;

const HEAD: &str = "status: Active, department: exec, manager: boss";
/// Before the owner's last day: everything applied.
const BEFORE: &str = "2026-06-01T00:00:00Z";
/// Olga's end date is 2026-06-12: she left at this instant.
const LEFT: &str = "2026-06-13T00:00:00Z";
/// After the 7-day grace.
const AFTER_GRACE: &str = "2026-06-21T00:00:00Z";

/// `svc` (owned by `owner`) is granted one entitlement on each of four targets: PostgreSQL
/// `pg`, Kubernetes `k8s`, LDAP `ldap`, SCIM `scim`.
fn org(owner: &str) -> Org {
    let emp = |extra: &str| format!("department: eng, {extra}");
    Org::new()
        .target("acme", "k8s", "Kubernetes", "Disable")
        .human("boss", HEAD)
        .human("mgr", &emp("status: Active, manager: boss"))
        .human("olga", &emp("status: Active, manager: mgr, endDate: '2026-06-12'"))
        .human("gone-mgr", &emp("status: Terminated, manager: boss"))
        .human("oskar", &emp("status: Terminated, manager: gone-mgr, endDate: '2026-06-12'"))
        .human("solo", "status: Terminated, department: eng, manager: solo, endDate: '2026-06-12'")
        .human("tess", &emp("status: Terminated, manager: mgr"))
        .machine("svc", owner)
        .policy(
            "machines",
            "selector: {matchAttributes: {type: NonHuman}}, entitlements: [{target: pg, name: svc_rw}, {target: k8s, kind: ClusterRole, name: view}, {target: ldap, name: svc}, {target: scim, name: svc}]",
        )
}

/// What the targets hold once everything was applied while the owner was active.
fn applied(owner: &str) -> AccessState {
    AccessState::from_desired(&org(owner).eval(BEFORE))
}

/// The plan's steps for `svc` as `target action`.
fn steps(p: &Plan) -> Vec<String> {
    p.operations
        .iter()
        .filter(|op| op.identity.name == "svc")
        .map(|op| match &op.action {
            Action::RotateCredentials { owner_left_at } => {
                format!("{} rotate {owner_left_at}", op.target)
            }
            other => format!("{} {}", op.target, other.name()),
        })
        .collect()
}

fn rotations(p: &Plan) -> Vec<String> {
    steps(p)
        .into_iter()
        .filter(|s| s.contains("rotate"))
        .collect()
}

#[test]
fn owner_exit_rotates_once_where_the_target_can_and_proposes_the_manager() {
    let org = org("olga");
    let held = applied("olga");
    let d = org.eval_held(NOW, &held);
    let a = access(&d, "svc");
    assert_eq!(
        (a.phase, a.account),
        (Phase::OwnerTerminated, AccountIntent::Enabled)
    );
    assert_eq!(
        a.owner_exit,
        Some(OwnerExit {
            owner: "olga".into(),
            left_at: ts(LEFT),
            proposed_owner: Some("mgr".into()),
        })
    );
    // Access is kept through the grace period.
    assert_eq!(ents(a).len(), 4, "{:?}", ents(a));

    let p = plan(&held, &d);
    assert_eq!(
        steps(&p),
        [format!("k8s rotate {LEFT}"), format!("pg rotate {LEFT}")],
        "only the rotations, on the targets that can, nothing else"
    );
    assert!(
        p.operations.iter().all(|op| op.leaver),
        "rotations run in the leaver lane"
    );

    let kinds = kinds_on(&d, "Identity/svc");
    assert_eq!(
        kinds,
        [
            VK::OwnerTerminated,
            VK::InterimOwnerProposed,
            VK::CredentialsNotRotated
        ]
    );
    let findings = findings_on(&d, NS, "Identity/svc");
    let proposal = findings
        .iter()
        .find(|v| v.kind == VK::InterimOwnerProposed)
        .unwrap();
    assert_eq!(proposal.field.as_deref(), Some("spec.owner"));
    assert!(
        proposal.message.contains("proposed interim owner mgr"),
        "{}",
        proposal.message
    );
    assert!(
        proposal.message.contains("spec.owner: mgr"),
        "{}",
        proposal.message
    );
    let cannot: Vec<&str> = findings
        .iter()
        .filter(|v| v.kind == VK::CredentialsNotRotated)
        .map(|v| v.message.as_str())
        .collect();
    assert_eq!(cannot.len(), 2, "{cannot:?}");
    assert!(
        cannot[0].contains("TargetSystem/ldap (LDAP) cannot rotate"),
        "{}",
        cannot[0]
    );
    assert!(
        cannot[1].contains("TargetSystem/scim (SCIM) cannot rotate"),
        "{}",
        cannot[1]
    );

    // Applied and observed: the marker says "rotated for this exit", so never again.
    let after = held.apply(&p);
    assert_eq!(after.identities[&key("svc")].rotated.len(), 2);
    let d = org.eval_held("2026-06-16T00:00:00Z", &after);
    assert!(
        plan(&after, &d).is_empty(),
        "{:?}",
        steps(&plan(&after, &d))
    );
}

#[test]
fn rotation_ranks_with_the_cut_offs_before_any_grant_and_passes_the_guard() {
    // A new entitlement arrives in the same pass as the exit: the rotation still comes first.
    let held = applied("olga");
    let org = org("olga").policy(
        "extra",
        "selector: {matchAttributes: {type: NonHuman}}, entitlements: [{target: pg, name: svc_ro}]",
    );
    let p = plan(&held, &org.eval_held(NOW, &held));
    assert_eq!(
        steps(&p),
        [
            format!("k8s rotate {LEFT}"),
            format!("pg rotate {LEFT}"),
            "pg grant".into()
        ]
    );
    // The guard holds revocations, never a rotation (like a leaver's disable).
    let target = TargetPlan {
        operations: p.operations.clone(),
        hold: Some(Hold::BlastRadius(BlastRadiusExceeded {
            count: 9,
            limit: 1,
        })),
        observed: true,
    };
    let allowed: Vec<bool> = p.operations.iter().map(|op| target.may_apply(op)).collect();
    assert_eq!(allowed, [true, true, false]);
}

#[test]
fn a_re_owned_identity_keeps_its_access_and_is_not_rotated_again() {
    // Rotated for olga's exit, then re-owned to mgr in Git.
    let exit = org("olga");
    let mut held = applied("olga");
    held = held.apply(&plan(&held, &exit.eval_held(NOW, &held)));
    let org = org("mgr");
    for now in [NOW, AFTER_GRACE] {
        let d = org.eval_held(now, &held);
        let a = access(&d, "svc");
        assert_eq!(
            (a.phase, a.account),
            (Phase::Active, AccountIntent::Enabled),
            "{now}"
        );
        assert_eq!(a.owner_exit, None);
        assert_eq!(ents(a).len(), 4);
        assert!(kinds_on(&d, "Identity/svc").is_empty());
        assert!(
            plan(&held, &d).is_empty(),
            "{now}: {:?}",
            steps(&plan(&held, &d))
        );
    }
    // Never rotated either when re-owned before the first pass saw the exit.
    let fresh = applied("olga");
    assert!(plan(&fresh, &org.eval_held(NOW, &fresh)).is_empty());
}

#[test]
fn after_the_grace_access_is_revoked_and_rotation_still_happens_once() {
    let org = org("olga");
    let held = applied("olga");
    let d = org.eval_held(AFTER_GRACE, &held);
    let a = access(&d, "svc");
    assert_eq!(
        (a.phase, a.account),
        (Phase::OwnerTerminated, AccountIntent::Revoked)
    );
    assert!(a.entitlements.is_empty());
    let p = plan(&held, &d);
    let s = steps(&p);
    for t in ["k8s", "pg"] {
        assert!(s.contains(&format!("{t} rotate {LEFT}")), "{s:?}");
        assert!(s.contains(&format!("{t} disableAccount")), "{s:?}");
    }
    assert!(
        s.iter().filter(|x| x.ends_with(" revoke")).count() == 4,
        "{s:?}"
    );
    // A rotation observed from the grace period is not repeated.
    let rotated = held.apply(&plan(&held, &org.eval_held(NOW, &held)));
    let p = plan(&rotated, &org.eval_held(AFTER_GRACE, &rotated));
    assert!(rotations(&p).is_empty(), "{:?}", steps(&p));
    assert!(!p.is_empty(), "the revocations remain");
}

#[test]
fn a_later_owner_exit_rotates_again_and_an_earlier_marker_does_not_count() {
    let org = org("olga");
    let mut held = applied("olga");
    for holding in held.identities.values_mut() {
        for target in ["pg", "k8s"] {
            holding
                .rotated
                .insert(target.into(), ts("2025-01-01T00:00:00Z"));
        }
    }
    let p = plan(&held, &org.eval_held(NOW, &held));
    assert_eq!(rotations(&p).len(), 2, "{:?}", steps(&p));
}

#[test]
fn the_interim_owner_is_the_first_active_manager_up_the_chain() {
    let cases = [
        ("olga", Some("mgr"), LEFT),
        // oskar's manager left too: her manager, boss, is proposed.
        ("oskar", Some("boss"), LEFT),
        // The head of the organisation leaving has no one above.
        ("solo", None, LEFT),
        // Terminated without an end date: the exit instant is the Unix epoch.
        ("tess", Some("mgr"), "1970-01-01T00:00:00Z"),
    ];
    for (owner, proposed, left) in cases {
        let d = org(owner).eval(NOW);
        let a = access(&d, "svc");
        let exit = a.owner_exit.as_ref().unwrap_or_else(|| panic!("{owner}"));
        assert_eq!(exit.proposed_owner.as_deref(), proposed, "{owner}");
        assert_eq!(exit.left_at, ts(left), "{owner}");
        let findings = findings_on(&d, NS, "Identity/svc");
        let msg = &findings
            .iter()
            .find(|v| v.kind == VK::InterimOwnerProposed)
            .unwrap()
            .message;
        match proposed {
            Some(p) => {
                assert!(msg.contains(&format!("spec.owner: {p}")), "{msg}");
                let how = if owner == "oskar" {
                    "the first active manager above them"
                } else {
                    "their manager"
                };
                assert!(msg.contains(&format!("{p} ({how})")), "{msg}");
            }
            None => assert!(msg.contains("no active manager"), "{msg}"),
        }
    }
}

#[test]
fn a_plan_against_a_base_revision_shows_the_rotation_once() {
    // `gatehouse plan` against a base revision: the base's desired state already had the
    // exit, so its rotation counts as done.
    let org = org("olga");
    let base = AccessState::from_desired(&org.eval(NOW));
    assert_eq!(base.identities[&key("svc")].rotated.len(), 2);
    assert!(rotations(&plan(&base, &org.eval(NOW))).is_empty());
    // Against a base from before the exit it shows.
    let before = applied("olga");
    assert_eq!(rotations(&plan(&before, &org.eval(NOW))).len(), 2);
}

#[test]
fn owner_grace_zero_still_rotates() {
    let held = applied("olga");
    let none = Settings {
        owner_grace: jiff::SignedDuration::ZERO,
        ..Settings::default()
    };
    let d = org("olga").eval_with(NOW, &none, &held);
    assert_eq!(access(&d, "svc").account, AccountIntent::Revoked);
    assert_eq!(rotations(&plan(&held, &d)).len(), 2);
}

/// `svc` re-owned to `owner` by `gatehouse hr import`, annotated with the leaver.
fn reowned_org(owner: &str, previous: &str) -> Org {
    let mut org = org(owner);
    let svc = org
        .snap
        .identities
        .iter_mut()
        .find(|i| i.metadata.name.as_deref() == Some("svc"))
        .unwrap();
    svc.metadata.annotations = Some(
        [(
            gatehouse::api::annotations::PREVIOUS_OWNER.to_string(),
            previous.to_string(),
        )]
        .into(),
    );
    org
}

#[test]
fn re_owned_by_hr_import_in_the_exit_commit_still_rotates_once_and_keeps_access() {
    // The import's commit both terminates olga and gives svc to mgr: the engine never sees
    // svc owned by a leaver, but the annotation names the exit to rotate for.
    let held = applied("olga");
    let org = reowned_org("mgr", "olga");
    let d = org.eval_held(NOW, &held);
    let a = access(&d, "svc");
    assert_eq!(
        (a.phase, a.account),
        (Phase::Active, AccountIntent::Enabled)
    );
    assert_eq!(ents(a).len(), 4);
    assert_eq!(
        a.owner_exit,
        Some(OwnerExit {
            owner: "olga".into(),
            left_at: ts(LEFT),
            proposed_owner: None,
        })
    );
    // No interim owner to propose (it has one); the targets that cannot rotate are named,
    // until the annotation is removed.
    assert_eq!(kinds_on(&d, "Identity/svc"), [VK::CredentialsNotRotated]);
    assert!(
        findings_on(&d, NS, "Identity/svc")[0]
            .message
            .ends_with("by hand, then remove its gatehouse.dev/previous-owner annotation"),
        "{}",
        findings_on(&d, NS, "Identity/svc")[0].message
    );
    let p = plan(&held, &d);
    assert_eq!(
        steps(&p),
        [format!("k8s rotate {LEFT}"), format!("pg rotate {LEFT}")]
    );
    let after = held.apply(&p);
    for now in [NOW, AFTER_GRACE] {
        let d = org.eval_held(now, &after);
        assert!(plan(&after, &d).is_empty(), "{now}");
        assert_eq!(access(&d, "svc").account, AccountIntent::Enabled, "{now}");
    }
}

#[test]
fn a_previous_owner_annotation_without_an_exit_does_nothing() {
    let held = applied("olga");
    // Olga has not left yet (BEFORE), or the annotation names the current owner, or no
    // human at all.
    for (owner, previous, now) in [
        ("mgr", "olga", BEFORE),
        ("mgr", "mgr", NOW),
        ("mgr", "ghost", NOW),
    ] {
        let d = reowned_org(owner, previous).eval_held(now, &held);
        let a = access(&d, "svc");
        assert_eq!(a.owner_exit, None, "{previous} at {now}");
        assert!(
            rotations(&plan(&held, &d)).is_empty(),
            "{previous} at {now}"
        );
    }
}

#[test]
fn an_account_created_after_the_exit_is_born_rotated() {
    // During the grace svc is granted on a target where it has no account yet.
    let mut held = applied("olga");
    held.identities
        .get_mut(&key("svc"))
        .unwrap()
        .accounts
        .remove("k8s");
    let held = AccessState {
        identities: held
            .identities
            .into_iter()
            .map(|(k, mut h)| {
                h.entitlements.retain(|e, _| e.target != "k8s");
                (k, h)
            })
            .collect(),
    };
    let org = org("olga");
    let d = org.eval_held(NOW, &held);
    let p = plan(&held, &d);
    let create = p
        .operations
        .iter()
        .find(|op| op.target == "k8s" && op.identity.name == "svc")
        .unwrap();
    assert_eq!(
        create.action,
        Action::CreateAccount {
            enabled: true,
            attributes: Default::default(),
            rotated_for: Some(ts(LEFT)),
        }
    );
    assert_eq!(rotations(&p), [format!("pg rotate {LEFT}")]);
    let after = held.apply(&p);
    assert!(plan(&after, &org.eval_held(NOW, &after)).is_empty());
    // A machine whose owner stays gets no marker.
    let fresh = org_created_plain();
    assert!(fresh.iter().all(|a| matches!(
        a,
        Action::CreateAccount {
            rotated_for: None,
            ..
        }
    )));
}

fn org_created_plain() -> Vec<Action> {
    let d = org("mgr").eval(NOW);
    plan(&AccessState::default(), &d)
        .operations
        .into_iter()
        .filter(|op| matches!(op.action, Action::CreateAccount { .. }))
        .map(|op| op.action)
        .collect()
}
