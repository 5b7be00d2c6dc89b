//! The `gatehouse run` binary as operators run it, against a real API server: two replicas
//! with one leader, and `kill -9` in the middle of a large apply.

mod harness;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use harness::{apply, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};

/// One `gatehouse run` process.
struct Replica {
    name: String,
    child: Child,
    /// Its stderr, which names the address it bound (`--listen 127.0.0.1:0`).
    log: tempfile::NamedTempFile,
}

impl Replica {
    fn start(ns: &str, name: &str) -> Self {
        Self::start_with(ns, name, &harness::control_plane().kubeconfig)
    }

    fn start_with(ns: &str, name: &str, kubeconfig: &std::path::Path) -> Self {
        Self::start_leasing(ns, name, kubeconfig, "4s")
    }

    fn start_leasing(ns: &str, name: &str, kubeconfig: &std::path::Path, lease: &str) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args([
                "run",
                "--namespace",
                ns,
                "--listen",
                "127.0.0.1:0",
                "--leader-election-namespace",
                ns,
                "--lease-duration",
                lease,
                "--instance",
                name,
                "--log-format",
                "json",
            ])
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("gatehouse starts");
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// Reconcile passes so far, from /metrics (None while it is not serving).
    async fn passes(&self) -> Option<u64> {
        let address = harness::served_address(self.log.path()).await;
        harness::metric(address, "gatehouse_reconciles_total")
            .await
            .map(|v| v as u64)
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for the process to exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }

    fn kill_9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL: no shutdown hook runs
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tests here run `gatehouse run` processes with short Leases: one at a time, so that
/// the load of one test's processes cannot make another's Lease lapse.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn holder(client: &Client, ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt("gatehouse-controller")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

/// Every managed ClusterRoleBinding of the tenant: name → (identity, role, subjects).
async fn bindings(client: &Client, ns: &str) -> BTreeMap<String, (String, String, usize)> {
    Api::<ClusterRoleBinding>::all(client.clone())
        .list(&ListParams::default().labels(&format!("gatehouse.dev/tenant={ns}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|b| {
            let who =
                b.metadata.labels.clone().unwrap_or_default()["gatehouse.dev/identity"].clone();
            let subjects = b.subjects.map(|s| s.len()).unwrap_or(0);
            (
                b.metadata.name.unwrap_or_default(),
                (who, b.role_ref.name, subjects),
            )
        })
        .collect()
}

fn person(name: &str, department: &str) -> String {
    format!(
        "metadata: {{name: {name}}}\nspec: {{type: Human, employment: {{status: Active, type: Employee, department: {department}, manager: {name}, startDate: '2026-01-01'}}}}"
    )
}

async fn setup(client: &Client, ns: &str) {
    apply::<TargetSystem>(
        client,
        ns,
        "metadata: {name: k8s}\nspec: {type: Kubernetes}",
    )
    .await;
    for (policy, department, roles) in [
        ("finance", "finance", "[view, finance-reader]"),
        ("engineering", "engineering", "[edit, deployer]"),
    ] {
        let entitlements: Vec<String> = roles
            .trim_matches(['[', ']'])
            .split(", ")
            .map(|r| format!("{{target: k8s, kind: ClusterRole, name: {r}}}"))
            .collect();
        apply::<AccessPolicy>(
            client,
            ns,
            &format!(
                "metadata: {{name: {policy}}}\nspec: {{selector: {{matchAttributes: {{department: {department}}}}}, entitlements: [{}]}}",
                entitlements.join(", ")
            ),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_leader_writes_and_the_other_takes_over() {
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let ns = harness::namespace(&client, "replicas").await;
    setup(&client, &ns).await;
    let mut replicas = [Replica::start(&ns, "a"), Replica::start(&ns, "b")];
    apply::<Identity>(&client, &ns, &person("alice", "finance")).await;
    eventually("alice's bindings", Duration::from_secs(30), || async {
        let roles: Vec<String> = bindings(&client, &ns)
            .await
            .into_values()
            .map(|b| b.1)
            .collect();
        if roles == ["finance-reader", "view"] || roles == ["view", "finance-reader"] {
            Ok(())
        } else {
            Err(format!("{roles:?}"))
        }
    })
    .await;
    let leader = holder(&client, &ns)
        .await
        .expect("a replica holds the Lease");
    let (lead, follow) = if leader == "a" { (0, 1) } else { (1, 0) };
    assert_eq!(replicas[lead].name, leader);
    // Read until it answers: a busy replica's /metrics may be slow to answer once.
    eventually("the leader reconciles", Duration::from_secs(10), || async {
        match replicas[lead].passes().await {
            Some(n) if n > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        replicas[follow].passes().await,
        Some(0),
        "the standby serves metrics but never reconciles"
    );

    // The leader dies without releasing its Lease; the standby takes over once it expires
    // and carries out the next change (a move to engineering).
    replicas[lead].kill_9();
    apply::<Identity>(&client, &ns, &person("alice", "engineering")).await;
    eventually(
        "the move, by the new leader",
        Duration::from_secs(40),
        || async {
            let mut roles: Vec<String> = bindings(&client, &ns)
                .await
                .into_values()
                .filter(|b| b.2 > 0)
                .map(|b| b.1)
                .collect();
            roles.sort();
            if roles == ["deployer", "edit"] {
                Ok(())
            } else {
                Err(format!("{roles:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        holder(&client, &ns).await.as_deref(),
        Some(replicas[follow].name.as_str())
    );
    eventually(
        "the new leader reconciles",
        Duration::from_secs(10),
        || async {
            match replicas[follow].passes().await {
                Some(n) if n > 0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_large_apply_ends_exactly_right_after_restart() {
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let ns = harness::namespace(&client, "kill").await;
    setup(&client, &ns).await;
    let people: usize = 300;
    let identities: Api<Identity> = Api::namespaced(client.clone(), &ns);
    for i in 0..people {
        let department = if i.is_multiple_of(2) {
            "finance"
        } else {
            "engineering"
        };
        let identity: Identity =
            serde_yaml::from_str(&person(&format!("p{i:03}"), department)).unwrap();
        identities
            .create(&PostParams::default(), &identity)
            .await
            .unwrap();
    }
    let expected = people * 2;

    let mut first = Replica::start(&ns, "first");
    let partial = eventually("the apply under way", Duration::from_secs(60), || async {
        let n = bindings(&client, &ns).await.len();
        if n >= 20 {
            Ok(n)
        } else {
            Err(format!("{n} bindings"))
        }
    })
    .await;
    first.kill_9();
    let after_kill = bindings(&client, &ns).await.len();
    assert!(
        after_kill < expected,
        "killed mid-apply ({partial} then {after_kill} of {expected} bindings)"
    );

    let _second = Replica::start(&ns, "second");
    let done = eventually("every binding, once", Duration::from_secs(90), || async {
        let all = bindings(&client, &ns).await;
        if all.len() == expected {
            Ok(all)
        } else {
            Err(format!("{} of {expected}", all.len()))
        }
    })
    .await;
    // Exactly right: one binding per (identity, role), each with its one subject, and the
    // roles the identity's department grants.
    let mut per_identity: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (identity, role, subjects) in done.into_values() {
        assert_eq!(subjects, 1, "{identity} {role}");
        per_identity.entry(identity).or_default().push(role);
    }
    assert_eq!(per_identity.len(), people);
    for (identity, mut roles) in per_identity {
        roles.sort();
        let index: usize = identity[1..].parse().unwrap();
        let want = if index.is_multiple_of(2) {
            ["finance-reader", "view"]
        } else {
            ["deployer", "edit"]
        };
        assert_eq!(roles, want, "{identity}");
    }
    // And every identity says so.
    eventually("every identity Ready", Duration::from_secs(60), || async {
        let ready = harness::ready_identities(&identities).await?;
        if ready == people {
            Ok(())
        } else {
            Err(format!("{ready} of {people} Ready"))
        }
    })
    .await;
}

/// A TCP relay in front of the API server that can be cut and restored, to make the API
/// server unavailable to the controller without stopping it for everyone else. It keeps
/// its address (bound once, on port 0) and, while cut, closes every connection at once and
/// counts it: the controller's attempts to reach the API server.
struct Relay {
    port: u16,
    /// Whether connections are relayed.
    open: tokio::sync::watch::Sender<bool>,
    /// Connections closed unanswered while cut.
    refused: Arc<AtomicU64>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, mut state) = tokio::sync::watch::channel(true);
        let refused = Arc::new(AtomicU64::new(0));
        let counter = refused.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    changed = state.changed() => match changed {
                        Ok(()) => continue,
                        Err(_) => return, // the relay was dropped
                    },
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    return;
                };
                if !*state.borrow() {
                    counter.fetch_add(1, Ordering::SeqCst);
                    continue; // dropped: closed unanswered
                }
                let mut cut = state.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|open| !open) => {} // drops both ends: live watches break
                    }
                });
            }
        });
        Self {
            port,
            open,
            refused,
        }
    }

    /// Breaks every relayed connection and refuses new ones.
    fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Relays again, on the same address.
    fn restore(&self) {
        self.open.send_replace(true);
    }

    /// Connections refused so far.
    fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_going_away_is_survived_and_work_resumes_when_it_returns() {
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let ns = harness::namespace(&client, "outage").await;
    setup(&client, &ns).await;
    apply::<Identity>(&client, &ns, &person("alice", "finance")).await;

    // The controller reaches the API server only through the relay.
    let admin = std::fs::read_to_string(&harness::control_plane().kubeconfig).unwrap();
    let server = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    let upstream: std::net::SocketAddr = server.trim_start_matches("https://").parse().unwrap();
    let relay = Relay::start(upstream).await;
    let port = relay.port;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        admin.replace(&server, &format!("https://127.0.0.1:{port}")),
    )
    .unwrap();
    let mut replica = Replica::start_with(&ns, "solo", &kubeconfig);
    let roles = |want: &'static [&'static str]| {
        let client = client.clone();
        let ns = ns.clone();
        move || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let mut roles: Vec<String> = bindings(&client, &ns)
                    .await
                    .into_values()
                    .filter(|b| b.2 > 0)
                    .map(|b| b.1)
                    .collect();
                roles.sort();
                if roles == want {
                    Ok(())
                } else {
                    Err(format!("{roles:?}"))
                }
            }
        }
    };
    eventually(
        "alice's access",
        Duration::from_secs(30),
        roles(&["finance-reader", "view"]),
    )
    .await;

    // The API server disappears; the mover happens meanwhile.
    relay.cut();
    apply::<Identity>(&client, &ns, &person("alice", "engineering")).await;
    // The controller keeps trying (watches, the Lease): wait for a few of its attempts to
    // be refused, not for a while.
    let refused = relay.refused();
    eventually(
        "the controller's attempts while the API server is away",
        Duration::from_secs(60),
        || async {
            match relay.refused() - refused {
                n if n >= 5 => Ok(()),
                n => Err(format!("{n} attempts refused")),
            }
        },
    )
    .await;
    assert!(
        replica.child.try_wait().unwrap().is_none(),
        "the controller keeps running while the API server is away"
    );
    let mut roles_now: Vec<String> = bindings(&client, &ns)
        .await
        .into_values()
        .map(|b| b.1)
        .collect();
    roles_now.sort();
    assert_eq!(
        roles_now,
        ["finance-reader", "view"],
        "nothing could be done meanwhile"
    );

    // It comes back on the same address: the watches resume and the move is carried out.
    relay.restore();
    eventually(
        "the move after the outage",
        Duration::from_secs(60),
        roles(&["deployer", "edit"]),
    )
    .await;
    assert!(replica.child.try_wait().unwrap().is_none());
    replica.kill_9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_and_the_standby_takes_over() {
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let ns = harness::namespace(&client, "sigterm").await;
    setup(&client, &ns).await;
    let kubeconfig = &harness::control_plane().kubeconfig;
    let mut first = Replica::start_leasing(&ns, "first", kubeconfig, "6s");
    eventually("first holds the Lease", Duration::from_secs(30), || async {
        match holder(&client, &ns).await {
            Some(h) if h == "first" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let _second = Replica::start_leasing(&ns, "second", kubeconfig, "6s");
    let exited = first.terminate();
    assert!(exited.success(), "a SIGTERM is a clean shutdown: {exited}");
    // Released on the way out, not left to expire: nobody holds it right after the exit.
    let holder_after_exit = holder(&client, &ns).await;
    assert_ne!(
        holder_after_exit.as_deref(),
        Some("first"),
        "the Lease is released at shutdown"
    );
    eventually(
        "second takes the Lease",
        Duration::from_secs(20),
        || async {
            match holder(&client, &ns).await {
                Some(h) if h == "second" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}
