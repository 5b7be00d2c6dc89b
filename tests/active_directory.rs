//! The LDAP connector's Active Directory flavour against a real domain controller (Samba's
//! AD DC, provisioned on loopback by scripts/start-samba.sh), driven as the controller drives
//! it: evaluate, observe, plan, apply, and once more to prove convergence. The domain's state
//! is checked with the test's own administrator connection, and a leaver by a real bind.

mod reread;
mod samba;

use std::collections::BTreeMap;
use std::sync::Arc;

use gatehouse::api::{AccessPolicy, EntitlementRef, Identity, TargetSystem};
use gatehouse::engine::attributes::{AttrValue, AttributeChange};
use gatehouse::engine::{AccountIntent, Engine, IdentityKey, NothingHeld, Settings, Snapshot};
use gatehouse::plan::{Action, Operation, Plan, plan};
use gatehouse::targets::ldap::LdapDirectory;
use gatehouse::targets::{Applied, Connector, Subject, TargetError};
use ldap3::Mod;
use samba::{Samba, TestScope};

const NOW: &str = "2026-12-01T09:00:00Z";
const ACCOUNTDISABLE: u32 = 0x2;
const PASSWD_NOTREQD: u32 = 0x20;

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Tenant `acme`, target `corp-ad`; finance gets `finance` + `staff`, engineering gets
/// `engineering` + `staff`.
fn org(spec: &str, people: &[String]) -> Snapshot {
    let target: TargetSystem = yaml(&format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {{name: corp-ad, namespace: acme}}\nspec: {spec}"
    ));
    let policy = |name: &str, dept: &str, ents: &str| -> AccessPolicy {
        yaml(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}, namespace: acme}}\nspec: {{selector: {{matchAttributes: {{department: {dept}}}}}, entitlements: {ents}}}"
        ))
    };
    Snapshot {
        targets: vec![target],
        policies: vec![
            policy(
                "finance",
                "finance",
                "[{target: corp-ad, name: finance}, {target: corp-ad, name: staff}]",
            ),
            policy(
                "engineering",
                "engineering",
                "[{target: corp-ad, name: engineering}, {target: corp-ad, name: staff}]",
            ),
        ],
        identities: people
            .iter()
            .map(|spec| yaml::<Identity>(&format!("apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{namespace: acme, {spec}")))
            .collect(),
        exceptions: vec![],
        ..Default::default()
    }
}

fn person(name: &str, dept: &str, status: &str) -> String {
    format!(
        "name: {name}}}\nspec: {{type: Human, employment: {{status: {status}, department: {dept}, manager: {name}}}}}"
    )
}

fn subjects(snapshot: &Snapshot) -> BTreeMap<IdentityKey, Subject> {
    let now = NOW.parse().unwrap();
    let desired = Engine::new(snapshot, Settings::default()).evaluate(now, &NothingHeld);
    snapshot
        .identities
        .iter()
        .map(|identity| {
            let key = IdentityKey::new("acme", identity.metadata.name.as_deref().unwrap());
            let enabled = desired
                .identities
                .get(&key)
                .is_some_and(|a| a.account == AccountIntent::Enabled);
            let subject = Subject {
                identity: key.clone(),
                identity_type: identity.spec.type_,
                account: key.name.clone(),
                enabled,
            };
            (key, subject)
        })
        .collect()
}

/// One reconcile: observe, plan, apply in order; the failures.
async fn sync(connector: &LdapDirectory, snapshot: &Snapshot) -> (Plan, Vec<String>) {
    let now = NOW.parse().unwrap();
    let engine = Engine::new(snapshot, Settings::default());
    let subjects = subjects(snapshot);
    let mut observed = connector.observe(&subjects).await.expect("observe").held;
    let mut desired = engine.evaluate(now, &observed);
    if observed.respell(&desired, "corp-ad") {
        desired = engine.evaluate(now, &observed);
    }
    let plan = plan(&observed, &desired);
    let mut failed = Vec::new();
    for op in &plan.operations {
        let subject = subjects.get(&op.identity).cloned().expect("identity");
        match connector.apply(op, &subject).await {
            Ok(Applied::Unsupported) => assert_eq!(op.action, Action::RevokeSessions),
            Ok(Applied::Done) => {}
            Err(e) => failed.push(format!("{op:?}: {e}")),
        }
    }
    (plan, failed)
}

async fn sync_ok(connector: &LdapDirectory, snapshot: &Snapshot) -> Vec<String> {
    let (plan, failed) = sync(connector, snapshot).await;
    assert!(failed.is_empty(), "failed: {failed:?}");
    plan.operations
        .iter()
        .map(|op| match &op.action {
            Action::Grant { entitlement } => format!("{} +{}", op.identity.name, entitlement.name),
            Action::Revoke { entitlement } => format!("{} -{}", op.identity.name, entitlement.name),
            other => format!("{} {}", op.identity.name, other.name()),
        })
        .collect()
}

async fn setup(
    groups: &[&str],
    on_leave: &str,
) -> (&'static Samba, TestScope, LdapDirectory, String) {
    let dc = Samba::shared();
    let scope = dc.scope(groups).await;
    let connector = LdapDirectory::connect(&dc.config(&scope, on_leave))
        .await
        .expect("connect to the domain controller");
    let spec = dc.spec_yaml(&scope, on_leave);
    (dc, scope, connector, spec)
}

#[tokio::test]
async fn joiner_mover_leaver_on_a_real_domain_controller() {
    let (dc, scope, connector, spec) = setup(&["finance", "engineering", "staff"], "Disable").await;
    let mut admin = dc.admin().await;
    let name = format!("{}alice", scope.tag);
    let dn = scope.user(&name);
    let upn = format!("{name}@gatehouse.test");

    // Joiner: a usable, enabled account (a random password set by gatehouse, so neither
    // ACCOUNTDISABLE nor PASSWD_NOTREQD), in both groups.
    let joined = org(&spec, &[person(&name, "finance", "Active")]);
    let first = sync_ok(&connector, &joined).await;
    assert!(
        first.contains(&format!("{name} createAccount")),
        "{first:?}"
    );
    let uac = samba::uac(&mut admin, &dn)
        .await
        .expect("the account exists");
    assert_eq!(
        uac & (ACCOUNTDISABLE | PASSWD_NOTREQD),
        0,
        "enabled, password required: {uac}"
    );
    let pwd_last_set = samba::attribute(&mut admin, &dn, "pwdLastSet")
        .await
        .unwrap();
    assert_ne!(pwd_last_set, ["0"], "a password was set");
    assert!(
        scope
            .members(&mut admin, "finance")
            .await
            .contains(&dn.to_lowercase())
    );
    assert!(
        scope
            .members(&mut admin, "staff")
            .await
            .contains(&dn.to_lowercase())
    );
    // Nobody knows the random password: an empty or guessed one does not bind.
    assert_eq!(dc.bind(&upn, "Guess-1234!").await.0, 49);
    assert!(sync_ok(&connector, &joined).await.is_empty(), "converged");
    // The person sets their own password (here: the administrator, as a reset would).
    samba::set_password(&mut admin, &dn, "Her-Own-Pw-2026!").await;
    assert_eq!(
        dc.bind(&upn, "Her-Own-Pw-2026!").await.0,
        0,
        "a usable account"
    );

    // Mover: finance revoked, her department updated (the default mapping) and
    // engineering granted in one plan; staff stays.
    let moved = org(&spec, &[person(&name, "engineering", "Active")]);
    assert_eq!(
        sync_ok(&connector, &moved).await,
        [
            format!("{name} -finance"),
            format!("{name} updateAttributes"),
            format!("{name} +engineering")
        ]
    );
    assert_eq!(
        samba::attribute(&mut admin, &dn, "department").await,
        Some(vec!["engineering".to_string()])
    );
    assert!(
        !scope
            .members(&mut admin, "finance")
            .await
            .contains(&dn.to_lowercase())
    );
    assert_eq!(
        scope.members(&mut admin, "engineering").await,
        [dn.to_lowercase()]
    );
    assert!(sync_ok(&connector, &moved).await.is_empty(), "converged");

    // Drift: a member added by hand to a managed group is removed at the next sync.
    samba::modify(
        &mut admin,
        &scope.group("finance"),
        vec![Mod::Add("member", [dn.as_str()].into())],
    )
    .await;
    assert_eq!(
        sync_ok(&connector, &moved).await,
        [format!("{name} -finance")]
    );
    assert!(scope.members(&mut admin, "finance").await.is_empty());

    // Removing a non-member (Samba: 53 "already deleted") counts as done.
    let subject = subjects(&moved).into_values().next().unwrap();
    let revoke = Operation {
        identity: Arc::new(subject.identity.clone()),
        target: "corp-ad".into(),
        action: Action::Revoke {
            entitlement: Arc::new(EntitlementRef {
                target: "corp-ad".into(),
                kind: None,
                namespace: None,
                name: "finance".into(),
            }),
        },
        leaver: false,
        sources: Default::default(),
    };
    assert_eq!(
        connector
            .apply(&revoke, &subject)
            .await
            .expect("idempotent"),
        Applied::Done
    );

    // Leaver: ACCOUNTDISABLE set, memberships removed, and a bind is refused with data 533.
    let left = org(&spec, &[person(&name, "engineering", "Terminated")]);
    let leaver = sync_ok(&connector, &left).await;
    assert_eq!(leaver[0], format!("{name} disableAccount"), "{leaver:?}");
    let uac = samba::uac(&mut admin, &dn).await.unwrap();
    assert_ne!(uac & ACCOUNTDISABLE, 0, "{uac}");
    let (rc, text) = dc.bind(&upn, "Her-Own-Pw-2026!").await;
    assert_eq!(rc, 49, "{text}");
    assert!(text.contains("data 533"), "account disabled: {text}");
    assert!(scope.members(&mut admin, "engineering").await.is_empty());
    assert!(scope.members(&mut admin, "staff").await.is_empty());
    assert!(sync_ok(&connector, &left).await.is_empty(), "converged");
}

#[tokio::test]
async fn delete_orphans_and_a_taken_account_name() {
    let (dc, scope, connector, spec) = setup(&["finance", "staff"], "Delete").await;
    let mut admin = dc.admin().await;
    let bob = format!("{}bob", scope.tag);
    let dn = scope.user(&bob);

    // An account in the managed OU with no Identity: reported, never touched.
    let orphan = format!("{}zed", scope.tag);
    scope.add_user(&mut admin, &orphan).await;
    assert_eq!(
        samba::uac(&mut admin, &scope.user(&orphan)).await,
        Some(546),
        "Samba: an account added without a password is disabled + PASSWD_NOTREQD"
    );
    let joined = org(&spec, &[person(&bob, "finance", "Active")]);
    sync_ok(&connector, &joined).await;
    let observed = connector.observe(&subjects(&joined)).await.unwrap();
    assert_eq!(observed.orphans, std::slice::from_ref(&orphan));

    // onLeave Delete: the account goes (and with it its memberships).
    let left = org(&spec, &[person(&bob, "finance", "Terminated")]);
    let steps = sync_ok(&connector, &left).await;
    assert!(steps.contains(&format!("{bob} deleteAccount")), "{steps:?}");
    assert_eq!(
        samba::attribute(&mut admin, &dn, "cn").await,
        None,
        "deleted"
    );
    assert!(scope.members(&mut admin, "finance").await.is_empty());
    assert!(
        samba::attribute(&mut admin, &scope.user(&orphan), "cn")
            .await
            .is_some()
    );

    // A sAMAccountName taken elsewhere in the domain (68, 00002071): a Permanent error
    // that names the conflict, not a retry loop.
    let elsewhere = dc.scope(&[]).await;
    let carol = format!("{}carol", scope.tag);
    elsewhere.add_user(&mut admin, &carol).await;
    let (_, failed) = sync(
        &connector,
        &org(&spec, &[person(&carol, "finance", "Active")]),
    )
    .await;
    assert!(!failed.is_empty());
    assert!(
        failed[0].contains("permanent") && failed[0].contains("taken"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_wrong_service_password_is_a_configuration_error() {
    let dc = Samba::shared();
    let scope = dc.scope(&[]).await;
    let mut config = dc.config(&scope, "Disable");
    config.credentials = gatehouse::targets::Credentials::new(
        "corp-ad",
        BTreeMap::from([
            ("bindDN".to_string(), dc.admin_dn.clone().into_bytes()),
            ("password".to_string(), b"Wrong-Pass-1".to_vec()),
            ("ca.crt".to_string(), std::fs::read(&dc.ca).unwrap()),
        ]),
    );
    let error = LdapDirectory::connect(&config).await.unwrap_err();
    assert!(matches!(error, TargetError::Config(_)), "{error}");
    assert!(!error.to_string().contains("Wrong-Pass-1"));
}

/// A person with an HR record: display name, e-mail, title, employee id, in `dept`,
/// reporting to `manager` (themselves: nobody).
fn staff(name: &str, display: &str, title: &str, dept: &str, manager: &str) -> String {
    format!(
        "name: {name}}}\nspec: {{type: Human, displayName: '{display}', email: '{name}@acme.example', attributes: {{employeeId: 'E-{name}'}}, employment: {{status: Active, department: {dept}, manager: {manager}, title: '{title}'}}}}"
    )
}

/// The values of an attribute of an entry that must exist.
async fn value(admin: &mut ldap3::Ldap, dn: &str, attr: &str) -> Vec<String> {
    samba::attribute(admin, dn, attr)
        .await
        .expect("the entry exists")
}

#[tokio::test]
async fn attributes_flow_to_a_real_domain_controller_and_drift_is_repaired() {
    let (dc, scope, connector, spec) = setup(&["finance", "engineering", "staff"], "Disable").await;
    let mut admin = dc.admin().await;
    let [alice, carol, dave] = ["alice", "carol", "dave"].map(|n| format!("{}{n}", scope.tag));
    let bosses = [
        staff(&carol, "Carol Chief", "CFO", "finance", &carol),
        staff(&dave, "Dave Lead", "VP Engineering", "engineering", &dave),
    ];
    let with = |alice_spec: String| {
        let mut people = bosses.to_vec();
        people.push(alice_spec);
        org(&spec, &people)
    };
    let dn = scope.user(&alice);

    // Joiner: created with her text attributes, then her manager as the manager's DN.
    let joined = with(staff(
        &alice,
        "Alice Smith",
        "Accountant",
        "finance",
        &carol,
    ));
    let (plan, failed) = sync(&connector, &joined).await;
    assert!(failed.is_empty(), "{failed:?}");
    let updates: Vec<String> = plan
        .operations
        .iter()
        .filter_map(|op| match &op.action {
            Action::UpdateAttributes { changes } => Some(format!(
                "{} {}",
                op.identity.name,
                changes
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            _ => None,
        })
        .collect();
    assert_eq!(updates, [format!("{alice} manager")]);
    for (attr, want) in [
        ("displayName", "Alice Smith".to_string()),
        ("givenName", "Alice".into()),
        ("sn", "Smith".into()),
        ("mail", format!("{alice}@acme.example")),
        ("title", "Accountant".into()),
        ("department", "finance".into()),
        ("employeeID", format!("E-{alice}")),
        ("userPrincipalName", format!("{alice}@gatehouse.test")),
    ] {
        assert_eq!(value(&mut admin, &dn, attr).await, [want], "{attr}");
    }
    assert_eq!(
        value(&mut admin, &dn, "manager").await[0].to_lowercase(),
        scope.user(&carol).to_lowercase(),
        "the manager's DN"
    );
    let observed = connector.observe(&subjects(&joined)).await.unwrap().held;
    let held = &observed.identities[&IdentityKey::new("acme", &alice)].attributes["corp-ad"];
    assert_eq!(
        held.get("manager"),
        Some(&AttrValue::Account {
            account: carol.clone()
        })
    );
    assert!(sync_ok(&connector, &joined).await.is_empty(), "converged");

    // Mover: title, department and manager change with her access, in one plan.
    let moved = with(staff(
        &alice,
        "Alice Smith",
        "Engineer",
        "engineering",
        &dave,
    ));
    let (plan, failed) = sync(&connector, &moved).await;
    assert!(failed.is_empty(), "{failed:?}");
    let changes: Vec<String> = plan
        .operations
        .iter()
        .filter_map(|op| match &op.action {
            Action::UpdateAttributes { changes } => Some(changes),
            _ => None,
        })
        .flatten()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        changes,
        [
            "department: \"finance\" → \"engineering\"".to_string(),
            format!("manager: account {carol} → account {dave}"),
            "title: \"Accountant\" → \"Engineer\"".to_string(),
        ]
    );
    assert_eq!(value(&mut admin, &dn, "title").await, ["Engineer"]);
    assert_eq!(value(&mut admin, &dn, "department").await, ["engineering"]);
    assert_eq!(
        value(&mut admin, &dn, "manager").await[0].to_lowercase(),
        scope.user(&dave).to_lowercase()
    );
    assert!(
        scope
            .members(&mut admin, "engineering")
            .await
            .contains(&dn.to_lowercase())
    );
    assert!(sync_ok(&connector, &moved).await.is_empty(), "converged");
    // Re-read alone (memberOf, the manager's DN by a base read), alice agrees with the
    // full observation.
    assert!(
        reread::agrees(
            &connector,
            &subjects(&moved),
            &reread::keys("acme", &[alice.as_str(), "nobody"])
        )
        .await
    );

    // Drift: a hand-edited title is put back; a description set by hand is not mapped and
    // stays.
    samba::modify(
        &mut admin,
        &dn,
        vec![
            Mod::Replace("title", ["Intern"].into()),
            Mod::Replace("description", ["set by hand"].into()),
        ],
    )
    .await;
    assert_eq!(
        sync_ok(&connector, &moved).await,
        [format!("{alice} updateAttributes")]
    );
    assert_eq!(value(&mut admin, &dn, "title").await, ["Engineer"]);
    assert_eq!(value(&mut admin, &dn, "description").await, ["set by hand"]);
    assert!(sync_ok(&connector, &moved).await.is_empty(), "converged");

    // Unsetting an attribute, twice: the second delete (already absent) is done too.
    let subject = subjects(&moved)
        .remove(&IdentityKey::new("acme", &alice))
        .unwrap();
    let unset = Operation {
        identity: Arc::new(subject.identity.clone()),
        target: "corp-ad".into(),
        action: Action::UpdateAttributes {
            changes: vec![AttributeChange {
                name: "employeeID".into(),
                from: None,
                to: None,
            }],
        },
        leaver: false,
        sources: Default::default(),
    };
    for _ in 0..2 {
        assert_eq!(
            connector.apply(&unset, &subject).await.expect("unset"),
            Applied::Done
        );
    }
    assert_eq!(
        value(&mut admin, &dn, "employeeID").await,
        Vec::<String>::new()
    );
    assert_eq!(
        sync_ok(&connector, &moved).await,
        [format!("{alice} updateAttributes")],
        "and it is put back"
    );
    assert_eq!(
        value(&mut admin, &dn, "employeeID").await,
        [format!("E-{alice}")]
    );
}
