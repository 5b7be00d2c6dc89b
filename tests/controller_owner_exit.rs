//! The NHI owner-exit playbook through `gatehouse run` against a real API server: the
//! owner's termination deletes the machine's token Secret at once (its access stays for the
//! grace), records the rotation on its ServiceAccount, raises one `InterimOwnerProposed`
//! Event proposing the owner's manager, and later passes do not rotate again.

mod harness;

use std::time::Duration;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::controller::{Options, run};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_exit_rotates_the_machines_tokens_once_and_proposes_the_manager() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "ctl-owner-exit").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = Options {
        namespace: Some(ns.clone()),
        resync: Duration::from_secs(60),
        ..Options::default()
    };
    let metrics = options.metrics.clone();
    let controller = tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));

    let post = PostParams::default();
    Api::<TargetSystem>::namespaced(client.clone(), &ns)
        .create(
            &post,
            &yaml(&format!(
                "metadata: {{name: k8s, namespace: {ns}}}\nspec: {{type: Kubernetes}}"
            )),
        )
        .await
        .unwrap();
    Api::<AccessPolicy>::namespaced(client.clone(), &ns)
        .create(
            &post,
            &yaml(&format!(
                "metadata: {{name: bots, namespace: {ns}}}\nspec: {{selector: {{matchAttributes: {{type: NonHuman}}}}, entitlements: [{{target: k8s, kind: ClusterRole, name: view}}]}}"
            )),
        )
        .await
        .unwrap();
    let identities: Api<Identity> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply("hr-sync").force();
    let identity = |name: &str, spec: &str| -> Identity {
        yaml(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}"
        ))
    };
    for (name, spec) in [
        (
            "mgr",
            "{type: Human, employment: {status: Active, department: eng, manager: mgr}}",
        ),
        (
            "olga",
            "{type: Human, employment: {status: Active, department: eng, manager: mgr}}",
        ),
        ("bot", "{type: NonHuman, owner: olga}"),
    ] {
        identities
            .patch(name, &apply, &Patch::Apply(&identity(name, spec)))
            .await
            .unwrap();
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    let bound = || async {
        crbs.list(&ListParams::default().labels(&format!(
            "gatehouse.dev/tenant={ns},gatehouse.dev/identity=bot"
        )))
        .await
        .unwrap()
        .items
        .iter()
        .any(|b| !b.subjects.clone().unwrap_or_default().is_empty())
    };
    harness::eventually(
        "the bot's account and binding",
        Duration::from_secs(30),
        || async {
            match accounts.get_opt("bot").await.unwrap() {
                Some(_) if bound().await => Ok(()),
                other => Err(format!(
                    "service account {:?}",
                    other.map(|s| s.metadata.name)
                )),
            }
        },
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &post,
            &yaml("metadata: {name: bot-token, annotations: {kubernetes.io/service-account.name: bot}}\ntype: kubernetes.io/service-account-token"),
        )
        .await
        .unwrap();

    // Olga left yesterday: inside the 7-day grace.
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let yesterday = today.yesterday().unwrap();
    identities
        .patch(
            "olga",
            &apply,
            &Patch::Apply(&identity(
                "olga",
                &format!("{{type: Human, employment: {{status: Terminated, department: eng, manager: mgr, endDate: '{yesterday}'}}}}"),
            )),
        )
        .await
        .unwrap();
    let left_at = format!("{today}T00:00:00Z");
    harness::eventually(
        "the bot's token gone and the rotation recorded",
        Duration::from_secs(30),
        || async {
            let gone = secrets.get_opt("bot-token").await.unwrap().is_none();
            let marker = accounts
                .get("bot")
                .await
                .unwrap()
                .metadata
                .annotations
                .and_then(|a| a.get("gatehouse.dev/credentials-rotated").cloned());
            if gone && marker.as_deref() == Some(left_at.as_str()) {
                Ok(())
            } else {
                Err(format!("token gone {gone}, marker {marker:?}"))
            }
        },
    )
    .await;
    assert!(bound().await, "access is kept for the grace period");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let proposals = || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("InterimOwnerProposed"))
            .collect::<Vec<_>>()
    };
    let event = harness::eventually(
        "the InterimOwnerProposed Event",
        Duration::from_secs(30),
        || async {
            proposals()
                .await
                .into_iter()
                .next()
                .ok_or_else(|| "no Event yet".to_string())
        },
    )
    .await;
    assert_eq!(
        event.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("bot")
    );
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.unwrap_or_default();
    assert!(note.contains("proposed interim owner mgr"), "{note}");
    harness::eventually("bot's phase", Duration::from_secs(30), || async {
        let phase = identities
            .get("bot")
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase);
        if phase.as_deref() == Some("OwnerTerminated") {
            Ok(())
        } else {
            Err(format!("{phase:?}"))
        }
    })
    .await;

    // A new token (the new owner's), then another pass: not rotated again, no new Event.
    secrets
        .create(
            &post,
            &yaml("metadata: {name: bot-token-2, annotations: {kubernetes.io/service-account.name: bot}}\ntype: kubernetes.io/service-account-token"),
        )
        .await
        .unwrap();
    identities
        .patch(
            "mgr",
            &apply,
            &Patch::Apply(&identity(
                "mgr",
                "{type: Human, displayName: Mgr, employment: {status: Active, department: eng, manager: mgr}}",
            )),
        )
        .await
        .unwrap();
    let rotations = format!(
        "gatehouse_target_operations_total{{namespace=\"{ns}\",target=\"k8s\",action=\"rotateCredentials\",result=\"ok\"}} 1"
    );
    harness::eventually(
        "a pass after the change",
        Duration::from_secs(30),
        || async {
            let status = identities.get("mgr").await.unwrap().status;
            let generation = identities.get("mgr").await.unwrap().metadata.generation;
            match status.and_then(|s| s.observed_generation) {
                Some(seen) if Some(seen) == generation => Ok(()),
                other => Err(format!("observed {other:?}, generation {generation:?}")),
            }
        },
    )
    .await;
    assert!(
        metrics.render().contains(&rotations),
        "{}",
        metrics.render()
    );
    assert!(secrets.get_opt("bot-token-2").await.unwrap().is_some());
    assert_eq!(proposals().await.len(), 1);

    let _ = stop.send(());
    controller.await.unwrap().unwrap();
}
