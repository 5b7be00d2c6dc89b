//! An access review through `gatehouse run` against a real API server: a reviewer's
//! `revoke` answer removes the binding while the policy still selects the subject, the
//! AccessReview's status counts the answers, and an edit of the granting policy's spec
//! ends the withholding (the binding comes back).

mod harness;

use std::time::Duration;

use gatehouse::api::{AccessPolicy, AccessReview, AccessReviewResponse, Identity, TargetSystem};
use gatehouse::controller::{Options, run};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams};

/// The ClusterRoles `name` is bound to (bindings with a subject).
async fn roles(crbs: &Api<ClusterRoleBinding>, ns: &str, name: &str) -> Vec<String> {
    let mut roles: Vec<String> = crbs
        .list(&ListParams::default().labels(&format!(
            "gatehouse.dev/tenant={ns},gatehouse.dev/identity={name}"
        )))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|b| b.subjects.as_ref().is_some_and(|s| !s.is_empty()))
        .map(|b| b.role_ref.name)
        .collect();
    roles.sort();
    roles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_answer_is_applied_and_counted_in_the_review_status() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "ctl-reviews").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = Options {
        namespace: Some(ns.clone()),
        resync: Duration::from_secs(60),
        ..Options::default()
    };
    let controller = tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));

    harness::apply::<TargetSystem>(
        &client,
        &ns,
        "metadata: {name: k8s}\nspec: {type: Kubernetes}",
    )
    .await;
    let policy = |role: &str| {
        format!(
            "metadata: {{name: finance}}\nspec: {{selector: {{matchAttributes: {{department: finance}}}}, entitlements: [{{target: k8s, kind: ClusterRole, name: {role}}}]}}"
        )
    };
    let applied = harness::apply::<AccessPolicy>(&client, &ns, &policy("view")).await;
    // What `gatehouse review open` records: the answer holds for this spec only.
    let digest = gatehouse::engine::review::source_digest(&applied.spec);
    for (name, manager) in [("mgr", "mgr"), ("ana", "mgr"), ("ben", "mgr")] {
        harness::apply::<Identity>(
            &client,
            &ns,
            &format!(
                "metadata: {{name: {name}}}\nspec: {{type: Human, employment: {{status: Active, type: Employee, department: finance, manager: {manager}, startDate: '2026-01-01'}}}}"
            ),
        )
        .await;
    }
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    harness::eventually("ana and ben bound", Duration::from_secs(30), || async {
        let (a, b) = (
            roles(&crbs, &ns, "ana").await,
            roles(&crbs, &ns, "ben").await,
        );
        if a == ["view"] && b == ["view"] {
            Ok(())
        } else {
            Err(format!("ana {a:?}, ben {b:?}"))
        }
    })
    .await;

    // The cycle opened this week; mgr revokes ana's access and keeps ben's.
    let cycle = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .yesterday()
        .unwrap();
    harness::apply::<AccessReview>(
        &client,
        &ns,
        "metadata: {name: finance-quarterly}\nspec: {scope: {selector: {matchAttributes: {department: finance}}}, reviewers: {by: Manager}, every: 90d, duePeriod: 14d, onNoResponse: Revoke}",
    )
    .await;
    let item = |who: &str, decision: &str| {
        format!(
            "{{identity: {who}, entitlement: {{target: k8s, kind: ClusterRole, name: view}}, source: {{kind: AccessPolicy, name: finance, digest: '{digest}'}}, decision: {decision}, justification: 'quarterly check'}}"
        )
    };
    harness::apply::<AccessReviewResponse>(
        &client,
        &ns,
        &format!(
            "metadata: {{name: finance-quarterly-{cycle}-mgr}}\nspec: {{review: finance-quarterly, reviewer: mgr, cycle: '{cycle}', items: [{}, {}]}}",
            item("ana", "revoke"),
            item("ben", "keep")
        ),
    )
    .await;

    harness::eventually(
        "ana's binding revoked, ben's kept",
        Duration::from_secs(30),
        || async {
            let (a, b) = (
                roles(&crbs, &ns, "ana").await,
                roles(&crbs, &ns, "ben").await,
            );
            if a.is_empty() && b == ["view"] {
                Ok(())
            } else {
                Err(format!("ana {a:?}, ben {b:?}"))
            }
        },
    )
    .await;
    let reviews: Api<AccessReview> = Api::namespaced(client.clone(), &ns);
    let status = harness::eventually(
        "the AccessReview's status counts the answers",
        Duration::from_secs(30),
        || async {
            let status = reviews
                .get("finance-quarterly")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            if status.revoked == 1 && status.kept == 1 {
                Ok(status)
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await;
    assert_eq!(status.cycle.as_deref(), Some(cycle.to_string().as_str()));
    assert_eq!(status.pending, 0, "{status:?}");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready is always present");
    assert_eq!(ready.status, "True", "{status:?}");

    // Editing the policy's spec (a new grant) ends the withholding: the answer was about
    // the old spec.
    harness::apply::<AccessPolicy>(&client, &ns, &policy("edit")).await;
    harness::eventually(
        "ana bound again after the policy changed",
        Duration::from_secs(30),
        || async {
            let a = roles(&crbs, &ns, "ana").await;
            if a == ["edit"] {
                Ok(())
            } else {
                Err(format!("ana {a:?}"))
            }
        },
    )
    .await;
    drop(stop);
    let _ = controller.await;
}
