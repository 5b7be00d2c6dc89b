//! The running controller against a real API server (the test harness's control plane):
//! time to provision N identities, leaver latency (Identity update → its binding deleted)
//! p50/p99 over 100 leavers, target reads per change (full listings, targeted re-reads),
//! API writes while idle, leaver latency while an N-grant policy change is being applied
//! (the leaver lane), and resident memory.
//!
//! `cargo bench --bench controller` (N = 5,000; `GATEHOUSE_BENCH_IDENTITIES=10000` for the
//! memory figure at 10k). `cargo test --benches` runs it once on a small organisation.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "common/latency.rs"]
mod latency;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::controller::{Options, run};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use latency::percentile;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn identity(name: &str, status: &str) -> Identity {
    serde_yaml::from_str(&format!(
        "metadata: {{name: {name}}}\nspec: {{type: Human, employment: {{status: {status}, type: Employee, department: finance, manager: {name}, startDate: '2026-01-01'}}}}"
    ))
    .unwrap()
}

async fn bindings_by_identity(client: &Client, ns: &str) -> BTreeMap<String, String> {
    Api::<ClusterRoleBinding>::all(client.clone())
        .list(&ListParams::default().labels(&format!("gatehouse.dev/tenant={ns}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|b| {
            let who =
                b.metadata.labels.clone().unwrap_or_default()["gatehouse.dev/identity"].clone();
            (who, b.metadata.name.unwrap_or_default())
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n: usize = if smoke {
        50
    } else {
        std::env::var("GATEHOUSE_BENCH_IDENTITIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000)
    };
    let leavers = if smoke { 5 } else { 100.min(n) };
    let idle = Duration::from_secs(if smoke { 3 } else { 60 });

    let client = harness::client().await;
    let ns = harness::namespace(&client, "bench").await;
    let post = PostParams::default();
    let target: TargetSystem =
        serde_yaml::from_str("metadata: {name: k8s}\nspec: {type: Kubernetes}").unwrap();
    Api::<TargetSystem>::namespaced(client.clone(), &ns)
        .create(&post, &target)
        .await
        .unwrap();
    let policy: AccessPolicy = serde_yaml::from_str(
        "metadata: {name: base}\nspec: {selector: {matchAttributes: {department: finance}}, entitlements: [{target: k8s, kind: ClusterRole, name: view}]}",
    )
    .unwrap();
    Api::<AccessPolicy>::namespaced(client.clone(), &ns)
        .create(&post, &policy)
        .await
        .unwrap();
    let identities: Api<Identity> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..n).map(|i| format!("user-{i:05}")).collect();
    let created = Instant::now();
    for chunk in names.chunks(50) {
        let creates = chunk.iter().map(|name| async {
            identities
                .create(&post, &identity(name, "Active"))
                .await
                .unwrap()
        });
        futures::future::join_all(creates).await;
    }
    eprintln!("created {n} identities in {:.1?}", created.elapsed());

    let options = Options {
        namespace: Some(ns.clone()),
        resync: Duration::from_secs(600),
        instance: Some("bench".into()),
        ..Options::default()
    };
    let metrics = options.metrics.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let controller = tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));
    let bindings = loop {
        let b = bindings_by_identity(&client, &ns).await;
        if b.len() == n {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "controller: {n} identities provisioned (one ClusterRoleBinding each) in {:.1?}",
        started.elapsed()
    );
    // Let the first passes settle: every identity's status written.
    loop {
        let ready = harness::ready_identities(&identities).await.unwrap();
        if ready == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "controller: settled (all statuses written) after {:.1?}",
        started.elapsed()
    );

    let bindings_api: Api<ClusterRoleBinding> = Api::all(client.clone());
    // Passes over the tenant and full reads of its one target, per single Identity change.
    let passes_and_reads = || {
        use gatehouse::http::{TargetLabels, TenantLabels};
        let tenant = TenantLabels {
            namespace: ns.clone(),
        };
        let target = TargetLabels {
            namespace: ns.clone(),
            target: "k8s".into(),
        };
        (
            metrics.tenant_passes.get_or_create(&tenant).get(),
            metrics.target_observations.get_or_create(&target).get(),
            metrics.target_rereads.get_or_create(&target).get(),
        )
    };
    let cost_before = passes_and_reads();
    let mut latencies = Vec::with_capacity(leavers);
    for name in names.iter().take(leavers) {
        let binding = &bindings[name];
        let patch = serde_json::json!({"spec": {"employment": {"status": "Terminated"}}});
        let t0 = Instant::now();
        identities
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        loop {
            let gone = bindings_api.get_opt(binding).await.unwrap().is_none();
            if gone {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{name} never revoked"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    // Counted once the leavers' confirming re-observations (due 250 ms after a revocation)
    // have run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cost_after = passes_and_reads();
    println!(
        "controller: per leaver change: {:.2} passes, {:.2} full listings and {:.2} targeted re-reads of the target ({} passes, {} listings, {} re-reads for {leavers} leavers)",
        (cost_after.0 - cost_before.0) as f64 / leavers as f64,
        (cost_after.1 - cost_before.1) as f64 / leavers as f64,
        (cost_after.2 - cost_before.2) as f64 / leavers as f64,
        cost_after.0 - cost_before.0,
        cost_after.1 - cost_before.1,
        cost_after.2 - cost_before.2,
    );
    println!(
        "controller: leaver latency over {leavers} leavers with {n} identities: p50 {:.0?}, p99 {:.0?}, max {:.0?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );

    let before = harness::api_writes(&client, &["leases"]).await;
    let passes_before = metrics.reconciles.get();
    tokio::time::sleep(idle).await;
    let after = harness::api_writes(&client, &["leases"]).await;
    println!(
        "controller: idle {idle:?}: {} API writes (leases excluded), {} reconcile passes",
        after - before,
        metrics.reconciles.get() - passes_before
    );
    assert_eq!(after - before, 0, "an idle controller writes nothing");

    // The leaver lane: a policy change granting `edit` to everyone still employed (one
    // grant each), and leavers arriving while it is being applied.
    let busy_leavers = if smoke { 3 } else { 20.min(n - leavers) };
    let edit_bindings = || async {
        bindings_api
            .list(&ListParams::default().labels(&format!("gatehouse.dev/tenant={ns}")))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|b| b.role_ref.name == "edit")
            .count()
    };
    let big: AccessPolicy = serde_yaml::from_str(
        "metadata: {name: big}\nspec: {selector: {matchAttributes: {department: finance}}, entitlements: [{target: k8s, kind: ClusterRole, name: edit}]}",
    )
    .unwrap();
    let big_started = Instant::now();
    Api::<AccessPolicy>::namespaced(client.clone(), &ns)
        .create(&post, &big)
        .await
        .unwrap();
    while edit_bindings().await == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut busy = Vec::with_capacity(busy_leavers);
    for name in names.iter().skip(leavers).take(busy_leavers) {
        let binding = &bindings[name];
        let patch = serde_json::json!({"spec": {"employment": {"status": "Terminated"}}});
        let t0 = Instant::now();
        identities
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        while bindings_api.get_opt(binding).await.unwrap().is_some() {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{name} never revoked"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        busy.push(t0.elapsed());
    }
    let granted_meanwhile = edit_bindings().await;
    let expected_edits = n - leavers - busy_leavers;
    while edit_bindings().await < expected_edits {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let big_took = big_started.elapsed();
    busy.sort();
    println!(
        "controller: leaver latency over {busy_leavers} leavers while a {expected_edits}-grant policy change applies: p50 {:.0?}, p99 {:.0?}, max {:.0?}; {granted_meanwhile} grants done when the last was cut off; the change took {big_took:.1?}",
        percentile(&busy, 0.50),
        percentile(&busy, 0.99),
        busy[busy.len() - 1]
    );
    drop(stop);
    let _ = controller.await;

    // Memory of the controller alone: the `gatehouse run` binary over the same namespace.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args([
            "run",
            "-n",
            &ns,
            "--leader-elect=false",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", &harness::control_plane().kubeconfig)
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let port = harness::served_address(log.path()).await;
    while harness::metric(port, "gatehouse_reconciles_total")
        .await
        .unwrap_or(0.0)
        < 1.0
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    println!(
        "controller: `gatehouse run` with {n} identities: resident {:.0} MiB, peak {:.0} MiB (this bench process: {:.0} MiB)",
        field("VmRSS:"),
        field("VmHWM:"),
        rss_mib()
    );
    let _ = child.kill();
    let _ = child.wait();
}
