//! The scale harness: `gatehouse run` (a child process, so its memory is its own) over N
//! identities and four real targets at once: the test API server's RBAC, OpenLDAP slapd,
//! scim2-server and PostgreSQL. Everyone is in `finance`; a mover goes to `ops`, a leaver
//! is `Terminated`.
//!
//! Reported, each read back from the targets themselves:
//! - initial provisioning time per target (every finance member in place);
//! - single mover and single leaver latency per target, p50/p99 over the samples, from the
//!   Identity patch until the target shows the new grant (a mover) or the cut-off (a
//!   leaver), first with everything in sync and then while N/10 joiners are being applied;
//! - work for one single-identity change: the controller's own operations and full
//!   observations per target, the API server's RBAC requests, scim2-server's requests;
//! - an idle window: API writes (Leases excluded), SCIM requests, operations, observations;
//! - `gatehouse run`'s resident and peak memory.
//!
//! `cargo bench --bench scale` (N = 10,000; `GATEHOUSE_BENCH_IDENTITIES=100000`,
//! `GATEHOUSE_BENCH_SAMPLES` (20), `GATEHOUSE_BENCH_IDLE` seconds (60)). `cargo test
//! --benches` runs it once on 20 identities. Needs every `scripts/install-*.sh` but Samba.
// Each peer harness carries its own copy of tests/peer_script.rs.
#![allow(clippy::duplicate_mod)]

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "common/latency.rs"]
mod latency;
#[path = "../tests/postgres_peer/mod.rs"]
mod postgres_peer;
#[path = "../tests/scim_peer/mod.rs"]
mod scim_peer;
#[path = "../tests/slapd/mod.rs"]
mod slapd;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use harness::{apply, secret};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use latency::{percentile, person};
use ldap3::Scope;

/// No sample may take longer than this on any target; the bench fails rather than wait.
const GIVE_UP: Duration = Duration::from_secs(120);
/// The four targets: (label, TargetSystem name).
const TARGETS: [(&str, &str); 4] = [
    ("Kubernetes", "k8s"),
    ("LDAP (slapd)", "corp-ldap"),
    ("SCIM (scim2-server)", "erp-scim"),
    ("PostgreSQL", "ledger-db"),
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The sum of every series of a metric of `gatehouse run` whose labels contain `labels`.
async fn metric_sum(address: SocketAddr, name: &str, labels: &[String]) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return 0.0;
    };
    let _ = stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await;
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Requests the API server served on RBAC bindings (every verb).
async fn rbac_requests(client: &Client) -> u64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| {
            l.contains("resource=\"clusterrolebindings\"")
                || l.contains("resource=\"rolebindings\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The targets as the bench reads them behind the controller's back.
struct Probe {
    client: Client,
    ns: String,
    ldap: ldap3::Ldap,
    ldap_scope: slapd::TestScope,
    scim: scim_peer::Raw,
    scim_peer: &'static scim_peer::Peer,
    tenant: String,
    /// SCIM user ids by userName.
    scim_ids: BTreeMap<String, String>,
    scim_ops: String,
    pg: tokio_postgres::Client,
    pg_finance: String,
    pg_ops: String,
}

impl Probe {
    /// The identity's ClusterRoleBindings with a subject, by role.
    async fn k8s_roles(&self, name: &str) -> Option<Vec<String>> {
        let selector = format!(
            "gatehouse.dev/tenant={},gatehouse.dev/identity={name}",
            self.ns
        );
        let list = Api::<ClusterRoleBinding>::all(self.client.clone())
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        Some(
            list.items
                .into_iter()
                .filter(|b| b.subjects.as_ref().is_some_and(|s| !s.is_empty()))
                .map(|b| b.role_ref.name)
                .collect(),
        )
    }

    async fn ldap_member(&self, group: &str, name: &str) -> bool {
        let filter = format!("(member={})", self.ldap_scope.user(name));
        let Ok(result) = self
            .ldap
            .clone()
            .search(
                &self.ldap_scope.group(group),
                Scope::Base,
                &filter,
                vec!["cn"],
            )
            .await
        else {
            return false;
        };
        result
            .success()
            .is_ok_and(|(entries, _)| !entries.is_empty())
    }

    async fn ldap_locked(&self, name: &str) -> bool {
        let mut ldap = self.ldap.clone();
        slapd::attribute(
            &mut ldap,
            &self.ldap_scope.user(name),
            "pwdAccountLockedTime",
        )
        .await
        .is_some_and(|v| !v.is_empty())
    }

    async fn scim_in_ops(&self, name: &str) -> bool {
        let Some(id) = self.scim_ids.get(name) else {
            return false;
        };
        let (status, _, group) = self
            .scim
            .call(
                reqwest::Method::GET,
                &format!("Groups/{}", self.scim_ops),
                None,
                None,
            )
            .await;
        status == 200
            && group["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["value"].as_str() == Some(id.as_str())))
    }

    async fn scim_inactive(&self, name: &str) -> bool {
        let Some(id) = self.scim_ids.get(name) else {
            return false;
        };
        let (status, _, user) = self
            .scim
            .call(reqwest::Method::GET, &format!("Users/{id}"), None, None)
            .await;
        status == 200 && user["active"].as_bool() == Some(false)
    }

    async fn pg_member(&self, group: &str, name: &str) -> bool {
        self.pg
            .query_opt(
                "SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                 JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = $1 AND u.rolname = $2",
                &[&group, &name],
            )
            .await
            .ok()
            .flatten()
            .is_some()
    }

    async fn pg_nologin(&self, name: &str) -> bool {
        self.pg
            .query_opt(
                "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
                &[&name],
            )
            .await
            .ok()
            .flatten()
            .is_some_and(|row| !row.get::<_, bool>(0))
    }

    /// Per target, from `t0` until `name` holds its `ops` grant and no finance one (a
    /// mover), all four watched at once.
    async fn moved(&self, t0: Instant, name: &str) -> [Duration; 4] {
        let (k, l, s, p) = tokio::join!(
            latency::until(t0, name, "Kubernetes", GIVE_UP, async || {
                self.k8s_roles(name)
                    .await
                    .is_some_and(|r| r == ["edit".to_string()])
            }),
            latency::until(t0, name, "LDAP", GIVE_UP, async || {
                self.ldap_member("ops", name).await && !self.ldap_member("finance", name).await
            }),
            // The finance group holds everyone; reading it per poll would load the
            // single-threaded server. Revocations are applied before grants, and the end of
            // the run checks that no mover is left in finance.
            latency::until(t0, name, "SCIM", GIVE_UP, async || self
                .scim_in_ops(name)
                .await),
            latency::until(t0, name, "PostgreSQL", GIVE_UP, async || {
                self.pg_member(&self.pg_ops, name).await
                    && !self.pg_member(&self.pg_finance, name).await
            }),
        );
        [k, l, s, p]
    }

    /// Per target, from `t0` until `name` is cut off, all four watched at once.
    async fn cut_off(&self, t0: Instant, name: &str) -> [Duration; 4] {
        let (k, l, s, p) = tokio::join!(
            latency::until(t0, name, "Kubernetes", GIVE_UP, async || {
                self.k8s_roles(name).await.is_some_and(|r| r.is_empty())
            }),
            latency::until(t0, name, "LDAP", GIVE_UP, async || self
                .ldap_locked(name)
                .await),
            latency::until(t0, name, "SCIM", GIVE_UP, async || self
                .scim_inactive(name)
                .await),
            latency::until(t0, name, "PostgreSQL", GIVE_UP, async || self
                .pg_nologin(name)
                .await),
        );
        [k, l, s, p]
    }

    /// How many identities each target shows with their finance access.
    async fn provisioned(&self) -> [usize; 4] {
        let selector = format!("gatehouse.dev/tenant={}", self.ns);
        let k = Api::<ClusterRoleBinding>::all(self.client.clone())
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_or(0, |l| l.items.len());
        let l = self
            .ldap_scope
            .members(&mut self.ldap.clone(), "finance")
            .await
            .map_or(0, |m| m.iter().filter(|m| !m.is_empty()).count());
        let s = self.scim_member_ids("finance").await.len();
        let p = self
            .pg
            .query_one(
                "SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = $1",
                &[&self.pg_finance],
            )
            .await
            .map_or(0, |r| r.get::<_, i64>(0) as usize);
        [k, l, s, p]
    }

    /// Every SCIM user's id by userName, page by page (the server caps a page).
    async fn scim_users(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        loop {
            let page = self
                .scim
                .get(&format!("Users?startIndex={}&count=1000", out.len() + 1))
                .await;
            let users = page["Resources"].as_array().cloned().unwrap_or_default();
            if users.is_empty() {
                return out;
            }
            for u in users {
                if let (Some(name), Some(id)) = (u["userName"].as_str(), u["id"].as_str()) {
                    out.insert(name.to_string(), id.to_string());
                }
            }
        }
    }

    /// The member ids of a SCIM group (one read of the group, no per-member lookups).
    async fn scim_member_ids(&self, group: &str) -> Vec<String> {
        self.scim.group(group).await.map_or_else(Vec::new, |g| {
            g["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| Some(m["value"].as_str()?.to_string()))
                .collect()
        })
    }

    /// How many joiners (`j…`) PostgreSQL shows in finance.
    async fn pg_joiners(&self) -> usize {
        self.pg
            .query_one(
                "SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                 JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = $1 AND u.rolname LIKE 'j%'",
                &[&self.pg_finance],
            )
            .await
            .map_or(0, |r| r.get::<_, i64>(0) as usize)
    }

    fn scim_requests(&self) -> usize {
        let needle = format!(" /{}/", self.tenant);
        self.scim_peer
            .log()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }
}

/// Operations and reads (full listings and targeted re-reads) `gatehouse run` reports, per target.
async fn controller_work(address: SocketAddr, ns: &str) -> [(f64, f64); 4] {
    let mut out = [(0.0, 0.0); 4];
    for (slot, (_, target)) in out.iter_mut().zip(TARGETS) {
        let labels = [
            format!("namespace=\"{ns}\""),
            format!("target=\"{target}\""),
        ];
        *slot = (
            metric_sum(address, "gatehouse_target_operations_total", &labels).await,
            metric_sum(address, "gatehouse_target_observations_total", &labels).await
                + metric_sum(address, "gatehouse_target_rereads_total", &labels).await,
        );
    }
    out
}

/// `gatehouse run`, stopped when the bench ends, panics included.
struct Controller(std::process::Child);

impl Controller {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn report(what: &str, samples: [Vec<Duration>; 4]) {
    for ((kind, _), mut latencies) in TARGETS.into_iter().zip(samples) {
        latencies.sort();
        println!(
            "scale: {what}: {kind}: p50 {:.0?}, p99 {:.0?}, max {:.0?} over {}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1],
            latencies.len()
        );
    }
}

async fn apply_all(client: &Client, ns: &str, names: &[String], department: &str) {
    futures::stream::iter(names)
        .for_each_concurrent(16, |name| async move {
            apply::<Identity>(client, ns, &person(name, department)).await;
        })
        .await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = if smoke {
        20
    } else {
        env("GATEHOUSE_BENCH_IDENTITIES", 10_000)
    };
    let samples = if smoke {
        2
    } else {
        env("GATEHOUSE_BENCH_SAMPLES", 20)
    };
    let idle = Duration::from_secs(if smoke {
        2
    } else {
        env("GATEHOUSE_BENCH_IDLE", 60)
    } as u64);
    let batch = (n / 10).max(samples);

    let client = harness::client().await;
    let ns = harness::namespace(&client, "scale").await;

    let directory = slapd::Slapd::shared();
    let ldap_scope = directory.scope(&["finance", "ops"]).await;
    secret(
        &client,
        &ns,
        "corp-ldap",
        &directory.credentials(None),
        &["bindDN", "password"],
    )
    .await;
    let peer = scim_peer::peer();
    let tenant = peer.tenant("scale");
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
    let scim_ops = scim.create_group("ops").await;
    let pg = postgres_peer::superuser().await;
    let pg_scope = postgres_peer::Scope::new("scale");
    let (pg_finance, pg_ops) = (pg_scope.role("finance"), pg_scope.role("ops"));
    pg.batch_execute(&format!(
        "CREATE ROLE {pg_finance} NOLOGIN; CREATE ROLE {pg_ops} NOLOGIN"
    ))
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
    for (department, role, group) in [("finance", "view", &pg_finance), ("ops", "edit", &pg_ops)] {
        apply::<AccessPolicy>(
            &client,
            &ns,
            &format!(
                "metadata: {{name: {department}}}\nspec: {{selector: {{matchAttributes: {{department: {department}}}}}, entitlements: [{{target: k8s, kind: ClusterRole, name: {role}}}, {{target: corp-ldap, name: {department}}}, {{target: erp-scim, name: {department}}}, {{target: ledger-db, name: {group}}}]}}"
            ),
        )
        .await;
    }
    let names: Vec<String> = (0..n).map(|i| format!("u{i:06}")).collect();
    let created = Instant::now();
    apply_all(&client, &ns, &names, "finance").await;
    println!(
        "scale: {n} Identity objects created in {:.1?}",
        created.elapsed()
    );

    // The controller as its own process.
    // GATEHOUSE_BENCH_LOG=FILE keeps the controller's log.
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = std::env::var_os("GATEHOUSE_BENCH_LOG")
        .map_or_else(|| log.path().to_path_buf(), std::path::PathBuf::from);
    let log_file = std::fs::File::create(&log_path).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args([
            "run",
            "-n",
            &ns,
            "--leader-elect=false",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--resync", "1h"])
        .env("KUBECONFIG", &harness::control_plane().kubeconfig)
        .stderr(log_file)
        .spawn()
        .map(Controller)
        .unwrap();
    let address = harness::served_address(&log_path).await;
    let started = Instant::now();

    let mut probe = Probe {
        client: client.clone(),
        ns: ns.clone(),
        ldap: directory.admin().await,
        ldap_scope,
        scim,
        scim_peer: peer,
        tenant: tenant.clone(),
        scim_ids: BTreeMap::new(),
        scim_ops,
        pg,
        pg_finance,
        pg_ops,
    };
    let mut done: [Option<Duration>; 4] = [None; 4];
    let mut peak = 0.0f64;
    while done.iter().any(Option::is_none) {
        let counts = probe.provisioned().await;
        for ((slot, count), (kind, _)) in done.iter_mut().zip(counts).zip(TARGETS) {
            if slot.is_none() && count >= n {
                *slot = Some(started.elapsed());
                println!(
                    "scale: {kind}: {n} identities provisioned in {:.1?}",
                    started.elapsed()
                );
            }
        }
        peak = peak.max(memory(child.id()).1);
        assert!(
            started.elapsed() < Duration::from_secs(7200),
            "provisioning stalled at {counts:?} of {n}"
        );
        tokio::time::sleep(Duration::from_secs(if smoke { 1 } else { 5 })).await;
    }
    let identities: Api<Identity> = Api::namespaced(client.clone(), &ns);
    harness::eventually(
        "every Identity Ready",
        Duration::from_secs(1800),
        || async {
            let ready = harness::ready_identities(&identities).await?;
            if ready >= n {
                Ok(())
            } else {
                Err(format!("{ready} of {n} Ready"))
            }
        },
    )
    .await;
    let (rss, hwm) = memory(child.id());
    println!(
        "scale: settled after {:.1?}: `gatehouse run` resident {rss:.0} MiB, peak {hwm:.0} MiB",
        started.elapsed()
    );
    probe.scim_ids = probe.scim_users().await;

    // One mover, counted alone: what a single-identity change costs each target.
    let rbac_before = rbac_requests(&client).await;
    let scim_before = probe.scim_requests();
    let work_before = controller_work(address, &ns).await;
    let mover = &names[0];
    identities
        .patch(
            mover,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"employment": {"department": "ops"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let work_after = controller_work(address, &ns).await;
    println!(
        "scale: one mover: API server RBAC requests {}, scim2-server requests {}",
        rbac_requests(&client).await - rbac_before,
        probe.scim_requests() - scim_before
    );
    for ((kind, _), (before, after)) in TARGETS
        .into_iter()
        .zip(work_before.into_iter().zip(work_after))
    {
        println!(
            "scale: one mover: {kind}: {} operations, {} reads (full listings and targeted re-reads)",
            after.0 - before.0,
            after.1 - before.1
        );
    }

    // Movers and leavers with everything in sync.
    let mut moved: [Vec<Duration>; 4] = Default::default();
    let mut left: [Vec<Duration>; 4] = Default::default();
    let to_ops = serde_json::json!({"spec": {"employment": {"department": "ops"}}});
    let terminate = serde_json::json!({"spec": {"employment": {"status": "Terminated"}}});
    for i in 0..samples {
        let name = &names[1 + i];
        let t0 = Instant::now();
        identities
            .patch(name, &PatchParams::default(), &Patch::Merge(&to_ops))
            .await
            .unwrap();
        for (all, took) in moved.iter_mut().zip(probe.moved(t0, name).await) {
            all.push(took);
        }
        let name = &names[1 + samples + i];
        let t0 = Instant::now();
        identities
            .patch(name, &PatchParams::default(), &Patch::Merge(&terminate))
            .await
            .unwrap();
        for (all, took) in left.iter_mut().zip(probe.cut_off(t0, name).await) {
            all.push(took);
        }
    }
    report(&format!("mover, {n} identities in sync"), moved);
    report(&format!("leaver, {n} identities in sync"), left);

    // Leavers while `batch` joiners are being applied.
    let joiners: Vec<String> = (0..batch).map(|i| format!("j{i:06}")).collect();
    let background = {
        let (client, ns, joiners) = (client.clone(), ns.clone(), joiners.clone());
        tokio::spawn(async move { apply_all(&client, &ns, &joiners, "finance").await })
    };
    tokio::time::sleep(Duration::from_secs(if smoke { 1 } else { 10 })).await;
    let mut during: [Vec<Duration>; 4] = Default::default();
    let mut behind = 0;
    let mut joined_at = Vec::new();
    for i in 0..samples {
        let name = &names[1 + 2 * samples + i];
        let t0 = Instant::now();
        identities
            .patch(name, &PatchParams::default(), &Patch::Merge(&terminate))
            .await
            .unwrap();
        for (all, took) in during.iter_mut().zip(probe.cut_off(t0, name).await) {
            all.push(took);
        }
        let joined = probe.pg_joiners().await;
        if joined < batch {
            behind += 1;
        }
        joined_at.push(joined);
    }
    report(&format!("leaver while {batch} joiners are applied"), during);
    println!(
        "scale: {behind} of {samples} leaver samples ended with the joiner batch still being applied (joiners in finance on PostgreSQL after each: {joined_at:?} of {batch})"
    );
    background.await.unwrap();
    harness::eventually(
        "the joiners provisioned",
        Duration::from_secs(3600),
        || async {
            let counts = probe.provisioned().await;
            // Leavers keep their (subject-less) bindings and their accounts.
            if counts.iter().all(|&c| c + 3 * samples + 1 >= n + batch) {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Idle.
    let writes_before = harness::api_writes(&client, &["leases"]).await;
    let scim_before = probe.scim_requests();
    let work_before = controller_work(address, &ns).await;
    tokio::time::sleep(idle).await;
    let work_after = controller_work(address, &ns).await;
    println!(
        "scale: idle {idle:?}: {} API writes (Leases excluded), {} scim2-server requests",
        harness::api_writes(&client, &["leases"]).await - writes_before,
        probe.scim_requests() - scim_before
    );
    for ((kind, _), (before, after)) in TARGETS
        .into_iter()
        .zip(work_before.into_iter().zip(work_after))
    {
        println!(
            "scale: idle: {kind}: {} operations, {} reads (full listings and targeted re-reads)",
            after.0 - before.0,
            after.1 - before.1
        );
    }
    let finance = probe.scim_member_ids("finance").await;
    let stale: Vec<&String> = names[..=samples]
        .iter()
        .filter(|m| {
            probe
                .scim_ids
                .get(*m)
                .is_some_and(|id| finance.contains(id))
        })
        .collect();
    assert!(stale.is_empty(), "movers still in SCIM finance: {stale:?}");
    let (rss, hwm) = memory(child.id());
    println!(
        "scale: `gatehouse run` at the end: resident {rss:.0} MiB, peak {:.0} MiB",
        hwm.max(peak)
    );
}
