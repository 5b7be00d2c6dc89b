//! `gatehouse plan` on an owner exit, with the real binary: the change that terminates a
//! machine's owner shows the credential rotation (on the targets that can) before anything
//! else, the proposed interim owner and the targets that cannot rotate.

use std::process::{Command, Output};

const NOW: &str = "2026-12-01T09:00:00Z";

fn gatehouse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The manifests, with olga's employment as given.
fn tree(olga: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("targets.yaml", "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {name: corp-ldap}\nspec: {type: LDAP, ldap: {url: 'ldaps://ldap', baseDN: 'dc=x'}}\n---\napiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {name: k8s}\nspec: {type: Kubernetes}\n".to_string()),
        ("policy.yaml", "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: bots}\nspec: {selector: {matchAttributes: {type: NonHuman}}, entitlements: [{target: k8s, kind: ClusterRole, name: view}, {target: corp-ldap, name: bots}]}\n".to_string()),
        ("mgr.yaml", "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {name: mgr}\nspec: {type: Human, employment: {status: Active, department: eng, manager: mgr}}\n".to_string()),
        ("olga.yaml", format!("apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: olga}}\nspec: {{type: Human, employment: {{department: eng, manager: mgr, {olga}}}}}\n")),
        ("svc.yaml", "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {name: svc}\nspec: {type: NonHuman, owner: olga}\n".to_string()),
    ];
    for (path, body) in files {
        std::fs::write(dir.path().join(path), body).unwrap();
    }
    dir
}

#[test]
fn the_plan_of_an_owner_exit_shows_the_rotation_and_the_proposed_owner() {
    let base = tree("status: Active");
    let head = tree("status: Terminated, endDate: '2026-11-30'");
    let (base, head) = (
        base.path().to_str().unwrap().to_string(),
        head.path().to_str().unwrap().to_string(),
    );
    let out = gatehouse(&["plan", &head, "--base", &base, "--now", NOW]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("default/svc (OwnerTerminated)"), "{report}");
    assert!(
        report.contains("~ rotateCredentials account on k8s"),
        "{report}"
    );
    assert!(
        !report.contains("rotateCredentials account on corp-ldap"),
        "{report}"
    );
    assert!(
        report.contains("proposed interim owner mgr (their manager); set spec.owner: mgr in Git to keep its access after 2026-12-08T00:00:00Z"),
        "{report}"
    );
    assert!(
        report.contains("TargetSystem/corp-ldap (LDAP) cannot rotate this identity's credentials"),
        "{report}"
    );

    let out = gatehouse(&["plan", &head, "--base", &base, "--now", NOW, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rotations: Vec<&serde_json::Value> = json
        .as_object()
        .and_then(|o| {
            o.values().find_map(|v| {
                v.as_array()
                    .filter(|a| a.iter().any(|c| c["action"] == "rotateCredentials"))
            })
        })
        .map(|a| {
            a.iter()
                .filter(|c| c["action"] == "rotateCredentials")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(rotations.len(), 1, "{json:#}");
    assert_eq!(rotations[0]["target"], "k8s");
    assert_eq!(rotations[0]["identity"], "svc");

    // The same head against itself (the exit already planned): no rotation again.
    let out = gatehouse(&["plan", &head, "--base", &head, "--now", NOW]);
    assert!(!text(&out).contains("rotateCredentials"), "{}", text(&out));
}
