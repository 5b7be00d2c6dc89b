//! The PostgreSQL connector at scale, against a real server (`scripts/start-postgres.sh`):
//! join N identities (N = 5,000; 100 when smoke-run by `cargo test --benches`) into 50
//! existing group roles through the connector, one operation at a time as the controller
//! applies them, then re-sync the unchanged organisation, which must plan zero operations.
//! Run: `cargo bench --bench postgres`.

#[path = "../tests/postgres_peer/mod.rs"]
mod postgres_peer;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::engine::{AccountIntent, Engine, IdentityKey, NothingHeld, Settings, Snapshot};
use gatehouse::plan::{Action, plan};
use gatehouse::targets::postgres::{Postgres, quote_ident};
use gatehouse::targets::{Connector, Subject};
use jiff::Timestamp;
use postgres_peer::{Scope, config, credentials, spec_yaml, superuser};

const GROUPS: usize = 50;
const TARGET: &str = "db";

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// N identities in 50 departments; department d's policy grants group role d.
fn organisation(scope: &Scope, spec: &str, identities: usize) -> Snapshot {
    let ns = &scope.tenant;
    Snapshot {
        targets: vec![yaml::<TargetSystem>(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {{name: {TARGET}, namespace: {ns}}}\nspec: {spec}"
        ))],
        policies: (0..GROUPS)
            .map(|d| -> AccessPolicy {
                yaml(&format!(
                    "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: d{d}, namespace: {ns}}}\nspec: {{selector: {{matchAttributes: {{department: d{d}}}}}, entitlements: [{{target: {TARGET}, name: {}}}]}}",
                    scope.role(&format!("group_{d}"))
                ))
            })
            .collect(),
        identities: (0..identities)
            .map(|i| -> Identity {
                yaml(&format!(
                    "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: user-{i}, namespace: {ns}}}\nspec: {{type: Human, employment: {{status: Active, department: d{}, manager: user-{i}}}}}",
                    i % GROUPS
                ))
            })
            .collect(),
        exceptions: vec![],
        ..Default::default()
    }
}

fn subjects(snapshot: &Snapshot, now: Timestamp) -> BTreeMap<IdentityKey, Subject> {
    let desired = Engine::new(snapshot, Settings::default()).evaluate(now, &NothingHeld);
    desired
        .identities
        .values()
        .map(|a| {
            let subject = Subject {
                identity: a.key.clone(),
                identity_type: a.identity_type,
                account: a.key.name.clone(),
                enabled: a.account == AccountIntent::Enabled,
            };
            (a.key.clone(), subject)
        })
        .collect()
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: a smoke run then.
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let identities = if full { 5_000 } else { 100 };
    let now: Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();

    let peer = postgres_peer::peer();
    let scope = Scope::new("bench");
    // Account names are the identity names, under the scope's prefix.
    let spec = spec_yaml(&format!("managedRolePrefix: {}", scope.prefix), "");
    let db = superuser().await;
    let ddl: String = (0..GROUPS)
        .map(|d| {
            format!(
                "CREATE ROLE {} NOLOGIN;",
                quote_ident(&scope.role(&format!("group_{d}"))).unwrap()
            )
        })
        .collect();
    db.batch_execute(&ddl).await.unwrap();

    let snapshot = organisation(&scope, &spec, identities);
    let subjects = subjects(&snapshot, now);
    let engine = Engine::new(&snapshot, Settings::default());
    let connector = Postgres::connect(&config(&scope, TARGET, &spec, credentials()))
        .await
        .expect("connect as the non-superuser controller over TLS");

    // Join: observe, plan, apply every operation in order.
    let started = Instant::now();
    let observed = connector.observe(&subjects).await.expect("observe");
    let observe_empty = started.elapsed();
    let desired = engine.evaluate(now, &observed.held);
    let joined = plan(&observed.held, &desired);
    let creates = joined
        .operations
        .iter()
        .filter(|op| matches!(op.action, Action::CreateAccount { .. }))
        .count();
    let grants = joined
        .operations
        .iter()
        .filter(|op| matches!(op.action, Action::Grant { .. }))
        .count();
    assert_eq!((creates, grants), (identities, identities));
    let applying = Instant::now();
    for op in &joined.operations {
        connector
            .apply(op, &subjects[&op.identity])
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
    let apply = applying.elapsed();
    let total = started.elapsed();
    let ops = joined.operations.len();

    // Unchanged re-sync: observe and plan; nothing to do.
    let resync_started = Instant::now();
    let observed = connector.observe(&subjects).await.expect("observe");
    let desired = engine.evaluate(now, &observed.held);
    let again = plan(&observed.held, &desired);
    let resync = resync_started.elapsed();
    assert!(
        again.is_empty(),
        "an unchanged re-sync planned {} operations",
        again.operations.len()
    );
    assert_eq!(observed.held.identities.len(), identities);

    let per_sec = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "postgres connector: PostgreSQL {} on loopback, TLS verify-full, non-superuser controller, pool of {}",
        peer.version,
        gatehouse::targets::postgres::POOL_SIZE
    );
    println!(
        "join {identities} identities into {GROUPS} group roles: {ops} operations ({creates} CREATE ROLE, {grants} GRANT) \
         applied in {:.2} s = {:.0} ops/s (observe of the empty scope {:.1} ms; whole sync {:.2} s = {:.0} ops/s)",
        apply.as_secs_f64(),
        per_sec(ops, apply),
        observe_empty.as_secs_f64() * 1e3,
        total.as_secs_f64(),
        per_sec(ops, total),
    );
    println!(
        "unchanged re-sync of {identities} accounts and {grants} memberships: 0 operations planned, observe + plan in {:.1} ms",
        resync.as_secs_f64() * 1e3
    );
    if full && per_sec(ops, apply) < 500.0 {
        eprintln!("WARNING: below the goal of 500 operations per second");
    }
}
