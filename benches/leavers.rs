//! Leaver cut-off latency on every target type at once: the running controller (in this
//! process) against a real API server, OpenLDAP slapd, Samba's AD DC, scim2-server and
//! PostgreSQL, each target with one operation failing permanently the whole time (another
//! identity's grant of a group, role or namespace that does not exist, or a SCIM userName
//! taken by an account gatehouse does not manage). One Identity after another is set
//! `Terminated`; for each target the time from that patch until the target itself shows
//! the account cut off (binding without subjects, `pwdAccountLockedTime`, the
//! `ACCOUNTDISABLE` bit, `active: false`, `NOLOGIN`) is one sample. Reported: p50, p99 and
//! max per target type.
//!
//! `cargo bench --bench leavers` (100 leavers; `GATEHOUSE_BENCH_LEAVERS=N` for another
//! count). Needs root for Samba (ports 88/389/636 free) and every `scripts/install-*.sh`.
//! `cargo test --benches` runs it once with 3 leavers.
// Each peer harness carries its own copy of tests/peer_script.rs.
#![allow(clippy::duplicate_mod)]

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "common/latency.rs"]
mod latency;
#[path = "../tests/postgres_peer/mod.rs"]
mod postgres_peer;
#[path = "../tests/samba/mod.rs"]
mod samba;
#[path = "../tests/scim_peer/mod.rs"]
mod scim_peer;
#[path = "../tests/slapd/mod.rs"]
mod slapd;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::controller::{Options, run};
use harness::{apply, secret};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use latency::{percentile, person};

/// No leaver may take longer than this on any target; the bench fails rather than wait.
const GIVE_UP: Duration = Duration::from_secs(60);

/// The five targets as the bench looks at them behind the controller's back.
struct Targets {
    client: Client,
    ns: String,
    ldap: ldap3::Ldap,
    ldap_scope: slapd::TestScope,
    ad: ldap3::Ldap,
    ad_scope: samba::TestScope,
    scim: scim_peer::Raw,
    /// SCIM user ids by userName, read once everyone is provisioned.
    scim_ids: BTreeMap<String, String>,
    pg: tokio_postgres::Client,
}

impl Targets {
    /// No ClusterRoleBinding of `name` names a subject any more.
    async fn k8s_cut_off(client: &Client, ns: &str, name: &str) -> bool {
        let selector = format!("gatehouse.dev/tenant={ns},gatehouse.dev/identity={name}");
        Api::<ClusterRoleBinding>::all(client.clone())
            .list(&ListParams::default().labels(&selector))
            .await
            .is_ok_and(|list| {
                list.items
                    .iter()
                    .all(|b| b.subjects.as_ref().is_none_or(Vec::is_empty))
            })
    }

    async fn ldap_cut_off(ldap: &mut ldap3::Ldap, dn: &str) -> bool {
        slapd::attribute(ldap, dn, "pwdAccountLockedTime")
            .await
            .is_some_and(|v| !v.is_empty())
    }

    async fn ad_cut_off(ldap: &mut ldap3::Ldap, dn: &str) -> bool {
        samba::uac(ldap, dn).await.is_some_and(|uac| uac & 2 != 0)
    }

    async fn scim_cut_off(scim: &scim_peer::Raw, id: &str) -> bool {
        let (status, _, user) = scim
            .call(reqwest::Method::GET, &format!("Users/{id}"), None, None)
            .await;
        status == 200 && user["active"].as_bool() == Some(false)
    }

    async fn pg_cut_off(pg: &tokio_postgres::Client, role: &str) -> bool {
        pg.query_opt(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .ok()
        .flatten()
        .is_some_and(|row| !row.get::<_, bool>(0))
    }

    /// Time from `t0` to the cut-off of `name` on each target, all watched at once:
    /// Kubernetes, LDAP, AD, SCIM, PostgreSQL.
    async fn cut_off(&mut self, t0: Instant, name: &str) -> [Duration; 5] {
        let ldap_dn = self.ldap_scope.user(name);
        let ad_dn = self.ad_scope.user(name);
        let scim_id = self.scim_ids[name].clone();
        let (client, ns, ldap, ad, scim, pg) = (
            &self.client,
            &self.ns,
            &mut self.ldap,
            &mut self.ad,
            &self.scim,
            &self.pg,
        );
        let (k, l, a, s, p) = tokio::join!(
            latency::until(t0, name, "Kubernetes", GIVE_UP, async || {
                Self::k8s_cut_off(client, ns, name).await
            }),
            latency::until(t0, name, "LDAP", GIVE_UP, async || {
                Self::ldap_cut_off(ldap, &ldap_dn).await
            }),
            latency::until(t0, name, "AD", GIVE_UP, async || {
                Self::ad_cut_off(ad, &ad_dn).await
            }),
            latency::until(t0, name, "SCIM", GIVE_UP, async || {
                Self::scim_cut_off(scim, &scim_id).await
            }),
            latency::until(t0, name, "PostgreSQL", GIVE_UP, async || {
                Self::pg_cut_off(pg, name).await
            }),
        );
        [k, l, a, s, p]
    }
}

const KINDS: [(&str, &str); 5] = [
    ("Kubernetes", "k8s"),
    ("LDAP (OpenLDAP)", "corp-ldap"),
    ("Active Directory (Samba)", "corp-ad"),
    ("SCIM (scim2-server)", "erp-scim"),
    ("PostgreSQL", "ledger-db"),
];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let leavers: usize = if smoke {
        3
    } else {
        std::env::var("GATEHOUSE_BENCH_LEAVERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100)
    };
    let stayers = if smoke { 2 } else { 20 };

    let client = harness::client().await;
    let ns = harness::namespace(&client, "leavers").await;

    // The targets, each with one thing that cannot be granted.
    let directory = slapd::Slapd::shared();
    let ldap_scope = directory.scope(&["finance"]).await;
    secret(
        &client,
        &ns,
        "corp-ldap",
        &directory.credentials(None),
        &["bindDN", "password"],
    )
    .await;
    let dc = samba::Samba::shared();
    let ad_scope = dc.scope(&["finance"]).await;
    secret(
        &client,
        &ns,
        "corp-ad",
        &dc.credentials(),
        &["bindDN", "password", "ca.crt"],
    )
    .await;
    let peer = scim_peer::peer();
    let tenant = peer.tenant("leavers");
    let scim_config = peer.config(&ns, "erp-scim", &tenant, "", "Disable");
    secret(
        &client,
        &ns,
        "scim-token",
        &scim_config.credentials,
        &["token"],
    )
    .await;
    let scim = scim_peer::Raw::new(peer, &tenant);
    // `mallory` on SCIM is someone else's account: creating gatehouse's answers 409.
    scim.create_user("mallory", Some("not-managed-by-gatehouse"))
        .await;
    let pg = postgres_peer::superuser().await;
    let pg_group = postgres_peer::Scope::new("leavers").role("finance");
    pg.batch_execute(&format!("CREATE ROLE {pg_group} NOLOGIN"))
        .await
        .unwrap();
    secret(
        &client,
        &ns,
        "db-admin",
        &postgres_peer::credentials(),
        &["username", "password", "ca.crt"],
    )
    .await;

    for yaml in [
        "metadata: {name: k8s}\nspec: {type: Kubernetes}".to_string(),
        format!(
            "metadata: {{name: corp-ldap}}\nspec: {}",
            directory.spec_yaml(
                &directory.ldap_url,
                &ldap_scope,
                "startTLS: false",
                "Disable"
            )
        ),
        format!(
            "metadata: {{name: corp-ad}}\nspec: {}",
            dc.spec_yaml(&ad_scope, "Disable")
        ),
        format!(
            "metadata: {{name: erp-scim}}\nspec: {{type: SCIM, onLeave: Disable, scim: {{url: '{}'}}, credentialsSecretRef: {{name: scim-token}}}}",
            peer.url(&tenant)
        ),
        format!(
            "metadata: {{name: ledger-db}}\nspec: {}",
            postgres_peer::spec_yaml("", "")
        ),
    ] {
        apply::<TargetSystem>(&client, &ns, &yaml).await;
    }
    apply::<AccessPolicy>(
        &client,
        &ns,
        &format!(
            "metadata: {{name: finance}}\nspec: {{selector: {{matchAttributes: {{department: finance}}}}, entitlements: [{{target: k8s, kind: ClusterRole, name: view}}, {{target: corp-ldap, name: finance}}, {{target: corp-ad, name: finance}}, {{target: erp-scim, name: payments}}, {{target: ledger-db, name: {pg_group}}}]}}"
        ),
    )
    .await;
    // The permanent failures: none of these exists; on SCIM, creating mallory fails (409).
    apply::<AccessPolicy>(
        &client,
        &ns,
        "metadata: {name: broken}\nspec: {selector: {matchAttributes: {department: broken}}, entitlements: [{target: k8s, kind: Role, namespace: no-such-namespace, name: view}, {target: corp-ldap, name: ghost}, {target: corp-ad, name: ghost}, {target: erp-scim, name: payments}, {target: ledger-db, name: no_such_role}]}",
    )
    .await;
    apply::<Identity>(&client, &ns, &person("mallory", "broken")).await;
    let leaving: Vec<String> = (0..leavers).map(|i| format!("lv{i:03}")).collect();
    let staying: Vec<String> = (0..stayers).map(|i| format!("st{i:03}")).collect();
    for name in leaving.iter().chain(&staying) {
        apply::<Identity>(&client, &ns, &person(name, "finance")).await;
    }

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = Options {
        namespace: Some(ns.clone()),
        // Long enough that no resync falls inside the measurement.
        resync: Duration::from_secs(3600),
        instance: Some("leavers-bench".into()),
        ..Options::default()
    };
    let started = Instant::now();
    let controller = tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));
    let identities: Api<Identity> = Api::namespaced(client.clone(), &ns);
    let everyone = leavers + stayers;
    loop {
        let ready = harness::ready_identities(&identities).await.unwrap();
        if ready >= everyone {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {ready} of {everyone} identities Ready"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "leavers: {everyone} identities provisioned on 5 targets in {:.1?}",
        started.elapsed()
    );

    // Every target must be failing mallory's operation for the measurement to mean anything.
    let target_api: Api<TargetSystem> = Api::namespaced(client.clone(), &ns);
    for (kind, target) in KINDS {
        // Identities may be Ready before the target's own status is written.
        let failed = harness::eventually(
            &format!("{kind} reporting mallory's failing operation"),
            Duration::from_secs(60),
            || async {
                let status = target_api
                    .get(target)
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .unwrap_or_default();
                if status
                    .failed_operations
                    .iter()
                    .any(|f| f.contains("mallory"))
                {
                    Ok(status.failed_operations)
                } else {
                    Err(format!("{:?}", status.failed_operations))
                }
            },
        )
        .await;
        println!("leavers: {kind} keeps failing: {}", failed.join("; "));
    }

    let scim_ids = scim
        .all("Users")
        .await
        .into_iter()
        .filter_map(|u| {
            Some((
                u["userName"].as_str()?.to_string(),
                u["id"].as_str()?.to_string(),
            ))
        })
        .collect();
    let mut targets = Targets {
        client: client.clone(),
        ns: ns.clone(),
        ldap: directory.admin().await,
        ldap_scope,
        ad: dc.admin().await,
        ad_scope,
        scim,
        scim_ids,
        pg,
    };
    let mut samples: [Vec<Duration>; 5] = Default::default();
    let terminate = serde_json::json!({"spec": {"employment": {"status": "Terminated"}}});
    for name in &leaving {
        let t0 = Instant::now();
        identities
            .patch(name, &PatchParams::default(), &Patch::Merge(&terminate))
            .await
            .unwrap();
        for (kind, took) in samples.iter_mut().zip(targets.cut_off(t0, name).await) {
            kind.push(took);
        }
    }
    for ((kind, _), mut latencies) in KINDS.into_iter().zip(samples) {
        latencies.sort();
        println!(
            "leavers: {kind}: cut-off latency over {leavers} leavers (one operation failing permanently): p50 {:.0?}, p99 {:.0?}, max {:.0?}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1]
        );
    }
    drop(stop);
    let _ = controller.await;
}
