//! The NHI owner-exit playbook on a real PostgreSQL server (`scripts/start-postgres.sh`),
//! driven like the controller drives the connector (evaluate, observe, plan, apply): when a
//! machine's owner leaves, its role's password stops working at once, its open sessions are
//! ended, the rotation is recorded on the role and never repeated; its access stays for the
//! grace period and is revoked after it unless re-owned.

mod postgres_peer;

use std::collections::BTreeMap;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::engine::{AccountIntent, Engine, IdentityKey, Settings, Snapshot};
use gatehouse::plan::{Action, Plan, plan};
use gatehouse::targets::postgres::{Postgres, marker, quote_ident, quote_literal};
use gatehouse::targets::{Applied, Connector, Subject};
use postgres_peer::{Scope, config, credentials, peer, spec_yaml, superuser};
use tokio_postgres::error::SqlState;

const TARGET: &str = "db";
const BEFORE: &str = "2026-06-01T00:00:00Z";
/// Olga's end date is 2026-06-12: she left at this instant.
const LEFT: &str = "2026-06-13T00:00:00Z";
const IN_GRACE: &str = "2026-06-15T12:00:00Z";
const AFTER_GRACE: &str = "2026-06-21T00:00:00Z";

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Tenant with target `db`, humans `mgr` and `olga` (leaving 2026-06-12), machine `svc`
/// owned by `owner` with account `account`, granted group role `group`.
fn org(scope: &Scope, owner: &str, account: &str, group: &str) -> Snapshot {
    let ns = &scope.tenant;
    let meta = |kind: &str, name: &str, spec: String| {
        format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}"
        )
    };
    let target: TargetSystem = yaml(&meta("TargetSystem", TARGET, spec_yaml("", "")));
    let policy: AccessPolicy = yaml(&meta(
        "AccessPolicy",
        "machines",
        format!(
            "{{selector: {{matchAttributes: {{type: NonHuman}}}}, entitlements: [{{target: {TARGET}, name: {group}}}]}}"
        ),
    ));
    let human = |name: &str, employment: &str| -> Identity {
        yaml(&meta(
            "Identity",
            name,
            format!("{{type: Human, employment: {{department: eng, {employment}}}}}"),
        ))
    };
    let machine: Identity = yaml(&meta(
        "Identity",
        "svc",
        format!("{{type: NonHuman, owner: {owner}, accounts: {{{TARGET}: {account}}}}}"),
    ));
    Snapshot {
        identities: vec![
            human("mgr", "status: Active, manager: mgr"),
            human(
                "olga",
                "status: Active, manager: mgr, endDate: '2026-06-12'",
            ),
            machine,
        ],
        policies: vec![policy],
        exceptions: vec![],
        targets: vec![target],
        ..Default::default()
    }
}

/// Observe, plan at `now`, apply every step (all must succeed); returns the steps.
async fn sync(c: &Postgres, snapshot: &Snapshot, now: &str) -> Vec<String> {
    let now = now.parse().unwrap();
    let engine = Engine::new(snapshot, Settings::default());
    let first = engine.evaluate(now, &gatehouse::engine::NothingHeld);
    let subjects: BTreeMap<IdentityKey, Subject> = snapshot
        .identities
        .iter()
        .map(|i| {
            let key = IdentityKey::new(
                i.metadata.namespace.clone().unwrap(),
                i.metadata.name.clone().unwrap(),
            );
            let subject = Subject {
                identity: key.clone(),
                identity_type: i.spec.type_,
                account: i
                    .spec
                    .accounts
                    .get(TARGET)
                    .cloned()
                    .unwrap_or_else(|| key.name.clone()),
                enabled: first
                    .identities
                    .get(&key)
                    .is_some_and(|a| a.account == AccountIntent::Enabled),
            };
            (key, subject)
        })
        .collect();
    let observed = c.observe(&subjects).await.expect("observe").held;
    let desired = engine.evaluate(now, &observed);
    let mut p: Plan = plan(&observed, &desired);
    p.operations.retain(|op| op.target == TARGET);
    let mut steps = Vec::new();
    for op in &p.operations {
        let outcome = c
            .apply(op, &subjects[&op.identity])
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
        assert_eq!(outcome, Applied::Done, "{op:?}");
        steps.push(match &op.action {
            Action::RotateCredentials { owner_left_at } => {
                format!("{} rotate {owner_left_at}", op.identity.name)
            }
            other => format!("{} {}", op.identity.name, other.name()),
        });
    }
    steps
}

/// (can log in, comment, groups) of a role, as the superuser sees it.
async fn role(name: &str) -> (bool, Option<String>, Vec<String>) {
    let row = superuser()
        .await
        .query_one(
            "SELECT rolcanlogin, shobj_description(oid, 'pg_authid'), \
                    coalesce(array(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                                   WHERE m.member = r.oid ORDER BY 1), '{}') \
             FROM pg_roles r WHERE rolname = $1",
            &[&name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn set_password(role: &str, password: &str) {
    superuser()
        .await
        .batch_execute(&format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(role).unwrap(),
            quote_literal(password).unwrap()
        ))
        .await
        .unwrap();
}

async fn logs_in(role: &str, password: &str) -> Result<(), SqlState> {
    match postgres_peer::try_connect_as(peer().port, role, password).await {
        Ok(session) => {
            session.simple_query("SELECT 1").await.unwrap();
            Ok(())
        }
        Err(e) => Err(e.code().cloned().unwrap_or(SqlState::CONNECTION_FAILURE)),
    }
}

#[tokio::test]
async fn owner_exit_kills_the_password_and_sessions_once_and_keeps_access_for_the_grace() {
    let scope = Scope::new("owner-exit");
    let (account, group) = (scope.role("svc"), scope.role("svc_rw"));
    superuser()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {} NOLOGIN",
            quote_ident(&group).unwrap()
        ))
        .await
        .unwrap();
    let c = Postgres::connect(&config(&scope, TARGET, &spec_yaml("", ""), credentials()))
        .await
        .expect("connect as the non-superuser controller");
    let owned_by = |owner| org(&scope, owner, &account, &group);

    // While olga works: the machine's role, in its group; the app logs in with a password.
    assert_eq!(
        sync(&c, &owned_by("olga"), BEFORE).await,
        ["svc createAccount", "svc grant"]
    );
    set_password(&account, "svc-old-pw").await;
    assert_eq!(logs_in(&account, "svc-old-pw").await, Ok(()));
    let session = postgres_peer::connect_as(peer().port, &account, "svc-old-pw").await;
    session
        .simple_query("SELECT 1")
        .await
        .expect("open session");

    // Olga has left: one rotation, and nothing else (access is kept for the grace).
    assert_eq!(
        sync(&c, &owned_by("olga"), IN_GRACE).await,
        [format!("svc rotate {LEFT}")]
    );
    assert!(
        session.simple_query("SELECT 1").await.is_err(),
        "the open session was ended"
    );
    assert_eq!(
        logs_in(&account, "svc-old-pw").await,
        Err(SqlState::INVALID_PASSWORD),
        "the old password no longer logs in"
    );
    let managed = marker(&scope.tenant, TARGET);
    assert_eq!(
        role(&account).await,
        (
            true,
            Some(format!("{managed} rotated={LEFT}")),
            vec![group.clone()]
        ),
        "still LOGIN, still in its group, the rotation recorded on the role"
    );
    let stored: Option<String> = superuser()
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&account],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored, None,
        "PASSWORD NULL: no secret was set, none stored"
    );

    // Observed as rotated: never again for this exit, even once the new owner has set a
    // password of their own.
    assert!(sync(&c, &owned_by("olga"), IN_GRACE).await.is_empty());
    set_password(&account, "svc-new-pw").await;
    assert!(
        sync(&c, &owned_by("olga"), "2026-06-18T00:00:00Z")
            .await
            .is_empty()
    );
    assert_eq!(logs_in(&account, "svc-new-pw").await, Ok(()));

    // Re-owned in Git: kept past the grace, not rotated again.
    assert!(sync(&c, &owned_by("mgr"), AFTER_GRACE).await.is_empty());
    assert_eq!(role(&account).await.2, vec![group.clone()]);

    // Not re-owned: after the grace the access is revoked (the rotation is not repeated).
    assert_eq!(
        sync(&c, &owned_by("olga"), AFTER_GRACE).await,
        ["svc disableAccount", "svc revokeSessions", "svc revoke"]
    );
    assert_eq!(
        role(&account).await,
        (false, Some(format!("{managed} rotated={LEFT}")), vec![])
    );
    assert!(
        sync(&c, &owned_by("olga"), AFTER_GRACE).await.is_empty(),
        "converged"
    );
}

#[tokio::test]
async fn a_role_created_after_the_exit_is_born_rotated_and_a_dropped_one_has_nothing_to_rotate() {
    let scope = Scope::new("owner-exit-gone");
    let (account, group) = (scope.role("svc"), scope.role("svc_rw"));
    superuser()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {} NOLOGIN",
            quote_ident(&group).unwrap()
        ))
        .await
        .unwrap();
    let c = Postgres::connect(&config(&scope, TARGET, &spec_yaml("", ""), credentials()))
        .await
        .unwrap();
    let snapshot = org(&scope, "olga", &account, &group);
    sync(&c, &snapshot, BEFORE).await;
    let op = gatehouse::plan::Operation {
        identity: IdentityKey::new(&scope.tenant, "svc").into(),
        target: TARGET.into(),
        action: Action::RotateCredentials {
            owner_left_at: LEFT.parse().unwrap(),
        },
        leaver: true,
        sources: Default::default(),
    };
    let subject = Subject {
        identity: IdentityKey::new(&scope.tenant, "svc"),
        identity_type: gatehouse::api::IdentityType::NonHuman,
        account: account.clone(),
        enabled: true,
    };
    // Created while the owner is gone: born rotated, never rotated after.
    let late = Scope::new("owner-exit-late");
    let late_account = late.role("svc");
    let late_group = late.role("svc_rw");
    superuser()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {} NOLOGIN",
            quote_ident(&late_group).unwrap()
        ))
        .await
        .unwrap();
    let lc = Postgres::connect(&config(&late, TARGET, &spec_yaml("", ""), credentials()))
        .await
        .unwrap();
    let late_org = org(&late, "olga", &late_account, &late_group);
    assert_eq!(
        sync(&lc, &late_org, IN_GRACE).await,
        ["svc createAccount", "svc grant"]
    );
    assert_eq!(
        role(&late_account).await.1,
        Some(format!("{} rotated={LEFT}", marker(&late.tenant, TARGET)))
    );
    assert!(sync(&lc, &late_org, IN_GRACE).await.is_empty());

    // Twice: idempotent.
    for _ in 0..2 {
        assert_eq!(c.apply(&op, &subject).await.unwrap(), Applied::Done);
    }
    superuser()
        .await
        .batch_execute(&format!("DROP ROLE {}", quote_ident(&account).unwrap()))
        .await
        .unwrap();
    assert_eq!(c.apply(&op, &subject).await.unwrap(), Applied::Done);
}
