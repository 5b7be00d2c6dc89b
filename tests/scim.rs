//! The SCIM connector against two real servers, python-scim's scim2-server and django-scim2
//! (both from PyPI), driven the way the controller drives it: evaluate, observe, plan,
//! apply; then once more to prove the second pass has nothing to do. The servers' state is
//! checked with plain HTTP calls.

#![allow(clippy::duplicate_mod)] // the harness and the SCIM peer both use peer_script.rs

mod harness;
mod reread;
mod scim_peer;

use std::collections::BTreeMap;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::engine::{AccountIntent, Engine, IdentityKey, NothingHeld, Settings, Snapshot};
use gatehouse::plan::{Action, Plan, guard, plan};
use gatehouse::targets::scim::Scim;
use gatehouse::targets::{Applied, Connector, Subject, TargetConfig, TargetError};
use reqwest::Method;
use scim_peer::{Peer, Raw, django_peer, django_proxy, minimal_peer, peer, proxy};

const NOW: &str = "2026-12-01T09:00:00Z";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const NS: &str = "acme";

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A tenant with the `saas` target: finance gets the `finance` group, engineering the
/// `engineering` group, everyone active the `staff` group.
fn org(config: &TargetConfig, people: &[String]) -> Snapshot {
    let mut target: TargetSystem = yaml(&format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {{name: saas, namespace: {NS}}}\nspec: {{type: SCIM, scim: {{url: \"http://x\"}}}}"
    ));
    target.spec = config.spec.clone();
    let policy = |name: &str, dept: &str, group: &str| -> AccessPolicy {
        yaml(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}, namespace: {NS}}}\nspec: {{selector: {{matchAttributes: {{department: {dept}}}}}, entitlements: [{{target: saas, name: {group}}}, {{target: saas, name: staff}}]}}"
        ))
    };
    Snapshot {
        targets: vec![target],
        policies: vec![
            policy("finance", "finance", "finance"),
            policy("engineering", "engineering", "engineering"),
        ],
        identities: people
            .iter()
            .map(|spec| {
                yaml::<Identity>(&format!(
                    "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{namespace: {NS}, {spec}"
                ))
            })
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
    let engine = Engine::new(snapshot, Settings::default());
    engine
        .evaluate(now, &NothingHeld)
        .identities
        .values()
        .map(|a| {
            let subject = Subject {
                identity: a.key.clone(),
                identity_type: a.identity_type,
                account: a.key.name.clone(),
                enabled: a.account == AccountIntent::Enabled,
            };
            (a.key.clone(), subject)
        })
        .collect()
}

/// Observe and plan, without applying.
async fn observe_and_plan(
    connector: &Scim,
    snapshot: &Snapshot,
) -> (gatehouse::targets::Observed, Plan) {
    let now = NOW.parse().unwrap();
    let engine = Engine::new(snapshot, Settings::default());
    let observed = connector
        .observe(&subjects(snapshot))
        .await
        .expect("observe");
    let desired = engine.evaluate(now, &observed.held);
    let plan = plan(&observed.held, &desired);
    (observed, plan)
}

/// One reconcile of the `saas` target: observe, plan against what is held, apply in order
/// (one by one, or as one batch).
async fn sync_with(connector: &Scim, snapshot: &Snapshot, batch: bool) -> Plan {
    let (plan, errors) = try_sync_with(connector, snapshot, batch).await;
    if let Some((op, e)) = errors.first() {
        panic!("{op:?}: {e}");
    }
    plan
}

/// One reconcile that returns the operations that failed instead of panicking.
async fn try_sync_with(
    connector: &Scim,
    snapshot: &Snapshot,
    batch: bool,
) -> (Plan, Vec<(gatehouse::plan::Operation, TargetError)>) {
    let subjects = subjects(snapshot);
    let (_, plan) = observe_and_plan(connector, snapshot).await;
    let pairs: Vec<(&gatehouse::plan::Operation, &Subject)> = plan
        .operations
        .iter()
        .map(|op| {
            (
                op,
                subjects.get(&op.identity).expect("test identities stay"),
            )
        })
        .collect();
    let results = if batch {
        connector.apply_batch(&pairs).await
    } else {
        let mut out = Vec::new();
        for (op, subject) in &pairs {
            out.push(connector.apply(op, subject).await);
        }
        out
    };
    assert_eq!(results.len(), pairs.len());
    let mut errors = Vec::new();
    for ((op, _), result) in pairs.iter().zip(results) {
        match result {
            Ok(Applied::Done) => {}
            Ok(Applied::Unsupported) => assert_eq!(op.action, Action::RevokeSessions, "{op:?}"),
            Err(e) => errors.push(((*op).clone(), e)),
        }
    }
    (plan, errors)
}

/// Syncs until a pass has no errors (at most `passes`); every error on the way must be
/// transient. Returns the errors seen.
async fn sync_until_clean(
    connector: &Scim,
    snapshot: &Snapshot,
    batch: bool,
    passes: usize,
) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..passes {
        let (_, errors) = try_sync_with(connector, snapshot, batch).await;
        if errors.is_empty() {
            return seen;
        }
        for (op, e) in errors {
            assert!(e.is_transient(), "{op:?}: {e}");
            seen.push(e.to_string());
        }
    }
    panic!("no clean pass in {passes}: {seen:#?}");
}

async fn sync(connector: &Scim, snapshot: &Snapshot) -> Plan {
    sync_with(connector, snapshot, false).await
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
    peer: &Peer,
    prefix: &str,
    extra: &str,
    on_leave: &str,
) -> (Scim, Raw, TargetConfig) {
    let tenant = peer.tenant(prefix);
    let config = peer.config(NS, "saas", &tenant, extra, on_leave);
    let connector = Scim::connect(&config).await.expect("connect");
    (connector, Raw::new(peer, &tenant), config)
}

#[tokio::test]
async fn joiner_mover_on_leave_and_leaver() {
    let (connector, raw, config) = setup(peer(), "jml", "", "Disable").await;
    let features = connector.features();
    assert!(features.patch && features.filter && features.etag && features.bulk.is_some());

    // Joiner: an active user with the stable externalId, in both groups.
    let joined = org(&config, &[person("alice", "finance", "Active")]);
    let first = steps(&sync(&connector, &joined).await);
    assert_eq!(
        first,
        ["alice createAccount", "alice +finance", "alice +staff"]
    );
    let alice = raw.user("alice").await.expect("alice exists");
    assert_eq!(alice["externalId"], "acme/alice");
    assert_eq!(alice["active"], true);
    assert_eq!(raw.members("finance").await, ["alice"]);
    assert_eq!(raw.members("staff").await, ["alice"]);
    assert!(sync(&connector, &joined).await.is_empty(), "converged");

    // Mover: out of finance, into engineering, revocation first; staff stays. The new
    // department (the enterprise extension's, a default mapping) is in the same plan.
    let moved = org(&config, &[person("alice", "engineering", "Active")]);
    let mover = steps(&sync(&connector, &moved).await);
    assert_eq!(
        mover,
        [
            "alice -finance",
            "alice updateAttributes",
            "alice +engineering"
        ]
    );
    assert_eq!(
        raw.user("alice").await.unwrap()[ENTERPRISE]["department"],
        "engineering"
    );
    assert!(raw.members("finance").await.is_empty());
    assert_eq!(raw.members("engineering").await, ["alice"]);
    assert!(sync(&connector, &moved).await.is_empty(), "converged");
    // A targeted re-read (the user by externalId, its groups by member) agrees with the
    // full observation, for alice and for someone with no account.
    assert!(
        reread::agrees(
            &connector,
            &subjects(&moved),
            &reread::keys(NS, &["alice", "nobody"])
        )
        .await,
        "scim2-server filters groups by member: re-read account by account"
    );

    // On leave: inactive, memberships kept for the return; back at work: active again.
    let away = org(&config, &[person("alice", "engineering", "OnLeave")]);
    sync(&connector, &away).await;
    assert_eq!(raw.user("alice").await.unwrap()["active"], false);
    assert_eq!(raw.members("engineering").await, ["alice"]);
    assert!(
        sync(&connector, &away).await.is_empty(),
        "converged while away"
    );
    sync(&connector, &moved).await;
    assert_eq!(raw.user("alice").await.unwrap()["active"], true);

    // Leaver: inactive at once, every membership gone, the account kept.
    let left = org(&config, &[person("alice", "engineering", "Terminated")]);
    let leaver = steps(&sync(&connector, &left).await);
    assert_eq!(leaver[0], "alice disableAccount", "{leaver:?}");
    let alice = raw
        .user("alice")
        .await
        .expect("the account stays, disabled");
    assert_eq!(alice["active"], false);
    assert!(raw.members("engineering").await.is_empty());
    assert!(raw.members("staff").await.is_empty());
    assert!(sync(&connector, &left).await.is_empty(), "converged");
}

#[tokio::test]
async fn delete_mode_removes_the_user_and_its_memberships() {
    let (connector, raw, config) = setup(peer(), "del", "", "Delete").await;
    let joined = org(
        &config,
        &[
            person("bob", "finance", "Active"),
            person("carol", "finance", "Active"),
        ],
    );
    sync(&connector, &joined).await;
    assert_eq!(raw.members("finance").await, ["bob", "carol"]);
    let bob_id = raw.user("bob").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let left = org(
        &config,
        &[
            person("bob", "finance", "Terminated"),
            person("carol", "finance", "Active"),
        ],
    );
    let leaver = steps(&sync(&connector, &left).await);
    assert!(
        leaver.contains(&"bob deleteAccount".to_string()),
        "{leaver:?}"
    );
    assert!(raw.user("bob").await.is_none(), "bob is deleted");
    let (status, _, _) = raw
        .call(Method::GET, &format!("Users/{bob_id}"), None, None)
        .await;
    assert_eq!(status, 404);
    // No dangling member either (this server would keep one after a bare delete).
    let finance = raw.group("finance").await.unwrap();
    assert!(
        !finance["members"].to_string().contains(&bob_id),
        "{finance}"
    );
    assert_eq!(raw.members("finance").await, ["carol"]);
    assert!(sync(&connector, &left).await.is_empty(), "converged");

    // Deleting what is already gone is fine (idempotent), and so is a stale member.
    let ghost = raw.create_user("ghost", Some("acme/ghost")).await;
    let group = raw.group("finance").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    raw.membership(&group, &ghost, true).await;
    raw.call(Method::DELETE, &format!("Users/{ghost}"), None, None)
        .await;
    let (observed, plan) = observe_and_plan(&connector, &left).await;
    assert!(
        plan.is_empty(),
        "a deleted user left in a group counts for nothing: {:?}",
        steps(&plan)
    );
    assert!(observed.orphans.is_empty());
}

#[tokio::test]
async fn drift_both_ways_is_repaired_and_nothing_else_is_touched() {
    let (connector, raw, config) = setup(peer(), "drift", "", "Disable").await;
    let joined = org(&config, &[person("dave", "finance", "Active")]);
    sync(&connector, &joined).await;
    let dave = raw.user("dave").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let finance = raw.group("finance").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Someone else's user in a managed group, and a group gatehouse never heard of.
    let stranger = raw.create_user("stranger", None).await;
    raw.membership(&finance, &stranger, true).await;
    let payroll = raw.create_group("payroll").await;

    // By hand: dave into payroll, out of finance, and disabled.
    raw.membership(&payroll, &dave, true).await;
    raw.membership(&finance, &dave, false).await;
    let body = serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}]});
    raw.call(Method::PATCH, &format!("Users/{dave}"), Some(body), None)
        .await;

    let repair = steps(&sync(&connector, &joined).await);
    assert_eq!(
        repair,
        ["dave -payroll", "dave enableAccount", "dave +finance"],
        "{repair:?}"
    );
    assert_eq!(raw.members("finance").await, ["dave", "stranger"]);
    assert!(raw.members("payroll").await.is_empty());
    assert_eq!(raw.user("dave").await.unwrap()["active"], true);
    assert!(
        raw.group("payroll").await.is_some(),
        "the group itself stays"
    );
    assert!(sync(&connector, &joined).await.is_empty(), "converged");
}

#[tokio::test]
async fn a_stale_etag_is_reread_and_the_change_retried() {
    let peer = peer();
    let (connector, raw, config) = setup(peer, "etag", "", "Disable").await;
    sync(
        &connector,
        &org(&config, &[person("erin", "finance", "Active")]),
    )
    .await;
    let finance = raw.group("finance").await.unwrap();
    let before = finance["meta"]["version"].as_str().unwrap().to_string();

    // Observe (the connector learns the group's tag), then someone changes the group.
    let two = org(
        &config,
        &[
            person("erin", "finance", "Active"),
            person("frank", "finance", "Active"),
        ],
    );
    let subjects = subjects(&two);
    let (_, plan) = observe_and_plan(&connector, &two).await;
    let other = raw.create_user("other", None).await;
    raw.membership(finance["id"].as_str().unwrap(), &other, true)
        .await;
    let after = raw.group("finance").await.unwrap()["meta"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(before, after, "the hand edit moved the tag");
    // A write with the old tag is refused by the server.
    let (status, _, _) = raw
        .call(
            Method::PATCH,
            &format!("Groups/{}", finance["id"].as_str().unwrap()),
            Some(
                serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": other}]}]}),
            ),
            Some(&before),
        )
        .await;
    assert_eq!(status, 412);

    let log_before = peer.log().matches(" 412 ").count();
    for op in &plan.operations {
        let result = connector.apply(op, &subjects[&op.identity]).await;
        assert!(result.is_ok(), "{op:?}: {result:?}");
    }
    assert!(
        peer.log().matches(" 412 ").count() > log_before,
        "the connector's PATCH met a 412"
    );
    assert_eq!(raw.members("finance").await, ["erin", "frank", "other"]);
    assert!(sync(&connector, &two).await.is_empty(), "converged");

    // The same for an account: disable with a stale tag.
    let left = org(
        &config,
        &[
            person("erin", "finance", "Active"),
            person("frank", "finance", "Terminated"),
        ],
    );
    let (_, plan) = observe_and_plan(&connector, &left).await;
    let frank = raw.user("frank").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "displayName", "value": "Frank"}]});
    raw.call(Method::PATCH, &format!("Users/{frank}"), Some(body), None)
        .await;
    let subjects = subjects_of(&left);
    for op in &plan.operations {
        connector.apply(op, &subjects[&op.identity]).await.unwrap();
    }
    let frank = raw.user("frank").await.unwrap();
    assert_eq!(frank["active"], false);
    assert_eq!(frank["displayName"], "Frank", "the other change survives");
}

fn subjects_of(snapshot: &Snapshot) -> BTreeMap<IdentityKey, Subject> {
    subjects(snapshot)
}

/// Joins `n` people into `groups` groups (plus staff) through `apply_batch`.
async fn join_many(
    peer: &Peer,
    prefix: &str,
    extra: &str,
    n: usize,
    groups: usize,
) -> (Raw, Plan, TargetConfig, Scim) {
    let (connector, raw, config) = setup(peer, prefix, extra, "Disable").await;
    let people: Vec<String> = (0..n)
        .map(|i| person(&format!("p{i:03}"), &format!("d{}", i % groups), "Active"))
        .collect();
    let mut snapshot = org(&config, &people);
    snapshot.policies = (0..groups)
        .map(|g| {
            yaml(&format!(
                "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: d{g}, namespace: {NS}}}\nspec: {{selector: {{matchAttributes: {{department: d{g}}}}}, entitlements: [{{target: saas, name: g{g}}}]}}"
            ))
        })
        .collect();
    let plan = sync_with(&connector, &snapshot, true).await;
    assert!(
        sync_with(&connector, &snapshot, true).await.is_empty(),
        "converged"
    );
    // Leave them all: disable in one batch, memberships revoked in one batch.
    let gone: Vec<String> = (0..n)
        .map(|i| {
            person(
                &format!("p{i:03}"),
                &format!("d{}", i % groups),
                "Terminated",
            )
        })
        .collect();
    let mut left = snapshot.clone();
    left.identities = org(&config, &gone).identities;
    sync_with(&connector, &left, true).await;
    for g in 0..groups {
        assert!(raw.members(&format!("g{g}")).await.is_empty());
    }
    assert!(
        sync_with(&connector, &left, true).await.is_empty(),
        "converged after leaving"
    );
    // Back to the joined state for the caller's checks.
    sync_with(&connector, &snapshot, true).await;
    (raw, plan, config, connector)
}

#[tokio::test]
async fn bulk_on_and_off_reach_the_same_state_and_pages_are_followed() {
    let peer = peer();
    let bulk_before =
        peer.log().matches("POST /bulk").count() + peer.log().matches("POST /").count();
    let _ = bulk_before;
    let count_bulk = |tenant_root: &str| {
        peer.log()
            .lines()
            .filter(|l| l.contains(&format!("\"POST /{tenant_root}/v2/Bulk")))
            .count()
    };
    // Small pages, so observation must follow startIndex across several of them.
    let (raw_on, plan_on, config_on, on) = join_many(peer, "bulkon", "pageSize: 7", 40, 4).await;
    let (raw_off, plan_off, config_off, off) =
        join_many(peer, "bulkoff", "pageSize: 7, bulk: false", 40, 4).await;
    assert!(on.features().bulk.is_some());
    assert!(off.features().bulk.is_none());
    assert_eq!(steps(&plan_on), steps(&plan_off));
    let tenant = |c: &TargetConfig| {
        c.spec
            .scim
            .as_ref()
            .unwrap()
            .url
            .rsplit('/')
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert!(count_bulk(&tenant(&config_on)) > 0, "Bulk was used");
    assert_eq!(count_bulk(&tenant(&config_off)), 0, "Bulk was not used");
    for g in 0..4 {
        let group = format!("g{g}");
        let members = raw_on.members(&group).await;
        assert_eq!(members.len(), 10);
        assert_eq!(members, raw_off.members(&group).await);
    }
    assert_eq!(raw_on.all("Users").await.len(), 40);
    assert_eq!(raw_off.all("Users").await.len(), 40);
}

#[tokio::test]
async fn a_server_without_patch_bulk_filters_or_etags_still_converges() {
    let (connector, raw, config) = setup(minimal_peer(), "min", "", "Disable").await;
    let f = connector.features();
    assert!(
        !f.patch && !f.filter && !f.etag && f.bulk.is_none(),
        "{f:?}"
    );
    let joined = org(
        &config,
        &[
            person("gina", "finance", "Active"),
            person("hal", "engineering", "Active"),
        ],
    );
    sync_with(&connector, &joined, true).await;
    assert_eq!(raw.members("finance").await, ["gina"]);
    assert_eq!(raw.members("staff").await, ["gina", "hal"]);
    assert!(sync(&connector, &joined).await.is_empty(), "converged");
    let left = org(
        &config,
        &[
            person("gina", "finance", "Terminated"),
            person("hal", "engineering", "Active"),
        ],
    );
    sync(&connector, &left).await;
    assert_eq!(raw.user("gina").await.unwrap()["active"], false);
    assert_eq!(raw.members("staff").await, ["hal"]);
    assert!(raw.members("finance").await.is_empty());
    assert!(sync(&connector, &left).await.is_empty(), "converged");
}

#[tokio::test]
async fn a_wrong_token_is_a_configuration_error_naming_the_credentials() {
    let peer = peer();
    let tenant = peer.tenant("auth");
    let mut config = peer.config(NS, "saas", &tenant, "", "Disable");
    config.credentials = gatehouse::targets::Credentials::new(
        "scim-token",
        BTreeMap::from([("token".to_string(), b"not-the-token".to_vec())]),
    );
    let error = Scim::connect(&config).await.err().expect("refused");
    // A refused token is the Secret's fault: Config, so the retry waits for a Secret change.
    let TargetError::Config(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.contains("401") && message.contains("credentials"),
        "{message}"
    );
    assert!(
        !message.contains("not-the-token"),
        "the secret is never shown"
    );

    // A missing key, a bad URL, a URL that is not a SCIM root, a closed port.
    config.credentials = gatehouse::targets::Credentials::new("scim-token", BTreeMap::new());
    let error = Scim::connect(&config).await.err().unwrap();
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("\"token\"")),
        "{error:?}"
    );
    let mut bad = peer.config(NS, "saas", &tenant, "", "Disable");
    bad.spec.scim.as_mut().unwrap().url = "ftp://example".into();
    assert!(
        matches!(Scim::connect(&bad).await, Err(TargetError::Config(m)) if m.contains("spec.scim.url"))
    );
    bad.spec.scim.as_mut().unwrap().url = format!("{}/{tenant}/v2/nothing", peer.base);
    let error = Scim::connect(&bad).await.err().unwrap();
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("ServiceProviderConfig")),
        "{error:?}"
    );
    bad.spec.scim.as_mut().unwrap().url = "http://127.0.0.1:9/v2".into();
    bad.spec.scim.as_mut().unwrap().timeout_seconds = Some(2);
    let error = Scim::connect(&bad).await.err().unwrap();
    assert!(error.is_transient(), "{error:?}");
    // A CA bundle that is not PEM.
    let mut bad = peer.config(NS, "saas", &tenant, "", "Disable");
    bad.credentials = gatehouse::targets::Credentials::new(
        "scim-token",
        BTreeMap::from([
            ("token".to_string(), peer.token.clone().into_bytes()),
            ("ca.crt".to_string(), b"garbage".to_vec()),
        ]),
    );
    let error = Scim::connect(&bad).await.err().unwrap();
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("ca.crt")),
        "{error:?}"
    );
}

#[tokio::test]
async fn orphans_are_reported_and_never_changed() {
    let (connector, raw, config) = setup(peer(), "orphan", "", "Disable").await;
    let snapshot = org(&config, &[person("ivan", "finance", "Active")]);
    sync(&connector, &snapshot).await;
    // In the managed scope but no Identity; outside the scope; another tenant's.
    let ghost = raw.create_user("ghost", Some("acme/ghost")).await;
    raw.create_user("manual", None).await;
    raw.create_user("elsewhere", Some("globex/elsewhere")).await;
    let staff = raw.group("staff").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    raw.membership(&staff, &ghost, true).await;

    let (observed, plan) = observe_and_plan(&connector, &snapshot).await;
    assert_eq!(observed.orphans, ["ghost"]);
    assert!(plan.is_empty(), "{:?}", steps(&plan));
    sync(&connector, &snapshot).await;
    assert_eq!(raw.members("staff").await, ["ghost", "ivan"]);
    assert_eq!(
        raw.user("ghost").await.unwrap()["active"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn a_taken_user_name_is_a_clear_permanent_error() {
    let (connector, raw, config) = setup(peer(), "taken", "", "Disable").await;
    raw.create_user("judy", Some("hr-system/judy")).await;
    let snapshot = org(&config, &[person("judy", "finance", "Active")]);
    let subjects = subjects(&snapshot);
    let (_, plan) = observe_and_plan(&connector, &snapshot).await;
    let create = plan
        .operations
        .iter()
        .find(|op| matches!(op.action, Action::CreateAccount { .. }))
        .unwrap();
    let error = connector
        .apply(create, &subjects[&create.identity])
        .await
        .unwrap_err();
    let TargetError::Permanent(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.contains("\"judy\"") && message.contains("acme/judy"),
        "{message}"
    );
    // The grant that follows fails for that identity alone, with its own message.
    let grant = plan
        .operations
        .iter()
        .find(|op| matches!(op.action, Action::Grant { .. }))
        .unwrap();
    let error = connector
        .apply(grant, &subjects[&grant.identity])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("acme/judy"), "{error}");
    assert_eq!(
        raw.user("judy").await.unwrap()["externalId"],
        "hr-system/judy",
        "untouched"
    );
}

#[tokio::test]
async fn a_renamed_account_and_a_half_done_create_are_repaired() {
    let (connector, raw, config) = setup(peer(), "rename", "", "Disable").await;
    // A create that happened but was never recorded (a crash): adopted, not duplicated.
    raw.create_user("kim", Some("acme/kim")).await;
    let snapshot = org(&config, &[person("kim", "finance", "Active")]);
    sync(&connector, &snapshot).await;
    assert_eq!(raw.all("Users").await.len(), 1);
    assert_eq!(raw.members("finance").await, ["kim"]);
    // Renamed by hand: not held, so the plan creates it, which renames it back.
    let kim = raw.user("kim").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "userName", "value": "kimmy"}]});
    raw.call(Method::PATCH, &format!("Users/{kim}"), Some(body), None)
        .await;
    sync(&connector, &snapshot).await;
    let users = raw.all("Users").await;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["userName"], "kim");
    assert!(sync(&connector, &snapshot).await.is_empty(), "converged");
}

#[tokio::test]
async fn observe_only_and_the_blast_radius_guard_leave_the_server_alone() {
    // Both are the controller's: it plans from the connector's observation and, in Observe
    // mode or past the limit, applies nothing. Here: the plan they would hold back.
    let (connector, raw, config) = setup(peer(), "guard", "", "Disable").await;
    let people: Vec<String> = (0..5)
        .map(|i| person(&format!("u{i}"), "finance", "Active"))
        .collect();
    let joined = org(&config, &people);
    sync(&connector, &joined).await;
    let left: Vec<String> = (0..5)
        .map(|i| person(&format!("u{i}"), "finance", "Terminated"))
        .collect();
    let (_, plan) = observe_and_plan(&connector, &org(&config, &left)).await;
    let revocations = plan
        .operations
        .iter()
        .filter(|op| op.action.is_revocation())
        .count();
    assert!(revocations >= 10, "{:?}", steps(&plan));
    assert!(
        guard::check(&plan.operations, Some(3)).is_err(),
        "stopped by a limit of 3"
    );
    assert!(guard::check(&plan.operations, Some(1000)).is_ok());
    // Nothing was applied: everyone is still active and in the groups.
    assert_eq!(raw.members("finance").await.len(), 5);
    assert!(raw.all("Users").await.iter().all(|u| u["active"] == true));
}

#[tokio::test]
async fn https_with_a_private_ca_and_a_refused_certificate() {
    let tenant = peer().tenant("tls");
    let config = proxy().config(NS, &tenant, "");
    let connector = Scim::connect(&config).await.expect("connect over HTTPS");
    let joined = org(&config, &[person("lena", "finance", "Active")]);
    sync(&connector, &joined).await;
    assert!(sync(&connector, &joined).await.is_empty(), "converged");
    assert_eq!(Raw::new(peer(), &tenant).members("finance").await, ["lena"]);

    // Without the CA the certificate is refused: a configuration error that names the key.
    let mut untrusted = config.clone();
    untrusted.credentials = gatehouse::targets::Credentials::new(
        "scim-token",
        BTreeMap::from([("token".to_string(), peer().token.clone().into_bytes())]),
    );
    let error = Scim::connect(&untrusted).await.err().expect("refused");
    assert!(
        matches!(&error, TargetError::Config(m) if m.contains("ca.crt") && m.contains("TLS")),
        "{error:?}"
    );
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    // Every fourth request answers 429 with Retry-After: 1, or every other one 503.
    for (prefix, extra) in [("throttle", ""), ("flaky", "bulk: false")] {
        let tenant = peer().tenant(prefix);
        let config = proxy().config(NS, &tenant, extra);
        let connector = Scim::connect(&config).await.expect("connect");
        let joined = org(
            &config,
            &[
                person("mia", "finance", "Active"),
                person("ned", "engineering", "Active"),
            ],
        );
        sync_with(&connector, &joined, true).await;
        assert!(
            sync(&connector, &joined).await.is_empty(),
            "{prefix}: converged"
        );
        let raw = Raw::new(peer(), &tenant);
        assert_eq!(raw.members("staff").await, ["mia", "ned"], "{prefix}");
    }
}

#[tokio::test]
async fn a_bulk_endpoint_that_is_not_there_falls_back_to_one_request_per_operation() {
    // scim2-server announces Bulk; the front answers 501 to it. Every operation still
    // happens (one by one), the leaver is disabled, and Bulk is not sent again.
    let tenant = peer().tenant("nobulk");
    let config = proxy().config(NS, &tenant, "");
    let connector = Scim::connect(&config).await.expect("connect");
    assert!(connector.features().bulk.is_some(), "announced");
    let raw = Raw::new(peer(), &tenant);
    let mut people = vec![
        person("rae", "finance", "Active"),
        person("sam", "finance", "Active"),
        person("tom", "engineering", "Active"),
    ];
    sync_with(&connector, &org(&config, &people), true).await;
    assert_eq!(raw.members("staff").await, ["rae", "sam", "tom"]);
    people[1] = person("sam", "finance", "Terminated");
    people[2] = person("tom", "engineering", "Terminated");
    let left = org(&config, &people);
    sync_with(&connector, &left, true).await;
    for name in ["sam", "tom"] {
        assert_eq!(raw.user(name).await.unwrap()["active"], false, "{name}");
    }
    assert_eq!(raw.members("staff").await, ["rae"]);
    assert!(
        sync_with(&connector, &left, true).await.is_empty(),
        "converged"
    );
    let bulk: Vec<String> = proxy()
        .requests(&tenant)
        .into_iter()
        .filter(|l| l.starts_with("POST") && l.contains("/Bulk"))
        .collect();
    assert_eq!(bulk.len(), 1, "refused once, then never sent: {bulk:#?}");
}

#[tokio::test]
async fn refused_member_removals_fall_back_shape_by_shape_and_are_learned_once() {
    // The front answers 501 to a filter-path removal (as django-scim2 does); scim2-server
    // itself refuses removal by value (400 invalidValue): the connector ends at a PUT of
    // the member list under If-Match, and never sends the refused shapes again.
    let tenant = peer().tenant("nofilterpath");
    let config = proxy().config(NS, &tenant, "bulk: false");
    let connector = Scim::connect(&config).await.expect("connect");
    let raw = Raw::new(peer(), &tenant);
    let joined = org(
        &config,
        &[
            person("ona", "finance", "Active"),
            person("pia", "finance", "Active"),
            person("quin", "engineering", "Active"),
        ],
    );
    sync_with(&connector, &joined, true).await;
    assert_eq!(raw.members("finance").await, ["ona", "pia"]);

    // A mover: the old group goes in the same plan as the new one comes.
    let moved = org(
        &config,
        &[
            person("ona", "engineering", "Active"),
            person("pia", "finance", "Active"),
            person("quin", "engineering", "Active"),
        ],
    );
    let plan = sync_with(&connector, &moved, true).await;
    assert_eq!(
        steps(&plan),
        ["ona -finance", "ona updateAttributes", "ona +engineering"]
    );
    assert_eq!(raw.members("finance").await, ["pia"]);
    assert_eq!(raw.members("engineering").await, ["ona", "quin"]);

    // A leaver: disabled and out of every group.
    let left = org(
        &config,
        &[
            person("ona", "engineering", "Active"),
            person("pia", "finance", "Active"),
            person("quin", "engineering", "Terminated"),
        ],
    );
    sync_with(&connector, &left, true).await;
    assert_eq!(raw.user("quin").await.unwrap()["active"], false);
    assert_eq!(raw.members("engineering").await, ["ona"]);
    assert_eq!(raw.members("staff").await, ["ona", "pia"]);
    assert!(sync(&connector, &left).await.is_empty(), "converged");

    let refused: Vec<String> = proxy()
        .requests(&tenant)
        .into_iter()
        .filter(|l| l.starts_with("PATCH") && (l.ends_with(" 501") || l.ends_with(" 400")))
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "one 501 to the filter path, one 400 to the value: each learned once: {refused:#?}"
    );
    assert!(
        refused[0].ends_with(" 501") && refused[1].ends_with(" 400"),
        "{refused:#?}"
    );
}

#[tokio::test]
async fn groups_that_refuse_patch_change_by_put_while_users_keep_patch() {
    // The front answers 405 to any PATCH of a group. Memberships go by PUT from the first
    // refusal on; users are still changed by PATCH (a PUT of a user would rewrite
    // attributes gatehouse does not own), and the leaver is disabled and out of the groups.
    let tenant = peer().tenant("nogrouppatch");
    let config = proxy().config(NS, &tenant, "bulk: false");
    let connector = Scim::connect(&config).await.expect("connect");
    let raw = Raw::new(peer(), &tenant);
    let mut people = vec![
        person("uma", "finance", "Active"),
        person("val", "finance", "Active"),
    ];
    sync_with(&connector, &org(&config, &people), true).await;
    assert_eq!(raw.members("finance").await, ["uma", "val"]);
    people[1] = person("val", "finance", "Terminated");
    let left = org(&config, &people);
    sync_with(&connector, &left, true).await;
    assert_eq!(raw.user("val").await.unwrap()["active"], false);
    assert_eq!(raw.members("finance").await, ["uma"]);
    assert!(sync(&connector, &left).await.is_empty(), "converged");

    let requests = proxy().requests(&tenant);
    let of = |method: &str, resource: &str| -> Vec<&String> {
        requests
            .iter()
            .filter(|l| l.starts_with(method) && l.contains(&format!("/{resource}/")))
            .collect()
    };
    assert_eq!(
        of("PATCH", "Groups").len(),
        1,
        "refused once, then never sent: {requests:#?}"
    );
    assert!(!of("PUT", "Groups").is_empty(), "{requests:#?}");
    assert!(
        of("PATCH", "Users")
            .iter()
            .all(|l| l.ends_with(" 200") || l.ends_with(" 204"))
            && !of("PATCH", "Users").is_empty(),
        "the leaver is disabled by PATCH: {requests:#?}"
    );
    assert!(
        of("PUT", "Users").is_empty(),
        "no user rewritten: {requests:#?}"
    );
}

/// The attributes django-scim2 keeps, with templates that give every test person a value.
fn django_mapping(mut config: TargetConfig) -> TargetConfig {
    config.spec.default_attributes = Some(false);
    config.spec.attributes = BTreeMap::from([
        ("name.familyName".into(), "{{ account | upper }}".into()),
        (
            "emails[type eq \"work\"].value".into(),
            "{{ account }}@acme.example".into(),
        ),
    ]);
    config
}

/// django-scim2 shares one store between tests: this is its only test, in two acts.
#[tokio::test]
async fn django_scim2_joiner_mover_leaver_and_a_server_that_ignores_what_it_accepts() {
    let django = django_peer();
    // It keeps names, displayName and one e-mail, not title nor the enterprise extension:
    // the mapping owns what it keeps.
    let config = django_mapping(django.config(NS, "saas", "", "", "Disable"));
    let connector = Scim::connect(&config).await.expect("connect");
    let f = connector.features();
    assert!(
        f.patch && !f.filter && !f.etag && f.bulk.is_none() && f.page_size == 50,
        "as its ServiceProviderConfig says: {f:?}"
    );
    let raw = Raw::new(django, "");
    let mut people = vec![
        person("ona", "finance", "Active"),
        person("pia", "finance", "Active"),
        person("quin", "engineering", "Active"),
    ];
    sync_with(&connector, &org(&config, &people), true).await;
    assert_eq!(raw.members("finance").await, ["ona", "pia"]);
    assert_eq!(raw.members("staff").await, ["ona", "pia", "quin"]);
    let ona = raw.user("ona").await.unwrap();
    assert_eq!(ona["name"]["familyName"], "ONA", "{ona}");
    assert_eq!(ona["emails"][0]["value"], "ona@acme.example", "{ona}");
    assert!(
        sync(&connector, &org(&config, &people)).await.is_empty(),
        "what django-scim2 echoes is what was written"
    );
    // Drift on an owned attribute (the e-mail, by hand) is repaired; django-scim2 keeps
    // one e-mail and no type, so it is read as the primary one.
    let body = serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "emails", "value": [{"value": "x@elsewhere.example", "primary": true}]}]});
    let ona_id = ona["id"].as_str().unwrap().to_string();
    let (status, _, _) = raw
        .call(Method::PATCH, &format!("Users/{ona_id}"), Some(body), None)
        .await;
    assert_eq!(status, 200);
    let repair = sync(&connector, &org(&config, &people)).await;
    assert_eq!(steps(&repair), ["ona updateAttributes"]);
    assert_eq!(
        raw.user("ona").await.unwrap()["emails"][0]["value"],
        "ona@acme.example"
    );
    assert!(sync(&connector, &org(&config, &people)).await.is_empty());

    // A mover, in one plan: out of finance (by value: filters are not announced, so no
    // filter path is sent), into engineering.
    people[0] = person("ona", "engineering", "Active");
    let plan = sync_with(&connector, &org(&config, &people), true).await;
    assert_eq!(steps(&plan), ["ona -finance", "ona +engineering"]);
    assert_eq!(raw.members("finance").await, ["pia"]);
    assert_eq!(raw.members("engineering").await, ["ona", "quin"]);

    // A leaver: disabled, out of every group; a membership added back by hand is revoked.
    people[2] = person("quin", "engineering", "Terminated");
    let left = org(&config, &people);
    sync_with(&connector, &left, true).await;
    assert_eq!(raw.user("quin").await.unwrap()["active"], false);
    assert_eq!(raw.members("engineering").await, ["ona"]);
    assert_eq!(raw.members("staff").await, ["ona", "pia"]);
    let staff = raw.group("staff").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let quin = raw.user("quin").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    raw.membership(&staff, &quin, true).await;
    assert_eq!(steps(&sync(&connector, &left).await), ["quin -staff"]);
    assert_eq!(raw.members("staff").await, ["ona", "pia"]);
    assert!(sync(&connector, &left).await.is_empty(), "converged");
    // Without filters, a re-read of one account lists everything, and says the same.
    assert!(
        !reread::agrees(&connector, &subjects(&left), &reread::keys(NS, &["ona"])).await,
        "django-scim2 announces no filters: a re-read is a listing"
    );
    let log = django.log();
    assert!(
        log.contains("\"PATCH /scim/v2/Groups/") && !log.contains("\" 501 "),
        "no request shape the server refuses was sent:\n{log}"
    );

    // The same server behind a front that refuses removal by value too: its PUT answers
    // 200 and ignores `members`. The leaver is still disabled at once, and the revocations
    // fail permanently, saying so, instead of passing for done.
    let front = django_proxy("novalueremove");
    let config = django_mapping(front.config(NS, "", ""));
    let connector = Scim::connect(&config)
        .await
        .expect("connect through the front");
    people.push(person("sue", "finance", "Active"));
    sync_with(&connector, &org(&config, &people), true).await;
    assert_eq!(raw.members("finance").await, ["pia", "sue"]);
    people[3] = person("sue", "finance", "Terminated");
    let (plan, errors) = try_sync_with(&connector, &org(&config, &people), true).await;
    assert_eq!(
        steps(&plan),
        [
            "sue disableAccount",
            "sue revokeSessions",
            "sue -finance",
            "sue -staff"
        ]
    );
    assert_eq!(raw.user("sue").await.unwrap()["active"], false, "cut off");
    let failed: Vec<String> = errors
        .iter()
        .map(|(op, e)| {
            assert!(
                matches!(e, TargetError::Permanent(m) if m.contains("still lists") && m.contains("PUT")),
                "{op:?}: {e:?}"
            );
            steps(&Plan {
                operations: vec![op.clone()],
            })
            .remove(0)
        })
        .collect();
    assert_eq!(failed, ["sue -finance", "sue -staff"]);
    assert_eq!(
        raw.members("finance").await,
        ["pia", "sue"],
        "what the server shows"
    );
    let refused: Vec<String> = front
        .requests("scim")
        .into_iter()
        .filter(|l| l.ends_with(" 501"))
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "removal by value refused once, then learned: {refused:#?}"
    );

    // django-scim2's uniqueness is case-sensitive: it would create `wendy` next to someone
    // else's `Wendy`. One name per RFC 7643: the create is refused, nothing is sent.
    let direct = django_mapping(django.config(NS, "saas", "", "", "Disable"));
    let connector = Scim::connect(&direct).await.expect("connect");
    raw.create_user("Wendy", None).await;
    people.push(person("wendy", "finance", "Active"));
    let users_before = raw.all("Users").await.len();
    let (_, errors) = try_sync_with(&connector, &org(&direct, &people), true).await;
    assert!(
        errors.iter().any(|(op, e)| op.identity.name == "wendy"
            && matches!(op.action, Action::CreateAccount { .. })
            && matches!(e, TargetError::Permanent(m) if m.contains("\"wendy\" is taken") && m.contains("letter case"))),
        "{errors:#?}"
    );
    assert_eq!(
        raw.all("Users").await.len(),
        users_before,
        "no look-alike account"
    );

    // With the SCIM defaults the department (enterprise extension) is owned too, and
    // django-scim2 answers 2xx and drops it: the update fails permanently, naming what it
    // does not keep, instead of passing for done (and the server is left as it was).
    let defaults = django.config(NS, "saas", "", "", "Disable");
    let connector = Scim::connect(&defaults).await.expect("connect");
    let (plan, errors) = try_sync_with(&connector, &org(&defaults, &people[..2]), true).await;
    assert!(
        steps(&plan).contains(&"ona updateAttributes".to_string()),
        "{:?}",
        steps(&plan)
    );
    assert!(
        errors.iter().any(|(op, e)| op.identity.name == "ona"
            && matches!(op.action, Action::UpdateAttributes { .. })
            && matches!(e, TargetError::Permanent(m) if m.contains("does not keep this attribute"))),
        "{errors:#?}"
    );
}

#[tokio::test]
async fn a_post_whose_answer_is_lost_is_not_sent_again() {
    // Every POST reaches the server and is carried out, but the answer is replaced by a 502.
    for (prefix, extra) in [("lostpost", "bulk: false"), ("lostbulk", "")] {
        let tenant = peer().tenant(prefix);
        let config = proxy().config(NS, &tenant, extra);
        let connector = Scim::connect(&config).await.expect("connect");
        let joined = org(
            &config,
            &[
                person("uma", "finance", "Active"),
                person("vic", "engineering", "Active"),
            ],
        );
        let errors = sync_until_clean(&connector, &joined, true, 8).await;
        assert!(!errors.is_empty(), "{prefix}: the faults were met");
        for e in &errors {
            assert!(
                e.contains("502") && e.contains("not retried"),
                "{prefix}: {e}"
            );
        }
        assert!(
            sync(&connector, &joined).await.is_empty(),
            "{prefix}: converged"
        );
        let raw = Raw::new(peer(), &tenant);
        assert_eq!(raw.members("staff").await, ["uma", "vic"], "{prefix}");
        assert_eq!(
            raw.all("Users").await.len(),
            2,
            "{prefix}: no duplicate user"
        );
        let mut groups: Vec<String> = raw
            .all("Groups")
            .await
            .iter()
            .map(|g| g["displayName"].as_str().unwrap_or_default().to_string())
            .collect();
        groups.sort();
        assert_eq!(groups, ["engineering", "finance", "staff"], "{prefix}");
        // Each POST reached the server once: none was sent again after its lost answer.
        let posts = peer()
            .log()
            .lines()
            .filter(|l| l.contains(&format!("\"POST /{tenant}/v2/")))
            .map(str::to_string)
            .collect::<Vec<_>>();
        assert!(!posts.is_empty(), "{prefix}: the log shows the POSTs");
        assert!(
            posts.len() <= errors.len(),
            "{prefix}: {posts:#?} for {errors:#?}"
        );
    }
}

#[tokio::test]
async fn a_batch_keeps_plan_order_around_an_account_the_cache_does_not_know() {
    use gatehouse::api::EntitlementRef;
    use gatehouse::plan::Operation;
    use std::sync::Arc;
    let (connector, raw, config) = setup(peer(), "order", "", "Disable").await;
    assert!(connector.features().bulk.is_some());
    let tenant = config
        .spec
        .scim
        .as_ref()
        .unwrap()
        .url
        .rsplit('/')
        .nth(1)
        .unwrap()
        .to_string();
    let people = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .map(|n| person(n, "finance", "Active"))
            .collect()
    };
    // o1 and o3 are synced; o2 and o4 are made behind gatehouse's back after an
    // observation, so the cache does not know them and a batch must look them up on the way.
    sync(&connector, &org(&config, &people(&["o1", "o3"]))).await;
    let all = org(&config, &people(&["o1", "o2", "o3", "o4"]));
    let subjects = subjects(&all);
    let op = |name: &str, action: Action| Operation {
        identity: Arc::new(IdentityKey::new(NS, name)),
        target: "saas".into(),
        action,
        leaver: false,
        sources: Default::default(),
    };
    let audit = Action::Grant {
        entitlement: Arc::new(EntitlementRef {
            target: "saas".into(),
            kind: None,
            namespace: None,
            name: "audit".into(),
        }),
    };
    for (late, action, write) in [
        ("o2", audit, format!("\"PATCH /{tenant}/v2/Groups/")),
        (
            "o4",
            Action::DisableAccount,
            format!("\"POST /{tenant}/v2/Bulk"),
        ),
    ] {
        connector.observe(&subjects).await.expect("observe");
        raw.create_user(late, Some(&format!("acme/{late}"))).await;
        let ops: Vec<Operation> = ["o1", late, "o3"]
            .iter()
            .map(|n| op(n, action.clone()))
            .collect();
        let pairs: Vec<_> = ops.iter().map(|o| (o, &subjects[&o.identity])).collect();
        let before = peer().log().lines().count();
        let results = connector.apply_batch(&pairs).await;
        for (o, r) in ops.iter().zip(&results) {
            assert!(matches!(r, Ok(Applied::Done)), "{o:?}: {r:?}");
        }
        // In the server's log: o1's change, then the lookup of the late account, then o3's
        // (the server writes a line after its answer: read until the last one is there).
        harness::eventually(
            &format!("{late}: o1 changed before the lookup, o3 after, in the server's log"),
            std::time::Duration::from_secs(10),
            || async {
                let log = peer().log();
                let lines: Vec<&str> = log
                    .lines()
                    .skip(before)
                    .filter(|l| l.contains(&format!("/{tenant}/v2/")))
                    .collect();
                let lookup = lines
                    .iter()
                    .position(|l| l.contains(&format!("\"GET /{tenant}/v2/Users?")))
                    .ok_or_else(|| format!("{late} not looked up yet: {lines:#?}"))?;
                let writes: Vec<usize> = (0..lines.len())
                    .filter(|&i| lines[i].contains(&write))
                    .collect();
                if writes.first().is_some_and(|&w| w < lookup)
                    && writes.last().is_some_and(|&w| w > lookup)
                {
                    Ok(())
                } else {
                    Err(format!("{lines:#?}"))
                }
            },
        )
        .await;
    }
    assert_eq!(raw.members("audit").await, ["o1", "o2", "o3"]);
    for name in ["o1", "o3", "o4"] {
        assert_eq!(raw.user(name).await.unwrap()["active"], false, "{name}");
    }
}

#[tokio::test]
async fn broken_answers_are_clear_errors_not_panics() {
    // A gateway that is down: transient, after bounded retries, with the status.
    let config = proxy().config(NS, &peer().tenant("down"), "");
    let error = Scim::connect(&config).await.err().expect("down");
    assert!(
        matches!(&error, TargetError::Transient(m) if m.contains("502") && m.contains("bad gateway")),
        "{error:?}"
    );

    // Malformed JSON where a list should be: a permanent error naming the request.
    let config = proxy().config(NS, &peer().tenant("garbage"), "");
    let connector = Scim::connect(&config).await.expect("connect");
    let snapshot = org(&config, &[person("olga", "finance", "Active")]);
    let error = connector.observe(&subjects(&snapshot)).await.unwrap_err();
    assert!(
        matches!(&error, TargetError::Permanent(m) if m.contains("GET Groups") && m.contains("not the expected SCIM JSON")),
        "{error:?}"
    );

    // A server slower than spec.scim.timeoutSeconds: transient, after bounded retries.
    let config = proxy().config(NS, &peer().tenant("slow"), "timeoutSeconds: 1");
    let started = std::time::Instant::now();
    let error = Scim::connect(&config).await.err().expect("too slow");
    assert!(
        matches!(&error, TargetError::Transient(m) if m.contains("timed out")),
        "{error:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // An account name the server would take but no one can use: refused per operation.
    let (connector, _, config) = setup(peer(), "badvalue", "", "Disable").await;
    let snapshot = org(&config, &[person("pia", "finance", "Active")]);
    let mut subjects = subjects(&snapshot);
    let (_, plan) = observe_and_plan(&connector, &snapshot).await;
    let create = &plan.operations[0];
    subjects.get_mut(&create.identity).unwrap().account = String::new();
    let error = connector
        .apply(create, &subjects[&create.identity])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TargetError::Permanent(m) if m.contains("account name") && m.contains("acme/pia")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_bulk_batch_settles_each_operation_on_its_own() {
    let (connector, raw, config) = setup(peer(), "bulkmix", "", "Disable").await;
    assert!(connector.features().bulk.is_some());
    // One account half created before (adopted), one name taken by a stranger (fails alone).
    raw.create_user("q1", Some("acme/q1")).await;
    raw.create_user("q2", Some("hr/q2")).await;
    let people: Vec<String> = (0..6)
        .map(|i| person(&format!("q{i}"), "finance", "Active"))
        .collect();
    let snapshot = org(&config, &people);
    let subjects = subjects(&snapshot);
    let (_, plan) = observe_and_plan(&connector, &snapshot).await;
    let pairs: Vec<_> = plan
        .operations
        .iter()
        .map(|op| (op, &subjects[&op.identity]))
        .collect();
    let results = connector.apply_batch(&pairs).await;
    assert_eq!(results.len(), pairs.len());
    for ((op, _), result) in pairs.iter().zip(&results) {
        if op.identity.name == "q2" {
            assert!(
                matches!(
                    result,
                    Err(TargetError::Permanent(_)) | Err(TargetError::Transient(_))
                ),
                "{op:?}: {result:?}"
            );
        } else {
            assert!(matches!(result, Ok(Applied::Done)), "{op:?}: {result:?}");
        }
    }
    let create_q2 = pairs
        .iter()
        .zip(&results)
        .find(|((op, _), _)| op.identity.name == "q2" && op.action.name() == "createAccount")
        .unwrap()
        .1;
    assert!(
        matches!(create_q2, Err(TargetError::Permanent(m)) if m.contains("hr/q2")),
        "{create_q2:?}"
    );
    assert_eq!(raw.members("finance").await, ["q0", "q1", "q3", "q4", "q5"]);
    assert_eq!(raw.all("Users").await.len(), 6, "nothing duplicated");
    assert_eq!(
        raw.user("q2").await.unwrap()["externalId"],
        "hr/q2",
        "untouched"
    );
}

#[tokio::test]
async fn the_controller_reaches_scim_through_any_connector() {
    use gatehouse::targets::AnyConnector;
    // The local cluster is not used by SCIM targets: a client that points nowhere will do.
    let nowhere = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let local = kube::Client::try_from(nowhere).unwrap();
    let tenant = peer().tenant("any");
    let config = peer().config(NS, "saas", &tenant, "", "Disable");
    let connector = AnyConnector::connect(&local, &config)
        .await
        .expect("connect");
    assert!(matches!(connector, AnyConnector::Scim(_)));
    let snapshot = org(&config, &[person("rita", "finance", "Active")]);
    let subjects = subjects(&snapshot);
    let observed = connector.observe(&subjects).await.unwrap();
    let desired =
        Engine::new(&snapshot, Settings::default()).evaluate(NOW.parse().unwrap(), &observed.held);
    let plan = plan(&observed.held, &desired);
    let pairs: Vec<_> = plan
        .operations
        .iter()
        .map(|op| (op, &subjects[&op.identity]))
        .collect();
    let results = connector.apply_batch(&pairs).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(connector.capabilities().disable && connector.capabilities().delete);
    assert_eq!(Raw::new(peer(), &tenant).members("finance").await, ["rita"]);
}

/// A person with a full HR record: display name, e-mail, title, department, manager, cost
/// centre and employee number.
fn staffer(name: &str, display: &str, dept: &str, title: &str, manager: &str) -> String {
    format!(
        "name: {name}}}\nspec: {{type: Human, displayName: \"{display}\", email: \"{name}@acme.example\", attributes: {{costCenter: \"CC-{dept}\", employeeId: \"E-{name}\"}}, employment: {{status: Active, department: {dept}, title: \"{title}\", manager: {manager}}}}}"
    )
}

fn patch_op(ops: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

fn id_of(user: &serde_json::Value) -> String {
    user["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn attributes_flow_joiner_mover_drift_and_unowned_untouched() {
    let (connector, raw, config) = setup(peer(), "attrs", "", "Disable").await;
    // Joiner with a manager who joins in the same plan: both created (in Bulk) with their
    // text attributes, then the reference, once the manager has an id.
    let mut people = vec![
        staffer("boss", "Big Boss", "finance", "CFO", "boss"),
        staffer("ann", "Ann Lee", "finance", "Analyst", "boss"),
    ];
    let joined = org(&config, &people);
    let plan = sync_with(&connector, &joined, true).await;
    let s = steps(&plan);
    assert_eq!(
        &s[..3],
        [
            "ann createAccount",
            "boss createAccount",
            "ann updateAttributes"
        ],
        "{s:?}"
    );
    let boss = raw.user("boss").await.unwrap();
    let ann = raw.user("ann").await.unwrap();
    assert_eq!(ann["displayName"], "Ann Lee");
    assert_eq!(ann["name"]["givenName"], "Ann");
    assert_eq!(ann["name"]["familyName"], "Lee");
    assert_eq!(
        ann["emails"],
        serde_json::json!([{"value": "ann@acme.example", "type": "work", "primary": true}])
    );
    assert_eq!(ann["title"], "Analyst");
    assert!(
        ann["schemas"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(ENTERPRISE)),
        "{ann}"
    );
    let ext = &ann[ENTERPRISE];
    assert_eq!(ext["department"], "finance");
    assert_eq!(ext["costCenter"], "CC-finance");
    assert_eq!(ext["employeeNumber"], "E-ann");
    assert_eq!(ext["manager"]["value"], boss["id"], "the manager's id");
    assert!(
        boss[ENTERPRISE].get("manager").is_none(),
        "no self-reference"
    );
    // Read back exactly as written: nothing to do, and the reference is the account.
    let (observed, plan) = observe_and_plan(&connector, &joined).await;
    assert!(plan.is_empty(), "{:?}", steps(&plan));
    let held = &observed.held.identities[&IdentityKey::new(NS, "ann")].attributes["saas"];
    assert_eq!(
        serde_json::to_value(&held[&format!("{ENTERPRISE}:manager")]).unwrap(),
        serde_json::json!({"account": "boss"})
    );
    assert!(!held.contains_key("nickName"));

    // Attributes gatehouse does not own, set by hand, are never read nor touched.
    let ann_id = id_of(&ann);
    let (status, _, _) = raw
        .call(
            Method::PATCH,
            &format!("Users/{ann_id}"),
            Some(patch_op(serde_json::json!([
                {"op": "replace", "path": "nickName", "value": "annie"},
                {"op": "replace", "path": "userType", "value": "Contractor"},
                {"op": "add", "path": "emails", "value": [{"value": "ann@home.example", "type": "home"}]}
            ]))),
            None,
        )
        .await;
    assert!(status < 300);
    assert!(
        sync(&connector, &joined).await.is_empty(),
        "unowned changes plan nothing"
    );

    // Mover: new title, department and manager (who joins in the same plan), with the
    // access change, in one plan: revocation, creation, attributes, grants.
    people[1] = staffer("ann", "Ann Lee", "engineering", "Lead Engineer", "cat");
    people.push(staffer("cat", "Cat Ng", "engineering", "CTO", "cat"));
    let moved = org(&config, &people);
    let s = steps(&sync_with(&connector, &moved, true).await);
    let at = |step: &str| {
        s.iter()
            .position(|x| x == step)
            .unwrap_or_else(|| panic!("{step}: {s:?}"))
    };
    assert!(at("ann -finance") < at("cat createAccount"));
    assert!(at("cat createAccount") < at("ann updateAttributes"));
    assert!(at("ann updateAttributes") < at("ann +engineering"));
    let cat = raw.user("cat").await.unwrap();
    let ann = raw.user("ann").await.unwrap();
    assert_eq!(ann["title"], "Lead Engineer");
    assert_eq!(ann[ENTERPRISE]["department"], "engineering");
    assert_eq!(ann[ENTERPRISE]["costCenter"], "CC-engineering");
    assert_eq!(ann[ENTERPRISE]["manager"]["value"], cat["id"]);
    assert_eq!(ann["nickName"], "annie", "unowned, untouched");
    assert_eq!(ann["userType"], "Contractor", "unowned, untouched");
    assert_eq!(
        ann["emails"],
        serde_json::json!([{"value": "ann@acme.example", "type": "work", "primary": true},
                           {"value": "ann@home.example", "type": "home"}]),
        "the home e-mail is not gatehouse's"
    );
    assert!(sync(&connector, &moved).await.is_empty(), "converged");
    // Re-read alone, ann's manager still reads back as the account it names.
    assert!(
        reread::agrees(&connector, &subjects(&moved), &reread::keys(NS, &["ann"])).await,
        "re-read account by account"
    );

    // Drift on an owned attribute, by hand: repaired by the next pass, and only that.
    let (status, _, _) = raw
        .call(
            Method::PATCH,
            &format!("Users/{ann_id}"),
            Some(patch_op(
                serde_json::json!([{"op": "replace", "path": "title", "value": "Intern"},
                                   {"op": "remove", "path": format!("{ENTERPRISE}:costCenter")}]),
            )),
            None,
        )
        .await;
    assert!(status < 300);
    let (_, plan) = observe_and_plan(&connector, &moved).await;
    match &plan.operations[..] {
        [op] => match &op.action {
            Action::UpdateAttributes { changes } => {
                let text: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
                assert_eq!(
                    text,
                    [
                        "title: \"Intern\" → \"Lead Engineer\"".to_string(),
                        format!("{ENTERPRISE}:costCenter: (unset) → \"CC-engineering\"")
                    ]
                );
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    sync(&connector, &moved).await;
    let ann = raw.user("ann").await.unwrap();
    assert_eq!(ann["title"], "Lead Engineer");
    assert_eq!(ann[ENTERPRISE]["costCenter"], "CC-engineering");
    assert_eq!(ann["nickName"], "annie");
    assert!(sync(&connector, &moved).await.is_empty(), "converged");

    // An attribute the record no longer has is removed (the title), the rest stays.
    people[1] = staffer("ann", "Ann Lee", "engineering", "", "cat");
    let untitled = org(&config, &people);
    assert_eq!(
        steps(&sync(&connector, &untitled).await),
        ["ann updateAttributes"]
    );
    let ann = raw.user("ann").await.unwrap();
    assert!(ann.get("title").is_none(), "{ann}");
    assert!(sync(&connector, &untitled).await.is_empty(), "converged");
}

#[tokio::test]
async fn a_manager_without_an_account_yet_is_a_transient_error() {
    let (connector, _raw, config) = setup(peer(), "nomgr", "bulk: false", "Disable").await;
    let people = [
        staffer("dan", "Dan Oh", "finance", "Clerk", "dan"),
        staffer("eve", "Eve Ma", "finance", "Clerk", "dan"),
    ];
    let snapshot = org(&config, &people);
    let subjects = subjects(&snapshot);
    let (_, plan) = observe_and_plan(&connector, &snapshot).await;
    // Only eve's steps: dan's account is never created.
    let mut errors = Vec::new();
    for op in plan
        .operations
        .iter()
        .filter(|op| op.identity.name == "eve")
    {
        if let Err(e) = connector.apply(op, &subjects[&op.identity]).await {
            errors.push((op.action.name(), e));
        }
    }
    match &errors[..] {
        [(name, TargetError::Transient(m))] => {
            assert_eq!(*name, "updateAttributes");
            assert!(
                m.contains("the account dan") && m.contains("does not exist on saas yet"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn users_that_refuse_patch_get_attributes_by_put_keeping_what_is_not_owned() {
    // The front answers 405 to any PATCH of a user: attributes (and `active`) change by a
    // read-modify-write PUT of the resource as the server has it, under If-Match; the
    // refusal is learned once.
    let tenant = peer().tenant("nouserpatch");
    let config = proxy().config(NS, &tenant, "bulk: false");
    let connector = Scim::connect(&config).await.expect("connect");
    let raw = Raw::new(peer(), &tenant);
    let mut people = vec![staffer("fay", "Fay Wu", "finance", "Clerk", "fay")];
    sync(&connector, &org(&config, &people)).await;
    let fay = raw.user("fay").await.unwrap();
    let fay_id = id_of(&fay);
    let (status, _, _) = raw
        .call(
            Method::PATCH,
            &format!("Users/{fay_id}"),
            Some(patch_op(serde_json::json!([
                {"op": "replace", "path": "nickName", "value": "fifi"},
                {"op": "add", "path": "phoneNumbers", "value": [{"value": "+1 555", "type": "work"}]}
            ]))),
            None,
        )
        .await;
    assert!(status < 300);

    people[0] = staffer("fay", "Fay Wu-Li", "engineering", "Engineer", "fay");
    let moved = org(&config, &people);
    let s = steps(&sync(&connector, &moved).await);
    assert_eq!(
        s,
        ["fay -finance", "fay updateAttributes", "fay +engineering"]
    );
    let fay = raw.user("fay").await.unwrap();
    assert_eq!(fay["displayName"], "Fay Wu-Li");
    assert_eq!(fay["name"]["familyName"], "Wu-Li");
    assert_eq!(fay["title"], "Engineer");
    assert_eq!(fay[ENTERPRISE]["department"], "engineering");
    assert_eq!(fay["nickName"], "fifi", "kept as the server had it");
    assert_eq!(fay["phoneNumbers"][0]["value"], "+1 555");
    assert_eq!(fay["externalId"], "acme/fay");
    assert!(sync(&connector, &moved).await.is_empty(), "converged");
    // Once more, after the lesson: straight to PUT.
    people[0] = staffer("fay", "Fay Wu-Li", "engineering", "Staff Engineer", "fay");
    sync(&connector, &org(&config, &people)).await;
    assert_eq!(raw.user("fay").await.unwrap()["title"], "Staff Engineer");

    let requests = proxy().requests(&tenant);
    let user_patches: Vec<&String> = requests
        .iter()
        .filter(|l| l.starts_with("PATCH") && l.contains("/Users/"))
        .collect();
    assert_eq!(user_patches.len(), 1, "refused once: {requests:#?}");
    assert!(user_patches[0].ends_with(" 405"));
    let puts = requests
        .iter()
        .filter(|l| l.starts_with("PUT") && l.contains("/Users/"))
        .count();
    assert_eq!(puts, 2, "{requests:#?}");
}

#[tokio::test]
async fn a_refused_filtered_email_path_falls_back_to_put_for_the_email_only() {
    // The front refuses `emails[type eq "work"]…` paths (400 invalidPath): an e-mail
    // change goes by PUT from then on; other attributes keep PATCH.
    let tenant = peer().tenant("noemailpath");
    let config = proxy().config(NS, &tenant, "bulk: false");
    let connector = Scim::connect(&config).await.expect("connect");
    let raw = Raw::new(peer(), &tenant);
    let gil = |email: &str, title: &str| {
        format!(
            "name: gil}}\nspec: {{type: Human, displayName: \"Gil Ro\", email: \"{email}\", employment: {{status: Active, department: finance, title: \"{title}\", manager: gil}}}}"
        )
    };
    sync(
        &connector,
        &org(&config, &[gil("gil@acme.example", "Clerk")]),
    )
    .await;
    for (email, title) in [
        ("gil.ro@acme.example", "Clerk"),
        ("gil.ro@acme.example", "Senior Clerk"),
        ("g@acme.example", "Senior Clerk"),
    ] {
        let snapshot = org(&config, &[gil(email, title)]);
        assert_eq!(
            steps(&sync(&connector, &snapshot).await),
            ["gil updateAttributes"]
        );
        let user = raw.user("gil").await.unwrap();
        assert_eq!(
            user["emails"],
            serde_json::json!([{"value": email, "type": "work", "primary": true}])
        );
        assert_eq!(user["title"], title);
        assert!(sync(&connector, &snapshot).await.is_empty(), "converged");
    }
    let requests = proxy().requests(&tenant);
    let of = |method: &str| -> Vec<&String> {
        requests
            .iter()
            .filter(|l| l.starts_with(method) && l.contains("/Users/"))
            .collect()
    };
    let patches = of("PATCH");
    assert_eq!(patches.len(), 2, "{requests:#?}");
    assert!(patches[0].ends_with(" 400"), "the refused e-mail path");
    assert!(patches[1].ends_with(" 204"), "the title by PATCH");
    assert_eq!(of("PUT").len(), 2, "each e-mail change by PUT");
}
