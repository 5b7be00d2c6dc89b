//! The CLI as users run it: real files, real Git repositories, the real binary.

use std::path::{Path, PathBuf};
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

fn examples(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

/// A temporary directory with the given files.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, body) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    dir
}

const TARGET: &str = "apiVersion: gatehouse.dev/v1alpha1
kind: TargetSystem
metadata: {name: corp-ldap}
spec: {type: LDAP, ldap: {url: 'ldaps://ldap', baseDN: 'dc=x'}}
";

fn person(name: &str, dept: &str, manager: &str) -> String {
    format!(
        "apiVersion: gatehouse.dev/v1alpha1
kind: Identity
metadata: {{name: {name}}}
spec:
  type: Human
  employment: {{status: Active, department: {dept}, manager: {manager}, startDate: '2025-01-01'}}
"
    )
}

const POLICY: &str = "apiVersion: gatehouse.dev/v1alpha1
kind: AccessPolicy
metadata: {name: finance}
spec:
  selector: {matchAttributes: {department: finance}}
  entitlements: [{target: corp-ldap, name: finance}]
";

#[test]
fn plan_on_the_example_shows_grants_and_findings() {
    let out = gatehouse(&["plan", &examples("acme"), "--now", NOW]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("acme/tobias"), "{t}");
    assert!(t.contains("SeparationOfDuties"), "{t}");
    assert!(t.contains("Plan: grants "), "{t}");
}

#[test]
fn plan_json_is_the_documented_format() {
    let out = gatehouse(&[
        "plan",
        &examples("acme-transfer"),
        "--base",
        &examples("acme"),
        "--now",
        NOW,
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["formatVersion"], 1);
    assert_eq!(json["now"], NOW);
    let emma = json["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "emma")
        .unwrap();
    assert_eq!(emma["namespace"], "acme");
    assert_eq!(emma["phase"], "Active");
    assert!(
        emma["entitlements"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["source"]["kind"] == "AccessPolicy")
    );
    let changes = json["changes"].as_array().unwrap();
    assert!(
        changes.iter().all(|c| c["identity"] == "emma"),
        "only the mover changes: {changes:?}"
    );
    let actions: Vec<&str> = changes
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    let first_grant = actions.iter().position(|a| *a == "grant").unwrap();
    assert!(
        actions[..first_grant].iter().all(|a| *a == "revoke")
            && actions[first_grant..].iter().all(|a| *a == "grant")
    );
    assert!(
        changes.iter().any(|c| c["action"] == "revoke"
            && c["target"] == "corp-ldap"
            && c["name"] == "finance")
    );
    assert!(changes.iter().any(|c| c["action"] == "grant"
        && c["target"] == "corp-ldap"
        && c["name"] == "engineering"));
    assert!(
        json["violations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["kind"] == "SeparationOfDuties" && v["identity"] == "tobias")
    );
    assert_eq!(json["summary"]["sodViolations"], 1);
}

#[test]
fn markdown_has_a_summary_line_and_a_table_per_person() {
    let out = gatehouse(&[
        "plan",
        &examples("acme-transfer"),
        "--base",
        &examples("acme"),
        "--now",
        NOW,
        "-o",
        "markdown",
    ]);
    let t = text(&out);
    assert!(
        t.starts_with(
            "### gatehouse plan: grants 2, revokes 3, attribute updates 1, affects 1 person, 1 SoD violation"
        ),
        "{t}"
    );
    // The transfer's new title, department and manager reach the directory in the same plan.
    assert!(
        t.contains("| updateAttributes | corp-ldap | account | departmentNumber: \"finance\" → \"engineering\"; manager: account claire → account rachel; title: \"Financial Analyst\" → \"Data Engineer\" | |"),
        "{t}"
    );
    assert!(t.contains("#### `acme/emma` (Active)"), "{t}");
    assert!(
        t.contains("| ➖ revoke | corp-ldap | `corp-ldap:finance` |"),
        "{t}"
    );
}

#[test]
fn validate_reports_every_problem_and_fails_on_errors() {
    let out = gatehouse(&["validate", &examples("acme"), "--now", NOW]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the example carries deliberate errors"
    );
    let t = text(&out);
    for expected in [
        "SeparationOfDuties",
        "hannah is the subject's manager",
        "ExpiredException",
        "InsufficientProofing",
        "MissingAttributes Identity/ben",
        "OwnerTerminated Identity/release-bot",
    ] {
        assert!(t.contains(expected), "missing {expected:?} in:\n{t}");
    }
}

#[test]
fn validate_passes_with_warnings_only() {
    let dir = tree(&[
        ("t.yaml", TARGET),
        ("p.yaml", POLICY),
        ("a.yaml", &person("ann", "finance", "ann")),
        (
            "b.yaml",
            &person("bob", "finance", "nobody-yet").replace("manager: nobody-yet, ", ""),
        ),
    ]);
    let out = gatehouse(&["validate", dir.path().to_str().unwrap(), "--now", NOW]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("0 errors, 1 warnings"), "{t}");
}

#[test]
fn bad_input_is_reported_with_file_object_and_field() {
    let dir = tree(&[
        ("broken.yaml", "kind: [unclosed\n"),
        (
            "unknown-kind.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        ),
        (
            "other-kind.yaml",
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Gadget\nmetadata: {name: x}\n",
        ),
        (
            "typo.yaml",
            &person("ann", "finance", "ann").replace("department:", "departmnet:"),
        ),
        (
            "bad-enum.yaml",
            &person("cid", "finance", "ann").replace("status: Active", "status: Actv"),
        ),
        (
            "bad-date.yaml",
            &person("dan", "finance", "ann").replace("2025-01-01", "2026-02-30"),
        ),
        ("dup1.yaml", &person("eve", "finance", "ann")),
        ("nested/dup2.yaml", &person("eve", "finance", "ann")),
        (
            "nohuman.yaml",
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {name: bot}\nspec: {type: NonHuman}\n",
        ),
        ("badname.yaml", &person("Bad_Name", "finance", "ann")),
        ("unknown-manager.yaml", &person("fay", "finance", "ghost")),
        (
            "cycle.yaml",
            &format!(
                "{}---\n{}",
                person("gil", "finance", "hal"),
                person("hal", "finance", "gil")
            ),
        ),
        ("t.yaml", TARGET),
        (
            "p.yaml",
            &POLICY.replace("target: corp-ldap", "target: nowhere"),
        ),
    ]);
    let out = gatehouse(&["validate", dir.path().to_str().unwrap(), "--now", NOW]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    for expected in [
        "error: broken.yaml: invalid YAML in document 1",
        "error: unknown-kind.yaml: ConfigMap/default/x: apiVersion: apiVersion is \"v1\"",
        "error: other-kind.yaml: Gadget/default/x: kind: kind \"Gadget\" is not a gatehouse kind",
        "error: typo.yaml: Identity/default/ann: spec.employment.departmnet: unknown field",
        "error: bad-enum.yaml: Identity/default/cid: spec.employment.status: unknown variant `Actv`",
        "InvalidValue Identity/dan in default: spec.employment.startDate: \"2026-02-30\" is not a valid YYYY-MM-DD date",
        "error: nested/dup2.yaml: Identity/default/eve: metadata.name: duplicate: Identity/default/eve is also defined in dup1.yaml",
        "error: nohuman.yaml: Identity/default/bot: spec: a NonHuman identity needs spec.owner",
        "error: badname.yaml: Identity/default/Bad_Name: metadata.name: \"Bad_Name\" is not a valid name",
        "UnknownReference Identity/fay in default: spec.employment.manager: manager \"ghost\" is not a Human Identity",
        "ManagerCycle Identity/gil in default",
        "ManagerCycle Identity/hal in default",
        "UnknownReference AccessPolicy/finance in default: spec.entitlements[0].target: target \"nowhere\" is not a TargetSystem",
    ] {
        assert!(t.contains(expected), "missing {expected:?} in:\n{t}");
    }
}

#[test]
fn plan_refuses_invalid_input_and_changes_nothing() {
    let dir = tree(&[
        ("t.yaml", TARGET),
        (
            "x.yaml",
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {name: x}\nspec: {type: Robot}\n",
        ),
    ]);
    let out = gatehouse(&["plan", dir.path().to_str().unwrap(), "--now", NOW]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("plan refused"), "{}", text(&out));
    assert!(
        out.stdout.is_empty(),
        "no plan is printed for invalid input"
    );
}

#[test]
fn oversized_files_and_alias_bombs_are_rejected_without_panic() {
    let big = format!("# {}\n", "x".repeat(2 * 1024 * 1024));
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (i, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        bomb.push_str(&format!(
            "{i}: &{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    let dir = tree(&[("big.yaml", &big), ("bomb.yaml", &bomb), ("t.yaml", TARGET)]);
    let out = gatehouse(&["validate", dir.path().to_str().unwrap(), "--now", NOW]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("big.yaml: file is 2097155 bytes, over the 1048576-byte limit"),
        "{t}"
    );
    assert!(
        t.contains("bomb.yaml: invalid YAML in document 1: repetition limit exceeded"),
        "{t}"
    );
}

#[test]
fn explain_says_why_and_why_not() {
    let out = gatehouse(&["explain", "lukas", &examples("acme"), "--now", NOW]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("acme/lukas: Human, phase Active"), "{t}");
    assert!(
        t.contains(
            "because AccessPolicy/engineering-baseline (policies/engineering-baseline.yaml)"
        ),
        "{t}"
    );
    assert!(
        t.contains(
            "from AccessPolicy/engineering-production: requires proofing IAL2, identity has IAL1"
        ),
        "{t}"
    );
    assert!(
        t.contains("AccessPolicy/finance-baseline"),
        "non-matching policies are listed: {t}"
    );
    let missing = gatehouse(&["explain", "nobody", &examples("acme"), "--now", NOW]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("no Identity named \"nobody\""));
    let dir = tree(&[
        ("t.yaml", TARGET),
        (
            "x.yaml",
            &person("xena", "finance", "xena").replace("status: Active", "status: Retired"),
        ),
    ]);
    let invalid = gatehouse(&[
        "explain",
        "xena",
        dir.path().to_str().unwrap(),
        "--now",
        NOW,
    ]);
    assert_eq!(invalid.status.code(), Some(2));
    assert!(
        text(&invalid)
            .contains("Identity/default/xena in x.yaml is invalid (see the errors above)"),
        "{}",
        text(&invalid)
    );
}

#[test]
fn crds_command_prints_all_four() {
    let out = gatehouse(&["crds"]);
    let t = text(&out);
    for kind in [
        "identities.gatehouse.dev",
        "accesspolicies.gatehouse.dev",
        "exceptions.gatehouse.dev",
        "targetsystems.gatehouse.dev",
    ] {
        assert!(t.contains(kind), "{kind}");
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Hana HR")
        .env("GIT_AUTHOR_EMAIL", "hana@acme.example")
        .env("GIT_COMMITTER_NAME", "Hana HR")
        .env("GIT_COMMITTER_EMAIL", "hana@acme.example")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
}

fn write(root: &Path, path: &str, body: &str) -> PathBuf {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn plan_between_git_refs_names_the_commit_behind_each_change() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    git(root, &["init", "-q", "-b", "main"]);
    write(root, "tenant/targets/ldap.yaml", TARGET);
    write(root, "tenant/policies/finance.yaml", POLICY);
    write(
        root,
        "tenant/policies/sales.yaml",
        &POLICY.replace("finance", "sales"),
    );
    write(
        root,
        "tenant/identities/ann.yaml",
        &person("ann", "finance", "ann"),
    );
    write(root, "README.md", "not a manifest");
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "initial"]);
    git(root, &["tag", "v1"]);
    write(
        root,
        "tenant/identities/ann.yaml",
        &person("ann", "sales", "ann"),
    );
    // A dot-path is never a manifest, here as in the controller's sync: not an Identity.
    write(
        root,
        "tenant/.github/workflows/eve.yaml",
        &person("eve", "finance", "eve"),
    );
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-am", "ann moves to sales"]);
    // The working tree is irrelevant: plan reads Git objects only.
    write(root, "tenant/identities/ann.yaml", "garbage: [");
    let out = gatehouse(&[
        "plan",
        "--repo",
        root.to_str().unwrap(),
        "--base",
        "v1",
        "--head",
        "main",
        "--path",
        "tenant",
        "--now",
        NOW,
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = json["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0]["action"], "revoke");
    assert_eq!(changes[0]["name"], "finance");
    assert_eq!(changes[1]["action"], "grant");
    assert_eq!(changes[1]["name"], "sales");
    for change in changes {
        assert_eq!(change["cause"]["summary"], "ann moves to sales");
        assert_eq!(change["cause"]["author"], "Hana HR <hana@acme.example>");
    }
    assert_eq!(changes[1]["source"]["path"], "policies/sales.yaml");
    assert!(
        changes[1]["source"]["commit"]
            .as_str()
            .is_some_and(|c| c.len() == 40)
    );
    let bad = gatehouse(&[
        "plan",
        "--repo",
        root.to_str().unwrap(),
        "--base",
        "no-such-ref",
        "--now",
        NOW,
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).contains("cannot resolve \"no-such-ref\""),
        "{}",
        text(&bad)
    );
}

/// The README's worked example, read from README.md itself, does what the README says.
#[test]
fn readme_worked_example_holds() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("A worked example")
        .expect("README has the worked example");
    let block = &readme[start..];
    let yaml = &block[block.find("```yaml\n").unwrap() + 8..];
    let yaml = &yaml[..yaml.find("```").unwrap()];
    let supporting = "apiVersion: gatehouse.dev/v1alpha1
kind: Identity
metadata: {name: bob, namespace: acme}
spec: {type: Human, employment: {status: Active, department: finance, manager: carol}}
---
apiVersion: gatehouse.dev/v1alpha1
kind: Identity
metadata: {name: carol, namespace: acme}
spec: {type: Human, employment: {status: Active, department: finance, manager: carol}}
---
apiVersion: gatehouse.dev/v1alpha1
kind: TargetSystem
metadata: {name: k8s, namespace: acme}
spec: {type: Kubernetes}
---
apiVersion: gatehouse.dev/v1alpha1
kind: TargetSystem
metadata: {name: ledger-db, namespace: acme}
spec: {type: PostgreSQL, postgresql: {host: db, database: ledger}}
";
    let dir = tree(&[("example.yaml", yaml), ("supporting.yaml", supporting)]);
    let path = dir.path().to_str().unwrap();
    let validate = gatehouse(&["validate", path, "--now", "2026-12-02T00:00:00Z"]);
    assert!(validate.status.success(), "{}", text(&validate));
    let during = text(&gatehouse(&[
        "explain",
        "alice",
        path,
        "--now",
        "2026-12-02T00:00:00Z",
    ]));
    for line in [
        "corp-ldap:finance                        because AccessPolicy/finance-baseline",
        "k8s:ClusterRole/view                     because AccessPolicy/finance-baseline",
        "ledger-db:ledger_admin                   because Exception/alice-ledger-admin",
    ] {
        assert!(during.contains(line), "missing {line:?} in:\n{during}");
    }
    let after = text(&gatehouse(&[
        "explain",
        "alice",
        path,
        "--now",
        "2026-12-08T00:00:00Z",
    ]));
    assert!(
        !after.contains("ledger-db:ledger_admin                   because"),
        "{after}"
    );
    assert!(
        after.contains("Exception/alice-ledger-admin: Expired"),
        "{after}"
    );
}

#[test]
fn validate_refuses_a_broken_attribute_template_naming_the_target_field_and_fix() {
    let target = "apiVersion: gatehouse.dev/v1alpha1
kind: TargetSystem
metadata: {name: corp-ldap}
spec:
  type: LDAP
  ldap: {url: 'ldaps://ldap', baseDN: 'dc=x'}
  attributes:
    title: '{{ employment.titel }}'
";
    let dir = tree(&[
        ("t.yaml", target),
        ("p.yaml", POLICY),
        ("a.yaml", &person("ann", "finance", "ann")),
    ]);
    let out = gatehouse(&["validate", dir.path().to_str().unwrap(), "--now", NOW]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("TargetSystem/corp-ldap"), "{t}");
    assert!(t.contains("spec.attributes.title"), "{t}");
    assert!(
        t.contains("unknown field `employment.titel`; a template can read"),
        "{t}"
    );
}
