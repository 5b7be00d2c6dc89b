//! The chart's break-glass ValidatingAdmissionPolicy on a real kube-apiserver, with real
//! users (impersonation by the admin): only members of the break-glass group may create an
//! Exception outside Git, only with `spec.breakGlass: true`, naming themselves, without
//! forged provenance, and without changing it afterwards; the controller's ServiceAccount
//! applies any Exception. The objects come from `manifests/install.yaml` (the chart with
//! default values), so what is tested is what ships.
//!
//! And end to end through the controller (`gatehouse run` in process): a break-glass
//! Exception created by a member of the group grants at once (a ClusterRoleBinding
//! appears), and at its end the binding and the ServiceAccount's token Secrets are gone,
//! with Warning Events, the `gatehouse_break_glass_total` metric and ledger entries.

#[path = "harness/mod.rs"]
mod harness;

use std::time::Duration;

use gatehouse::api::{AccessPolicy, Exception, Identity, TargetSystem};
use gatehouse::controller::{Options, run};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
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

/// Installs the chart's admission policy and the break-glass group's RBAC.
async fn install_policy(admin: &Client) {
    apply_all::<ValidatingAdmissionPolicy>(admin, "ValidatingAdmissionPolicy").await;
    apply_all::<ValidatingAdmissionPolicyBinding>(admin, "ValidatingAdmissionPolicyBinding").await;
    apply_all::<ClusterRole>(admin, "ClusterRole").await;
    apply_all::<ClusterRoleBinding>(admin, "ClusterRoleBinding").await;
}

#[tokio::test]
async fn only_the_break_glass_group_creates_exceptions_outside_git() {
    let admin = harness::client().await;
    install_policy(&admin).await;
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

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// ClusterRoles bound for `identity` of tenant `ns`, sorted.
async fn bound(client: &Client, ns: &str, identity: &str) -> Vec<String> {
    let list = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&kube::api::ListParams::default().labels(&format!("gatehouse.dev/tenant={ns}")))
        .await
        .unwrap();
    let mut roles: Vec<String> = list
        .items
        .into_iter()
        .filter(|b| b.subjects.iter().flatten().any(|s| s.name == identity))
        .map(|b| b.role_ref.name)
        .collect();
    roles.sort();
    roles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_grants_at_once_and_ends_with_its_sessions() {
    let admin = harness::client().await;
    install_policy(&admin).await;
    let ns = harness::namespace(&admin, "bg-run").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = Options {
        namespace: Some(ns.clone()),
        resync: Duration::from_secs(60),
        ..Options::default()
    };
    let metrics = options.metrics.clone();
    let controller = tokio::spawn(run(admin.clone(), options, async {
        let _ = stopped.await;
    }));
    let post = PostParams::default();
    Api::<TargetSystem>::namespaced(admin.clone(), &ns)
        .create(
            &post,
            &yaml(&format!(
                "metadata: {{name: k8s, namespace: {ns}}}\nspec: {{type: Kubernetes}}"
            )),
        )
        .await
        .unwrap();
    Api::<AccessPolicy>::namespaced(admin.clone(), &ns)
        .create(
            &post,
            &yaml(&format!(
                "metadata: {{name: machines, namespace: {ns}}}\nspec: {{selector: {{matchAttributes: {{type: NonHuman}}}}, entitlements: [{{target: k8s, kind: ClusterRole, name: view}}]}}"
            )),
        )
        .await
        .unwrap();
    let identities = Api::<Identity>::namespaced(admin.clone(), &ns);
    for text in [
        format!(
            "metadata: {{name: alice, namespace: {ns}}}\nspec: {{type: Human, employment: {{status: Active, department: ops, manager: alice}}}}"
        ),
        format!("metadata: {{name: svc, namespace: {ns}}}\nspec: {{type: NonHuman, owner: alice}}"),
    ] {
        identities.create(&post, &yaml(&text)).await.unwrap();
    }
    harness::eventually("the policy's binding", Duration::from_secs(60), || async {
        match bound(&admin, &ns, "svc").await {
            b if b == ["view"] => Ok(()),
            b => Err(format!("{b:?}")),
        }
    })
    .await;
    // A token the ServiceAccount holds: a session that must not outlive the break-glass.
    let token: Secret = yaml(&format!(
        "metadata: {{name: svc-token, namespace: {ns}, annotations: {{kubernetes.io/service-account.name: svc}}}}\ntype: kubernetes.io/service-account-token"
    ));
    let secrets = Api::<Secret>::namespaced(admin.clone(), &ns);
    secrets.create(&post, &token).await.unwrap();

    // ana of the break-glass group grants svc `edit` for 27 seconds, with kubectl's client.
    let ana = as_user("ana", &["gatehouse:break-glass", "system:authenticated"]).await;
    let from = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2);
    let until = from + jiff::SignedDuration::from_secs(27);
    let fmt = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let exc: Exception = serde_json::from_value(json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "Exception",
        "metadata": {"name": "bg", "namespace": ns,
                     "annotations": {"gatehouse.dev/break-glass-by": "ana"}},
        "spec": {"identity": "svc", "entitlements": [{"target": "k8s", "kind": "ClusterRole", "name": "edit"}],
                 "justification": "INC-9", "requestedBy": "alice", "approvedBy": [],
                 "validFrom": fmt(from), "expiresAt": fmt(until), "breakGlass": true}
    }))
    .unwrap();
    harness::eventually(
        "ana's break-glass Exception",
        Duration::from_secs(30),
        || async { create(&ana, &exc).await.map(drop) },
    )
    .await;
    harness::eventually(
        "the break-glass binding",
        Duration::from_secs(20),
        || async {
            match bound(&admin, &ns, "svc").await {
                b if b == ["edit", "view"] => Ok(()),
                b => Err(format!("{b:?}")),
            }
        },
    )
    .await;
    let exceptions = Api::<Exception>::namespaced(admin.clone(), &ns);
    let by = harness::eventually("status.breakGlass", Duration::from_secs(20), || async {
        let s = exceptions
            .get("bg")
            .await
            .map_err(|e| e.to_string())?
            .status;
        s.and_then(|s| s.break_glass)
            .and_then(|b| b.by)
            .ok_or_else(|| "no record yet".to_string())
    })
    .await;
    assert_eq!(by, "ana");
    assert!(secrets.get_opt("svc-token").await.unwrap().is_some());

    // At its end: the binding and the token go; the policy's binding stays.
    harness::eventually("the break-glass end", Duration::from_secs(60), || async {
        let roles = bound(&admin, &ns, "svc").await;
        let token = secrets
            .get_opt("svc-token")
            .await
            .map_err(|e| e.to_string())?;
        if roles == ["view"] && token.is_none() {
            Ok(())
        } else {
            Err(format!(
                "bound {roles:?}, token present: {}",
                token.is_some()
            ))
        }
    })
    .await;
    let status = harness::eventually("status Expired", Duration::from_secs(20), || async {
        let s = exceptions
            .get("bg")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        match s.phase.as_deref() {
            Some("Expired") => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let record = status.break_glass.unwrap();
    assert_eq!(record.outcome.as_deref(), Some("Expired"));
    assert!(
        record.activated_at.is_some() && record.ended_at.is_some(),
        "{record:?}"
    );

    let reasons = harness::eventually("the Warning Events", Duration::from_secs(20), || async {
        let events = Api::<Event>::namespaced(admin.clone(), &ns)
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut reasons: Vec<String> = events
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Exception"))
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.reason.clone())
            .collect();
        reasons.sort();
        if reasons.len() >= 2 {
            Ok(reasons)
        } else {
            Err(format!("{reasons:?}"))
        }
    })
    .await;
    assert_eq!(reasons, vec!["BreakGlassExpired", "BreakGlassUsed"]);
    let rendered = metrics.render();
    for event in ["activated", "expired"] {
        let series =
            format!("gatehouse_break_glass_total{{namespace=\"{ns}\",event=\"{event}\"}} 1");
        assert!(
            rendered.contains(&series),
            "missing {series} in:\n{rendered}"
        );
    }
    let ledger = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .get("gatehouse-break-glass")
        .await
        .expect("the ledger ConfigMap");
    let mut keys: Vec<String> = ledger.data.unwrap_or_default().into_keys().collect();
    keys.sort();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys[0].starts_with("bg.") && keys[0].ends_with(".activated"),
        "{keys:?}"
    );
    assert!(keys[1].ends_with(".expired"), "{keys:?}");

    let _ = stop.send(());
    controller.await.unwrap().unwrap();
}

/// Not ratified in time (`--break-glass-ratify` of 8 s here): revoked early, before its
/// window ends, with a `BreakGlassRevoked` Warning Event and the `revoked` metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unratified_break_glass_is_revoked_early() {
    let admin = harness::client().await;
    install_policy(&admin).await;
    let ns = harness::namespace(&admin, "bg-early").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut options = Options {
        namespace: Some(ns.clone()),
        resync: Duration::from_secs(60),
        ..Options::default()
    };
    options.settings.break_glass_ratify = jiff::SignedDuration::from_secs(8);
    let metrics = options.metrics.clone();
    let controller = tokio::spawn(run(admin.clone(), options, async {
        let _ = stopped.await;
    }));
    let post = PostParams::default();
    Api::<TargetSystem>::namespaced(admin.clone(), &ns)
        .create(
            &post,
            &yaml(&format!(
                "metadata: {{name: k8s, namespace: {ns}}}\nspec: {{type: Kubernetes}}"
            )),
        )
        .await
        .unwrap();
    Api::<Identity>::namespaced(admin.clone(), &ns)
        .create(
            &post,
            &yaml(&format!(
                "metadata: {{name: alice, namespace: {ns}}}\nspec: {{type: Human, employment: {{status: Active, department: ops, manager: alice}}}}"
            )),
        )
        .await
        .unwrap();
    let ana = as_user("ana", &["gatehouse:break-glass", "system:authenticated"]).await;
    let mut exc = exception(
        &ns,
        "bg",
        true,
        json!({"gatehouse.dev/break-glass-by": "ana"}),
        2,
    );
    exc.spec.entitlements = vec![yaml("{target: k8s, kind: ClusterRole, name: edit}")];
    exc.spec.valid_from = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    harness::eventually(
        "ana's break-glass Exception",
        Duration::from_secs(30),
        || async { create(&ana, &exc).await.map(drop) },
    )
    .await;
    harness::eventually(
        "the break-glass binding",
        Duration::from_secs(20),
        || async {
            match bound(&admin, &ns, "alice").await {
                b if b == ["edit"] => Ok(()),
                b => Err(format!("{b:?}")),
            }
        },
    )
    .await;
    harness::eventually("revoked early", Duration::from_secs(40), || async {
        let phase = Api::<Exception>::namespaced(admin.clone(), &ns)
            .get("bg")
            .await
            .map_err(|e| e.to_string())?
            .status
            .and_then(|s| s.phase);
        let roles = bound(&admin, &ns, "alice").await;
        if phase.as_deref() == Some("Revoked") && roles.is_empty() {
            Ok(())
        } else {
            Err(format!("phase {phase:?}, bound {roles:?}"))
        }
    })
    .await;
    let reasons = harness::eventually("the Warning Events", Duration::from_secs(20), || async {
        let events = Api::<Event>::namespaced(admin.clone(), &ns)
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut reasons: Vec<String> = events
            .items
            .iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.reason.clone())
            .filter(|r| r.starts_with("BreakGlass"))
            .collect();
        reasons.sort();
        if reasons.len() >= 2 {
            Ok(reasons)
        } else {
            Err(format!("{reasons:?}"))
        }
    })
    .await;
    assert_eq!(reasons, vec!["BreakGlassRevoked", "BreakGlassUsed"]);
    let series = format!("gatehouse_break_glass_total{{namespace=\"{ns}\",event=\"revoked\"}} 1");
    assert!(metrics.render().contains(&series), "missing {series}");
    let _ = stop.send(());
    controller.await.unwrap().unwrap();
}
