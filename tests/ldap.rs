//! The LDAP connector against a real OpenLDAP slapd (memberof, refint and ppolicy
//! overlays), driven the way the controller drives it: evaluate, observe, plan, apply;
//! then once more to prove the second pass has nothing to do. The directory's real state
//! is checked with the test's own administrator connection, and a lock by a real bind.

mod reread;
mod slapd;

use std::collections::BTreeMap;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::engine::attributes::{AttrValue, AttributeChange};
use gatehouse::engine::{AccountIntent, Engine, IdentityKey, NothingHeld, Settings, Snapshot};
use gatehouse::plan::{Action, Operation, Plan, guard, plan};
use gatehouse::targets::ldap::LdapDirectory;
use gatehouse::targets::{Applied, Connector, Subject, TargetError};
use ldap3::Mod;
use slapd::{Slapd, TestScope};

const NOW: &str = "2026-12-01T09:00:00Z";

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Tenant `acme` with the `corp-ldap` target of `spec` and two policies: finance gets the
/// groups `finance` and `staff`, engineering gets `engineering` and `staff`.
fn org(spec: &str, people: &[String]) -> Snapshot {
    let target: TargetSystem = yaml(&format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {{name: corp-ldap, namespace: acme}}\nspec: {spec}"
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
                "[{target: corp-ldap, name: finance}, {target: corp-ldap, name: staff}]",
            ),
            policy(
                "engineering",
                "engineering",
                "[{target: corp-ldap, name: engineering}, {target: corp-ldap, name: staff}]",
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

/// The subjects the controller would hand the connector.
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
            let account = identity
                .spec
                .accounts
                .get("corp-ldap")
                .cloned()
                .unwrap_or_else(|| key.name.clone());
            let subject = Subject {
                identity: key.clone(),
                identity_type: identity.spec.type_,
                account,
                enabled,
            };
            (key, subject)
        })
        .collect()
}

/// What one sync planned and which operations failed.
struct Synced {
    plan: Plan,
    failed: Vec<(Operation, TargetError)>,
}

/// One reconcile of `corp-ldap`: observe, plan against what is held, apply in order
/// (continuing after a failed operation, as the controller does).
async fn sync(connector: &LdapDirectory, snapshot: &Snapshot) -> Synced {
    let now = NOW.parse().unwrap();
    let engine = Engine::new(snapshot, Settings::default());
    let subjects = subjects(snapshot);
    let mut observed = connector.observe(&subjects).await.expect("observe").held;
    let mut desired = engine.evaluate(now, &observed);
    // As the controller does for a target whose names are case-insensitive.
    assert!(connector.capabilities().case_insensitive_names);
    if observed.respell(&desired, "corp-ldap") {
        desired = engine.evaluate(now, &observed);
    }
    let plan = plan(&observed, &desired);
    let mut failed = Vec::new();
    for op in &plan.operations {
        let subject = subjects
            .get(&op.identity)
            .cloned()
            .expect("identity in the snapshot");
        match connector.apply(op, &subject).await {
            Ok(Applied::Unsupported) => assert_eq!(op.action, Action::RevokeSessions, "{op:?}"),
            Ok(Applied::Done) => {}
            Err(e) => failed.push((op.clone(), e)),
        }
    }
    Synced { plan, failed }
}

/// A sync that must succeed in full.
async fn sync_ok(connector: &LdapDirectory, snapshot: &Snapshot) -> Plan {
    let synced = sync(connector, snapshot).await;
    assert!(
        synced.failed.is_empty(),
        "failed: {:?}",
        synced
            .failed
            .iter()
            .map(|(op, e)| format!("{op:?}: {e}"))
            .collect::<Vec<_>>()
    );
    synced.plan
}

fn steps(plan: &Plan) -> Vec<String> {
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
    extra: &str,
    on_leave: &str,
) -> (&'static Slapd, TestScope, LdapDirectory, String) {
    let server = Slapd::shared();
    let scope = server.scope(groups).await;
    let config = server.config(&scope, extra, on_leave);
    let spec = server.spec_yaml(
        &server.ldap_url,
        &scope,
        &format!("startTLS: false, {extra}"),
        on_leave,
    );
    let connector = LdapDirectory::connect(&config).await.expect("connect");
    (server, scope, connector, spec)
}

fn lower(dns: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = dns.iter().map(|d| d.to_lowercase()).collect();
    out.sort();
    out
}

#[tokio::test]
async fn joiner_mover_on_leave_and_leaver() {
    // A page size of 2 makes every observation a multi-page paged search.
    let (server, scope, connector, spec) = setup(
        &["finance", "engineering", "staff"],
        "pageSize: 2",
        "Disable",
    )
    .await;
    let mut admin = server.admin().await;
    let alice = scope.user("alice");
    let others: Vec<String> = (0..4)
        .map(|i| person(&format!("p{i}"), "finance", "Active"))
        .collect();
    let with = |alice_spec: String| {
        let mut people = others.clone();
        people.push(alice_spec);
        org(&spec, &people)
    };

    // Joiner: the account and both memberships appear; the placeholder goes.
    let joined = with(person("alice", "finance", "Active"));
    let first = steps(&sync_ok(&connector, &joined).await);
    assert!(
        first.contains(&"alice createAccount".to_string()),
        "{first:?}"
    );
    assert!(first.contains(&"alice +finance".to_string()), "{first:?}");
    let classes = slapd::attribute(&mut admin, &alice, "objectClass")
        .await
        .expect("alice exists");
    assert!(classes.iter().any(|c| c == "inetOrgPerson"), "{classes:?}");
    let finance = scope.members(&mut admin, "finance").await.unwrap();
    assert_eq!(
        finance.len(),
        5,
        "four others and alice, no placeholder: {finance:?}"
    );
    assert!(finance.contains(&alice.to_lowercase()));
    assert!(
        scope
            .members(&mut admin, "staff")
            .await
            .unwrap()
            .contains(&alice.to_lowercase())
    );
    assert_eq!(
        scope.members(&mut admin, "engineering").await.unwrap(),
        vec![String::new()]
    );
    assert!(sync_ok(&connector, &joined).await.is_empty(), "converged");
    // Her password is set outside gatehouse (self-service); she can log in.
    slapd::modify(
        &mut admin,
        &alice,
        vec![Mod::Replace("userPassword", ["alice-pw"].into())],
    )
    .await;
    assert_eq!(server.bind_rc(&alice, "alice-pw").await, 0);

    // Mover: finance goes, engineering comes, staff stays; revocations first, then her
    // departmentNumber (the default mapping), then the grant.
    let moved = with(person("alice", "engineering", "Active"));
    let mover = steps(&sync_ok(&connector, &moved).await);
    assert_eq!(
        mover,
        [
            "alice -finance",
            "alice updateAttributes",
            "alice +engineering"
        ]
    );
    assert_eq!(
        slapd::attribute(&mut admin, &alice, "departmentNumber").await,
        Some(vec!["engineering".to_string()])
    );
    assert!(
        !scope
            .members(&mut admin, "finance")
            .await
            .unwrap()
            .contains(&alice.to_lowercase())
    );
    assert_eq!(
        scope.members(&mut admin, "engineering").await.unwrap(),
        vec![alice.to_lowercase()],
        "the placeholder made way"
    );
    assert!(sync_ok(&connector, &moved).await.is_empty(), "converged");

    // On leave: locked (a bind fails at once), memberships kept; back: unlocked.
    let away = with(person("alice", "engineering", "OnLeave"));
    assert_eq!(
        steps(&sync_ok(&connector, &away).await),
        ["alice disableAccount", "alice revokeSessions"]
    );
    assert_eq!(server.bind_rc(&alice, "alice-pw").await, 49);
    assert!(
        scope
            .members(&mut admin, "staff")
            .await
            .unwrap()
            .contains(&alice.to_lowercase())
    );
    assert!(
        sync_ok(&connector, &away).await.is_empty(),
        "converged while away"
    );
    assert_eq!(
        steps(&sync_ok(&connector, &moved).await),
        ["alice enableAccount"]
    );
    assert_eq!(server.bind_rc(&alice, "alice-pw").await, 0);

    // Leaver: locked, every membership removed; engineering keeps only the placeholder
    // (the server refuses an empty groupOfNames).
    let left = with(person("alice", "engineering", "Terminated"));
    let leaver = steps(&sync_ok(&connector, &left).await);
    assert_eq!(
        leaver,
        [
            "alice disableAccount",
            "alice revokeSessions",
            "alice -engineering",
            "alice -staff"
        ]
    );
    assert_eq!(
        server.bind_rc(&alice, "alice-pw").await,
        49,
        "the leaver cannot bind"
    );
    assert_eq!(
        slapd::attribute(&mut admin, &alice, "pwdAccountLockedTime").await,
        Some(vec!["000001010000Z".to_string()])
    );
    assert_eq!(
        scope.members(&mut admin, "engineering").await.unwrap(),
        vec![String::new()]
    );
    assert!(
        !scope
            .members(&mut admin, "staff")
            .await
            .unwrap()
            .contains(&alice.to_lowercase())
    );
    assert!(sync_ok(&connector, &left).await.is_empty(), "converged");
    // The others were never touched.
    assert_eq!(scope.members(&mut admin, "finance").await.unwrap().len(), 4);
}

#[tokio::test]
async fn delete_mode_removes_the_entry_and_its_memberships() {
    let (server, scope, connector, spec) = setup(&["finance", "staff"], "", "Delete").await;
    let mut admin = server.admin().await;
    let bob = scope.user("bob");
    sync_ok(
        &connector,
        &org(
            &spec,
            &[
                person("bob", "finance", "Active"),
                person("carol", "finance", "Active"),
            ],
        ),
    )
    .await;
    assert!(slapd::attribute(&mut admin, &bob, "uid").await.is_some());

    let left = org(
        &spec,
        &[
            person("bob", "finance", "Terminated"),
            person("carol", "finance", "Active"),
        ],
    );
    let leaver = steps(&sync_ok(&connector, &left).await);
    assert!(
        leaver.contains(&"bob deleteAccount".to_string()),
        "{leaver:?}"
    );
    assert_eq!(
        slapd::attribute(&mut admin, &bob, "uid").await,
        None,
        "entry deleted"
    );
    for group in ["finance", "staff"] {
        assert_eq!(
            scope.members(&mut admin, group).await.unwrap(),
            vec![scope.user("carol").to_lowercase()]
        );
    }
    assert!(sync_ok(&connector, &left).await.is_empty(), "converged");

    // Deleting an account that is already gone is fine (idempotent), and a hand-made
    // membership of a deleted account does not survive the delete either.
    let subject = subjects(&left)
        .remove(&IdentityKey::new("acme", "carol"))
        .unwrap();
    let carol = scope.user("carol");
    let mut extra = admin.clone();
    scope.create_group(&mut extra, "hand-made").await;
    slapd::modify(
        &mut admin,
        &scope.group("hand-made"),
        vec![Mod::Add("member", [carol.as_str()].into())],
    )
    .await;
    let delete = Operation {
        identity: std::sync::Arc::new(subject.identity.clone()),
        target: "corp-ldap".into(),
        action: Action::DeleteAccount,
        leaver: true,
        sources: Default::default(),
    };
    connector.apply(&delete, &subject).await.expect("delete");
    connector
        .apply(&delete, &subject)
        .await
        .expect("delete again");
    assert_eq!(slapd::attribute(&mut admin, &carol, "uid").await, None);
    assert_eq!(
        scope.members(&mut admin, "hand-made").await.unwrap(),
        vec![String::new()]
    );
}

#[tokio::test]
async fn drift_is_repaired_both_ways_and_the_guard_counts_it() {
    let (server, scope, connector, spec) =
        setup(&["finance", "engineering", "staff"], "", "Disable").await;
    let mut admin = server.admin().await;
    let dave = scope.user("dave");
    let snapshot = org(&spec, &[person("dave", "finance", "Active")]);
    sync_ok(&connector, &snapshot).await;

    // By hand: dave joins engineering and leaves staff.
    slapd::modify(
        &mut admin,
        &scope.group("engineering"),
        vec![Mod::Add("member", [dave.as_str()].into())],
    )
    .await;
    // (dave is staff's only member: like any administrator, the test puts a placeholder in.)
    slapd::modify(
        &mut admin,
        &scope.group("staff"),
        vec![
            Mod::Delete("member", [dave.as_str()].into()),
            Mod::Add("member", [""].into()),
        ],
    )
    .await;

    // Observing alone changes nothing (what Observe mode relies on) and reports the drift.
    let observed = connector.observe(&subjects(&snapshot)).await.unwrap();
    let held: Vec<String> = observed.held.identities[&IdentityKey::new("acme", "dave")]
        .entitlements
        .keys()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(held, ["engineering", "finance"]);
    assert!(
        scope
            .members(&mut admin, "engineering")
            .await
            .unwrap()
            .contains(&dave.to_lowercase())
    );
    let desired =
        Engine::new(&snapshot, Settings::default()).evaluate(NOW.parse().unwrap(), &observed.held);
    let repair = plan(&observed.held, &desired);
    assert_eq!(steps(&repair), ["dave -engineering", "dave +staff"]);
    // A limit of zero revocations stops this sync before it starts, naming the count.
    let stop = guard::check(&repair.operations, Some(0)).unwrap_err();
    assert!(stop.to_string().contains("1 revocations"), "{stop}");

    assert_eq!(
        steps(&sync_ok(&connector, &snapshot).await),
        ["dave -engineering", "dave +staff"]
    );
    assert_eq!(
        scope.members(&mut admin, "engineering").await.unwrap(),
        vec![String::new()]
    );
    assert!(
        scope
            .members(&mut admin, "staff")
            .await
            .unwrap()
            .contains(&dave.to_lowercase())
    );
    assert!(sync_ok(&connector, &snapshot).await.is_empty(), "converged");

    // A lock set by hand on an account that should be enabled is lifted again.
    slapd::modify(
        &mut admin,
        &dave,
        vec![Mod::Replace(
            "pwdAccountLockedTime",
            ["000001010000Z"].into(),
        )],
    )
    .await;
    assert_eq!(
        steps(&sync_ok(&connector, &snapshot).await),
        ["dave enableAccount"]
    );
    assert_eq!(
        slapd::attribute(&mut admin, &dave, "pwdAccountLockedTime").await,
        Some(vec![])
    );
}

#[tokio::test]
async fn orphans_are_reported_and_foreign_entries_left_alone() {
    let (server, scope, connector, spec) = setup(&["finance", "staff"], "", "Delete").await;
    let mut admin = server.admin().await;
    // By hand: two people nobody knows (one of them in finance), and an entry named like
    // an identity but of another object class.
    scope.add_person(&mut admin, "mallory", "pw").await;
    scope.add_person(&mut admin, "Zed", "pw").await;
    slapd::modify(
        &mut admin,
        &scope.group("finance"),
        vec![Mod::Add("member", [scope.user("mallory").as_str()].into())],
    )
    .await;
    slapd::add(
        &mut admin,
        &scope.user("erin"),
        &[("objectClass", &["account"]), ("uid", &["erin"])],
    )
    .await;

    let snapshot = org(
        &spec,
        &[
            person("erin", "finance", "Active"),
            person("frank", "finance", "Active"),
        ],
    );
    let observed = connector.observe(&subjects(&snapshot)).await.unwrap();
    assert_eq!(observed.orphans, ["Zed", "mallory"]);
    assert!(
        !observed
            .held
            .identities
            .contains_key(&IdentityKey::new("acme", "erin"))
    );

    // erin's creation fails with a reason naming the entry; frank is provisioned anyway.
    let synced = sync(&connector, &snapshot).await;
    assert_eq!(synced.failed.len(), 3, "erin's create and two grants");
    let (op, error) = &synced.failed[0];
    assert!(
        matches!(op.action, Action::CreateAccount { enabled: true, .. }),
        "{op:?}"
    );
    assert!(matches!(error, TargetError::Permanent(_)), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("uid=erin")
            && message.contains("account")
            && message.contains("inetOrgPerson"),
        "{message}"
    );
    assert!(
        scope
            .members(&mut admin, "staff")
            .await
            .unwrap()
            .contains(&scope.user("frank").to_lowercase())
    );
    assert_eq!(
        slapd::attribute(&mut admin, &scope.user("erin"), "objectClass").await,
        Some(vec!["account".to_string()]),
        "never touched"
    );
    // Orphans are never changed, even by a sync in Delete mode.
    assert!(
        slapd::attribute(&mut admin, &scope.user("mallory"), "uid")
            .await
            .is_some()
    );
    assert!(
        scope
            .members(&mut admin, "finance")
            .await
            .unwrap()
            .contains(&scope.user("mallory").to_lowercase())
    );
    let again = sync(&connector, &snapshot).await;
    assert!(
        again
            .plan
            .operations
            .iter()
            .all(|op| op.identity.name == "erin"),
        "{:?}",
        steps(&again.plan)
    );
}

#[tokio::test]
async fn referrals_in_the_managed_scope_are_refused_clearly() {
    let (server, scope, connector, spec) = setup(&["finance"], "", "Disable").await;
    let mut admin = server.admin().await;
    slapd::add(
        &mut admin,
        &format!("ou=elsewhere,{}", scope.users_dn),
        &[
            ("objectClass", &["referral", "extensibleObject"]),
            ("ou", &["elsewhere"]),
            (
                "ref",
                &["ldap://directory.invalid/ou=people,dc=acme,dc=example"],
            ),
        ],
    )
    .await;
    let error = connector
        .observe(&subjects(&org(
            &spec,
            &[person("gina", "finance", "Active")],
        )))
        .await
        .unwrap_err();
    assert!(matches!(error, TargetError::Permanent(_)), "{error}");
    assert!(
        error.to_string().contains("referral") && error.to_string().contains("directory.invalid"),
        "{error}"
    );
}

#[tokio::test]
async fn tls_with_starttls_and_ldaps() {
    let server = Slapd::shared();
    let scope = server.scope(&["finance", "staff"]).await;
    let snapshot = |spec: &str| org(spec, &[person("hana", "finance", "Active")]);
    let ldap_url = server.ldap_url.clone();
    let ldaps_url = server.ldaps_url.clone();

    // StartTLS (the default for ldap://) and ldaps://, trusting the harness's CA.
    for (url, extra) in [(&ldap_url, "startTLS: true"), (&ldaps_url, "")] {
        let config = server.config_with(
            url,
            &scope,
            extra,
            "Disable",
            server.credentials(Some(&server.ca)),
        );
        let connector = LdapDirectory::connect(&config)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let spec = server.spec_yaml(url, &scope, extra, "Disable");
        sync_ok(&connector, &snapshot(&spec)).await;
        assert!(
            sync_ok(&connector, &snapshot(&spec)).await.is_empty(),
            "{url}"
        );
    }

    // The wrong CA, or none (system roots): a configuration error naming ca.crt.
    for (url, ca) in [
        (&ldaps_url, Some(server.other_ca.as_path())),
        (&ldap_url, Some(server.other_ca.as_path())),
        (&ldaps_url, None),
    ] {
        let config = server.config_with(url, &scope, "", "Disable", server.credentials(ca));
        let error = LdapDirectory::connect(&config).await.unwrap_err();
        assert!(matches!(error, TargetError::Config(_)), "{url}: {error}");
        assert!(error.to_string().contains("ca.crt"), "{url}: {error}");
    }
    // ldaps:// to the plain port: a TLS failure, not a hang or a panic.
    let plain = ldap_url.replace("ldap://", "ldaps://");
    let config = server.config_with(
        &plain,
        &scope,
        "timeoutSeconds: 5",
        "Disable",
        server.credentials(Some(&server.ca)),
    );
    let error = LdapDirectory::connect(&config).await.unwrap_err();
    assert!(
        !error.is_transient() || error.to_string().contains(&plain),
        "{error}"
    );
}

#[tokio::test]
async fn wrong_credentials_and_unreachable_server() {
    let server = Slapd::shared();
    let scope = server.scope(&[]).await;
    let credentials = gatehouse::targets::Credentials::new(
        "corp-ldap",
        BTreeMap::from([
            ("bindDN".to_string(), server.bind_dn.clone().into_bytes()),
            ("password".to_string(), b"not-the-password".to_vec()),
        ]),
    );
    let config = server.config_with(
        &server.ldap_url,
        &scope,
        "startTLS: false",
        "Disable",
        credentials,
    );
    let error = LdapDirectory::connect(&config).await.unwrap_err();
    assert!(
        matches!(error, TargetError::Config(_)),
        "a refused service bind is a configuration error: {error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("invalidCredentials")
            && message.contains("bindDN")
            && message.contains("corp-ldap"),
        "{message}"
    );
    assert!(
        !message.contains("not-the-password"),
        "never the password: {message}"
    );

    // A port nobody listens on: transient, retried with backoff by the controller.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("ldap://127.0.0.1:{closed}");
    let config = server.config_with(
        &url,
        &scope,
        "startTLS: false",
        "Disable",
        server.credentials(None),
    );
    let error = LdapDirectory::connect(&config).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains(&url), "{error}");

    // A users OU that does not exist: a configuration error naming the field.
    let mut missing = scope.clone();
    missing.users_ou = "ou=nowhere".into();
    let connector = LdapDirectory::connect(&server.config(&missing, "", "Disable"))
        .await
        .unwrap();
    let error = connector.observe(&BTreeMap::new()).await.unwrap_err();
    assert!(
        matches!(error, TargetError::Config(_)) && error.to_string().contains("usersOU"),
        "{error}"
    );

    // A group the directory does not have: a per-entitlement error, the account still made.
    let scope = server.scope(&[]).await;
    let spec = server.spec_yaml(&server.ldap_url, &scope, "startTLS: false", "Disable");
    let connector = LdapDirectory::connect(&server.config(&scope, "", "Disable"))
        .await
        .unwrap();
    let synced = sync(
        &connector,
        &org(&spec, &[person("ivan", "finance", "Active")]),
    )
    .await;
    assert_eq!(synced.failed.len(), 2, "two missing groups");
    assert!(
        synced.failed[0].1.to_string().contains("does not exist"),
        "{}",
        synced.failed[0].1
    );
    let mut admin = server.admin().await;
    assert!(
        slapd::attribute(&mut admin, &scope.user("ivan"), "uid")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn server_restart_mid_sync_then_the_next_sync_completes() {
    // A private server: this test stops it.
    let server = Slapd::start("restart");
    let scope = server.scope(&["finance", "staff"]).await;
    let config = server.config(&scope, "timeoutSeconds: 5", "Disable");
    let spec = server.spec_yaml(
        &server.ldap_url,
        &scope,
        "startTLS: false, timeoutSeconds: 5",
        "Disable",
    );
    let connector = LdapDirectory::connect(&config).await.unwrap();
    let people: Vec<String> = (0..6)
        .map(|i| person(&format!("u{i}"), "finance", "Active"))
        .collect();
    let snapshot = org(&spec, &people);
    let subjects = subjects(&snapshot);

    let observed = connector.observe(&subjects).await.unwrap().held;
    let desired =
        Engine::new(&snapshot, Settings::default()).evaluate(NOW.parse().unwrap(), &observed);
    let operations = plan(&observed, &desired).operations;
    assert_eq!(operations.len(), 18);
    // A third of the plan, then the server restarts under the connector's open connection:
    // the next operation reconnects by itself.
    for op in &operations[..6] {
        connector.apply(op, &subjects[&op.identity]).await.unwrap();
    }
    server.stop();
    server.restart();
    for op in &operations[6..9] {
        connector.apply(op, &subjects[&op.identity]).await.unwrap();
    }
    // Now the server is down for the rest of this pass: transient failures, no panic.
    server.stop();
    let error = connector
        .apply(&operations[9], &subjects[&operations[9].identity])
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        connector
            .observe(&subjects)
            .await
            .unwrap_err()
            .is_transient()
    );
    server.restart();

    // The next sync finishes the job; nothing is duplicated.
    let rest = steps(&sync_ok(&connector, &snapshot).await);
    assert_eq!(rest.len(), 9, "{rest:?}");
    assert!(sync_ok(&connector, &snapshot).await.is_empty(), "converged");
    let mut admin = server.admin().await;
    assert_eq!(slapd::children(&mut admin, &scope.users_dn).await.len(), 6);
    let everyone: Vec<String> = (0..6).map(|i| scope.user(&format!("u{i}"))).collect();
    let everyone: Vec<&str> = everyone.iter().map(String::as_str).collect();
    for group in ["finance", "staff"] {
        assert_eq!(
            scope.members(&mut admin, group).await.unwrap(),
            lower(&everyone)
        );
    }
}

#[tokio::test]
async fn a_server_refusing_paged_results_is_searched_without_them() {
    // A private server: its configuration is changed.
    let server = Slapd::start("nopaging");
    server.refuse_paging();
    let scope = server.scope(&["finance", "staff"]).await;
    let config = server.config(&scope, "", "Disable");
    let spec = server.spec_yaml(&server.ldap_url, &scope, "startTLS: false", "Disable");
    let connector = LdapDirectory::connect(&config).await.unwrap();
    let mut people = vec![
        person("ann", "finance", "Active"),
        person("ben", "finance", "Active"),
    ];
    sync_ok(&connector, &org(&spec, &people)).await;
    let mut admin = server.admin().await;
    assert_eq!(
        scope.members(&mut admin, "finance").await.unwrap(),
        lower(&[&scope.user("ann"), &scope.user("ben")])
    );
    // A leaver, then a clean pass: observation works without the control.
    people[1] = person("ben", "finance", "Terminated");
    let left = org(&spec, &people);
    sync_ok(&connector, &left).await;
    assert_eq!(
        scope.members(&mut admin, "finance").await.unwrap(),
        lower(&[&scope.user("ann")])
    );
    assert!(sync_ok(&connector, &left).await.is_empty(), "converged");
}

#[tokio::test]
async fn a_configured_placeholder_member_keeps_emptied_groups_valid() {
    let server = Slapd::shared();
    let nobody = format!("cn=nobody,{}", server.base_dn);
    let extra = format!("placeholderMember: '{nobody}'");
    let (server, scope, connector, spec) = setup(&["finance", "staff"], &extra, "Disable").await;
    let mut admin = server.admin().await;
    // The administrators' groups hold the configured placeholder, not the empty DN.
    for group in ["finance", "staff"] {
        slapd::modify(
            &mut admin,
            &scope.group(group),
            vec![
                Mod::Add("member", [nobody.as_str()].into()),
                Mod::Delete("member", [""].into()),
            ],
        )
        .await;
    }
    let kim = scope.user("kim");
    sync_ok(
        &connector,
        &org(&spec, &[person("kim", "finance", "Active")]),
    )
    .await;
    assert_eq!(
        scope.members(&mut admin, "finance").await.unwrap(),
        vec![kim.to_lowercase()],
        "the placeholder made way"
    );
    let left = org(&spec, &[person("kim", "finance", "Terminated")]);
    sync_ok(&connector, &left).await;
    for group in ["finance", "staff"] {
        assert_eq!(
            scope.members(&mut admin, group).await.unwrap(),
            vec![nobody.to_lowercase()]
        );
    }
    assert!(sync_ok(&connector, &left).await.is_empty(), "converged");
}

#[tokio::test]
async fn group_names_match_whatever_their_case() {
    // The directory spells the groups `Finance` and `STAFF`; the policies say `finance`
    // and `staff`.
    let (server, scope, connector, spec) = setup(&["Finance", "STAFF"], "", "Disable").await;
    let mut admin = server.admin().await;
    let snapshot = org(&spec, &[person("ivy", "finance", "Active")]);
    assert_eq!(
        steps(&sync_ok(&connector, &snapshot).await),
        ["ivy createAccount", "ivy +finance", "ivy +staff"]
    );
    let ivy = vec![scope.user("ivy").to_lowercase()];
    assert_eq!(scope.members(&mut admin, "Finance").await.unwrap(), ivy);
    assert_eq!(scope.members(&mut admin, "STAFF").await.unwrap(), ivy);
    // The connector reports the directory's spelling; respelled like the policies before
    // planning, nothing is revoked or granted again.
    let subjects = subjects(&snapshot);
    let held = connector.observe(&subjects).await.unwrap().held;
    let names: Vec<String> = held.identities[&IdentityKey::new("acme", "ivy")]
        .entitlements
        .keys()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(names, ["Finance", "STAFF"], "the directory's spelling");
    assert!(sync_ok(&connector, &snapshot).await.is_empty(), "converged");
    assert_eq!(scope.members(&mut admin, "Finance").await.unwrap(), ivy);
}

#[tokio::test]
async fn an_entry_at_the_accounts_dn_naming_another_account_is_not_taken_over() {
    // The OpenLDAP analogue of Active Directory's `CN=carol` whose sAMAccountName is
    // `dave`: the entry `uid=carol` was `uid=dave` and was renamed keeping `dave`, so its
    // first uid (the one observe goes by) is `dave`.
    let (server, scope, connector, spec) = setup(&["finance", "staff"], "", "Disable").await;
    let mut admin = server.admin().await;
    scope.add_person(&mut admin, "dave", "dave-pw").await;
    admin
        .modifydn(&scope.user("dave"), "uid=carol", false, None)
        .await
        .and_then(|r| r.success())
        .expect("modrdn");
    let carol = scope.user("carol");
    assert_eq!(
        slapd::attribute(&mut admin, &carol, "uid").await,
        Some(vec!["dave".to_string(), "carol".to_string()])
    );

    let snapshot = org(&spec, &[person("carol", "finance", "Active")]);
    let synced = sync(&connector, &snapshot).await;
    assert_eq!(
        steps(&synced.plan),
        ["carol createAccount", "carol +finance", "carol +staff"]
    );
    assert_eq!(synced.failed.len(), 3, "the create and both grants");
    for (_, error) in &synced.failed {
        assert!(matches!(error, TargetError::Permanent(_)), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("uid=carol")
                && message.contains("dave")
                && message.contains("does not take it over"),
            "{message}"
        );
    }
    // Never touched: not unlocked, not made a member.
    assert_eq!(
        slapd::attribute(&mut admin, &carol, "uid").await,
        Some(vec!["dave".to_string(), "carol".to_string()])
    );
    assert_eq!(
        scope.members(&mut admin, "finance").await.unwrap(),
        [String::new()]
    );
    assert_eq!(
        scope.members(&mut admin, "staff").await.unwrap(),
        [String::new()]
    );
}

#[tokio::test]
async fn enabling_lifts_only_gatehouses_own_lock() {
    let (server, scope, connector, spec) = setup(&["finance", "staff"], "", "Disable").await;
    let mut admin = server.admin().await;
    let snapshot = org(&spec, &[person("jo", "finance", "Active")]);
    sync_ok(&connector, &snapshot).await;
    let jo = scope.user("jo");
    // A lockout of the kind slapd sets after failed binds: a timestamp.
    slapd::modify(
        &mut admin,
        &jo,
        vec![Mod::Replace(
            "pwdAccountLockedTime",
            ["20261126010000Z"].into(),
        )],
    )
    .await;
    assert!(
        sync_ok(&connector, &snapshot).await.is_empty(),
        "still counts as enabled"
    );
    let subject = subjects(&snapshot)[&IdentityKey::new("acme", "jo")].clone();
    let enable = Operation {
        identity: std::sync::Arc::new(subject.identity.clone()),
        target: "corp-ldap".into(),
        action: Action::EnableAccount,
        leaver: false,
        sources: Default::default(),
    };
    assert_eq!(
        connector.apply(&enable, &subject).await.unwrap(),
        Applied::Done
    );
    assert_eq!(
        slapd::attribute(&mut admin, &jo, "pwdAccountLockedTime").await,
        Some(vec!["20261126010000Z".to_string()]),
        "the server's lockout stays"
    );
}

/// A person with an HR record: display name, e-mail, and (when not empty) a title, in
/// `dept`, reporting to `manager` (themselves: nobody).
fn staff(name: &str, display: &str, title: &str, dept: &str, manager: &str) -> String {
    let title = if title.is_empty() {
        String::new()
    } else {
        format!(", title: '{title}'")
    };
    format!(
        "name: {name}}}\nspec: {{type: Human, displayName: '{display}', email: '{name}@acme.example', employment: {{status: Active, department: {dept}, manager: {manager}{title}}}}}"
    )
}

/// The attribute changes of `name`'s updateAttributes in `plan`, as `attr: from → to`.
fn changes(plan: &Plan, name: &str) -> Vec<String> {
    plan.operations
        .iter()
        .filter(|op| op.identity.name == name)
        .filter_map(|op| match &op.action {
            Action::UpdateAttributes { changes } => Some(changes),
            _ => None,
        })
        .flatten()
        .map(|c| c.to_string())
        .collect()
}

/// The values of an attribute of an entry that must exist.
async fn value(admin: &mut ldap3::Ldap, dn: &str, attr: &str) -> Vec<String> {
    slapd::attribute(admin, dn, attr)
        .await
        .expect("the entry exists")
}

fn update(identity: &str, changes: Vec<AttributeChange>) -> Operation {
    Operation {
        identity: std::sync::Arc::new(IdentityKey::new("acme", identity)),
        target: "corp-ldap".into(),
        action: Action::UpdateAttributes { changes },
        leaver: false,
        sources: Default::default(),
    }
}

#[tokio::test]
async fn attributes_flow_from_the_hr_record_and_drift_is_repaired() {
    let (server, scope, connector, spec) =
        setup(&["finance", "engineering", "staff"], "", "Disable").await;
    let mut admin = server.admin().await;
    let (alice, carol, dave) = (scope.user("alice"), scope.user("carol"), scope.user("dave"));
    let bosses = [
        staff("carol", "Carol Chief", "CFO", "finance", "carol"),
        staff("dave", "Dave Lead", "VP Engineering", "engineering", "dave"),
    ];
    let with = |alice_spec: String| {
        let mut people = bosses.to_vec();
        people.push(alice_spec);
        org(&spec, &people)
    };

    // Joiner: created with her text attributes; her manager (a DN) follows once every
    // account of the plan exists.
    let joined = with(staff(
        "alice",
        "Alice Smith",
        "Accountant",
        "finance",
        "carol",
    ));
    let plan = sync_ok(&connector, &joined).await;
    let first = steps(&plan);
    let created = first.iter().position(|s| s == "alice createAccount");
    let updated = first.iter().position(|s| s == "alice updateAttributes");
    assert!(created < updated && created.is_some(), "{first:?}");
    assert_eq!(
        changes(&plan, "alice"),
        ["manager: (unset) → account carol"]
    );
    for (attr, want) in [
        ("cn", "Alice Smith"),
        ("sn", "Smith"),
        ("givenName", "Alice"),
        ("displayName", "Alice Smith"),
        ("mail", "alice@acme.example"),
        ("title", "Accountant"),
        ("departmentNumber", "finance"),
    ] {
        assert_eq!(value(&mut admin, &alice, attr).await, [want], "{attr}");
    }
    assert_eq!(
        value(&mut admin, &alice, "manager").await[0].to_lowercase(),
        carol.to_lowercase(),
        "the manager's DN"
    );
    // Read back: the manager's DN is the account it names; nothing left to do.
    let observed = connector.observe(&subjects(&joined)).await.unwrap().held;
    let held = &observed.identities[&IdentityKey::new("acme", "alice")].attributes["corp-ldap"];
    assert_eq!(
        held.get("manager"),
        Some(&AttrValue::Account {
            account: "carol".into()
        })
    );
    assert_eq!(held.len(), 8, "exactly the owned attributes: {held:?}");
    assert!(sync_ok(&connector, &joined).await.is_empty(), "converged");

    // Mover: new title, department and manager in the same plan as her access change.
    let moved = with(staff(
        "alice",
        "Alice Smith",
        "Engineer",
        "engineering",
        "dave",
    ));
    let plan = sync_ok(&connector, &moved).await;
    assert_eq!(
        steps(&plan),
        [
            "alice -finance",
            "alice updateAttributes",
            "alice +engineering"
        ]
    );
    assert_eq!(
        changes(&plan, "alice"),
        [
            "departmentNumber: \"finance\" → \"engineering\"",
            "manager: account carol → account dave",
            "title: \"Accountant\" → \"Engineer\"",
        ]
    );
    assert_eq!(value(&mut admin, &alice, "title").await, ["Engineer"]);
    assert_eq!(
        value(&mut admin, &alice, "departmentNumber").await,
        ["engineering"]
    );
    assert_eq!(
        value(&mut admin, &alice, "manager").await[0].to_lowercase(),
        dave.to_lowercase()
    );
    assert!(sync_ok(&connector, &moved).await.is_empty(), "converged");
    // A targeted re-read of alice (her manager a reference to another entry, her group
    // found by member) and of someone absent agrees with the full observation.
    assert!(
        reread::agrees(
            &connector,
            &subjects(&moved),
            &reread::keys("acme", &["alice", "nobody"])
        )
        .await,
        "slapd is re-read account by account"
    );

    // Drift: a hand-edited title is put back; a description set by hand (not mapped) and
    // a second title value are treated as they should be: the one left alone, the other
    // replaced.
    slapd::modify(
        &mut admin,
        &alice,
        vec![
            Mod::Replace("title", ["Intern"].into()),
            Mod::Replace("description", ["set by hand"].into()),
        ],
    )
    .await;
    let plan = sync_ok(&connector, &moved).await;
    assert_eq!(steps(&plan), ["alice updateAttributes"]);
    assert_eq!(
        changes(&plan, "alice"),
        ["title: \"Intern\" → \"Engineer\""]
    );
    assert_eq!(value(&mut admin, &alice, "title").await, ["Engineer"]);
    assert_eq!(
        value(&mut admin, &alice, "description").await,
        ["set by hand"]
    );
    slapd::modify(
        &mut admin,
        &alice,
        vec![Mod::Add("title", ["Intern"].into())],
    )
    .await;
    assert_eq!(
        changes(&sync_ok(&connector, &moved).await, "alice"),
        ["title: \"Engineer\\nIntern\" → \"Engineer\""]
    );
    assert_eq!(value(&mut admin, &alice, "title").await, ["Engineer"]);
    // A manager outside the managed accounts reads back as its DN, and is repaired.
    slapd::modify(
        &mut admin,
        &alice,
        vec![Mod::Replace("manager", [server.admin_dn.as_str()].into())],
    )
    .await;
    assert_eq!(
        changes(&sync_ok(&connector, &moved).await, "alice"),
        [format!("manager: \"{}\" → account dave", server.admin_dn)]
    );
    assert!(sync_ok(&connector, &moved).await.is_empty(), "converged");

    // The HR record loses her title: the attribute is removed, and removing it again
    // (already absent) is done too.
    let untitled = with(staff("alice", "Alice Smith", "", "engineering", "dave"));
    let plan = sync_ok(&connector, &untitled).await;
    assert_eq!(changes(&plan, "alice"), ["title: \"Engineer\" → (unset)"]);
    assert_eq!(
        value(&mut admin, &alice, "title").await,
        Vec::<String>::new()
    );
    let subject = subjects(&untitled)
        .remove(&IdentityKey::new("acme", "alice"))
        .unwrap();
    let again = update(
        "alice",
        vec![
            AttributeChange {
                name: "title".into(),
                from: Some(AttrValue::Text("Engineer".into())),
                to: None,
            },
            AttributeChange {
                name: "mail".into(),
                from: None,
                to: Some(AttrValue::Text("alice.smith@acme.example".into())),
            },
        ],
    );
    assert_eq!(
        connector.apply(&again, &subject).await.expect("idempotent"),
        Applied::Done
    );
    assert_eq!(
        value(&mut admin, &alice, "mail").await,
        ["alice.smith@acme.example"],
        "the rest of the modify went through"
    );
    assert_eq!(
        changes(&sync_ok(&connector, &untitled).await, "alice"),
        ["mail: \"alice.smith@acme.example\" → \"alice@acme.example\""]
    );

    // A reference to an account that does not exist (yet): transient, naming both.
    let ghost = update(
        "alice",
        vec![AttributeChange {
            name: "manager".into(),
            from: None,
            to: Some(AttrValue::Account {
                account: "ghost".into(),
            }),
        }],
    );
    let error = connector.apply(&ghost, &subject).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        error.to_string().contains("ghost") && error.to_string().contains("manager"),
        "{error}"
    );
    // Nothing the mapping does not own is ever written.
    let unowned = update(
        "alice",
        vec![AttributeChange {
            name: "description".into(),
            from: None,
            to: Some(AttrValue::Text("x".into())),
        }],
    );
    assert!(matches!(
        connector.apply(&unowned, &subject).await,
        Err(TargetError::Permanent(_))
    ));
    assert_eq!(
        value(&mut admin, &alice, "description").await,
        ["set by hand"]
    );
    assert!(sync_ok(&connector, &untitled).await.is_empty(), "converged");
}

#[tokio::test]
async fn a_mapped_attribute_the_schema_refuses_is_a_permanent_error_naming_it() {
    let server = Slapd::shared();
    let scope = server.scope(&["finance", "staff"]).await;
    // employeeID is Active Directory's; OpenLDAP's inetOrgPerson has no such attribute.
    let spec = server
        .spec_yaml(&server.ldap_url, &scope, "startTLS: false", "Disable")
        .replacen(
            "{type: LDAP,",
            "{type: LDAP, attributes: {employeeID: '{{ attributes.employeeId }}'},",
            1,
        );
    let config = gatehouse::targets::TargetConfig {
        spec: yaml(&spec),
        ..server.config(&scope, "", "Disable")
    };
    let connector = LdapDirectory::connect(&config).await.expect("connect");
    let bob = |id: &str| {
        format!(
            "name: bob}}\nspec: {{type: Human, displayName: Bob Jones, attributes: {{employeeId: '{id}'}}, employment: {{status: Active, department: finance, manager: bob}}}}"
        )
    };
    // Without an employeeId nothing is written to employeeID: the account is created.
    let first = sync_ok(&connector, &org(&spec, &[bob("")])).await;
    assert!(steps(&first).contains(&"bob createAccount".to_string()));
    let with_id = org(&spec, &[bob("E-1001")]);
    let synced = sync(&connector, &with_id).await;
    assert_eq!(steps(&synced.plan), ["bob updateAttributes"]);
    let [(_, error)] = synced.failed.as_slice() else {
        panic!("{:?}", synced.failed.len());
    };
    assert!(matches!(error, TargetError::Permanent(_)), "{error}");
    assert!(error.to_string().contains("employeeID"), "{error}");
    // Nothing else was changed by the refused modify.
    let mut admin = server.admin().await;
    assert_eq!(
        value(&mut admin, &scope.user("bob"), "displayName").await,
        ["Bob Jones"]
    );
}
