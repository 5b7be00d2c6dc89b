//! `gatehouse run` against a real API server: objects applied with the Kubernetes API
//! become ClusterRoleBindings, and Identity status says so.

mod harness;

use std::time::Duration;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::controller::{Options, run};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A person in `dept` who is their own manager (the head of a one-person line).
fn person(ns: &str, name: &str, dept: &str, status: &str) -> Identity {
    yaml(&format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{type: Human, employment: {{status: {status}, department: {dept}, manager: {name}}}}}"
    ))
}

/// Creates TargetSystem `k8s`: the test API server's own RBAC.
async fn kubernetes_target(client: &Client, ns: &str) {
    Api::<TargetSystem>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &yaml(&format!(
                "metadata: {{name: k8s, namespace: {ns}}}\nspec: {{type: Kubernetes}}"
            )),
        )
        .await
        .unwrap();
}

/// A plain HTTP/1.1 GET; returns the whole response.
async fn get(address: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// Roles bound (with a subject) for the tenant's identities, sorted.
async fn bound_roles(client: &Client, ns: &str) -> Vec<String> {
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    let list = crbs
        .list(&ListParams::default().labels(&format!("gatehouse.dev/tenant={ns}")))
        .await
        .unwrap();
    let mut roles: Vec<String> = list
        .items
        .into_iter()
        .filter(|b| !b.subjects.clone().unwrap_or_default().is_empty())
        .map(|b| b.role_ref.name)
        .collect();
    roles.sort();
    roles
}

/// `status.phase` and the `Ready` condition's status, when written.
async fn phase_and_ready(client: &Client, ns: &str) -> (Option<String>, Option<String>) {
    let identity = Api::<Identity>::namespaced(client.clone(), ns)
        .get("alice")
        .await
        .unwrap();
    let status = identity.status.unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone());
    (status.phase, ready)
}

async fn wait_until(what: &str, client: &Client, ns: &str, roles: &[&str], phase: &str) {
    harness::eventually(what, Duration::from_secs(30), || async {
        let bound = bound_roles(client, ns).await;
        let (seen_phase, ready) = phase_and_ready(client, ns).await;
        if bound == roles
            && seen_phase.as_deref() == Some(phase)
            && ready.as_deref() == Some("True")
        {
            Ok(())
        } else {
            Err(format!(
                "bound {bound:?}, phase {seen_phase:?}, ready {ready:?}"
            ))
        }
    })
    .await
}

/// Controller options for one test namespace, with fresh metrics and health.
fn options(ns: &str) -> Options {
    Options {
        namespace: Some(ns.to_string()),
        resync: Duration::from_secs(60),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_mover_leaver_through_the_controller() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "ctl").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = options(&ns);
    let (metrics, health) = (options.metrics.clone(), options.health.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, gatehouse::http::router(health, metrics))
            .await
            .unwrap()
    });
    assert!(
        get(address, "/readyz").await.starts_with("HTTP/1.1 503"),
        "not ready before the caches fill"
    );
    let metrics = options.metrics.clone();
    let controller = tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));

    let post = PostParams::default();
    let targets: Api<TargetSystem> = Api::namespaced(client.clone(), &ns);
    targets
        .create(
            &post,
            &yaml(&format!(
                "metadata: {{name: k8s, namespace: {ns}}}\nspec: {{type: Kubernetes}}"
            )),
        )
        .await
        .unwrap();
    let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &ns);
    for (name, dept, role) in [
        ("finance", "finance", "view"),
        ("engineering", "engineering", "edit"),
    ] {
        let policy: AccessPolicy = yaml(&format!(
            "metadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{matchAttributes: {{department: {dept}}}}}, entitlements: [{{target: k8s, kind: ClusterRole, name: {role}}}]}}"
        ));
        policies.create(&post, &policy).await.unwrap();
    }
    let identities: Api<Identity> = Api::namespaced(client.clone(), &ns);
    let alice = |dept: &str, status: &str| -> Identity {
        yaml(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: alice, namespace: {ns}}}\nspec: {{type: Human, employment: {{status: {status}, department: {dept}, manager: alice}}}}"
        ))
    };
    let apply = PatchParams::apply("hr-sync").force();

    identities
        .patch("alice", &apply, &Patch::Apply(&alice("finance", "Active")))
        .await
        .unwrap();
    wait_until("the joiner's binding", &client, &ns, &["view"], "Active").await;
    let status = identities.get("alice").await.unwrap().status.unwrap();
    assert_eq!(
        status.entitlements[0].source.name, "finance",
        "provenance names the policy"
    );
    assert_eq!(status.entitlements[0].state.as_deref(), Some("Applied"));

    identities
        .patch(
            "alice",
            &apply,
            &Patch::Apply(&alice("engineering", "Active")),
        )
        .await
        .unwrap();
    wait_until(
        "the mover's new binding, and the old one gone",
        &client,
        &ns,
        &["edit"],
        "Active",
    )
    .await;

    identities
        .patch(
            "alice",
            &apply,
            &Patch::Apply(&alice("engineering", "Terminated")),
        )
        .await
        .unwrap();
    wait_until(
        "the leaver's bindings gone",
        &client,
        &ns,
        &[],
        "Terminated",
    )
    .await;
    let status = identities.get("alice").await.unwrap().status.unwrap();
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Revoked" && c.status == "True"),
        "{:?}",
        status.conditions
    );
    // The revocation SLA, per target, measured from the HR change to the confirmation.
    assert!(status.leaver_since.is_some(), "{status:?}");
    let k8s = status.targets.iter().find(|t| t.target == "k8s").unwrap();
    assert_eq!(k8s.state, "Applied");
    assert!(k8s.revoked_at.is_some(), "{k8s:?}");
    assert!(
        k8s.revocation_seconds
            .is_some_and(|s| (0.0..120.0).contains(&s)),
        "{k8s:?}"
    );

    assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 200"));
    assert!(get(address, "/livez").await.starts_with("HTTP/1.1 200"));
    let exposed = get(address, "/metrics").await;
    for series in [
        "gatehouse_reconciles_total".to_string(),
        "gatehouse_reconcile_duration_seconds_bucket".to_string(),
        format!(
            "gatehouse_target_operations_total{{namespace=\"{ns}\",target=\"k8s\",action=\"grant\",result=\"ok\"}} 2"
        ),
        format!(
            "gatehouse_target_operations_total{{namespace=\"{ns}\",target=\"k8s\",action=\"revoke\",result=\"ok\"}} 2"
        ),
        format!("gatehouse_leaver_revocation_seconds_count{{namespace=\"{ns}\",target=\"k8s\"}} 1"),
    ] {
        assert!(exposed.contains(&series), "missing {series} in:\n{exposed}");
    }
    assert!(
        metrics
            .render()
            .contains("gatehouse_reconcile_errors_total 0")
    );

    let _ = stop.send(());
    controller.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_identity_revokes_its_access_before_it_goes() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "del").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = options(&ns);
    let controller = tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));
    let post = PostParams::default();
    kubernetes_target(&client, &ns).await;
    Api::<AccessPolicy>::namespaced(client.clone(), &ns)
        .create(
            &post,
            &yaml(&format!("metadata: {{name: all, namespace: {ns}}}\nspec: {{entitlements: [{{target: k8s, kind: ClusterRole, name: view}}]}}")),
        )
        .await
        .unwrap();
    let identities: Api<Identity> = Api::namespaced(client.clone(), &ns);
    let alice: Identity = yaml(&format!(
        "metadata: {{name: alice, namespace: {ns}}}\nspec: {{type: Human, employment: {{status: Active, department: d, manager: alice}}}}"
    ));
    identities.create(&post, &alice).await.unwrap();
    wait_until("the binding", &client, &ns, &["view"], "Active").await;
    let held = identities.get("alice").await.unwrap();
    assert!(
        held.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&gatehouse::controller::FINALIZER.to_string())
    );

    identities
        .delete("alice", &Default::default())
        .await
        .unwrap();
    harness::eventually("alice released", Duration::from_secs(30), || async {
        match identities
            .get_opt("alice")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    let left = crbs
        .list(&ListParams::default().labels(&format!("gatehouse.dev/tenant={ns}")))
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "no binding outlives the Identity: {:?}",
        left.items
    );
    let _ = stop.send(());
    controller.await.unwrap().unwrap();
}

/// Passes, full listings and targeted re-reads of one tenant's target, from the
/// controller's own counters.
fn passes_and_reads(metrics: &gatehouse::http::Metrics, ns: &str) -> (u64, u64, u64) {
    use gatehouse::http::{TargetLabels, TenantLabels};
    let passes = metrics
        .tenant_passes
        .get_or_create(&TenantLabels {
            namespace: ns.to_string(),
        })
        .get();
    let labels = TargetLabels {
        namespace: ns.to_string(),
        target: "k8s".into(),
    };
    let listings = metrics.target_observations.get_or_create(&labels).get();
    let rereads = metrics.target_rereads.get_or_create(&labels).get();
    (passes, listings, rereads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_change_costs_one_pass_and_one_targeted_read_of_the_target() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "cost").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = options(&ns);
    let metrics = options.metrics.clone();
    let controller = tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));
    let post = PostParams::default();
    kubernetes_target(&client, &ns).await;
    let policy: AccessPolicy = yaml(&format!(
        "metadata: {{name: finance, namespace: {ns}}}\nspec: {{selector: {{matchAttributes: {{department: finance}}}}, entitlements: [{{target: k8s, kind: ClusterRole, name: view}}]}}"
    ));
    Api::<AccessPolicy>::namespaced(client.clone(), &ns)
        .create(&post, &policy)
        .await
        .unwrap();
    let identities: Api<Identity> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply("hr-sync").force();
    let ready = |name: &'static str| {
        let identities = identities.clone();
        async move {
            let what = format!("{name} Ready");
            harness::eventually(&what, Duration::from_secs(30), || async {
                let status = identities
                    .get(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .status;
                if status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                }) {
                    Ok(())
                } else {
                    Err(format!("{status:?}"))
                }
            })
            .await
        }
    };
    identities
        .patch(
            "alice",
            &apply,
            &Patch::Apply(&person(&ns, "alice", "finance", "Active")),
        )
        .await
        .unwrap();
    ready("alice").await;
    let before = passes_and_reads(&metrics, &ns);

    // One joiner: one pass, one read of the target, and the status write wakes nothing.
    identities
        .patch(
            "bob",
            &apply,
            &Patch::Apply(&person(&ns, "bob", "finance", "Active")),
        )
        .await
        .unwrap();
    ready("bob").await;
    let after_bob = passes_and_reads(&metrics, &ns);
    // A second change is the fence: had bob's status write queued a pass, it would have run
    // before carol's (the queue is FIFO per tenant and settles for 100 ms).
    identities
        .patch(
            "carol",
            &apply,
            &Patch::Apply(&person(&ns, "carol", "finance", "Active")),
        )
        .await
        .unwrap();
    ready("carol").await;
    let after_carol = passes_and_reads(&metrics, &ns);
    // The target was listed once (alice's pass, the first); a joiner is a new subject,
    // re-read by label before it is planned, and nothing more.
    let delta = |a: (u64, u64, u64), b: (u64, u64, u64)| (b.0 - a.0, b.1 - a.1, b.2 - a.2);
    assert_eq!(
        delta(before, after_bob),
        (1, 0, 1),
        "bob: (passes, listings, re-reads) before {before:?} after {after_bob:?}"
    );
    assert_eq!(
        delta(after_bob, after_carol),
        (1, 0, 1),
        "carol: (passes, listings, re-reads) {after_bob:?} -> {after_carol:?}"
    );
    let _ = stop.send(());
    controller.await.unwrap().unwrap();
}

/// Bindings of the tenant with a subject, by identity label.
async fn bound_identities(client: &Client, ns: &str) -> Vec<String> {
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    crbs.list(&ListParams::default().labels(&format!("gatehouse.dev/tenant={ns}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|b| !b.subjects.clone().unwrap_or_default().is_empty())
        .filter_map(|b| b.metadata.labels?.get("gatehouse.dev/identity").cloned())
        .collect()
}

/// The leaver lane: a leaver's change that arrives while a policy change is granting
/// hundreds of joiners is cut off before that batch is done, not after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_is_cut_off_ahead_of_a_large_batch_of_joiners() {
    use futures::StreamExt;
    const JOINERS: usize = 600;
    let client = harness::client().await;
    let ns = harness::namespace(&client, "lane").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(client.clone(), options(&ns), async {
        let _ = stopped.await;
    }));
    let post = PostParams::default();
    kubernetes_target(&client, &ns).await;
    let policy = |name: &str, dept: &str| -> AccessPolicy {
        yaml(&format!(
            "metadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{matchAttributes: {{department: {dept}}}}}, entitlements: [{{target: k8s, kind: ClusterRole, name: view}}]}}"
        ))
    };
    let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &ns);
    policies
        .create(&post, &policy("finance", "finance"))
        .await
        .unwrap();
    let identities: Api<Identity> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply("hr-sync").force();
    identities
        .patch(
            "zed",
            &apply,
            &Patch::Apply(&person(&ns, "zed", "finance", "Active")),
        )
        .await
        .unwrap();
    // The joiners-to-be match no policy yet.
    futures::stream::iter(0..JOINERS)
        .map(|i| {
            let identities = identities.clone();
            let joiner = person(&ns, &format!("j{i:04}"), "pending", "Active");
            async move {
                identities
                    .create(&PostParams::default(), &joiner)
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    harness::eventually(
        "every identity reported",
        Duration::from_secs(120),
        || async {
            let list = identities
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let reported = list.items.iter().filter(|i| i.status.is_some()).count();
            let zed = bound_identities(&client, &ns).await;
            if reported == JOINERS + 1 && zed == ["zed"] {
                Ok(())
            } else {
                Err(format!("{reported} reported, bound {zed:?}"))
            }
        },
    )
    .await;

    // One policy change: hundreds of grants in one pass. The moment the first lands, zed
    // leaves.
    policies
        .create(&post, &policy("pending", "pending"))
        .await
        .unwrap();
    harness::eventually("the batch started", Duration::from_secs(60), || async {
        let bound = bound_identities(&client, &ns).await;
        if bound.len() > 1 {
            Ok(())
        } else {
            Err(format!("{bound:?}"))
        }
    })
    .await;
    identities
        .patch(
            "zed",
            &apply,
            &Patch::Apply(&person(&ns, "zed", "finance", "Terminated")),
        )
        .await
        .unwrap();
    let joiners_when_cut_off =
        harness::eventually("zed cut off", Duration::from_secs(60), || async {
            let bound = bound_identities(&client, &ns).await;
            let joiners = bound.iter().filter(|b| b.starts_with('j')).count();
            if bound.iter().any(|b| b == "zed") {
                Err(format!("zed still bound; {joiners} joiners"))
            } else {
                Ok(joiners)
            }
        })
        .await;
    assert!(
        joiners_when_cut_off < JOINERS,
        "zed was cut off only after all {JOINERS} joiners"
    );
    eprintln!("zed cut off with {joiners_when_cut_off} of {JOINERS} joiners bound");
    harness::eventually("every joiner bound", Duration::from_secs(120), || async {
        let n = bound_identities(&client, &ns).await.len();
        if n == JOINERS {
            Ok(())
        } else {
            Err(format!("{n} bound"))
        }
    })
    .await;
    let _ = stop.send(());
    controller.await.unwrap().unwrap();
}

/// The leaver lane through reporting: a leaver's change that arrives while the controller
/// is writing the statuses of a large batch of joiners is cut off before the rest of
/// those statuses are written, not after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_is_cut_off_ahead_of_a_large_batch_of_status_writes() {
    use futures::StreamExt;
    const JOINERS: usize = 1000;
    let client = harness::client().await;
    let ns = harness::namespace(&client, "lane-status").await;
    let post = PostParams::default();
    kubernetes_target(&client, &ns).await;
    Api::<AccessPolicy>::namespaced(client.clone(), &ns)
        .create(
            &post,
            &yaml(&format!(
                "metadata: {{name: finance, namespace: {ns}}}\nspec: {{selector: {{matchAttributes: {{department: finance}}}}, entitlements: [{{target: k8s, kind: ClusterRole, name: view}}]}}"
            )),
        )
        .await
        .unwrap();
    let identities: Api<Identity> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply("hr-sync").force();
    identities
        .patch(
            "zed",
            &apply,
            &Patch::Apply(&person(&ns, "zed", "finance", "Active")),
        )
        .await
        .unwrap();
    // Everyone exists before the controller starts: its first pass grants all of them and
    // then has a thousand statuses to write.
    futures::stream::iter(0..JOINERS)
        .map(|i| {
            let identities = identities.clone();
            let joiner = person(&ns, &format!("j{i:04}"), "finance", "Active");
            async move {
                identities
                    .create(&PostParams::default(), &joiner)
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let reported = || async {
        let list = identities.list(&ListParams::default()).await.unwrap();
        list.items.iter().filter(|i| i.status.is_some()).count()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(client.clone(), options(&ns), async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while reported().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no status written in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    identities
        .patch(
            "zed",
            &apply,
            &Patch::Apply(&person(&ns, "zed", "finance", "Terminated")),
        )
        .await
        .unwrap();
    harness::eventually("zed cut off", Duration::from_secs(60), || async {
        let bound = bound_identities(&client, &ns).await;
        if bound.iter().any(|b| b == "zed") {
            Err("zed still bound".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    // Counted after the cut-off was seen, so at most this many were written before it.
    let written = reported().await;
    assert!(
        written <= JOINERS,
        "zed was cut off only after all {} statuses were written",
        JOINERS + 1
    );
    eprintln!(
        "zed cut off with {written} of {} statuses written",
        JOINERS + 1
    );
    harness::eventually("every status written", Duration::from_secs(120), || async {
        let n = reported().await;
        if n == JOINERS + 1 {
            Ok(())
        } else {
            Err(format!("{n} written"))
        }
    })
    .await;
    let _ = stop.send(());
    controller.await.unwrap().unwrap();
}
