//! The CRDs against a real kube-apiserver: they install, every example object is accepted,
//! and every CEL rule is enforced by the server with the same verdict and message that
//! `gatehouse validate` gives offline.

mod harness;

use std::path::Path;

use gatehouse::api::{AccessPolicy, Exception, Identity, TargetSystem};
use kube::api::{Api, PostParams};
use kube::{CustomResourceExt, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Creates an object; returns the server's error message on rejection.
async fn create<K>(client: &kube::Client, ns: &str, mut object: K) -> Result<(), String>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    object.meta_mut().namespace = Some(ns.to_string());
    object.meta_mut().resource_version = None;
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            kube::Error::Api(status) => format!("{} {}", status.code, status.message),
            other => panic!("transport error, not a verdict: {other}"),
        })
}

#[tokio::test]
async fn every_example_object_is_accepted() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "examples").await;
    let loaded = gatehouse::source::load_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/acme"),
        "acme",
    );
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    let s = loaded.snapshot;
    let count = s.identities.len() + s.policies.len() + s.exceptions.len() + s.targets.len();
    assert!(count >= 50, "the example has {count} objects");
    let mut refused = Vec::new();
    for o in s.identities {
        refused.extend(create(&client, &ns, o).await.err());
    }
    for o in s.policies {
        refused.extend(create(&client, &ns, o).await.err());
    }
    for o in s.exceptions {
        refused.extend(create(&client, &ns, o).await.err());
    }
    for o in s.targets {
        refused.extend(create(&client, &ns, o).await.err());
    }
    assert!(
        refused.is_empty(),
        "the API server refused example objects: {refused:#?}"
    );
}

/// Each case: the object, and the rule messages both the server and `validate_cel` give.
fn cases() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "Exception",
            "{identity: alice, entitlements: [{target: db, name: x}], justification: j, requestedBy: bob, approvedBy: [bob, alice], validFrom: '2026-12-01T00:00:00Z', expiresAt: '2026-12-01T01:00:00+02:00'}",
            vec![
                "the requester may not approve their own request",
                "the subject may not approve their own exception",
                "spec.expiresAt must be after spec.validFrom",
            ],
        ),
        (
            "Exception",
            "{identity: alice, entitlements: [{target: db, name: x}], justification: j, requestedBy: bob, approvedBy: [], validFrom: '2026-12-01T00:00:00Z', expiresAt: '2026-12-02T00:00:00Z'}",
            vec!["an Exception needs at least one approver"],
        ),
        (
            "Exception",
            "{identity: alice, entitlements: [{target: db, name: x}], justification: j, requestedBy: bob, approvedBy: [carol], validFrom: '2026-12-01T00:00:00Z', expiresAt: '2026-12-02T00:00:00Z'}",
            vec![],
        ),
        (
            "Exception",
            "{identity: alice, entitlements: [{target: db, name: x}], justification: j, requestedBy: bob, approvedBy: [], validFrom: '2026-12-01T00:00:00Z', expiresAt: '2026-12-02T00:00:00Z', breakGlass: true}",
            vec![],
        ),
        (
            "Exception",
            "{identity: alice, entitlements: [{target: db, name: x}], justification: j, requestedBy: bob, approvedBy: [], validFrom: '2026-12-01T00:00:00Z', expiresAt: '2026-12-02T00:00:01Z', breakGlass: true}",
            vec!["a breakGlass Exception lasts at most 24h"],
        ),
        (
            "Exception",
            "{identity: alice, entitlements: [{target: db, name: x}], justification: j, requestedBy: bob, approvedBy: [], validFrom: '2026-12-01T00:00:00Z', expiresAt: '2026-12-02T00:00:00Z', breakGlass: false}",
            vec!["an Exception needs at least one approver"],
        ),
        (
            "Identity",
            "{type: NonHuman, attributes: {system: ci}}",
            vec!["a NonHuman identity needs spec.owner"],
        ),
        (
            "Identity",
            "{type: NonHuman, owner: alice, employment: {status: Active}}",
            vec!["a NonHuman identity has no spec.employment"],
        ),
        (
            "Identity",
            "{type: Human}",
            vec!["a Human identity needs spec.employment"],
        ),
        (
            "Identity",
            "{type: Human, owner: bob, employment: {status: Active}}",
            vec!["spec.owner is for NonHuman identities"],
        ),
        (
            "Identity",
            "{type: Human, employment: {status: Active, type: Contractor, startDate: '2026-01-02'}}",
            vec!["a Contractor or Vendor needs spec.employment.endDate"],
        ),
        (
            "Identity",
            "{type: Human, employment: {status: Active, type: Vendor, startDate: '2026-01-02', endDate: '2025-12-31'}}",
            vec!["spec.employment.endDate must not be before startDate"],
        ),
        (
            "Identity",
            "{type: Human, employment: {status: Active, type: Contractor, startDate: '2026-01-02', endDate: '2026-01-02'}}",
            vec![],
        ),
        (
            "AccessPolicy",
            "{selector: {matchExpressions: [{key: a, operator: In}]}, entitlements: []}",
            vec!["In and NotIn need at least one value"],
        ),
        (
            "AccessPolicy",
            "{selector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}, entitlements: []}",
            vec!["In and NotIn need at least one value"],
        ),
        (
            "TargetSystem",
            "{type: LDAP}",
            vec!["a target of type LDAP needs spec.ldap"],
        ),
        (
            "TargetSystem",
            "{type: SCIM, scim: {url: 'https://x'}, postgresql: {host: h, database: d}}",
            vec!["set only the connection block that matches spec.type"],
        ),
    ]
}

fn parse<K: DeserializeOwned>(kind: &str, name: &str, spec: &str) -> K {
    serde_yaml::from_str(&format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    ))
    .unwrap_or_else(|e| panic!("{kind} {spec}: {e}"))
}

fn offline<K: CustomResourceExt + Serialize>(object: &K) -> Vec<String> {
    let schema = K::crd().spec.versions[0]
        .schema
        .clone()
        .unwrap()
        .open_api_v3_schema
        .unwrap();
    let schema = serde_json::to_value(schema).unwrap();
    match kube::core::cel::Validator::new().validate(
        &schema,
        &serde_json::to_value(object).unwrap(),
        None,
    ) {
        Ok(()) => vec![],
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[tokio::test]
async fn the_server_and_validate_agree_on_every_cel_rule() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "cel").await;
    let mut disagreements = Vec::new();
    for (i, (kind, spec, expected)) in cases().into_iter().enumerate() {
        let name = format!("case{i}");
        let (server, local) = match kind {
            "Exception" => {
                let o: Exception = parse(kind, &name, spec);
                (create(&client, &ns, o.clone()).await, offline(&o))
            }
            "Identity" => {
                let o: Identity = parse(kind, &name, spec);
                (create(&client, &ns, o.clone()).await, offline(&o))
            }
            "AccessPolicy" => {
                let o: AccessPolicy = parse(kind, &name, spec);
                (create(&client, &ns, o.clone()).await, offline(&o))
            }
            _ => {
                let o: TargetSystem = parse(kind, &name, spec);
                (create(&client, &ns, o.clone()).await, offline(&o))
            }
        };
        let server_ok = server.is_ok();
        let server_text = server.err().unwrap_or_default();
        if expected.is_empty() != server_ok || expected.is_empty() != local.is_empty() {
            disagreements.push(format!(
                "[{kind} {spec}] server: {server_text:?}; offline: {local:?}"
            ));
            continue;
        }
        for message in &expected {
            if !server_text.contains(message) || !local.iter().any(|l| l.contains(message)) {
                disagreements.push(format!(
                    "[{kind} {spec}] want {message:?}; server: {server_text:?}; offline: {local:?}"
                ));
            }
        }
        if !expected.is_empty() {
            assert!(
                server_text.starts_with("422 "),
                "a CEL rejection is 422: {server_text}"
            );
            assert_eq!(
                local.len(),
                expected.len(),
                "[{kind} {spec}] offline gives exactly the expected rules: {local:?}"
            );
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// Constraints of the OpenAPI schema itself (lengths, patterns, item counts): whatever the
/// server refuses, `gatehouse validate` refuses too, naming the same field.
#[tokio::test]
async fn the_server_and_validate_agree_on_schema_constraints() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "schema").await;
    let exception = |over: &str| {
        let base = "identity: alice, entitlements: [{target: db, name: x}], justification: j, requestedBy: bob, approvedBy: [carol], validFrom: '2026-12-01T00:00:00Z', expiresAt: '2026-12-02T00:00:00Z'";
        let fields: Vec<String> = base
            .split(", ")
            .map(|f| {
                let key = f.split(':').next().unwrap();
                over.split(", ")
                    .find(|o| o.starts_with(&format!("{key}:")))
                    .unwrap_or(f)
                    .to_string()
            })
            .collect();
        format!("{{{}}}", fields.join(", "))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "Exception",
            exception("justification: ''"),
            "spec.justification",
        ),
        (
            "Exception",
            exception("validFrom: 'tomorrow'"),
            "spec.validFrom",
        ),
        ("Exception", exception("identity: ''"), "spec.identity"),
        (
            "Identity",
            "{type: Human, employment: {status: Active, startDate: '2026-1-2'}}".into(),
            "spec.employment.startDate",
        ),
        (
            "AccessPolicy",
            "{entitlements: [{target: '', name: x}]}".into(),
            "spec.entitlements[0].target",
        ),
        (
            "AccessPolicy",
            "{exceptionPolicy: {maxDuration: '30d'}}".into(),
            "spec.exceptionPolicy.maxDuration",
        ),
        (
            "AccessPolicy",
            "{separationOfDuties: [{name: s, entitlements: [{target: a, name: b}]}]}".into(),
            "spec.separationOfDuties[0].entitlements",
        ),
        (
            "TargetSystem",
            "{type: Kubernetes, limits: {maxRevocationsPerSync: -1}}".into(),
            "spec.limits.maxRevocationsPerSync",
        ),
        (
            "TargetSystem",
            "{type: Kubernetes, driftInterval: '1d'}".into(),
            "spec.driftInterval",
        ),
    ];
    let mut disagreements = Vec::new();
    for (i, (kind, spec, field)) in cases.iter().enumerate() {
        let name = format!("schema{i}");
        let yaml = format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("object.yaml"), &yaml).unwrap();
        let loaded = gatehouse::source::load_dir(dir.path(), &ns);
        let local: Vec<String> = loaded
            .diagnostics
            .0
            .iter()
            .filter_map(|d| d.field.clone())
            .collect();
        let server = match *kind {
            "Exception" => create(&client, &ns, parse::<Exception>(kind, &name, spec)).await,
            "Identity" => create(&client, &ns, parse::<Identity>(kind, &name, spec)).await,
            "AccessPolicy" => create(&client, &ns, parse::<AccessPolicy>(kind, &name, spec)).await,
            _ => create(&client, &ns, parse::<TargetSystem>(kind, &name, spec)).await,
        };
        let server_names_it = server
            .as_ref()
            .err()
            .is_some_and(|m| m.starts_with("422 ") && m.contains(field));
        let local_names_it = local.iter().any(|f| f == field);
        if !server_names_it || !local_names_it {
            disagreements.push(format!(
                "[{kind} {spec}] want {field}; server: {server:?}; validate: {:?}",
                loaded.diagnostics.0
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// `pathOwners[].requireApprovals` must be below the number of the entry's keys (the
/// author's key never approves): the server refuses an unsatisfiable threshold, and takes
/// one it can meet or none.
#[tokio::test]
async fn the_server_refuses_an_approval_threshold_no_one_can_meet() {
    let client = harness::client().await;
    let ns = harness::namespace(&client, "approvals").await;
    let source = |name: &str, approvals: &str| -> gatehouse::api::PolicySource {
        parse(
            "PolicySource",
            name,
            &format!(
                "{{url: 'https://git.example/a.git', ref: {{branch: main}}, verify: {{keys: [{{name: a, publicKey: x}}, {{name: b, publicKey: y}}]}}, pathOwners: [{{path: 'policies/**', keys: [a, b]{approvals}}}]}}"
            ),
        )
    };
    let refused = create(&client, &ns, source("too-many", ", requireApprovals: 2"))
        .await
        .unwrap_err();
    assert!(
        refused.starts_with("422 ")
            && refused
                .contains("spec.pathOwners[].requireApprovals must be below the number of keys"),
        "{refused}"
    );
    assert_eq!(
        offline(&source("too-many", ", requireApprovals: 2")).len(),
        1
    );
    for (name, approvals) in [("one", ", requireApprovals: 1"), ("none", "")] {
        create(&client, &ns, source(name, approvals))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
