//! The chart's break-glass ValidatingAdmissionPolicy on a real kube-apiserver, with real
//! users (impersonation by the admin): only members of the break-glass group may create an
//! Exception outside Git, only with `spec.breakGlass: true`, naming themselves, without
//! forged provenance, and without changing it afterwards; the controller's ServiceAccount
//! applies any Exception. The objects come from `manifests/install.yaml` (the chart with
//! default values), so what is tested is what ships.

#[path = "harness/mod.rs"]
mod harness;

use std::time::Duration;

use gatehouse::api::Exception;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

/// The controller's user with the chart's default release (namespace gatehouse-system).
const CONTROLLER: &str = "system:serviceaccount:gatehouse-system:gatehouse";

/// Documents of `manifests/install.yaml` of `kind`.
fn shipped(kind: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/install.yaml"),
    )
    .expect("manifests/install.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .filter(|v: &Value| v["kind"] == kind)
        .collect()
}

async fn apply_all<K>(client: &Client, kind: &str)
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let api = Api::<K>::all(client.clone());
    let docs = shipped(kind);
    assert!(!docs.is_empty(), "install.yaml ships no {kind}");
    for doc in docs {
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        api.patch(
            &name,
            &PatchParams::apply("gatehouse-tests").force(),
            &Patch::Apply(&doc),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
    }
}

/// A client acting as `user` in `groups` (impersonated by the admin).
async fn as_user(user: &str, groups: &[&str]) -> Client {
    let plane = harness::control_plane();
    let kubeconfig = Kubeconfig::read_from(&plane.kubeconfig).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.into());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(config).unwrap()
}

fn exception(ns: &str, name: &str, break_glass: bool, notes: Value, hours: i64) -> Exception {
    let from = jiff::Timestamp::now();
    let until = from + jiff::SignedDuration::from_hours(hours);
    serde_json::from_value(json!({
        "apiVersion": "gatehouse.dev/v1alpha1",
        "kind": "Exception",
        "metadata": {"name": name, "namespace": ns, "annotations": notes},
        "spec": {
            "identity": "alice",
            "entitlements": [{"target": "pg", "name": "ledger_admin"}],
            "justification": "INC-7: ledger down",
            "requestedBy": "alice",
            "approvedBy": if break_glass { json!([]) } else { json!(["carol"]) },
            "validFrom": from.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "expiresAt": until.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "breakGlass": break_glass,
        }
    }))
    .unwrap()
}

/// Creates as `client`; `Err` carries the API server's message.
async fn create(client: &Client, exc: &Exception) -> Result<Exception, String> {
    let ns = exc.metadata.namespace.clone().unwrap();
    Api::<Exception>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), exc)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn only_the_break_glass_group_creates_exceptions_outside_git() {
    let admin = harness::client().await;
    apply_all::<ValidatingAdmissionPolicy>(&admin, "ValidatingAdmissionPolicy").await;
    apply_all::<ValidatingAdmissionPolicyBinding>(&admin, "ValidatingAdmissionPolicyBinding").await;
    apply_all::<ClusterRole>(&admin, "ClusterRole").await;
    apply_all::<ClusterRoleBinding>(&admin, "ClusterRoleBinding").await;
    // RBAC lets everyone here create and patch Exceptions (more than the chart gives the
    // group), so that what refuses them below is the admission policy, not RBAC.
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "bg-test-writer"},
        "rules": [{"apiGroups": ["gatehouse.dev"], "resources": ["exceptions"],
                   "verbs": ["get", "create", "patch", "update", "delete"]}]
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "bg-test-writer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bg-test-writer"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "devs"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "gatehouse:break-glass"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CONTROLLER},
        ]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let ns = harness::namespace(&admin, "bg-admission").await;

    let ana = as_user("ana", &["gatehouse:break-glass", "system:authenticated"]).await;
    let mallory = as_user("mallory", &["devs", "system:authenticated"]).await;
    let controller = as_user(
        CONTROLLER,
        &["system:serviceaccounts", "system:authenticated"],
    )
    .await;
    let by = |user: &str| json!({"gatehouse.dev/break-glass-by": user});

    // The policy is compiled and served a moment after it is created.
    harness::eventually(
        "the admission policy refuses an Exception outside Git",
        Duration::from_secs(30),
        || async {
            match create(&mallory, &exception(&ns, "probe", false, json!({}), 2)).await {
                Err(e) if e.contains("Exceptions come from Git") => Ok(()),
                Err(e) => Err(e),
                Ok(_) => {
                    let _ = Api::<Exception>::namespaced(admin.clone(), &ns)
                        .delete("probe", &DeleteParams::default())
                        .await;
                    Err("created".into())
                }
            }
        },
    )
    .await;

    // Refused: a member of another group, with or without breakGlass.
    let e = create(&mallory, &exception(&ns, "m1", true, by("mallory"), 2))
        .await
        .unwrap_err();
    assert!(
        e.contains("only members of group gatehouse:break-glass"),
        "{e}"
    );
    assert!(e.contains("mallory is not one"), "{e}");
    let e = create(&mallory, &exception(&ns, "m2", false, json!({}), 2))
        .await
        .unwrap_err();
    assert!(
        e.contains("only an Exception with spec.breakGlass=true"),
        "{e}"
    );

    // Refused: the group's member without breakGlass, naming nobody or someone else, or
    // forging the Git provenance or the source label.
    let e = create(&ana, &exception(&ns, "a1", false, by("ana"), 2))
        .await
        .unwrap_err();
    assert!(e.contains("come from Git"), "{e}");
    let e = create(&ana, &exception(&ns, "a2", true, json!({}), 2))
        .await
        .unwrap_err();
    assert!(e.contains("break-glass-by] to ana"), "{e}");
    let e = create(&ana, &exception(&ns, "a3", true, by("bob"), 2))
        .await
        .unwrap_err();
    assert!(e.contains("break-glass-by] to ana"), "{e}");
    let forged = json!({"gatehouse.dev/break-glass-by": "ana", "gatehouse.dev/commit": "0123abcd"});
    let e = create(&ana, &exception(&ns, "a4", true, forged, 2))
        .await
        .unwrap_err();
    assert!(e.contains("provenance annotations"), "{e}");
    let mut labelled = exception(&ns, "a5", true, by("ana"), 2);
    labelled.metadata.labels =
        Some([("gatehouse.dev/source".to_string(), "main".to_string())].into());
    let e = create(&ana, &labelled).await.unwrap_err();
    assert!(e.contains("gatehouse.dev/source label"), "{e}");
    // Refused by the CRD itself: longer than the 24h hard maximum.
    let e = create(&ana, &exception(&ns, "a6", true, by("ana"), 25))
        .await
        .unwrap_err();
    assert!(e.contains("lasts at most 24h"), "{e}");

    // Allowed: the member, breakGlass, naming herself; then the spec is frozen.
    let created = create(&ana, &exception(&ns, "bg", true, by("ana"), 2))
        .await
        .expect("ana creates a break-glass Exception");
    assert_eq!(
        created.metadata.annotations.unwrap()["gatehouse.dev/break-glass-by"],
        "ana"
    );
    let api = Api::<Exception>::namespaced(ana.clone(), &ns);
    let e = api
        .patch(
            "bg",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"justification": "longer"}})),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot be changed after creation"), "{e}");
    let e = api
        .patch(
            "bg",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"gatehouse.dev/break-glass-by": "bob"}}}),
            ),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("break-glass-by] to ana"), "{e}");
    api.delete("bg", &DeleteParams::default())
        .await
        .expect("the member may delete it");

    // The controller applies Exceptions from Git: ordinary ones, and it ratifies a
    // break-glass one by applying the Git copy with provenance over it.
    create(
        &controller,
        &exception(&ns, "from-git", false, json!({}), 2),
    )
    .await
    .expect("the controller applies an ordinary Exception");
    create(&ana, &exception(&ns, "bg2", true, by("ana"), 2))
        .await
        .unwrap();
    let ratified = json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "Exception",
        "metadata": {"name": "bg2", "namespace": ns,
            "labels": {"gatehouse.dev/source": "main"},
            "annotations": {"gatehouse.dev/commit": "0123abcd"}},
    });
    Api::<Exception>::namespaced(controller.clone(), &ns)
        .patch(
            "bg2",
            &PatchParams::apply("gatehouse-source").force(),
            &Patch::Apply(&ratified),
        )
        .await
        .expect("the controller stamps the Git provenance");
}
