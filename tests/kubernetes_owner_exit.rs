//! The NHI owner-exit playbook on a real kube-apiserver: when a machine's owner leaves, the
//! token Secrets of its ServiceAccount and the Secrets gatehouse labelled as its own are
//! deleted at once (everything else is kept), the rotation is recorded on the
//! ServiceAccount and never repeated, and its bindings stay for the grace period.

mod harness;

use std::collections::BTreeMap;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::engine::{AccountIntent, Engine, IdentityKey, NothingHeld, Settings, Snapshot};
use gatehouse::plan::{Action, plan};
use gatehouse::targets::kubernetes::{KubernetesRbac, ROTATED};
use gatehouse::targets::{Applied, Connector, Subject};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Client;
use kube::api::{Api, PostParams};

const BEFORE: &str = "2026-06-01T00:00:00Z";
/// Olga's end date is 2026-06-12: she left at this instant.
const LEFT: &str = "2026-06-13T00:00:00Z";
const IN_GRACE: &str = "2026-06-15T12:00:00Z";
const AFTER_GRACE: &str = "2026-06-21T00:00:00Z";

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Tenant `ns` with target `k8s` (onLeave Disable), `olga` (leaving 2026-06-12) and two
/// machines she owns, `bot` and `other`, both granted ClusterRole `view`.
fn org(ns: &str, bot_owner: &str) -> Snapshot {
    let meta = |kind: &str, name: &str, spec: &str| {
        format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}"
        )
    };
    let target: TargetSystem = yaml(&meta(
        "TargetSystem",
        "k8s",
        "{type: Kubernetes, onLeave: Disable}",
    ));
    let policy: AccessPolicy = yaml(&meta(
        "AccessPolicy",
        "machines",
        "{selector: {matchAttributes: {type: NonHuman}}, entitlements: [{target: k8s, kind: ClusterRole, name: view}]}",
    ));
    let identity = |name: &str, spec: &str| -> Identity { yaml(&meta("Identity", name, spec)) };
    Snapshot {
        identities: vec![
            identity(
                "mgr",
                "{type: Human, employment: {status: Active, department: eng, manager: mgr}}",
            ),
            identity(
                "olga",
                "{type: Human, employment: {status: Active, department: eng, manager: mgr, endDate: '2026-06-12'}}",
            ),
            identity("bot", &format!("{{type: NonHuman, owner: {bot_owner}}}")),
            // Owned by someone who stays: never rotated.
            identity("other", "{type: NonHuman, owner: mgr}"),
        ],
        policies: vec![policy],
        exceptions: vec![],
        targets: vec![target],
        ..Default::default()
    }
}

/// Observe, plan at `now`, apply every step; returns the steps.
async fn sync(client: &Client, ns: &str, snapshot: &Snapshot, now: &str) -> Vec<String> {
    let now = now.parse().unwrap();
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
    let mut steps = Vec::new();
    for op in &plan(&observed, &desired).operations {
        let outcome = connector
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

async fn create_secret(secrets: &Api<Secret>, text: &str) {
    secrets
        .create(&PostParams::default(), &yaml(text))
        .await
        .unwrap_or_else(|e| panic!("{e}: {text}"));
}

async fn secret_names(secrets: &Api<Secret>) -> Vec<String> {
    let mut names: Vec<String> = secrets
        .list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    names.sort();
    names
}

async fn rotated_at(accounts: &Api<ServiceAccount>, name: &str) -> Option<String> {
    accounts
        .get(name)
        .await
        .unwrap()
        .metadata
        .annotations
        .and_then(|a| a.get(ROTATED).cloned())
}

#[tokio::test]
async fn owner_exit_deletes_the_machines_token_secrets_once_and_keeps_the_rest() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "owner-exit").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        sync(&client, &ns, &org(&ns, "olga"), BEFORE).await,
        [
            "bot createAccount",
            "other createAccount",
            "bot grant",
            "other grant"
        ]
    );
    let labels = |identity: &str| {
        format!(
            "{{app.kubernetes.io/managed-by: gatehouse, gatehouse.dev/tenant: {ns}, gatehouse.dev/target: k8s, gatehouse.dev/identity: {identity}}}"
        )
    };
    let token = "type: kubernetes.io/service-account-token";
    // The bot's: a legacy token and a Secret gatehouse labelled as the bot's.
    create_secret(&secrets, &format!("metadata: {{name: bot-token, annotations: {{kubernetes.io/service-account.name: bot}}}}\n{token}")).await;
    create_secret(
        &secrets,
        &format!(
            "metadata: {{name: bot-bound, labels: {}}}\nstringData: {{token: x}}",
            labels("bot")
        ),
    )
    .await;
    // Everything else stays: another machine's token and labelled Secret, a Secret merely
    // named after the bot, a labelled Secret of another target.
    create_secret(&secrets, &format!("metadata: {{name: other-token, annotations: {{kubernetes.io/service-account.name: other}}}}\n{token}")).await;
    create_secret(
        &secrets,
        &format!(
            "metadata: {{name: other-bound, labels: {}}}\nstringData: {{token: x}}",
            labels("other")
        ),
    )
    .await;
    create_secret(
        &secrets,
        "metadata: {name: bot-config}\nstringData: {url: x}",
    )
    .await;
    create_secret(&secrets, &format!("metadata: {{name: bot-elsewhere, labels: {{app.kubernetes.io/managed-by: gatehouse, gatehouse.dev/tenant: {ns}, gatehouse.dev/target: other-cluster, gatehouse.dev/identity: bot}}}}\nstringData: {{token: x}}")).await;

    // Olga has left: the bot's credentials are rotated, nothing else happens.
    assert_eq!(
        sync(&client, &ns, &org(&ns, "olga"), IN_GRACE).await,
        [format!("bot rotate {LEFT}")]
    );
    assert_eq!(
        secret_names(&secrets).await,
        ["bot-config", "bot-elsewhere", "other-bound", "other-token"]
    );
    assert_eq!(rotated_at(&accounts, "bot").await.as_deref(), Some(LEFT));
    assert_eq!(rotated_at(&accounts, "other").await, None);
    let connector = KubernetesRbac::new(client.clone(), &ns, "k8s");
    let view = gatehouse::api::EntitlementRef {
        target: "k8s".into(),
        kind: Some("ClusterRole".into()),
        namespace: None,
        name: "view".into(),
    };
    let binding = Api::<ClusterRoleBinding>::all(client.clone())
        .get(&connector.binding_name("bot", &view))
        .await
        .unwrap();
    assert_eq!(
        binding.subjects.unwrap_or_default().len(),
        1,
        "access is kept for the grace period"
    );

    // Observed as rotated: a token the new owner makes is not deleted again.
    assert!(
        sync(&client, &ns, &org(&ns, "olga"), IN_GRACE)
            .await
            .is_empty()
    );
    create_secret(&secrets, &format!("metadata: {{name: bot-token-2, annotations: {{kubernetes.io/service-account.name: bot}}}}\n{token}")).await;
    assert!(
        sync(&client, &ns, &org(&ns, "olga"), "2026-06-18T00:00:00Z")
            .await
            .is_empty()
    );
    assert!(secrets.get_opt("bot-token-2").await.unwrap().is_some());

    // Re-owned: kept past the grace, not rotated.
    assert!(
        sync(&client, &ns, &org(&ns, "mgr"), AFTER_GRACE)
            .await
            .is_empty()
    );

    // Not re-owned: after the grace the bot is disabled (its tokens go with it); the
    // rotation marker survives the ServiceAccount's server-side apply, so no rotation again.
    assert_eq!(
        sync(&client, &ns, &org(&ns, "olga"), AFTER_GRACE).await,
        ["bot disableAccount", "bot revokeSessions", "bot revoke"]
    );
    assert_eq!(rotated_at(&accounts, "bot").await.as_deref(), Some(LEFT));
    assert!(secrets.get_opt("bot-token-2").await.unwrap().is_none());
    assert!(
        sync(&client, &ns, &org(&ns, "olga"), AFTER_GRACE)
            .await
            .is_empty(),
        "converged"
    );
}

#[tokio::test]
async fn a_service_account_created_after_the_exit_is_born_rotated() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "owner-exit-late").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let first = sync(&client, &ns, &org(&ns, "olga"), IN_GRACE).await;
    assert_eq!(
        first,
        [
            "bot createAccount",
            "other createAccount",
            "bot grant",
            "other grant"
        ]
    );
    assert_eq!(rotated_at(&accounts, "bot").await.as_deref(), Some(LEFT));
    assert_eq!(rotated_at(&accounts, "other").await, None);
    assert!(
        sync(&client, &ns, &org(&ns, "olga"), IN_GRACE)
            .await
            .is_empty()
    );
}
