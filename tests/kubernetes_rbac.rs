//! The Kubernetes RBAC connector against a real kube-apiserver, driven the way the
//! controller will drive it: evaluate, observe, plan, apply; then once more to prove the
//! second pass has nothing to do.

mod harness;

use std::collections::BTreeMap;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::engine::{AccountIntent, Engine, IdentityKey, NothingHeld, Settings, Snapshot};
use gatehouse::plan::{Action, Plan, plan};
use gatehouse::targets::kubernetes::KubernetesRbac;
use gatehouse::targets::{Applied, Connector, Reread, Subject};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

const NOW: &str = "2026-12-01T09:00:00Z";

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A tenant with a `k8s` target and two policies: finance gets `view` cluster-wide and
/// `deployer` in the apps namespace; engineering gets `edit`.
fn org(ns: &str, apps: &str, people: &[&str]) -> Snapshot {
    let target: TargetSystem = yaml(&format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {{name: k8s, namespace: {ns}}}\nspec: {{type: Kubernetes, onLeave: Delete}}"
    ));
    let policy = |name: &str, dept: &str, ents: &str| -> AccessPolicy {
        yaml(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{matchAttributes: {{department: {dept}}}}}, entitlements: {ents}}}"
        ))
    };
    Snapshot {
        targets: vec![target],
        policies: vec![
            policy("finance", "finance", &format!("[{{target: k8s, kind: ClusterRole, name: view}}, {{target: k8s, kind: Role, namespace: {apps}, name: deployer}}]")),
            policy("engineering", "engineering", "[{target: k8s, kind: ClusterRole, name: edit}]"),
        ],
        identities: people
            .iter()
            .map(|spec| yaml::<Identity>(&format!("apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{namespace: {ns}, {spec}")))
            .collect(),
        exceptions: vec![],
        ..Default::default()
    }
}

/// One reconcile of the `k8s` target: observe, plan against what is held, apply in order.
async fn sync(client: &Client, ns: &str, snapshot: &Snapshot) -> Plan {
    let now = NOW.parse().unwrap();
    let engine = Engine::new(snapshot, Settings::default());
    let first = engine.evaluate(now, &NothingHeld);
    let subjects: BTreeMap<IdentityKey, Subject> = first
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
        .collect();
    let connector = KubernetesRbac::new(client.clone(), ns, "k8s");
    let observed = connector.observe(&subjects).await.expect("observe").held;
    let desired = engine.evaluate(now, &observed);
    let plan = plan(&observed, &desired);
    for op in &plan.operations {
        let subject = subjects
            .get(&op.identity)
            .cloned()
            .expect("test identities stay in the snapshot");
        let outcome = connector
            .apply(op, &subject)
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
        if outcome == Applied::Unsupported {
            assert!(
                matches!(
                    op.action,
                    Action::CreateAccount { .. } | Action::RevokeSessions
                ),
                "only user accounts and sessions are outside RBAC: {op:?}"
            );
        }
    }
    plan
}

/// A fresh tenant namespace and a namespace for its Roles.
async fn tenant(prefix: &str) -> (Client, String, String) {
    let client = harness::client().await;
    let ns = harness::namespace(&client, prefix).await;
    let apps = harness::namespace(&client, "apps").await;
    (client, ns, apps)
}

fn entitlement(kind: &str, namespace: Option<&str>, name: &str) -> gatehouse::api::EntitlementRef {
    gatehouse::api::EntitlementRef {
        target: "k8s".into(),
        kind: Some(kind.into()),
        namespace: namespace.map(str::to_string),
        name: name.into(),
    }
}

fn steps(plan: &Plan) -> Vec<String> {
    plan.operations
        .iter()
        .map(|op| match &op.action {
            Action::Grant { entitlement } => format!("{} +{entitlement}", op.identity.name),
            Action::Revoke { entitlement } => format!("{} -{entitlement}", op.identity.name),
            other => format!("{} {other:?}", op.identity.name),
        })
        .collect()
}

async fn crb_subjects(client: &Client, name: &str) -> Option<Vec<String>> {
    let b = Api::<ClusterRoleBinding>::all(client.clone())
        .get_opt(name)
        .await
        .unwrap()?;
    Some(
        b.subjects
            .unwrap_or_default()
            .into_iter()
            .map(|s| format!("{}:{}", s.kind, s.name))
            .collect(),
    )
}

fn alice(dept: &str, status: &str) -> String {
    format!(
        "name: alice}}\nspec: {{type: Human, employment: {{status: {status}, department: {dept}, manager: alice}}}}"
    )
}

#[tokio::test]
async fn joiner_mover_on_leave_and_leaver() {
    let (client, ns, apps) = tenant("rbac").await;
    let connector = KubernetesRbac::new(client.clone(), &ns, "k8s");
    let view = connector.binding_name("alice", &entitlement("ClusterRole", None, "view"));
    let edit = connector.binding_name("alice", &entitlement("ClusterRole", None, "edit"));
    let deployer = connector.binding_name("alice", &entitlement("Role", Some(&apps), "deployer"));
    let role_bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &apps);

    // Joiner: both bindings appear for the User; the second pass has nothing to do.
    let joined = org(&ns, &apps, &[&alice("finance", "Active")]);
    let first = sync(&client, &ns, &joined).await;
    assert_eq!(
        steps(&first).iter().filter(|s| s.contains('+')).count(),
        2,
        "{:?}",
        steps(&first)
    );
    assert_eq!(
        crb_subjects(&client, &view).await,
        Some(vec!["User:alice".to_string()])
    );
    assert!(role_bindings.get_opt(&deployer).await.unwrap().is_some());
    assert!(sync(&client, &ns, &joined).await.is_empty(), "converged");

    // Mover: the finance bindings go and the engineering one comes, revocations first.
    let moved = org(&ns, &apps, &[&alice("engineering", "Active")]);
    let mover = steps(&sync(&client, &ns, &moved).await);
    let first_grant = mover.iter().position(|s| s.contains('+')).unwrap();
    assert!(
        mover[..first_grant].iter().all(|s| !s.contains('+')),
        "{mover:?}"
    );
    assert_eq!(crb_subjects(&client, &view).await, None);
    assert!(role_bindings.get_opt(&deployer).await.unwrap().is_none());
    assert_eq!(
        crb_subjects(&client, &edit).await,
        Some(vec!["User:alice".to_string()])
    );
    assert!(sync(&client, &ns, &moved).await.is_empty(), "converged");

    // On leave: the binding stays, with nobody in it; back at work, alice is in it again.
    let away = org(&ns, &apps, &[&alice("engineering", "OnLeave")]);
    sync(&client, &ns, &away).await;
    assert_eq!(crb_subjects(&client, &edit).await, Some(vec![]));
    let again = steps(&sync(&client, &ns, &away).await);
    assert!(again.is_empty(), "converged while away: {again:?}");
    sync(&client, &ns, &moved).await;
    assert_eq!(
        crb_subjects(&client, &edit).await,
        Some(vec!["User:alice".to_string()])
    );

    // Leaver: every binding goes.
    let left = org(&ns, &apps, &[&alice("engineering", "Terminated")]);
    sync(&client, &ns, &left).await;
    assert_eq!(crb_subjects(&client, &edit).await, None);
    assert!(sync(&client, &ns, &left).await.is_empty(), "converged");
}

#[tokio::test]
async fn hand_edits_are_repaired_and_unmanaged_bindings_left_alone() {
    let (client, ns, apps) = tenant("drift").await;
    let connector = KubernetesRbac::new(client.clone(), &ns, "k8s");
    let snapshot = org(&ns, &apps, &[&alice("finance", "Active")]);
    sync(&client, &ns, &snapshot).await;
    let view = connector.binding_name("alice", &entitlement("ClusterRole", None, "view"));
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    // Someone adds mallory to alice's binding, and deletes the apps RoleBinding.
    crbs.patch(
        &view,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]})),
    )
    .await
    .unwrap();
    let role_bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &apps);
    for rb in role_bindings.list(&Default::default()).await.unwrap() {
        role_bindings
            .delete(&rb.metadata.name.unwrap(), &DeleteParams::default())
            .await
            .unwrap();
    }
    // An unmanaged binding in the same namespace.
    let unmanaged: RoleBinding = yaml(&format!(
        "metadata: {{name: hand-made, namespace: {apps}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}}\nsubjects: [{{kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}}]"
    ));
    role_bindings
        .create(&PostParams::default(), &unmanaged)
        .await
        .unwrap();

    let repair = steps(&sync(&client, &ns, &snapshot).await);
    let grants: Vec<&String> = repair.iter().filter(|s| s.contains('+')).collect();
    assert_eq!(
        grants.len(),
        2,
        "two grants restore the two edited entitlements: {repair:?}"
    );
    assert_eq!(
        crb_subjects(&client, &view).await,
        Some(vec!["User:alice".to_string()])
    );
    let left: Vec<String> = role_bindings
        .list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|b| b.metadata.name)
        .collect();
    assert!(
        left.contains(&"hand-made".to_string()) && left.len() == 2,
        "{left:?}"
    );
    assert!(sync(&client, &ns, &snapshot).await.is_empty(), "converged");
}

#[tokio::test]
async fn a_machine_gets_a_service_account_and_loses_it_with_its_tokens() {
    let (client, ns, apps) = tenant("machine").await;
    let bot = "name: bot}\nspec: {type: NonHuman, owner: alice, attributes: {department: finance}}";
    // The owner keeps department finance too; the bot matches the finance policy through its attribute.
    let owned = org(&ns, &apps, &[&alice("finance", "Active"), bot]);
    sync(&client, &ns, &owned).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    assert!(
        accounts.get_opt("bot").await.unwrap().is_some(),
        "the ServiceAccount is created"
    );
    let connector = KubernetesRbac::new(client.clone(), &ns, "k8s");
    let view = connector.binding_name("bot", &entitlement("ClusterRole", None, "view"));
    assert_eq!(
        crb_subjects(&client, &view).await,
        Some(vec!["ServiceAccount:bot".to_string()])
    );
    // A long-lived token for the bot, as a user would make one.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let token: Secret = yaml(
        "metadata: {name: bot-token, annotations: {kubernetes.io/service-account.name: bot}}\ntype: kubernetes.io/service-account-token",
    );
    secrets
        .create(&PostParams::default(), &token)
        .await
        .unwrap();

    // The owner leaves without an end date: no grace, the bot's access goes at once.
    let orphaned = org(&ns, &apps, &[&alice("finance", "Terminated"), bot]);
    sync(&client, &ns, &orphaned).await;
    assert_eq!(crb_subjects(&client, &view).await, None);
    assert!(
        accounts.get_opt("bot").await.unwrap().is_none(),
        "onLeave: Delete removes the ServiceAccount"
    );
    assert!(
        secrets.get_opt("bot-token").await.unwrap().is_none(),
        "its token Secret is gone"
    );
    assert!(sync(&client, &ns, &orphaned).await.is_empty(), "converged");
}

#[tokio::test]
async fn a_role_in_a_namespace_that_does_not_exist_is_a_permanent_error_naming_it() {
    let (client, ns, _apps) = tenant("missing").await;
    let connector = KubernetesRbac::new(client.clone(), &ns, "k8s");
    let subject = Subject {
        identity: IdentityKey {
            namespace: ns.clone(),
            name: "alice".into(),
        },
        identity_type: gatehouse::api::IdentityType::Human,
        account: "alice".into(),
        enabled: true,
    };
    let op = gatehouse::plan::Operation {
        identity: std::sync::Arc::new(subject.identity.clone()),
        target: "k8s".into(),
        action: Action::Grant {
            entitlement: entitlement("Role", Some("no-such-namespace"), "deployer").into(),
        },
        leaver: false,
        sources: Default::default(),
    };
    let error = connector.apply(&op, &subject).await.expect_err("refused");
    assert!(
        matches!(&error, gatehouse::targets::TargetError::Permanent(m)
            if m.contains("404") && m.contains("no-such-namespace")),
        "not retried for ever: {error:?}"
    );
}

/// A targeted re-read returns exactly what a full observation says about the identities
/// asked for (a human with bindings, a machine with its ServiceAccount, someone with
/// nothing), and nothing about anyone else.
#[tokio::test]
async fn a_targeted_reread_agrees_with_the_full_observation_on_the_identities_asked_for() {
    let (client, ns, apps) = tenant("reread").await;
    let bob = "name: bob}\nspec: {type: Human, employment: {status: Active, department: engineering, manager: bob}}";
    let bot = "name: bot}\nspec: {type: NonHuman, owner: alice, attributes: {department: finance}}";
    let carol = "name: carol}\nspec: {type: Human, employment: {status: Active, department: sales, manager: carol}}";
    let snapshot = org(&ns, &apps, &[&alice("finance", "Active"), bob, bot, carol]);
    sync(&client, &ns, &snapshot).await;
    let subjects: BTreeMap<IdentityKey, Subject> = snapshot
        .identities
        .iter()
        .map(|i| {
            let key = IdentityKey::new(&ns, i.metadata.name.clone().unwrap());
            let subject = Subject {
                identity: key.clone(),
                identity_type: i.spec.type_,
                account: key.name.clone(),
                enabled: true,
            };
            (key, subject)
        })
        .collect();
    let connector = KubernetesRbac::new(client.clone(), &ns, "k8s");
    let full = connector.observe(&subjects).await.unwrap().held;
    let only: std::collections::BTreeSet<IdentityKey> = ["alice", "bot", "carol"]
        .into_iter()
        .map(|n| IdentityKey::new(&ns, n))
        .collect();
    let Reread::Accounts(part) = connector.observe_accounts(&subjects, &only).await.unwrap() else {
        panic!("the Kubernetes connector re-reads by label, not by listing everything");
    };
    let mut expected = full.clone();
    expected.identities.retain(|k, _| only.contains(k));
    assert_eq!(part, expected);
    assert!(
        part.identities
            .contains_key(&IdentityKey::new(&ns, "alice"))
    );
    assert!(part.identities.contains_key(&IdentityKey::new(&ns, "bot")));
    assert!(!part.identities.contains_key(&IdentityKey::new(&ns, "bob")));
}
