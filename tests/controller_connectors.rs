//! `gatehouse run` driving the LDAP, Active Directory, SCIM and PostgreSQL connectors:
//! TargetSystems and their Secrets in a real API server, real slapd, Samba's AD DC,
//! scim2-server and PostgreSQL behind them.
//! Joiner to `Ready`, Observe mode reporting drift without touching the target, the leaver
//! applied once Enforce is back, and a bad credential turning into `Connected=False`.
// Each peer harness carries its own copy of tests/peer_script.rs.
#![allow(clippy::duplicate_mod)]

mod harness;
mod postgres_peer;
mod samba;
mod scim_peer;
mod slapd;

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse::api::{AccessPolicy, Identity, TargetSystem};
use gatehouse::controller::{Options, run};
use gatehouse::targets::Credentials;
use harness::{apply, eventually, secret, wait_for_condition};
use kube::Client;
use kube::api::Api;

fn start(client: &Client, ns: &str) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = Options {
        namespace: Some(ns.to_string()),
        // Secrets are not watched: a rotated credential is picked up at the next pass.
        resync: Duration::from_secs(3),
        ..Options::default()
    };
    tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));
    stop
}

fn person(name: &str, status: &str) -> String {
    format!(
        "metadata: {{name: {name}}}\nspec: {{type: Human, employment: {{status: {status}, type: Employee, department: finance, manager: {name}, startDate: '2026-01-01'}}}}"
    )
}

fn identity_conditions(i: &Identity) -> Vec<gatehouse::api::Condition> {
    i.status.clone().unwrap_or_default().conditions
}
fn target_conditions(t: &TargetSystem) -> Vec<gatehouse::api::Condition> {
    t.status.clone().unwrap_or_default().conditions
}

/// Turns a flow-mapping spec into a TargetSystem YAML with `mode`.
fn target(name: &str, spec: &str, mode: &str) -> String {
    let spec = spec.trim();
    let spec = spec
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(spec);
    format!("metadata: {{name: {name}}}\nspec: {{{spec}, mode: {mode}}}")
}

/// The part every connector shares: joiner, Observe mode, leaver, bad credentials.
/// `check(active)` looks at the target itself: the account exists with the entitlement and
/// can log in (`true`), or is locked and stripped (`false`).
async fn lifecycle<F, Fut>(
    client: &Client,
    ns: &str,
    target_name: &str,
    spec: &str,
    entitlement: &str,
    mut check: F,
    break_secret: impl AsyncFnOnce(),
) where
    F: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let _stop = start(client, ns);
    apply::<TargetSystem>(client, ns, &target(target_name, spec, "Enforce")).await;
    apply::<AccessPolicy>(
        client,
        ns,
        &format!(
            "metadata: {{name: finance}}\nspec: {{selector: {{matchAttributes: {{department: finance}}}}, entitlements: [{{target: {target_name}, name: {entitlement}}}]}}"
        ),
    )
    .await;
    apply::<Identity>(client, ns, &person("alice", "Active")).await;

    wait_for_condition(client, ns, "alice", "Ready", "True", identity_conditions).await;
    wait_for_condition(client, ns, target_name, "Ready", "True", target_conditions).await;
    eventually("the joiner on the target", Duration::from_secs(30), || {
        check(true)
    })
    .await;

    // Observe mode: the leaver is planned and reported, the target left as it is.
    apply::<TargetSystem>(client, ns, &target(target_name, spec, "Observe")).await;
    apply::<Identity>(client, ns, &person("alice", "Terminated")).await;
    let (reason, _) = wait_for_condition(
        client,
        ns,
        target_name,
        "InSync",
        "False",
        target_conditions,
    )
    .await;
    assert_eq!(reason, "DriftDetected");
    let pending = Api::<TargetSystem>::namespaced(client.clone(), ns)
        .get(target_name)
        .await
        .unwrap()
        .status
        .unwrap()
        .pending_operations;
    assert!(pending.is_some_and(|n| n > 0), "{pending:?}");
    check(true).await.expect("Observe mode changed nothing");

    // Enforce again: the leaver goes through.
    apply::<TargetSystem>(client, ns, &target(target_name, spec, "Enforce")).await;
    eventually("the leaver on the target", Duration::from_secs(30), || {
        check(false)
    })
    .await;
    wait_for_condition(client, ns, "alice", "Revoked", "True", identity_conditions).await;
    wait_for_condition(client, ns, target_name, "InSync", "True", target_conditions).await;

    // A rotated-but-wrong credential: the target says it cannot connect, and why.
    break_secret().await;
    let (_, message) = wait_for_condition(
        client,
        ns,
        target_name,
        "Connected",
        "False",
        target_conditions,
    )
    .await;
    assert!(!message.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_through_the_controller() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "pgctl").await;
    let group = "ctl_finance";
    let su = postgres_peer::superuser().await;
    su.batch_execute(&format!("CREATE ROLE {group} NOLOGIN"))
        .await
        .unwrap();
    let credentials = postgres_peer::credentials();
    secret(
        &client,
        &ns,
        "db-admin",
        &credentials,
        &["username", "password", "ca.crt"],
    )
    .await;
    let check = |active: bool| {
        let su = &su;
        async move {
            let row = su
                .query_opt(
                    "SELECT r.rolcanlogin, pg_has_role(r.oid, $1::text, 'MEMBER') FROM pg_roles r WHERE r.rolname = 'alice'",
                    &[&group],
                )
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no role alice")?;
            let (login, member): (bool, bool) = (row.get(0), row.get(1));
            if (login, member) == (active, active) {
                Ok(())
            } else {
                Err(format!("login {login}, member {member}"))
            }
        }
    };
    let bad = credentials.clone();
    lifecycle(
        &client,
        &ns,
        "ledger-db",
        &postgres_peer::spec_yaml("", ""),
        group,
        check,
        async || {
            let wrong = postgres_peer::credentials_with(
                bad.optional("username").unwrap().unwrap(),
                "not-the-password",
                bad.bytes("ca.crt"),
            );
            secret(
                &client,
                &ns,
                "db-admin",
                &wrong,
                &["username", "password", "ca.crt"],
            )
            .await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_through_the_controller() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "ldapctl").await;
    let directory = slapd::Slapd::shared();
    let scope = directory.scope(&["finance"]).await;
    let credentials = directory.credentials(None);
    secret(
        &client,
        &ns,
        "corp-ldap",
        &credentials,
        &["bindDN", "password"],
    )
    .await;
    let spec = directory.spec_yaml(&directory.ldap_url, &scope, "startTLS: false", "Disable");
    let check = |active: bool| {
        let scope = &scope;
        async move {
            let mut ldap = directory.admin().await;
            let members = scope
                .members(&mut ldap, "finance")
                .await
                .unwrap_or_default();
            let dn = scope.user("alice");
            let member = members.iter().any(|m| m.eq_ignore_ascii_case(&dn));
            let locked = slapd::attribute(&mut ldap, &dn, "pwdAccountLockedTime")
                .await
                .is_some_and(|v| !v.is_empty());
            let exists = !slapd::children(&mut ldap, &scope.users_dn).await.is_empty();
            if exists && member == active && locked != active {
                Ok(())
            } else {
                Err(format!("exists {exists}, member {member}, locked {locked}"))
            }
        }
    };
    lifecycle(
        &client,
        &ns,
        "corp-ldap",
        &spec,
        "finance",
        check,
        async || {
            let wrong = Credentials::new(
                "corp-ldap",
                BTreeMap::from([
                    ("bindDN".to_string(), directory.bind_dn.clone().into_bytes()),
                    ("password".to_string(), b"wrong".to_vec()),
                ]),
            );
            secret(&client, &ns, "corp-ldap", &wrong, &["bindDN", "password"]).await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_through_the_controller() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "scimctl").await;
    let peer = scim_peer::peer();
    let tenant = peer.tenant("ctl");
    let config = peer.config(&ns, "erp-scim", &tenant, "", "Disable");
    secret(&client, &ns, "scim-token", &config.credentials, &["token"]).await;
    let spec = format!(
        "{{type: SCIM, onLeave: Disable, scim: {{url: '{}'}}, credentialsSecretRef: {{name: scim-token}}}}",
        peer.url(&tenant)
    );
    let raw = scim_peer::Raw::new(peer, &tenant);
    let check = |active: bool| {
        let raw = &raw;
        async move {
            let user = raw.user("alice").await.ok_or("no user alice")?;
            let members = raw.members("payments").await;
            let is_active = user["active"].as_bool().unwrap_or(true);
            let member = members.iter().any(|m| m == "alice");
            if is_active == active && member == active {
                Ok(())
            } else {
                Err(format!("active {is_active}, member {member}"))
            }
        }
    };
    lifecycle(
        &client,
        &ns,
        "erp-scim",
        &spec,
        "payments",
        check,
        async || {
            let wrong = Credentials::new(
                "scim-token",
                BTreeMap::from([("token".to_string(), b"wrong".to_vec())]),
            );
            secret(&client, &ns, "scim-token", &wrong, &["token"]).await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_directory_through_the_controller() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "adctl").await;
    let dc = samba::Samba::shared();
    let scope = dc.scope(&["finance"]).await;
    secret(
        &client,
        &ns,
        "corp-ad",
        &dc.credentials(),
        &["bindDN", "password", "ca.crt"],
    )
    .await;
    let spec = dc.spec_yaml(&scope, "Disable");
    let check = |active: bool| {
        let scope = &scope;
        async move {
            let mut ldap = dc.admin().await;
            let dn = scope.user("alice").to_lowercase();
            let member = scope.members(&mut ldap, "finance").await.contains(&dn);
            let uac = samba::uac(&mut ldap, &scope.user("alice")).await;
            let disabled = uac.is_some_and(|u| u & 2 != 0);
            if uac.is_some() && member == active && disabled != active {
                Ok(())
            } else {
                Err(format!("userAccountControl {uac:?}, member {member}"))
            }
        }
    };
    lifecycle(
        &client,
        &ns,
        "corp-ad",
        &spec,
        "finance",
        check,
        async || {
            let wrong = Credentials::new(
                "corp-ad",
                BTreeMap::from([
                    ("bindDN".to_string(), dc.admin_dn.clone().into_bytes()),
                    ("password".to_string(), b"wrong".to_vec()),
                    ("ca.crt".to_string(), std::fs::read(&dc.ca).unwrap()),
                ]),
            );
            secret(
                &client,
                &ns,
                "corp-ad",
                &wrong,
                &["bindDN", "password", "ca.crt"],
            )
            .await;
        },
    )
    .await;
}
