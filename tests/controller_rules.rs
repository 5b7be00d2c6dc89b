//! The running controller against a real API server: time boundaries, separation of
//! duties, policy and target conditions, the blast-radius guard, and a target the
//! controller may not touch.

mod harness;

use std::time::Duration;

use base64::Engine as _;
use gatehouse::api::{AccessPolicy, Exception, Identity, TargetSystem};
use gatehouse::controller::{Options, run};
use harness::{apply, eventually, wait_for_condition};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};

/// Starts the controller on one namespace; stops it when the returned sender is dropped.
fn start(client: &Client, ns: &str) -> tokio::sync::oneshot::Sender<()> {
    start_at(client, ns, Default::default())
}

/// Starts the controller with its clock shifted by `offset`.
fn start_at(
    client: &Client,
    ns: &str,
    offset: jiff::SignedDuration,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = Options {
        namespace: Some(ns.to_string()),
        resync: Duration::from_secs(60),
        instance: Some("test".into()),
        clock_offset: offset,
        ..Options::default()
    };
    tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));
    stop
}

/// `identity -> role` for every ClusterRoleBinding of the tenant that has a subject, sorted.
async fn bindings(client: &Client, ns: &str) -> Vec<String> {
    let list = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&ListParams::default().labels(&format!("gatehouse.dev/tenant={ns}")))
        .await
        .unwrap();
    let mut out: Vec<String> = list
        .items
        .into_iter()
        .filter(|b| !b.subjects.clone().unwrap_or_default().is_empty())
        .map(|b| {
            let who = b.metadata.labels.unwrap_or_default()["gatehouse.dev/identity"].clone();
            format!("{who}->{}", b.role_ref.name)
        })
        .collect();
    out.sort();
    out
}

async fn wait_bindings(client: &Client, ns: &str, want: &[&str]) {
    eventually("bindings", Duration::from_secs(30), || async {
        let seen = bindings(client, ns).await;
        if seen == want {
            Ok(())
        } else {
            Err(format!("{seen:?}, want {want:?}"))
        }
    })
    .await
}

fn human(name: &str, status: &str, extra: &str) -> String {
    format!(
        "metadata: {{name: {name}}}\nspec: {{type: Human, employment: {{status: {status}, type: Employee, department: finance, manager: bob, startDate: '2026-01-01'{extra}}}}}"
    )
}

fn identity_conditions(i: &Identity) -> Vec<gatehouse::api::Condition> {
    i.status.clone().unwrap_or_default().conditions
}
fn policy_conditions(p: &AccessPolicy) -> Vec<gatehouse::api::Condition> {
    p.status.clone().unwrap_or_default().conditions
}
fn target_conditions(t: &TargetSystem) -> Vec<gatehouse::api::Condition> {
    t.status.clone().unwrap_or_default().conditions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_expire_on_time_and_toxic_pairs_are_withheld() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "rules").await;
    let _stop = start(&client, &ns);
    apply::<TargetSystem>(
        &client,
        &ns,
        "metadata: {name: k8s}\nspec: {type: Kubernetes}",
    )
    .await;
    for (name, extra) in [
        ("bob", ""),
        ("carol", ""),
        ("dave", ""),
        ("erin", ", title: payer"),
    ] {
        apply::<Identity>(&client, &ns, &human(name, "Active", extra)).await;
    }
    apply::<AccessPolicy>(
        &client,
        &ns,
        "metadata: {name: base}\nspec: {selector: {matchAttributes: {department: finance}}, entitlements: [{target: k8s, kind: ClusterRole, name: view}]}",
    )
    .await;
    apply::<AccessPolicy>(
        &client,
        &ns,
        "metadata: {name: payments}
spec:
  selector: {matchAttributes: {title: payer}}
  entitlements: [{target: k8s, kind: ClusterRole, name: pay}, {target: k8s, kind: ClusterRole, name: approve}]
  separationOfDuties:
    - name: pay-and-approve
      entitlements: [{target: k8s, kind: ClusterRole, name: pay}, {target: k8s, kind: ClusterRole, name: approve}]",
    )
    .await;
    apply::<AccessPolicy>(
        &client,
        &ns,
        "metadata: {name: broken}\nspec: {selector: {matchAttributes: {department: finance}}, entitlements: [{target: nope, name: admins}]}",
    )
    .await;
    // dave's exception opens a minute ago and closes a few seconds from now.
    let whole_second = |t: jiff::Timestamp| jiff::Timestamp::from_second(t.as_second()).unwrap();
    let now = jiff::Timestamp::now();
    let from = whole_second(now - jiff::SignedDuration::from_secs(60));
    let until = whole_second(now + jiff::SignedDuration::from_secs(8));
    apply::<Exception>(
        &client,
        &ns,
        &format!(
            "metadata: {{name: dave-edit}}\nspec: {{identity: dave, entitlements: [{{target: k8s, kind: ClusterRole, name: edit}}], justification: migration, requestedBy: bob, approvedBy: [carol], validFrom: '{}', expiresAt: '{}', ticket: OPS-1}}",
            from.strftime("%Y-%m-%dT%H:%M:%SZ"),
            until.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
    )
    .await;

    // erin's pay and approve complete a toxic pair: only the completing grant (approve,
    // the last listed) is withheld; pay is bound.
    wait_bindings(
        &client,
        &ns,
        &[
            "bob->view",
            "carol->view",
            "dave->edit",
            "dave->view",
            "erin->pay",
            "erin->view",
        ],
    )
    .await;
    let (reason, message) =
        wait_for_condition(&client, &ns, "erin", "Ready", "False", identity_conditions).await;
    assert_eq!(reason, "Invalid");
    assert!(message.contains("pay-and-approve"), "{message}");
    let (_, message) =
        wait_for_condition(&client, &ns, "broken", "Ready", "False", policy_conditions).await;
    assert!(
        message.contains("nope"),
        "names the unknown target: {message}"
    );
    let (reason, _) =
        wait_for_condition(&client, &ns, "base", "Ready", "True", policy_conditions).await;
    assert_eq!(reason, "Valid");
    let active = Api::<Exception>::namespaced(client.clone(), &ns)
        .get("dave-edit")
        .await
        .unwrap();
    assert_eq!(active.status.unwrap().phase.as_deref(), Some("Active"));

    // No edit: the controller wakes at expiresAt and revokes.
    wait_bindings(
        &client,
        &ns,
        &[
            "bob->view",
            "carol->view",
            "dave->view",
            "erin->pay",
            "erin->view",
        ],
    )
    .await;
    let revoked_at = jiff::Timestamp::now();
    assert!(revoked_at >= until, "not revoked before expiry");
    assert!(
        revoked_at.duration_since(until) < jiff::SignedDuration::from_secs(5),
        "revoked {} after expiry",
        revoked_at.duration_since(until)
    );
    // Status is written in the same pass, just after the revocation is applied.
    let exceptions = Api::<Exception>::namespaced(client.clone(), &ns);
    let phase = eventually("the exception's phase", Duration::from_secs(10), || async {
        let e = exceptions
            .get("dave-edit")
            .await
            .map_err(|e| e.to_string())?;
        match e.status.and_then(|s| s.phase) {
            Some(p) if p == "Expired" => Ok(p),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(phase, "Expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blast_radius_guard_stalls_a_mass_revocation_until_the_limit_is_raised() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "blast").await;
    let _stop = start(&client, &ns);
    let target = |limit: u32| {
        format!(
            "metadata: {{name: k8s}}\nspec: {{type: Kubernetes, limits: {{maxRevocationsPerSync: {limit}}}}}"
        )
    };
    apply::<TargetSystem>(&client, &ns, &target(1)).await;
    apply::<AccessPolicy>(
        &client,
        &ns,
        "metadata: {name: base}\nspec: {selector: {matchAttributes: {department: finance}}, entitlements: [{target: k8s, kind: ClusterRole, name: view}]}",
    )
    .await;
    for name in ["bob", "carol", "dave"] {
        apply::<Identity>(&client, &ns, &human(name, "Active", "")).await;
    }
    wait_bindings(&client, &ns, &["bob->view", "carol->view", "dave->view"]).await;

    // A bad commit retargets the policy: one pass would revoke everyone's access at once.
    apply::<AccessPolicy>(
        &client,
        &ns,
        "metadata: {name: base}\nspec: {selector: {matchAttributes: {department: sales}}, entitlements: [{target: k8s, kind: ClusterRole, name: view}]}",
    )
    .await;
    let (reason, message) =
        wait_for_condition(&client, &ns, "k8s", "Stalled", "True", target_conditions).await;
    assert_eq!(reason, "BlastRadiusExceeded");
    assert!(
        message.contains("3 revocations") && message.contains("limit of 1"),
        "{message}"
    );
    assert_eq!(
        bindings(&client, &ns).await,
        ["bob->view", "carol->view", "dave->view"],
        "nothing revoked"
    );

    // Someone checked the change and raised the limit: the revocations go through.
    let pending = Api::<TargetSystem>::namespaced(client.clone(), &ns)
        .get("k8s")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(
        pending.pending_operations.is_some_and(|n| n >= 3),
        "the held-back operations are counted: {:?}",
        pending.pending_operations
    );
    apply::<TargetSystem>(&client, &ns, &target(10)).await;
    wait_bindings(&client, &ns, &[]).await;
    wait_for_condition(&client, &ns, "k8s", "Ready", "True", target_conditions).await;
    let status = Api::<TargetSystem>::namespaced(client.clone(), &ns)
        .get("k8s")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(
        status.conditions.iter().all(|c| c.type_ != "Stalled"),
        "Stalled is removed once it is no longer true"
    );
}

/// A kubeconfig for ServiceAccount `sa` of `ns`, talking to the test control plane.
async fn service_account_kubeconfig(client: &Client, ns: &str, sa: &str) -> String {
    let plane = harness::control_plane();
    let admin = kube::config::Kubeconfig::read_from(&plane.kubeconfig).unwrap();
    let cluster = admin.clusters[0].cluster.clone().unwrap();
    let ca = std::fs::read(cluster.certificate_authority.clone().unwrap()).unwrap();
    let request: TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": {"audiences": []}})).unwrap();
    let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: '{}', certificate-authority-data: {}}}}}]\nusers: [{{name: u, user: {{token: {token}}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n",
        cluster.server.unwrap(),
        base64::engine::general_purpose::STANDARD.encode(ca)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_cluster_that_denies_access_stalls_until_permissions_are_granted() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "remote").await;
    apply::<ServiceAccount>(&client, &ns, "metadata: {name: limited}").await;
    let kubeconfig = service_account_kubeconfig(&client, &ns, "limited").await;
    let mut secret = Secret::default();
    secret.metadata.name = Some("remote-kubeconfig".into());
    secret.string_data = Some([("kubeconfig".to_string(), kubeconfig)].into());
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let _stop = start(&client, &ns);
    apply::<TargetSystem>(
        &client,
        &ns,
        "metadata: {name: k8s}\nspec: {type: Kubernetes, kubernetes: {kubeconfigSecretRef: {name: remote-kubeconfig}}}",
    )
    .await;
    apply::<AccessPolicy>(
        &client,
        &ns,
        "metadata: {name: base}\nspec: {selector: {matchAttributes: {department: finance}}, entitlements: [{target: k8s, kind: ClusterRole, name: view}]}",
    )
    .await;
    apply::<Identity>(&client, &ns, &human("bob", "Active", "")).await;

    let (reason, message) =
        wait_for_condition(&client, &ns, "k8s", "Stalled", "True", target_conditions).await;
    assert_eq!(reason, "Rejected");
    assert!(message.contains("forbidden"), "{message}");
    assert!(
        !message.contains("token"),
        "no credentials in status: {message}"
    );
    let (_, message) =
        wait_for_condition(&client, &ns, "bob", "Ready", "False", identity_conditions).await;
    assert!(message.contains("failed"), "{message}");

    // An operator grants the ServiceAccount what the connector needs; the target recovers
    // on its next retry with no change to the TargetSystem.
    let role: ClusterRole = serde_yaml::from_str(&format!(
        "metadata: {{name: {ns}-connector}}
rules:
  - apiGroups: [rbac.authorization.k8s.io]
    resources: [clusterrolebindings, rolebindings]
    verbs: [get, list, watch, create, update, patch, delete]
  - apiGroups: [rbac.authorization.k8s.io]
    resources: [clusterroles, roles]
    verbs: [bind]
  - apiGroups: ['']
    resources: [serviceaccounts, secrets]
    verbs: [get, list, create, update, patch, delete]"
    ))
    .unwrap();
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_yaml::from_str(&format!(
        "metadata: {{name: {ns}-connector}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {ns}-connector}}\nsubjects: [{{kind: ServiceAccount, name: limited, namespace: {ns}}}]"
    ))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    wait_bindings(&client, &ns, &["bob->view"]).await;
    wait_for_condition(&client, &ns, "k8s", "Connected", "True", target_conditions).await;
    wait_for_condition(&client, &ns, "bob", "Ready", "True", identity_conditions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contractor_loses_access_when_the_end_date_passes_while_the_controller_runs() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "enddate").await;
    // The controller's clock stands eight seconds before the end of the contractor's last
    // day (end dates are inclusive: access ends at the following midnight, UTC).
    let boundary: jiff::Timestamp = "2027-03-11T00:00:00Z".parse().unwrap();
    let lead = jiff::SignedDuration::from_secs(8);
    let started = jiff::Timestamp::now();
    let _stop = start_at(&client, &ns, started.duration_until(boundary) - lead);
    let crossing = started + lead; // the boundary, in real time
    apply::<TargetSystem>(
        &client,
        &ns,
        "metadata: {name: k8s}\nspec: {type: Kubernetes}",
    )
    .await;
    apply::<AccessPolicy>(
        &client,
        &ns,
        "metadata: {name: base}\nspec: {selector: {matchAttributes: {department: finance}}, entitlements: [{target: k8s, kind: ClusterRole, name: view}]}",
    )
    .await;
    apply::<Identity>(&client, &ns, &human("bob", "Active", "")).await;
    apply::<Identity>(
        &client,
        &ns,
        "metadata: {name: connie}\nspec: {type: Human, employment: {status: Active, type: Contractor, department: finance, manager: bob, startDate: '2026-01-01', endDate: '2027-03-10'}}",
    )
    .await;
    wait_bindings(&client, &ns, &["bob->view", "connie->view"]).await;
    assert!(
        jiff::Timestamp::now() < crossing,
        "the setup took longer than the lead; the test proves nothing"
    );

    // Nobody edits anything: the controller wakes at the boundary and revokes.
    wait_bindings(&client, &ns, &["bob->view"]).await;
    let revoked = jiff::Timestamp::now();
    assert!(revoked >= crossing, "revoked before the end date passed");
    assert!(
        revoked.duration_since(crossing) < jiff::SignedDuration::from_secs(5),
        "revoked {} after the end date passed",
        revoked.duration_since(crossing)
    );
    let (reason, _) = wait_for_condition(
        &client,
        &ns,
        "connie",
        "Revoked",
        "True",
        identity_conditions,
    )
    .await;
    assert_eq!(
        reason, "Confirmed",
        "confirmed by a re-observation of the target"
    );
    let phase = Api::<Identity>::namespaced(client.clone(), &ns)
        .get("connie")
        .await
        .unwrap()
        .status
        .unwrap()
        .phase;
    assert_eq!(phase.as_deref(), Some("Terminated"));
}
