//! LDAP connector speed against a real slapd (see tests/slapd): join N identities into 50
//! groups through the connector, one operation after another as the controller applies
//! them, then re-sync the unchanged directory (observe with paged searches, evaluate,
//! plan: zero operations). Twice: without attributes (`defaultAttributes: false`), and with
//! the default mapping and a full HR record (display name, e-mail, title, department, a
//! manager: eight owned attributes, a DN among them). N = 5,000 under `cargo bench`;
//! `cargo test --benches` runs a small N as a smoke test.
//!
//! Run: `cargo bench --bench ldap` (needs `scripts/install-ldap.sh`).

#[path = "../tests/slapd/mod.rs"]
mod slapd;

use std::collections::BTreeMap;
use std::time::Instant;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::engine::{AccountIntent, Engine, IdentityKey, NothingHeld, Settings, Snapshot};
use gatehouse::plan::plan;
use gatehouse::targets::ldap::LdapDirectory;
use gatehouse::targets::{Connector, Subject};

const GROUPS: usize = 50;
const NOW: &str = "2026-12-01T09:00:00Z";

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// N people in 50 departments; the policy of department `d<i>` grants group `g<i>`.
fn org(spec: &str, people: usize, attributes: bool) -> Snapshot {
    Snapshot {
        targets: vec![yaml::<TargetSystem>(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {{name: corp-ldap, namespace: acme}}\nspec: {spec}"
        ))],
        policies: (0..GROUPS)
            .map(|i| {
                yaml::<AccessPolicy>(&format!(
                    "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: p{i}, namespace: acme}}\nspec: {{selector: {{matchAttributes: {{department: d{i}}}}}, entitlements: [{{target: corp-ldap, name: g{i}}}]}}"
                ))
            })
            .collect(),
        identities: (0..people)
            .map(|n| {
                let record = if attributes {
                    format!("displayName: 'User {n} Person', email: 'user{n:05}@acme.example', ")
                } else {
                    String::new()
                };
                let title = if attributes { ", title: Analyst" } else { "" };
                yaml::<Identity>(&format!(
                    "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: user{n:05}, namespace: acme}}\nspec: {{type: Human, {record}employment: {{status: Active, department: d{}, manager: user00000{title}}}}}",
                    n % GROUPS
                ))
            })
            .collect(),
        exceptions: vec![],
        ..Default::default()
    }
}

fn subjects(engine: &Engine, snapshot: &Snapshot) -> BTreeMap<IdentityKey, Subject> {
    let desired = engine.evaluate(NOW.parse().unwrap(), &NothingHeld);
    snapshot
        .identities
        .iter()
        .map(|identity| {
            let key = IdentityKey::new("acme", identity.metadata.name.as_deref().unwrap());
            let subject = Subject {
                identity: key.clone(),
                identity_type: identity.spec.type_,
                account: key.name.clone(),
                enabled: desired
                    .identities
                    .get(&key)
                    .is_some_and(|a| a.account == AccountIntent::Enabled),
            };
            (key, subject)
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let people = if smoke { 200 } else { 5_000 };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let server = slapd::Slapd::start("bench");
        run(&server, people, false).await;
        run(&server, people, true).await;
        server.stop();
    });
}

/// Joins `people` into a fresh scope, then re-syncs it unchanged.
async fn run(server: &slapd::Slapd, people: usize, attributes: bool) {
    let label = if attributes {
        "with attributes"
    } else {
        "without attributes"
    };
    let groups: Vec<String> = (0..GROUPS).map(|i| format!("g{i}")).collect();
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let scope = server.scope(&groups).await;
    let mut spec = server.spec_yaml(&server.ldap_url, &scope, "startTLS: false", "Disable");
    if !attributes {
        spec = spec.replacen("{type: LDAP,", "{type: LDAP, defaultAttributes: false,", 1);
    }
    let config = gatehouse::targets::TargetConfig {
        spec: yaml(&spec),
        ..server.config(&scope, "", "Disable")
    };
    let connector = LdapDirectory::connect(&config).await.expect("connect");
    let snapshot = org(&spec, people, attributes);
    let engine = Engine::new(&snapshot, Settings::default());
    let subjects = subjects(&engine, &snapshot);
    let now = NOW.parse().unwrap();

    // Join: observe the empty scope, plan, apply every operation in order.
    let started = Instant::now();
    let observed = connector.observe(&subjects).await.expect("observe").held;
    let operations = plan(&observed, &engine.evaluate(now, &observed)).operations;
    // One account and one group each; with attributes, everyone but user00000 also gets
    // the manager's DN once the accounts exist.
    let expected = if attributes {
        3 * people - 1
    } else {
        2 * people
    };
    assert_eq!(operations.len(), expected, "{label}");
    let applying = Instant::now();
    for op in &operations {
        connector
            .apply(op, &subjects[&op.identity])
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
    let applied = applying.elapsed();
    let total = started.elapsed();
    println!(
        "ldap join ({label}): {people} identities into {GROUPS} groups: {} operations in {:.2} s = {:.0} operations/s (whole sync {:.2} s)",
        operations.len(),
        applied.as_secs_f64(),
        operations.len() as f64 / applied.as_secs_f64(),
        total.as_secs_f64()
    );

    // Re-sync of the unchanged directory: nothing to write.
    let started = Instant::now();
    let observed = connector.observe(&subjects).await.expect("observe");
    let again = plan(&observed.held, &engine.evaluate(now, &observed.held));
    let resync = started.elapsed();
    assert!(
        again.is_empty(),
        "{label}: an unchanged directory needs no operation: {:?}",
        again.operations.first()
    );
    assert_eq!(observed.held.identities.len(), people);
    assert!(observed.orphans.is_empty());
    if attributes {
        let owned = observed
            .held
            .identities
            .values()
            .map(|h| h.attributes.get("corp-ldap").map_or(0, |a| a.len()))
            .sum::<usize>();
        assert_eq!(owned, 8 * people - 1, "eight owned attributes each");
    }
    println!(
        "ldap re-sync ({label}): {people} accounts, {GROUPS} groups unchanged: 0 operations, {:.3} s (observe + evaluate + plan)",
        resync.as_secs_f64()
    );
}
