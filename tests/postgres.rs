//! The PostgreSQL connector against a real PostgreSQL server (Debian's, started by
//! `scripts/start-postgres.sh`), driven the way the controller drives it: evaluate, observe,
//! plan, apply; then once more to prove the second pass has nothing to do. The connector
//! logs in over TLS (verify-full) as a role with only CREATEROLE and pg_signal_backend; the
//! superuser only sets the scene and checks the server's real state.

mod postgres_peer;
mod reread;

use std::collections::BTreeMap;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::engine::{AccountIntent, Engine, IdentityKey, NothingHeld, Settings, Snapshot};
use gatehouse::plan::{Action, Operation, Plan, guard, plan};
use gatehouse::targets::postgres::{Postgres, marker};
use gatehouse::targets::{Applied, Connector, Subject, TargetError};
use postgres_peer::{Scope, config, credentials, credentials_with, peer, spec_yaml, superuser};

const NOW: &str = "2026-12-01T09:00:00Z";
const TARGET: &str = "db";

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A YAML (and JSON) double-quoted string.
fn q(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// One person: name, department, employment status, optional account name on `db`.
struct Person<'a>(&'a str, &'a str, &'a str, Option<&'a str>);

/// A tenant with target `db` (the given spec) and one policy per `(department, groups)`.
fn org(scope: &Scope, spec: &str, policies: &[(&str, &[String])], people: &[Person]) -> Snapshot {
    let ns = &scope.tenant;
    let target: TargetSystem = yaml(&format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {{name: {TARGET}, namespace: {ns}}}\nspec: {spec}"
    ));
    let policies = policies
        .iter()
        .map(|(dept, groups)| -> AccessPolicy {
            let ents: Vec<String> = groups
                .iter()
                .map(|g| format!("{{target: {TARGET}, name: {}}}", q(g)))
                .collect();
            yaml(&format!(
                "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {dept}, namespace: {ns}}}\nspec: {{selector: {{matchAttributes: {{department: {dept}}}}}, entitlements: [{}]}}",
                ents.join(", ")
            ))
        })
        .collect();
    let identities = people
        .iter()
        .map(|Person(name, dept, status, account)| -> Identity {
            let accounts = account
                .map(|a| format!(", accounts: {{{TARGET}: {}}}", q(a)))
                .unwrap_or_default();
            yaml(&format!(
                "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{type: Human, employment: {{status: {status}, department: {dept}, manager: {name}}}{accounts}}}"
            ))
        })
        .collect();
    Snapshot {
        targets: vec![target],
        policies,
        identities,
        exceptions: vec![],
        ..Default::default()
    }
}

/// The subjects the controller would pass: account from `spec.accounts[db]`, else the name.
fn subjects(snapshot: &Snapshot) -> BTreeMap<IdentityKey, Subject> {
    let now = NOW.parse().unwrap();
    let desired = Engine::new(snapshot, Settings::default()).evaluate(now, &NothingHeld);
    snapshot
        .identities
        .iter()
        .map(|identity| {
            let key = IdentityKey::new(
                identity.metadata.namespace.clone().unwrap(),
                identity.metadata.name.clone().unwrap(),
            );
            let subject = Subject {
                identity: key.clone(),
                identity_type: identity.spec.type_,
                account: identity
                    .spec
                    .accounts
                    .get(TARGET)
                    .cloned()
                    .unwrap_or_else(|| key.name.clone()),
                enabled: desired
                    .identities
                    .get(&key)
                    .is_some_and(|a| a.account == AccountIntent::Enabled),
            };
            (key, subject)
        })
        .collect()
}

/// Observe and plan, without applying.
async fn planned(connector: &Postgres, snapshot: &Snapshot) -> Plan {
    let now = NOW.parse().unwrap();
    let engine = Engine::new(snapshot, Settings::default());
    let observed = connector
        .observe(&subjects(snapshot))
        .await
        .expect("observe")
        .held;
    let desired = engine.evaluate(now, &observed);
    let mut plan = plan(&observed, &desired);
    plan.operations.retain(|op| op.target == TARGET);
    plan
}

/// One reconcile of target `db`: observe, plan, apply in order; failures are collected
/// (as the controller does, one identity's failure does not stop the others).
async fn sync(connector: &Postgres, snapshot: &Snapshot) -> (Plan, Vec<(Operation, TargetError)>) {
    let plan = planned(connector, snapshot).await;
    let subjects = subjects(snapshot);
    let mut failures = Vec::new();
    for op in &plan.operations {
        let subject = &subjects[&op.identity];
        match connector.apply(op, subject).await {
            Ok(outcome) => assert_eq!(outcome, Applied::Done, "{op:?}"),
            Err(e) => failures.push((op.clone(), e)),
        }
    }
    (plan, failures)
}

/// A sync that must succeed entirely.
async fn sync_ok(connector: &Postgres, snapshot: &Snapshot) -> Plan {
    let (plan, failures) = sync(connector, snapshot).await;
    assert!(failures.is_empty(), "{failures:#?}");
    plan
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

async fn connector(scope: &Scope, spec: &str) -> Postgres {
    Postgres::connect(&config(scope, TARGET, spec, credentials()))
        .await
        .expect("connect as the non-superuser controller")
}

/// Creates group roles (NOLOGIN) as the superuser.
async fn groups(names: &[String]) {
    let db = superuser().await;
    for name in names {
        db.batch_execute(&format!(
            "CREATE ROLE {} NOLOGIN",
            gatehouse::targets::postgres::quote_ident(name).unwrap()
        ))
        .await
        .unwrap();
    }
}

/// The server's truth about a role: (can log in, comment, groups sorted), or None.
async fn role(name: &str) -> Option<(bool, Option<String>, Vec<String>)> {
    let db = superuser().await;
    let row = db
        .query_opt(
            "SELECT rolcanlogin, shobj_description(oid, 'pg_authid'), \
                    coalesce(array(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                                   WHERE m.member = r.oid ORDER BY 1), '{}') \
             FROM pg_roles r WHERE rolname = $1",
            &[&name],
        )
        .await
        .unwrap()?;
    Some((row.get(0), row.get(1), row.get(2)))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn set_password(role: &str, password: &str) {
    superuser()
        .await
        .batch_execute(&format!(
            "ALTER ROLE {} PASSWORD {}",
            gatehouse::targets::postgres::quote_ident(role).unwrap(),
            gatehouse::targets::postgres::quote_literal(password).unwrap()
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn joiner_mover_on_leave_and_leaver_whose_open_session_is_ended() {
    let scope = Scope::new("jml");
    let spec = spec_yaml("", "");
    let (read, reports, deploy) = (
        scope.role("ledger_read"),
        scope.role("reports"),
        scope.role("deploy"),
    );
    groups(&[read.clone(), reports.clone(), deploy.clone()]).await;
    let policies: [(&str, &[String]); 2] = [
        ("finance", &[read.clone(), reports.clone()]),
        ("engineering", std::slice::from_ref(&deploy)),
    ];
    let account = scope.role("alice");
    let person = |dept, status| [Person("alice", dept, status, Some(&account))];
    let c = connector(&scope, &spec).await;

    // Joiner: a LOGIN role carrying the marker, in both finance groups.
    let joined = org(&scope, &spec, &policies, &person("finance", "Active"));
    let first = steps(&sync_ok(&c, &joined).await);
    assert_eq!(
        first,
        [
            "alice createAccount".to_string(),
            format!("alice +{read}"),
            format!("alice +{reports}")
        ]
    );
    let (login, comment, member_of) = role(&account).await.expect("role created");
    assert!(login);
    assert_eq!(
        comment.as_deref(),
        Some(marker(&scope.tenant, TARGET).as_str())
    );
    assert_eq!(member_of, sorted(vec![read.clone(), reports.clone()]));
    assert!(sync_ok(&c, &joined).await.is_empty(), "converged");

    // Mover: the finance memberships go before the engineering one comes.
    let moved = org(&scope, &spec, &policies, &person("engineering", "Active"));
    let mover = steps(&sync_ok(&c, &moved).await);
    assert_eq!(
        mover,
        [
            format!("alice -{read}"),
            format!("alice -{reports}"),
            format!("alice +{deploy}")
        ]
    );
    assert_eq!(role(&account).await.unwrap().2, vec![deploy.clone()]);
    assert!(sync_ok(&c, &moved).await.is_empty(), "converged");
    assert!(
        reread::agrees(
            &c,
            &subjects(&moved),
            &reread::keys(&scope.tenant, &["alice"])
        )
        .await
    );

    // On leave: NOLOGIN, memberships kept for the return; back at work, LOGIN again.
    let away = org(&scope, &spec, &policies, &person("engineering", "OnLeave"));
    let leave = steps(&sync_ok(&c, &away).await);
    assert_eq!(leave, ["alice disableAccount", "alice revokeSessions"]);
    assert_eq!(
        role(&account).await.unwrap(),
        (
            false,
            Some(marker(&scope.tenant, TARGET)),
            vec![deploy.clone()]
        )
    );
    assert!(sync_ok(&c, &away).await.is_empty(), "converged while away");
    assert_eq!(steps(&sync_ok(&c, &moved).await), ["alice enableAccount"]);
    assert!(role(&account).await.unwrap().0);

    // Leaver with an open session: it is ended, and a new login is refused.
    set_password(&account, "alice-pw").await;
    let session = postgres_peer::connect_as(peer().port, &account, "alice-pw").await;
    session
        .simple_query("SELECT 1")
        .await
        .expect("alice's session works");
    let left = org(
        &scope,
        &spec,
        &policies,
        &person("engineering", "Terminated"),
    );
    let leaver = steps(&sync_ok(&c, &left).await);
    assert_eq!(
        leaver,
        [
            "alice disableAccount".to_string(),
            "alice revokeSessions".to_string(),
            format!("alice -{deploy}")
        ]
    );
    assert!(
        session.simple_query("SELECT 1").await.is_err(),
        "the open session was terminated"
    );
    let refused = postgres_peer::try_connect_as(peer().port, &account, "alice-pw")
        .await
        .expect_err("a new login is refused");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{refused}"
    );
    assert_eq!(
        role(&account).await.unwrap(),
        (false, Some(marker(&scope.tenant, TARGET)), vec![])
    );
    assert!(sync_ok(&c, &left).await.is_empty(), "converged");
}

#[tokio::test]
async fn delete_mode_reassigns_owned_objects_and_drops_the_role() {
    let scope = Scope::new("delete");
    let heir = scope.role("owner");
    let spec = spec_yaml(&format!("reassignOwnedTo: {}", q(&heir)), "onLeave: Delete");
    let read = scope.role("read");
    groups(&[read.clone(), heir.clone()]).await;
    let policies: [(&str, &[String]); 1] = [("finance", std::slice::from_ref(&read))];
    let (alice, bob) = (scope.role("alice"), scope.role("bob"));
    let people = |status| {
        [
            Person("alice", "finance", status, Some(&alice)),
            Person("bob", "finance", status, Some(&bob)),
        ]
    };
    let c = connector(&scope, &spec).await;
    sync_ok(&c, &org(&scope, &spec, &policies, &people("Active"))).await;

    // alice owns a table and has granted on it; bob holds a privilege another role granted him.
    let (table, other_table, other_owner) =
        (scope.role("books"), scope.role("audit"), scope.role("app"));
    let qi = |s: &str| gatehouse::targets::postgres::quote_ident(s).unwrap();
    superuser()
        .await
        .batch_execute(&format!(
            "CREATE TABLE {t} (id int); ALTER TABLE {t} OWNER TO {a}; SET ROLE {a}; GRANT SELECT ON {t} TO {r}; RESET ROLE;
             CREATE ROLE {o} NOLOGIN; CREATE TABLE {ot} (id int); ALTER TABLE {ot} OWNER TO {o}; GRANT SELECT ON {ot} TO {b};",
            t = qi(&table), a = qi(&alice), r = qi(&read), o = qi(&other_owner), ot = qi(&other_table), b = qi(&bob)
        ))
        .await
        .unwrap();

    let left = org(&scope, &spec, &policies, &people("Terminated"));
    let (plan, failures) = sync(&c, &left).await;
    assert_eq!(
        steps(&plan),
        [
            "alice disableAccount".to_string(),
            "bob disableAccount".to_string(),
            "alice revokeSessions".to_string(),
            "bob revokeSessions".to_string(),
            format!("alice -{read}"),
            format!("bob -{read}"),
            "alice deleteAccount".to_string(),
            "bob deleteAccount".to_string(),
        ]
    );
    // alice is gone, her table now belongs to the heir; the controller kept no membership.
    assert_eq!(role(&alice).await, None);
    let db = superuser().await;
    let owner: String = db
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = $1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, heir);
    let borrowed: bool = db
        .query_one(
            "SELECT pg_has_role($1, $2, 'MEMBER')",
            &[&postgres_peer::CONTROLLER, &heir],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !borrowed,
        "the controller gave back its borrowed membership"
    );
    // bob's delete is refused, clearly (a grant the controller cannot revoke), and only his.
    assert_eq!(failures.len(), 1, "{failures:#?}");
    let (op, error) = &failures[0];
    assert_eq!(
        (op.identity.name.as_str(), op.action.name()),
        ("bob", "deleteAccount")
    );
    assert!(
        matches!(error, TargetError::Permanent(m) if m.contains(&other_table) && m.contains("2BP01")),
        "{error}"
    );
    let (login, _, member_of) = role(&bob).await.expect("bob's role remains, locked");
    assert!(!login && member_of.is_empty());

    // Once the owner revokes it, the next sync finishes the job; then nothing is left to do.
    db.batch_execute(&format!(
        "REVOKE SELECT ON {} FROM {}",
        qi(&other_table),
        qi(&bob)
    ))
    .await
    .unwrap();
    assert_eq!(steps(&sync_ok(&c, &left).await), ["bob deleteAccount"]);
    assert_eq!(role(&bob).await, None);
    assert!(sync_ok(&c, &left).await.is_empty(), "converged");
}

#[tokio::test]
async fn a_missing_reassign_owned_to_role_is_a_configuration_error() {
    let scope = Scope::new("noheir");
    let heir = scope.role("nobody");
    let spec = spec_yaml(&format!("reassignOwnedTo: {}", q(&heir)), "onLeave: Delete");
    let alice = scope.role("alice");
    let people = |status| [Person("alice", "finance", status, Some(alice.as_str()))];
    let read = scope.role("read");
    groups(std::slice::from_ref(&read)).await;
    let policies: [(&str, &[String]); 1] = [("finance", std::slice::from_ref(&read))];
    let c = connector(&scope, &spec).await;
    sync_ok(&c, &org(&scope, &spec, &policies, &people("Active"))).await;
    let (_, failures) = sync(&c, &org(&scope, &spec, &policies, &people("Terminated"))).await;
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        matches!(&failures[0].1, TargetError::Config(m) if m.contains("reassignOwnedTo") && m.contains(&format!("{heir:?}")) && m.contains("does not exist")),
        "{}",
        failures[0].1
    );
    // The account was locked before the delete failed, and is still there.
    assert_eq!(role(&alice).await.map(|r| r.0), Some(false));
}

#[tokio::test]
async fn drift_both_ways_is_corrected_within_the_managed_scope_only() {
    let scope = Scope::new("drift");
    let group_prefix = scope.role("g_");
    let spec = spec_yaml(&format!("groupRolePrefix: {}", q(&group_prefix)), "");
    let (read, write, other) = (
        scope.role("g_read"),
        scope.role("g_write"),
        scope.role("other"),
    );
    groups(&[read.clone(), write.clone(), other.clone()]).await;
    let policies: [(&str, &[String]); 1] = [("finance", std::slice::from_ref(&read))];
    let alice = scope.role("alice");
    let snapshot = org(
        &scope,
        &spec,
        &policies,
        &[Person("alice", "finance", "Active", Some(&alice))],
    );
    let c = connector(&scope, &spec).await;
    sync_ok(&c, &snapshot).await;

    // By hand: read removed, write added (in scope), other added (outside groupRolePrefix).
    let qi = |s: &str| gatehouse::targets::postgres::quote_ident(s).unwrap();
    superuser()
        .await
        .batch_execute(&format!(
            "REVOKE {r} FROM {a}; GRANT {w} TO {a}; GRANT {o} TO {a};",
            r = qi(&read),
            w = qi(&write),
            o = qi(&other),
            a = qi(&alice)
        ))
        .await
        .unwrap();
    let fixed = steps(&sync_ok(&c, &snapshot).await);
    assert_eq!(fixed, [format!("alice -{write}"), format!("alice +{read}")]);
    assert_eq!(
        role(&alice).await.unwrap().2,
        sorted(vec![read.clone(), other.clone()])
    );
    assert!(sync_ok(&c, &snapshot).await.is_empty(), "converged");

    // A policy naming a role outside the prefix is refused, clearly, even though alice is
    // already in it (by hand, outside the managed scope, so not observed as held).
    let outside: [(&str, &[String]); 1] = [("finance", &[read.clone(), other.clone()])];
    let wants_other = org(
        &scope,
        &spec,
        &outside,
        &[Person("alice", "finance", "Active", Some(&alice))],
    );
    let (plan, failures) = sync(&c, &wants_other).await;
    assert_eq!(steps(&plan), [format!("alice +{other}")]);
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        matches!(&failures[0].1, TargetError::Permanent(m) if m.contains("groupRolePrefix") && m.contains(&other)),
        "{}",
        failures[0].1
    );
    assert_eq!(
        role(&alice).await.unwrap().2,
        sorted(vec![read.clone(), other.clone()])
    );
}

#[tokio::test]
async fn group_roles_that_give_more_than_an_entitlement_are_refused_yet_held_ones_are_revoked_for_leavers()
 {
    // No groupRolePrefix: every existing role name can be asked for.
    let scope = Scope::new("powerful");
    let spec = spec_yaml("", "");
    let qi = |s: &str| gatehouse::targets::postgres::quote_ident(s).unwrap();
    let ql = |s: &str| gatehouse::targets::postgres::quote_literal(s).unwrap();
    let (plain, creator, bypass, su, middle, chain, theirs) = (
        scope.role("plain"),
        scope.role("creator"),
        scope.role("bypass"),
        scope.role("su"),
        scope.role("middle"),
        scope.role("chain"),
        scope.role("theirs"),
    );
    let builtin = "pg_write_server_files".to_string();
    // creator: CREATEROLE; bypass: BYPASSRLS; chain: a member of a member of a superuser;
    // theirs: another tenant's (disabled) account.
    superuser()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {p} NOLOGIN; CREATE ROLE {c} NOLOGIN CREATEROLE; \
             CREATE ROLE {b} NOLOGIN BYPASSRLS; CREATE ROLE {s} NOLOGIN SUPERUSER; \
             CREATE ROLE {m} NOLOGIN; CREATE ROLE {ch} NOLOGIN; GRANT {s} TO {m}; GRANT {m} TO {ch}; \
             CREATE ROLE {t} NOLOGIN; COMMENT ON ROLE {t} IS {theirs_marker};",
            p = qi(&plain),
            c = qi(&creator),
            b = qi(&bypass),
            s = qi(&su),
            m = qi(&middle),
            ch = qi(&chain),
            t = qi(&theirs),
            theirs_marker = ql(&marker("someone-else", TARGET)),
        ))
        .await
        .unwrap();
    let alice = scope.role("alice");
    let people = [Person("alice", "finance", "Active", Some(&alice))];
    let asked = [
        plain.clone(),
        builtin.clone(),
        creator.clone(),
        bypass.clone(),
        chain.clone(),
        theirs.clone(),
    ];
    let policies: [(&str, &[String]); 1] = [("finance", &asked)];
    let snapshot = org(&scope, &spec, &policies, &people);
    let c = connector(&scope, &spec).await;

    let (_, failures) = sync(&c, &snapshot).await;
    let refused: BTreeMap<String, String> = failures
        .iter()
        .map(|(op, e)| {
            let Action::Grant { entitlement } = &op.action else {
                panic!("only grants fail: {op:?} {e}");
            };
            assert!(matches!(e, TargetError::Permanent(_)), "{e}");
            (entitlement.name.clone(), e.to_string())
        })
        .collect();
    assert_eq!(
        refused.keys().cloned().collect::<Vec<_>>(),
        sorted(asked[1..].to_vec()),
        "{failures:#?}"
    );
    let says = |role: &String, parts: &[&str]| {
        let m = &refused[role];
        assert!(
            m.contains(&format!(
                "role {role:?} on target {TARGET} cannot be an entitlement"
            )) && m.contains("name a plain group role")
                && parts.iter().all(|p| m.contains(p)),
            "{m}"
        );
    };
    says(&builtin, &["built-in role", "pg_"]);
    says(&creator, &["has CREATEROLE"]);
    says(&bypass, &["has BYPASSRLS"]);
    says(
        &chain,
        &[
            &format!(
                "a member of role {su:?} (through {chain:?} -> {middle:?} -> {su:?}), which is a superuser"
            ),
            &format!("REVOKE {} FROM {}", qi(&su), qi(&middle)),
        ],
    );
    says(&theirs, &["account managed by gatehouse"]);
    // The plain group was granted; nothing else.
    assert_eq!(role(&alice).await.unwrap().2, vec![plain.clone()]);

    // The same memberships added by hand (or a group turned powerful after its grant) are
    // observed like any other, each reported: refused for granting, never for revoking.
    superuser()
        .await
        .batch_execute(&format!(
            "GRANT {} TO {a}; GRANT {} TO {a}; GRANT {} TO {a}; GRANT {} TO {a}; GRANT {} TO {a};",
            qi(&builtin),
            qi(&creator),
            qi(&bypass),
            qi(&chain),
            qi(&theirs),
            a = qi(&alice)
        ))
        .await
        .unwrap();
    let observed = c.observe(&subjects(&snapshot)).await.unwrap();
    let held: Vec<String> = observed
        .held
        .identities
        .values()
        .flat_map(|h| h.entitlements.keys().map(|e| e.name.clone()))
        .collect();
    assert_eq!(sorted(held), sorted(asked.to_vec()));
    for group in &asked[1..] {
        assert!(
            observed
                .findings
                .iter()
                .any(|f| f.contains(&format!("group role {group:?} gives more"))
                    && f.contains(&alice)),
            "{group}: {:#?}",
            observed.findings
        );
    }
    assert!(
        !observed
            .findings
            .iter()
            .any(|f| f.contains(&format!("{plain:?}"))),
        "a plain group is no finding: {:#?}",
        observed.findings
    );
    // Kept while the policy names them: nothing to do, nothing refused.
    assert!(sync_ok(&c, &snapshot).await.is_empty(), "held and wanted");
    // A targeted re-read (one query by role name, each group's taint walked up from it)
    // agrees with the full observation.
    assert!(
        reread::agrees(
            &c,
            &subjects(&snapshot),
            &reread::keys(&scope.tenant, &["alice", "nobody"])
        )
        .await
    );

    // A leaver loses every one of them, the powerful ones included, in the same plan.
    let left = org(
        &scope,
        &spec,
        &policies,
        &[Person("alice", "finance", "Terminated", Some(&alice))],
    );
    let plan = sync_ok(&c, &left).await;
    let mut revoked: Vec<String> = plan
        .operations
        .iter()
        .filter_map(|op| match &op.action {
            Action::Revoke { entitlement } => Some(entitlement.name.clone()),
            _ => None,
        })
        .collect();
    revoked.sort();
    assert_eq!(revoked, sorted(asked.to_vec()), "{:#?}", steps(&plan));
    let (can_login, _, memberships) = role(&alice).await.unwrap();
    assert!(!can_login, "cut off");
    assert!(memberships.is_empty(), "nothing stale: {memberships:?}");
    assert!(sync_ok(&c, &left).await.is_empty(), "converged");
}

#[tokio::test]
async fn observe_is_read_only_and_the_guard_can_stop_a_large_revocation() {
    let scope = Scope::new("observe");
    let spec = spec_yaml("", "limits: {maxRevocationsPerSync: 2}");
    let (read, write) = (scope.role("read"), scope.role("write"));
    groups(&[read.clone(), write.clone()]).await;
    let policies: [(&str, &[String]); 1] = [("finance", &[read.clone(), write.clone()])];
    let names = ["ann", "ben", "cid"];
    let accounts: Vec<String> = names.iter().map(|n| scope.role(n)).collect();
    let people = |status| -> Vec<Person> {
        names
            .iter()
            .zip(&accounts)
            .map(|(n, a)| Person(n, "finance", status, Some(a.as_str())))
            .collect()
    };
    let c = connector(&scope, &spec).await;
    sync_ok(&c, &org(&scope, &spec, &policies, &people("Active"))).await;

    // Everyone leaves: observing and planning (Observe mode) changes nothing on the server.
    let left = org(&scope, &spec, &policies, &people("Terminated"));
    let before: Vec<_> = futures::future::join_all(accounts.iter().map(|a| role(a))).await;
    let pending = planned(&c, &left).await;
    assert_eq!(
        pending
            .operations
            .iter()
            .filter(|op| guard::is_revocation(&op.action))
            .count(),
        6
    );
    let after: Vec<_> = futures::future::join_all(accounts.iter().map(|a| role(a))).await;
    assert_eq!(before, after, "observe changed nothing");
    assert!(after.iter().all(|r| {
        r.as_ref()
            .is_some_and(|(login, _, groups)| *login && groups.len() == 2)
    }));

    // The blast-radius guard (run by the controller before any apply) refuses this plan.
    let limit = left.targets[0]
        .spec
        .limits
        .as_ref()
        .and_then(|l| l.max_revocations_per_sync);
    let exceeded = guard::check(&pending.operations, limit).unwrap_err();
    assert_eq!((exceeded.count, exceeded.limit), (6, 2));
}

#[tokio::test]
async fn orphans_are_reported_and_unmanaged_roles_never_touched() {
    let scope = Scope::new("orphans");
    let spec = spec_yaml("", "");
    let read = scope.role("read");
    groups(std::slice::from_ref(&read)).await;
    let policies: [(&str, &[String]); 1] = [("finance", std::slice::from_ref(&read))];
    let (ghost, bob, carol, dave) = (
        scope.role("ghost"),
        scope.role("bob"),
        scope.role("carol"),
        scope.role("dave"),
    );
    let qi = |s: &str| gatehouse::targets::postgres::quote_ident(s).unwrap();
    let ql = |s: &str| gatehouse::targets::postgres::quote_literal(s).unwrap();
    // ghost: ours, but no Identity; bob: a hand-made role; carol: another tenant's;
    // dave: unmanaged and already in the group.
    superuser()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {g} LOGIN; COMMENT ON ROLE {g} IS {mine}; GRANT {r} TO {g};
             CREATE ROLE {b} LOGIN;
             CREATE ROLE {c} LOGIN; COMMENT ON ROLE {c} IS {theirs};
             CREATE ROLE {d} LOGIN; GRANT {r} TO {d};",
            g = qi(&ghost),
            b = qi(&bob),
            c = qi(&carol),
            d = qi(&dave),
            r = qi(&read),
            mine = ql(&marker(&scope.tenant, TARGET)),
            theirs = ql(&marker("someone-else", TARGET)),
        ))
        .await
        .unwrap();
    let people = [
        Person("bob", "finance", "Active", Some(&bob)),
        Person("carol", "finance", "Active", Some(&carol)),
    ];
    let snapshot = org(&scope, &spec, &policies, &people);
    let c = connector(&scope, &spec).await;
    let observed = c.observe(&subjects(&snapshot)).await.unwrap();
    assert_eq!(
        observed.orphans,
        vec![ghost.clone()],
        "only ghost is ours without an Identity"
    );
    assert!(observed.held.identities.is_empty(), "{:?}", observed.held);

    let (_, failures) = sync(&c, &snapshot).await;
    let refused: Vec<_> = failures
        .iter()
        .map(|(op, e)| {
            (
                op.identity.name.clone(),
                op.action.name(),
                matches!(e, TargetError::Permanent(_)),
            )
        })
        .collect();
    assert!(
        refused.contains(&("bob".into(), "createAccount", true)),
        "{failures:#?}"
    );
    assert!(
        refused.contains(&("carol".into(), "createAccount", true)),
        "{failures:#?}"
    );
    assert!(
        failures
            .iter()
            .any(|(_, e)| e.to_string().contains("managed elsewhere"))
    );
    // Nothing changed: no comment, no membership for bob and carol; ghost and dave keep theirs.
    assert_eq!(role(&bob).await, Some((true, None, vec![])));
    assert_eq!(
        role(&carol).await,
        Some((true, Some(marker("someone-else", TARGET)), vec![]))
    );
    assert_eq!(
        role(&ghost).await,
        Some((
            true,
            Some(marker(&scope.tenant, TARGET)),
            vec![read.clone()]
        ))
    );
    assert_eq!(role(&dave).await, Some((true, None, vec![read.clone()])));
}

#[tokio::test]
async fn the_controller_needs_only_createrole_and_pg_signal_backend() {
    let scope = Scope::new("privileges");
    let spec = spec_yaml("", "");
    let db = superuser().await;
    // The role every test's connector uses: not a superuser, CREATEROLE, pg_signal_backend.
    let row = db
        .query_one(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, \
                    array(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid) \
             FROM pg_roles r WHERE rolname = $1",
            &[&postgres_peer::CONTROLLER],
        )
        .await
        .unwrap();
    let flags: (bool, bool, bool, bool, bool, Vec<String>) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    assert_eq!(
        flags,
        (
            false,
            true,
            false,
            false,
            false,
            vec!["pg_signal_backend".to_string()]
        )
    );

    // Without pg_signal_backend, ending a leaver's session fails and says what is missing.
    let (weak, no_create) = (scope.role("ctl_nosignal"), scope.role("ctl_nocreate"));
    db.batch_execute(&format!(
        "CREATE ROLE {weak} LOGIN CREATEROLE PASSWORD 'weak-pw'; CREATE ROLE {no_create} LOGIN PASSWORD 'weak-pw';"
    ))
    .await
    .unwrap();
    let read = scope.role("read");
    groups(std::slice::from_ref(&read)).await;
    let policies: [(&str, &[String]); 1] = [("finance", std::slice::from_ref(&read))];
    let alice = scope.role("alice");
    let joined = org(
        &scope,
        &spec,
        &policies,
        &[Person("alice", "finance", "Active", Some(&alice))],
    );
    let creds = credentials_with(&weak, "weak-pw", Some(&peer().ca_pem));
    let c = Postgres::connect(&config(&scope, TARGET, &spec, creds))
        .await
        .expect("CREATEROLE suffices to connect");
    sync_ok(&c, &joined).await;
    set_password(&alice, "alice-pw").await;
    let session = postgres_peer::connect_as(peer().port, &alice, "alice-pw").await;
    let left = org(
        &scope,
        &spec,
        &policies,
        &[Person("alice", "finance", "Terminated", Some(&alice))],
    );
    let (_, failures) = sync(&c, &left).await;
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_eq!(failures[0].0.action, Action::RevokeSessions);
    assert!(
        matches!(&failures[0].1, TargetError::Permanent(m) if m.contains("pg_signal_backend")),
        "{}",
        failures[0].1
    );
    assert!(
        session.simple_query("SELECT 1").await.is_ok(),
        "the session survived"
    );
    assert!(
        role(&alice).await.unwrap().2.is_empty(),
        "the other steps still ran"
    );

    // Without CREATEROLE, connecting fails and says what to grant.
    let creds = credentials_with(&no_create, "weak-pw", Some(&peer().ca_pem));
    let error = Postgres::connect(&config(&scope, TARGET, &spec, creds))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&error, TargetError::Permanent(m) if m.contains("CREATEROLE")),
        "{error}"
    );
}

#[tokio::test]
async fn bad_credentials_unreachable_servers_and_bad_tls_are_classified() {
    let scope = Scope::new("faults");
    let spec = spec_yaml("", "");
    let connect = |spec: String, creds| {
        let config = config(&scope, TARGET, &spec, creds);
        async move {
            Postgres::connect(&config)
                .await
                .err()
                .expect("connect fails")
        }
    };

    // Wrong password: the Secret is wrong (configuration), names the keys, never shows
    // the password.
    let wrong = credentials_with(
        postgres_peer::CONTROLLER,
        "not-the-password",
        Some(&peer().ca_pem),
    );
    let error = connect(spec.clone(), wrong).await;
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("28P01") && m.contains("\"password\"")),
        "{error}"
    );
    assert!(!error.to_string().contains("not-the-password"));

    // Nobody listening: transient.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = spec.replace(&format!("port: {}", peer().port), &format!("port: {port}"));
    let error = connect(unreachable, credentials()).await;
    assert!(error.is_transient(), "{error}");

    // A CA that did not sign the server certificate: configuration.
    let other_ca = include_bytes!("postgres_peer/other-ca.crt");
    let error = connect(
        spec.clone(),
        credentials_with(
            postgres_peer::CONTROLLER,
            postgres_peer::CONTROLLER_PASSWORD,
            Some(other_ca),
        ),
    )
    .await;
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("ca.crt") && m.contains("TLS")),
        "{error}"
    );
    // No CA, a CA that is not PEM, a missing password, an sslMode that does not authenticate.
    let error = connect(
        spec.clone(),
        credentials_with(postgres_peer::CONTROLLER, "x", None),
    )
    .await;
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("\"ca.crt\" is missing")),
        "{error}"
    );
    let error = connect(
        spec.clone(),
        credentials_with(postgres_peer::CONTROLLER, "x", Some(b"garbage")),
    )
    .await;
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("ca.crt")),
        "{error}"
    );
    let no_password = gatehouse::targets::Credentials::new(
        "db-admin",
        BTreeMap::from([
            ("username".to_string(), b"u".to_vec()),
            ("ca.crt".to_string(), peer().ca_pem.clone()),
        ]),
    );
    let error = connect(spec.clone(), no_password).await;
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("\"password\" is missing")),
        "{error}"
    );
    let error = connect(spec.replace("verify-full", "require"), credentials()).await;
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("sslMode")),
        "{error}"
    );
    // Delete without an heir for owned objects: configuration, before anything is done.
    let error = connect(spec_yaml("", "onLeave: Delete"), credentials()).await;
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("reassignOwnedTo")),
        "{error}"
    );
    // A database that does not exist: configuration, naming the field.
    let error = connect(
        spec.replace("database: postgres", "database: nope"),
        credentials(),
    )
    .await;
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("spec.postgresql.database")),
        "{error}"
    );
    // verify-ca accepts the right CA; plain TCP works when asked for.
    Postgres::connect(&config(
        &scope,
        TARGET,
        &spec.replace("verify-full", "verify-ca"),
        credentials(),
    ))
    .await
    .expect("verify-ca");
    Postgres::connect(&config(
        &scope,
        TARGET,
        &spec.replace("verify-full", "disable"),
        credentials(),
    ))
    .await
    .expect("disable");
}

#[tokio::test]
async fn a_missing_group_role_fails_clearly_and_only_that_grant() {
    let scope = Scope::new("missing");
    let spec = spec_yaml("", "");
    let (read, missing) = (scope.role("read"), scope.role("does_not_exist"));
    groups(std::slice::from_ref(&read)).await;
    let policies: [(&str, &[String]); 1] = [("finance", &[read.clone(), missing.clone()])];
    let (alice, bob) = (scope.role("alice"), scope.role("bob"));
    let snapshot = org(
        &scope,
        &spec,
        &policies,
        &[
            Person("alice", "finance", "Active", Some(&alice)),
            Person("bob", "finance", "Active", Some(&bob)),
        ],
    );
    let c = connector(&scope, &spec).await;
    let (_, failures) = sync(&c, &snapshot).await;
    assert_eq!(failures.len(), 2, "one per identity: {failures:#?}");
    for (op, error) in &failures {
        assert!(matches!(&op.action, Action::Grant { entitlement } if entitlement.name == missing));
        assert!(
            matches!(error, TargetError::Permanent(m) if m.contains(&format!("group role {missing:?} does not exist"))),
            "{error}"
        );
    }
    // Everything else was done; once the role exists, the next sync grants it.
    assert_eq!(role(&alice).await.unwrap().2, vec![read.clone()]);
    assert_eq!(role(&bob).await.unwrap().2, vec![read.clone()]);
    groups(std::slice::from_ref(&missing)).await;
    assert_eq!(sync_ok(&c, &snapshot).await.operations.len(), 2);
    assert!(sync_ok(&c, &snapshot).await.is_empty(), "converged");
}

#[tokio::test]
async fn role_names_that_need_quoting_work_and_overlong_ones_are_refused() {
    let scope = Scope::new("quoting");
    let spec = spec_yaml(&format!("managedRolePrefix: {}", q(&scope.prefix)), "");
    let odd_group = scope.role("Ledger \"Read\"; DROP ROLE x; --");
    let unicode_group = scope.role("Grüße Ω");
    groups(&[odd_group.clone(), unicode_group.clone()]).await;
    let policies: [(&str, &[String]); 1] =
        [("finance", &[odd_group.clone(), unicode_group.clone()])];
    let account = "O'Neil \"Q\"; SELECT 1 --";
    let long = "x".repeat(64);
    let people = |status| {
        [
            Person("oneil", "finance", status, Some(account)),
            Person("long", "finance", status, Some(long.as_str())),
        ]
    };
    let c = connector(&scope, &spec).await;
    let joined = org(&scope, &spec, &policies, &people("Active"));
    let (_, failures) = sync(&c, &joined).await;
    // The prefix is prepended: the role is t<n>_O'Neil "Q"; SELECT 1 --.
    let role_name = scope.role(account);
    assert_eq!(
        role(&role_name).await,
        Some((
            true,
            Some(marker(&scope.tenant, TARGET)),
            sorted(vec![odd_group.clone(), unicode_group.clone()])
        ))
    );
    // The 64-byte account is refused before any SQL, on every step of that identity.
    assert!(!failures.is_empty());
    for (op, error) in &failures {
        assert_eq!(op.identity.name, "long");
        assert!(
            matches!(error, TargetError::Permanent(m) if m.contains("63 bytes")),
            "{error}"
        );
    }
    let second = planned(&c, &joined).await;
    assert!(
        second
            .operations
            .iter()
            .all(|op| op.identity.name == "long"),
        "{:?}",
        steps(&second)
    );

    // Leaver: NOLOGIN, sessions, revocations, all with the odd names.
    set_password(&role_name, "pw").await;
    let session = postgres_peer::connect_as(peer().port, &role_name, "pw").await;
    let left = org(&scope, &spec, &policies, &people("Terminated"));
    sync(&c, &left).await;
    assert!(session.simple_query("SELECT 1").await.is_err());
    assert_eq!(
        role(&role_name).await,
        Some((false, Some(marker(&scope.tenant, TARGET)), vec![]))
    );
    // Observe maps the role back to the account (the prefix stripped), so nothing is left.
    assert!(planned(&c, &left).await.is_empty());
}

#[tokio::test]
async fn every_operation_is_idempotent() {
    let scope = Scope::new("idempotent");
    let heir = scope.role("owner");
    let spec = spec_yaml(&format!("reassignOwnedTo: {}", q(&heir)), "onLeave: Delete");
    let (read, write) = (scope.role("read"), scope.role("write"));
    groups(&[read.clone(), write.clone(), heir.clone()]).await;
    let policies: [(&str, &[String]); 2] = [
        ("finance", std::slice::from_ref(&read)),
        ("engineering", std::slice::from_ref(&write)),
    ];
    let alice = scope.role("alice");
    let person = |dept, status| [Person("alice", dept, status, Some(&alice))];
    let c = connector(&scope, &spec).await;
    // Each operation applied twice, as after a crash between the apply and its report.
    let twice = |snapshot: Snapshot| {
        let c = &c;
        async move {
            let plan = planned(c, &snapshot).await;
            let subjects = subjects(&snapshot);
            for op in &plan.operations {
                for attempt in 1..=2 {
                    c.apply(op, &subjects[&op.identity])
                        .await
                        .unwrap_or_else(|e| panic!("attempt {attempt} of {op:?}: {e}"));
                }
            }
            assert!(planned(c, &snapshot).await.is_empty(), "converged");
            steps(&plan)
        }
    };
    let all = [
        twice(org(&scope, &spec, &policies, &person("finance", "Active"))).await,
        twice(org(
            &scope,
            &spec,
            &policies,
            &person("engineering", "Active"),
        ))
        .await,
        twice(org(
            &scope,
            &spec,
            &policies,
            &person("engineering", "OnLeave"),
        ))
        .await,
        twice(org(
            &scope,
            &spec,
            &policies,
            &person("engineering", "Active"),
        ))
        .await,
        twice(org(
            &scope,
            &spec,
            &policies,
            &person("engineering", "Terminated"),
        ))
        .await,
    ]
    .concat();
    for action in [
        "createAccount",
        "+",
        "-",
        "disableAccount",
        "revokeSessions",
        "enableAccount",
        "deleteAccount",
    ] {
        assert!(
            all.iter().any(|s| s.contains(action)),
            "{action} not exercised: {all:?}"
        );
    }
    assert_eq!(role(&alice).await, None);
}

#[tokio::test]
async fn lost_connections_are_transient_and_the_next_sync_completes() {
    let scope = Scope::new("reconnect");
    let spec = spec_yaml("", "");
    let read = scope.role("read");
    groups(std::slice::from_ref(&read)).await;
    let policies: [(&str, &[String]); 1] = [("finance", std::slice::from_ref(&read))];
    let names = ["ann", "ben"];
    let accounts: Vec<String> = names.iter().map(|n| scope.role(n)).collect();
    let people = |n: usize| -> Vec<Person> {
        names[..n]
            .iter()
            .zip(&accounts)
            .map(|(name, a)| Person(name, "finance", "Active", Some(a.as_str())))
            .collect()
    };
    // A controller role of this test's own, so killing its connections disturbs no other test.
    let controller = scope.role("ctl");
    superuser()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {controller} LOGIN CREATEROLE PASSWORD 'own-pw'; GRANT pg_signal_backend TO {controller};"
        ))
        .await
        .unwrap();
    let creds = credentials_with(&controller, "own-pw", Some(&peer().ca_pem));
    let c = Postgres::connect(&config(&scope, TARGET, &spec, creds))
        .await
        .unwrap();
    sync_ok(&c, &org(&scope, &spec, &policies, &people(1))).await;
    // The server ends every connection of the controller (as a restart would).
    let killed: i64 = superuser()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE usename = $1",
            &[&controller],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1, "the pool held a connection");
    let both = org(&scope, &spec, &policies, &people(2));
    let (_, failures) = sync(&c, &both).await;
    assert!(
        failures.iter().all(|(_, e)| e.is_transient()),
        "{failures:#?}"
    );
    // Whatever the first pass managed, the next one completes the job.
    sync_ok(&c, &both).await;
    assert!(sync_ok(&c, &both).await.is_empty(), "converged");
    assert_eq!(role(&accounts[1]).await.unwrap().2, vec![read.clone()]);
}

/// Observe, plan at `now` and apply everything; returns the steps.
async fn sync_at(connector: &Postgres, snapshot: &Snapshot, now: &str) -> Vec<String> {
    let engine = Engine::new(snapshot, Settings::default());
    let subjects = subjects(snapshot);
    let observed = connector.observe(&subjects).await.expect("observe").held;
    let desired = engine.evaluate(now.parse().unwrap(), &observed);
    let mut plan = plan(&observed, &desired);
    plan.operations.retain(|op| op.target == TARGET);
    for op in &plan.operations {
        let outcome = connector.apply(op, &subjects[&op.identity]).await;
        assert_eq!(outcome.expect("applied"), Applied::Done, "{op:?}");
    }
    steps(&plan)
}

/// A break-glass grant ends with its sessions: at its end the membership is revoked and
/// the identity's open sessions (one that had `SET ROLE` to the break-glass group) are
/// terminated, while the account and its policy grants stay.
#[tokio::test]
async fn an_ending_break_glass_grant_terminates_the_sessions_opened_under_it() {
    let scope = Scope::new("bg");
    let spec = spec_yaml("", "");
    let (read, admin) = (scope.role("ledger_read"), scope.role("ledger_admin"));
    groups(&[read.clone(), admin.clone()]).await;
    let account = scope.role("alice");
    let policies: [(&str, &[String]); 1] = [("finance", std::slice::from_ref(&read))];
    let mut snapshot = org(
        &scope,
        &spec,
        &policies,
        &[Person("alice", "finance", "Active", Some(&account))],
    );
    // Applied from Git (commit annotation), from 09:00 to 13:00.
    snapshot.exceptions.push(yaml(&format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Exception\nmetadata: {{name: inc-7, namespace: {}, annotations: {{gatehouse.dev/commit: abc123}}}}\nspec: {{identity: alice, entitlements: [{{target: {TARGET}, name: {}}}], justification: INC-7, requestedBy: alice, approvedBy: [], validFrom: '2026-12-01T09:00:00Z', expiresAt: '2026-12-01T13:00:00Z', breakGlass: true}}",
        scope.tenant,
        q(&admin)
    )));
    let c = connector(&scope, &spec).await;
    let during = "2026-12-01T10:00:00Z";
    let first = sync_at(&c, &snapshot, during).await;
    assert!(first.contains(&format!("alice +{admin}")), "{first:?}");
    assert!(sync_at(&c, &snapshot, during).await.is_empty(), "converged");

    set_password(&account, "alice-pw").await;
    let session = postgres_peer::connect_as(peer().port, &account, "alice-pw").await;
    session
        .simple_query(&format!("SET ROLE {}", q(&admin)))
        .await
        .expect("alice assumes the break-glass role");

    let ended = sync_at(&c, &snapshot, "2026-12-01T13:00:00Z").await;
    assert_eq!(
        ended,
        [
            "alice revokeSessions".to_string(),
            format!("alice -{admin}")
        ]
    );
    assert!(
        session.simple_query("SELECT 1").await.is_err(),
        "the session opened under break-glass was terminated"
    );
    let (login, _, member_of) = role(&account).await.unwrap();
    assert!(login, "the account stays for the policy's grant");
    assert_eq!(member_of, vec![read.clone()]);
    let again = postgres_peer::connect_as(peer().port, &account, "alice-pw").await;
    assert!(
        again
            .simple_query(&format!("SET ROLE {}", q(&admin)))
            .await
            .is_err(),
        "the break-glass role is gone"
    );
    assert!(
        sync_at(&c, &snapshot, "2026-12-01T14:00:00Z")
            .await
            .is_empty(),
        "no second session revocation"
    );
}
