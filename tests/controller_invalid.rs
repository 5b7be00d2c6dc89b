//! An object the controller cannot read (here: a looser Identity CRD installed than the
//! controller understands, as after a half-finished upgrade) must not break the watch: it
//! gets a condition saying what is wrong, and every other object is reconciled as usual.
//! Its own test binary, because it replaces a CRD on the shared control plane.

mod harness;

use std::time::Duration;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::controller::{Options, run};
use harness::{apply, eventually, wait_for_condition};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_object_gets_a_condition_and_the_rest_is_reconciled() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "invalid").await;

    // Loosen the Identity CRD so the server accepts what the controller cannot read.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = crds.get("identities.gatehouse.dev").await.unwrap();
    crd.metadata.managed_fields = None;
    crd.metadata.resource_version = None;
    crd.status = None;
    let schema = serde_json::json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    });
    crd.spec.versions[0].schema =
        Some(serde_json::from_value(serde_json::json!({"openAPIV3Schema": schema})).unwrap());
    crd.spec.versions[0].additional_printer_columns = None;
    crds.patch(
        "identities.gatehouse.dev",
        &PatchParams::apply("gatehouse-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            crds.clone(),
            "identities.gatehouse.dev",
            conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = Options {
        namespace: Some(ns.clone()),
        resync: Duration::from_secs(60),
        ..Options::default()
    };
    tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));

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
    let gvk = GroupVersionKind::gvk("gatehouse.dev", "v1alpha1", "Identity");
    let identities: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));
    let robot: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "gatehouse.dev/v1alpha1",
        "kind": "Identity",
        "metadata": {"name": "robot"},
        "spec": {"type": "Robot"},
    }))
    .unwrap();
    identities
        .patch(
            "robot",
            &PatchParams::apply("gatehouse-tests"),
            &Patch::Apply(&robot),
        )
        .await
        .unwrap();
    apply::<Identity>(
        &client,
        &ns,
        "metadata: {name: alice}\nspec: {type: Human, employment: {status: Active, type: Employee, department: finance, manager: alice, startDate: '2026-01-01'}}",
    )
    .await;

    // The readable Identity is reconciled as usual...
    wait_for_condition(&client, &ns, "alice", "Ready", "True", |i: &Identity| {
        i.status.clone().unwrap_or_default().conditions
    })
    .await;
    // ...and the unreadable one says why, naming the field.
    let message = eventually("robot's condition", Duration::from_secs(30), || async {
        let object = identities.get("robot").await.map_err(|e| e.to_string())?;
        let conditions = object.data["status"]["conditions"].clone();
        let ready = conditions
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .ok_or("no Ready condition yet")?;
        if ready["status"] == "False" && ready["reason"] == "InvalidSpec" {
            Ok(ready["message"].as_str().unwrap_or_default().to_string())
        } else {
            Err(format!("{ready}"))
        }
    })
    .await;
    assert!(message.contains("Robot"), "names the bad value: {message}");
    assert!(
        message.contains(&format!("Identity {ns}/robot")),
        "{message}"
    );

    // A Warning Event says the same.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    eventually("an InvalidSpec event", Duration::from_secs(10), || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("InvalidSpec")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("robot")
            })
            .map(|_| ())
            .ok_or_else(|| format!("{} events, none InvalidSpec", list.items.len()))
    })
    .await;
    drop(stop);
}
