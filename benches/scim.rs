//! SCIM connector speed against a real scim2-server: join N identities into 50 groups
//! (operations per second) three ways — `apply_batch` with Bulk, `apply_batch` without Bulk
//! (one multi-member PATCH per group), and one `apply` at a time — then re-sync the
//! unchanged tenant (it must plan zero operations) and time it.
//! Run: `cargo bench --bench scim` (N = 5000); `cargo test --benches` runs it with N = 100.
//! The peer is single-threaded Python: most of the time measured is the server's.

#[path = "../tests/scim_peer/mod.rs"]
mod scim_peer;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::engine::{AccountIntent, Engine, IdentityKey, NothingHeld, Settings, Snapshot};
use gatehouse::plan::{Operation, plan};
use gatehouse::targets::scim::Scim;
use gatehouse::targets::{Connector, Subject, TargetConfig};

const GROUPS: usize = 50;
const NOW: &str = "2026-12-01T09:00:00Z";
const NS: &str = "bench";

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn org(config: &TargetConfig, n: usize) -> Snapshot {
    org_with(config, n, false)
}

/// `rich`: full HR records (display name, e-mail, title, cost centre, employee number and
/// a manager: the first of every ten), so every default SCIM attribute is written.
fn org_with(config: &TargetConfig, n: usize, rich: bool) -> Snapshot {
    let mut target: TargetSystem = yaml(&format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {{name: saas, namespace: {NS}}}\nspec: {{type: SCIM, scim: {{url: \"http://x\"}}}}"
    ));
    target.spec = config.spec.clone();
    Snapshot {
        targets: vec![target],
        policies: (0..GROUPS)
            .map(|g| {
                yaml::<AccessPolicy>(&format!(
                    "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: d{g}, namespace: {NS}}}\nspec: {{selector: {{matchAttributes: {{department: d{g}}}}}, entitlements: [{{target: saas, name: group-{g}}}]}}"
                ))
            })
            .collect(),
        identities: (0..n)
            .map(|i| {
                let text = if rich {
                    format!(
                        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{namespace: {NS}, name: user-{i:05}}}\nspec: {{type: Human, displayName: \"User Number{i}\", email: \"user-{i:05}@bench.example\", attributes: {{costCenter: \"CC{}\", employeeId: \"E{i}\"}}, employment: {{status: Active, department: d{}, title: \"Engineer {}\", manager: user-{:05}}}}}",
                        i % 7,
                        i % GROUPS,
                        i % 3,
                        i / 10 * 10
                    )
                } else {
                    format!(
                        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{namespace: {NS}, name: user-{i:05}}}\nspec: {{type: Human, employment: {{status: Active, department: d{}, manager: user-{i:05}}}}}",
                        i % GROUPS
                    )
                };
                yaml::<Identity>(&text)
            })
            .collect(),
        exceptions: vec![],
        ..Default::default()
    }
}

fn subjects(engine: &Engine) -> BTreeMap<IdentityKey, Subject> {
    engine
        .evaluate(NOW.parse().unwrap(), &NothingHeld)
        .identities
        .values()
        .map(|a| {
            let s = Subject {
                identity: a.key.clone(),
                identity_type: a.identity_type,
                account: a.key.name.clone(),
                enabled: a.account == AccountIntent::Enabled,
            };
            (a.key.clone(), s)
        })
        .collect()
}

/// Observe and plan; the operations and the time taken.
async fn observe_and_plan(
    connector: &Scim,
    engine: &Engine,
    subjects: &BTreeMap<IdentityKey, Subject>,
) -> (Vec<Operation>, Duration) {
    let started = Instant::now();
    let observed = connector.observe(subjects).await.expect("observe");
    let desired = engine.evaluate(NOW.parse().unwrap(), &observed.held);
    let operations = plan(&observed.held, &desired).operations;
    (operations, started.elapsed())
}

#[derive(Clone, Copy)]
enum Way {
    Bulk,
    BatchWithoutBulk,
    OneAtATime,
}

async fn run(peer: &scim_peer::Peer, n: usize, way: Way) {
    let (label, extra) = match way {
        Way::Bulk => ("apply_batch, Bulk", ""),
        Way::BatchWithoutBulk => ("apply_batch, no Bulk", "bulk: false"),
        Way::OneAtATime => ("apply one at a time, no Bulk", "bulk: false"),
    };
    let tenant = peer.tenant("bench");
    let config = peer.config(NS, "saas", &tenant, extra, "Disable");
    let connector = Scim::connect(&config).await.expect("connect");
    let snapshot = org(&config, n);
    let engine = Engine::new(&snapshot, Settings::default());
    let subjects = subjects(&engine);

    let (operations, _) = observe_and_plan(&connector, &engine, &subjects).await;
    assert_eq!(operations.len(), 2 * n, "one create and one grant each");
    let pairs: Vec<(&Operation, &Subject)> = operations
        .iter()
        .map(|op| (op, &subjects[&op.identity]))
        .collect();
    let started = Instant::now();
    let results = match way {
        Way::OneAtATime => {
            let mut out = Vec::new();
            for (op, subject) in &pairs {
                out.push(connector.apply(op, subject).await);
            }
            out
        }
        _ => connector.apply_batch(&pairs).await,
    };
    let took = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        failed,
        0,
        "first failure: {:?}",
        results.iter().find(|r| r.is_err())
    );

    let (again, resync) = observe_and_plan(&connector, &engine, &subjects).await;
    assert!(
        again.is_empty(),
        "an unchanged tenant plans nothing: {} operations",
        again.len()
    );
    println!(
        "scim join {n} identities into {GROUPS} groups [{label}]: {} operations in {:.2} s = {:.0} ops/s; unchanged re-sync (observe + plan, 0 operations): {:.0} ms",
        operations.len(),
        took.as_secs_f64(),
        operations.len() as f64 / took.as_secs_f64(),
        resync.as_secs_f64() * 1000.0
    );
}

/// Joins `n` identities with Bulk, then times the unchanged re-sync: without attributes
/// (`spec.defaultAttributes: false`) or with full HR records on every default attribute.
async fn resync(peer: &scim_peer::Peer, n: usize, attributes: bool) -> Duration {
    let tenant = peer.tenant("bench");
    let mut config = peer.config(NS, "saas", &tenant, "", "Disable");
    if !attributes {
        config.spec.default_attributes = Some(false);
    }
    let connector = Scim::connect(&config).await.expect("connect");
    let snapshot = org_with(&config, n, attributes);
    let engine = Engine::new(&snapshot, Settings::default());
    let subjects = subjects(&engine);
    // Creations first, then the manager references (once the managers exist), then grants.
    for _ in 0..2 {
        let (operations, _) = observe_and_plan(&connector, &engine, &subjects).await;
        let pairs: Vec<(&Operation, &Subject)> = operations
            .iter()
            .map(|op| (op, &subjects[&op.identity]))
            .collect();
        let results = connector.apply_batch(&pairs).await;
        assert!(
            results.iter().all(|r| r.is_ok()),
            "{:?}",
            results.iter().find(|r| r.is_err())
        );
    }
    let mut best = Duration::MAX;
    let mut split = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let started = Instant::now();
        let observed = connector.observe(&subjects).await.expect("observe");
        let observing = started.elapsed();
        let desired = engine.evaluate(NOW.parse().unwrap(), &observed.held);
        let again = plan(&observed.held, &desired).operations;
        let took = started.elapsed();
        if took < best {
            split = (observing, took - observing);
        }
        assert!(
            again.is_empty(),
            "an unchanged tenant plans nothing: {} operations, first {:?}",
            again.len(),
            again.first()
        );
        best = best.min(took);
    }
    println!(
        "scim unchanged re-sync of {n} accounts {}: {:.0} ms (best of 3, 0 operations; observe {:.0} ms, evaluate + plan {:.0} ms)",
        if attributes {
            "with every default attribute set"
        } else {
            "without attributes"
        },
        best.as_secs_f64() * 1000.0,
        split.0.as_secs_f64() * 1000.0,
        split.1.as_secs_f64() * 1000.0
    );
    best
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing (or `--test`).
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let n = if smoke { 100 } else { 5000 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let peer = scim_peer::peer();
    runtime.block_on(async {
        // `SCIM_BENCH=resync` runs only the re-sync comparison.
        if std::env::var("SCIM_BENCH").as_deref() != Ok("resync") {
            run(peer, n, Way::Bulk).await;
            run(peer, n, Way::BatchWithoutBulk).await;
            run(peer, n, Way::OneAtATime).await;
        }
        let bare = resync(peer, n, false).await;
        let full = resync(peer, n, true).await;
        println!(
            "scim re-sync with attributes / without: {:.2}x",
            full.as_secs_f64() / bare.as_secs_f64()
        );
    });
}
