//! `gatehouse audit` on a real repository built with the git CLI and signed with
//! ssh-keygen keys: joiner, policy edit, mover, exception (and its expiry, which is not a
//! commit), an invalid commit, a future start date, a leaver, and a force-push.

mod gitrepo;

use std::path::Path;
use std::process::{Command, Output};

use gitrepo::{PgpKey, Repo, Sign, SigningKey, git, write_allowed_signers};
use serde_json::Value;

const NOW: &str = "2026-05-01T00:00:00Z";
const IAM: &str = "Ivan Iam <ivan@iam.example>";
const HR: &str = "Hana Hr <hana@hr.example>";
/// An author whose name needs CSV quoting.
const HR_QUOTED: &str = "Doe, Jane \"JJ\" Smith <jane@hr.example>";
const DIR: &str = "tenants/acme";

fn identity(name: &str, department: &str, status: &str, start: &str) -> String {
    format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n  type: Human\n  employment:\n    status: {status}\n    type: Employee\n    department: {department}\n    manager: ceo\n    startDate: \"{start}\"\n"
    )
}

fn policy(name: &str, selector: &str, entitlements: &[&str]) -> String {
    let list: String = entitlements
        .iter()
        .map(|e| format!("    - {e}\n"))
        .collect();
    format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n  selector:\n    matchAttributes: {{{selector}}}\n  entitlements:\n{list}"
    )
}

fn target(name: &str, kind: &str, block: &str) -> String {
    format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {{name: {name}, namespace: acme}}\nspec: {{type: {kind}, {block}}}\n"
    )
}

struct History {
    _tmp: tempfile::TempDir,
    repo: Repo,
    allowed: std::path::PathBuf,
    /// Commit ids by step name.
    ids: std::collections::HashMap<&'static str, String>,
    intruder: SigningKey,
}

fn history() -> History {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let hr = SigningKey::generate(&keys, "hr-bot");
    let iam = SigningKey::generate(&keys, "iam-lead");
    let intruder = SigningKey::generate(&keys, "intruder");
    let allowed = write_allowed_signers(&tmp.path().join("allowed_signers"), &[&hr, &iam]);
    let mut repo = Repo::init(&tmp.path().join("repo"));
    let mut ids = std::collections::HashMap::new();
    let at = |repo: &mut Repo, date: &str| repo.set_date(Some(date));
    let f = |p: &str| format!("{DIR}/{p}");

    at(&mut repo, "2026-01-05T10:00:00Z");
    repo.write(
        &f("targets/corp-ldap.yaml"),
        &target(
            "corp-ldap",
            "LDAP",
            "ldap: {url: 'ldaps://ldap', baseDN: 'dc=acme'}",
        ),
    );
    repo.write(
        &f("targets/k8s.yaml"),
        &target("k8s", "Kubernetes", "kubernetes: {}"),
    );
    repo.write(
        &f("targets/ledger-db.yaml"),
        &target(
            "ledger-db",
            "PostgreSQL",
            "postgresql: {host: db, database: ledger}",
        ),
    );
    repo.write(
        &f("policies/all-staff.yaml"),
        &policy(
            "all-staff",
            "type: Human",
            &["{target: corp-ldap, name: vpn}"],
        ),
    );
    repo.write(
        &f("policies/finance-base.yaml"),
        &policy(
            "finance-base",
            "department: finance",
            &["{target: corp-ldap, name: finance}"],
        ),
    );
    repo.write(
        &f("policies/eng-base.yaml"),
        &policy(
            "eng-base",
            "department: engineering",
            &[
                "{target: k8s, kind: ClusterRole, name: view}",
                "{target: corp-ldap, name: engineering}",
            ],
        ),
    );
    repo.write(
        &f("identities/ceo.yaml"),
        &identity("ceo", "exec", "Active", "2020-01-01"),
    );
    ids.insert(
        "rules",
        repo.commit("IAM: targets and baseline policies", IAM, Some(&iam)),
    );

    at(&mut repo, "2026-01-10T09:00:00Z");
    repo.write(
        &f("identities/alice.yaml"),
        &identity("alice", "finance", "Active", "2026-01-01"),
    );
    repo.write(
        &f("identities/carol.yaml"),
        &identity("carol", "finance", "Active", "2025-06-01"),
    );
    ids.insert(
        "joiners",
        repo.commit("HR: alice and carol join finance", HR, Some(&hr)),
    );

    at(&mut repo, "2026-01-20T09:00:00Z");
    repo.write("README.md", "outside the audited folder\n");
    ids.insert("readme", repo.commit("docs", HR, None));

    at(&mut repo, "2026-02-01T09:00:00Z");
    repo.write(
        &f("policies/finance-base.yaml"),
        &policy(
            "finance-base",
            "department: finance",
            &[
                "{target: corp-ldap, name: finance}",
                "{target: ledger-db, name: ledger_read}",
            ],
        ),
    );
    ids.insert(
        "policy-edit",
        repo.commit("IAM: finance reads the ledger", IAM, Some(&iam)),
    );

    at(&mut repo, "2026-02-10T09:00:00Z");
    repo.write(
        &f("identities/alice.yaml"),
        &identity("alice", "engineering", "Active", "2026-01-01"),
    );
    ids.insert(
        "mover",
        repo.commit("HR: alice moves to engineering", HR_QUOTED, Some(&hr)),
    );

    at(&mut repo, "2026-02-15T09:00:00Z");
    repo.write(&f("exceptions/alice-ledger.yaml"), "apiVersion: gatehouse.dev/v1alpha1\nkind: Exception\nmetadata: {name: alice-ledger, namespace: acme}\nspec:\n  identity: alice\n  entitlements: [{target: ledger-db, name: ledger_admin}]\n  justification: migration\n  requestedBy: ceo\n  approvedBy: [carol]\n  validFrom: \"2026-02-15T00:00:00Z\"\n  expiresAt: \"2026-03-01T00:00:00Z\"\n");
    ids.insert(
        "exception",
        repo.commit(
            "IAM: temporary ledger admin for alice",
            IAM,
            Some(&intruder),
        ),
    );

    at(&mut repo, "2026-03-10T09:00:00Z");
    repo.write(
        &f("identities/bob.yaml"),
        &identity("bob", "finance", "Active", "2026-03-01"),
    );
    repo.write(&f("identities/broken.yaml"), "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {name: broken, namespace: acme}\nspec: {type: Human, colour: blue}\n");
    ids.insert(
        "invalid",
        repo.commit("HR: bob joins (with a broken file)", HR, None),
    );

    at(&mut repo, "2026-03-12T09:00:00Z");
    repo.remove(&f("identities/broken.yaml"));
    repo.write(
        &f("identities/dave.yaml"),
        &identity("dave", "finance", "Active", "2026-03-20"),
    );
    ids.insert(
        "fix",
        repo.commit(
            "HR: remove the broken file; dave starts on the 20th",
            HR,
            Some(&hr),
        ),
    );

    at(&mut repo, "2026-04-01T09:00:00Z");
    repo.write(
        &f("identities/alice.yaml"),
        &identity("alice", "engineering", "Terminated", "2026-01-01"),
    );
    ids.insert("leaver", repo.commit("HR: alice leaves", HR, Some(&hr)));

    History {
        _tmp: tmp,
        repo,
        allowed,
        ids,
        intruder,
    }
}

fn audit(h: &History, extra: &[&str]) -> Output {
    let allowed = h.allowed.display().to_string();
    let repo = h.repo.path().display().to_string();
    let mut args = vec![
        "audit",
        "--repo",
        &repo,
        "--path",
        DIR,
        "--allowed-signers",
        &allowed,
        "--now",
        NOW,
    ];
    args.extend_from_slice(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(&args)
        .output()
        .expect("binary runs");
    assert!(
        out.status.success(),
        "gatehouse {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_rows(h: &History, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--output", "json"];
    args.extend_from_slice(extra);
    let out = audit(h, &args);
    let value: Value = serde_json::from_slice(&out.stdout).expect("JSON output parses");
    value.as_array().expect("an array of rows").clone()
}

/// The rows of one identity and entitlement, as (change, commit, trigger).
fn find<'a>(rows: &'a [Value], identity: &str, entitlement: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| r["identity"] == identity && r["entitlement"] == entitlement)
        .collect()
}

#[test]
fn the_timeline_of_joiner_policy_edit_mover_exception_and_leaver() {
    let h = history();
    let rows = json_rows(&h, &[]);
    let id = |step: &str| h.ids[step].clone();
    let fingerprint_prefix = "untrusted SHA256:";

    // Every row carries the documented fields.
    for row in &rows {
        for field in [
            "time",
            "commit",
            "author",
            "signer",
            "trigger",
            "namespace",
            "identity",
            "target",
            "entitlement",
            "change",
            "source",
            "sourcePath",
            "sourceCommit",
            "reason",
            "enforced",
        ] {
            assert!(row.get(field).is_some(), "{field} missing in {row}");
        }
        assert_eq!(row["namespace"], "acme");
    }
    // No commit outside the folder appears.
    assert!(rows.iter().all(|r| r["commit"] != id("readme")));

    // ceo: vpn from the first commit, signed by the IAM key.
    let ceo = find(&rows, "ceo", "corp-ldap:vpn");
    assert_eq!(ceo.len(), 1, "{ceo:?}");
    assert_eq!(ceo[0]["change"], "granted");
    assert_eq!(ceo[0]["commit"], id("rules"));
    assert_eq!(ceo[0]["author"], IAM);
    assert_eq!(ceo[0]["signer"], "iam-lead");
    assert_eq!(ceo[0]["time"], "2026-01-05T10:00:00Z");
    assert_eq!(ceo[0]["source"], "AccessPolicy/all-staff");
    assert_eq!(ceo[0]["sourcePath"], "policies/all-staff.yaml");
    assert_eq!(ceo[0]["trigger"], "commit");

    // Joiner: alice gets finance and vpn at the HR commit, signed by hr-bot.
    let finance = find(&rows, "alice", "corp-ldap:finance");
    assert_eq!(finance.len(), 2, "{finance:?}");
    assert_eq!(finance[0]["change"], "granted");
    assert_eq!(finance[0]["commit"], id("joiners"));
    assert_eq!(finance[0]["author"], HR);
    assert_eq!(finance[0]["signer"], "hr-bot");
    assert_eq!(finance[0]["source"], "AccessPolicy/finance-base");
    assert!(
        finance[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("joiner: "),
        "{}",
        finance[0]
    );

    // Policy edit by another author: the ledger read is granted by the IAM commit, to
    // alice and carol alike.
    for who in ["alice", "carol"] {
        let read = find(&rows, who, "ledger-db:ledger_read");
        assert_eq!(read[0]["change"], "granted");
        assert_eq!(read[0]["commit"], id("policy-edit"));
        assert_eq!(read[0]["author"], IAM);
        assert_eq!(read[0]["signer"], "iam-lead");
        assert_eq!(read[0]["sourceCommit"], id("policy-edit"));
    }

    // Mover: in the same commit, finance access revoked and engineering access granted.
    let moved: Vec<&Value> = rows.iter().filter(|r| r["commit"] == id("mover")).collect();
    let mut changes: Vec<(String, String)> = moved
        .iter()
        .map(|r| {
            (
                r["change"].as_str().unwrap().to_string(),
                r["entitlement"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            ("granted".to_string(), "corp-ldap:engineering".to_string()),
            ("granted".into(), "k8s:ClusterRole/view".into()),
            ("revoked".into(), "corp-ldap:finance".into()),
            ("revoked".into(), "ledger-db:ledger_read".into()),
        ]
    );
    assert!(
        moved
            .iter()
            .all(|r| r["identity"] == "alice" && r["author"] == HR_QUOTED)
    );
    let revoked = moved
        .iter()
        .find(|r| r["entitlement"] == "corp-ldap:finance")
        .unwrap();
    assert_eq!(revoked["source"], "AccessPolicy/finance-base");
    let reason = revoked["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("mover: no longer matched by AccessPolicy/finance-base"),
        "{reason}"
    );
    assert!(reason.contains("engineering"), "{reason}");
    // vpn stays: no row for it at the mover commit.
    assert_eq!(find(&rows, "alice", "corp-ldap:vpn").len(), 2);

    // Exception, signed by a key that is not trusted; it ends at its expiry, which is no
    // commit: a `time` row at that instant, naming the commit then in force.
    let admin = find(&rows, "alice", "ledger-db:ledger_admin");
    assert_eq!(admin.len(), 2, "{admin:?}");
    assert_eq!(admin[0]["change"], "granted");
    assert_eq!(admin[0]["commit"], id("exception"));
    assert!(
        admin[0]["signer"]
            .as_str()
            .unwrap()
            .starts_with(fingerprint_prefix),
        "{}",
        admin[0]
    );
    assert_eq!(admin[0]["source"], "Exception/alice-ledger");
    assert_eq!(admin[1]["change"], "revoked");
    assert_eq!(admin[1]["trigger"], "time");
    assert_eq!(admin[1]["time"], "2026-03-01T00:00:00Z");
    assert_eq!(admin[1]["commit"], id("exception"));
    assert!(
        admin[1]["reason"].as_str().unwrap().contains("expired"),
        "{}",
        admin[1]
    );
    let _ = &h.intruder;

    // The invalid commit is not applied: bob's access starts with the fixing commit.
    assert!(rows.iter().all(|r| r["commit"] != id("invalid")));
    let bob = find(&rows, "bob", "corp-ldap:finance");
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0]["commit"], id("fix"));
    assert_eq!(bob[0]["time"], "2026-03-12T09:00:00Z");

    // A start date in the future: dave's access starts on the day, not at the commit.
    let dave = find(&rows, "dave", "corp-ldap:finance");
    assert_eq!(dave.len(), 1, "{dave:?}");
    assert_eq!(dave[0]["trigger"], "time");
    assert_eq!(dave[0]["time"], "2026-03-20T00:00:00Z");
    assert_eq!(dave[0]["commit"], id("fix"));
    assert!(dave[0]["reason"].as_str().unwrap().starts_with("joiner: "));

    // Leaver: everything alice still held is revoked at the HR commit.
    let left: Vec<&Value> = rows
        .iter()
        .filter(|r| r["commit"] == id("leaver"))
        .collect();
    let mut gone: Vec<&str> = left
        .iter()
        .map(|r| r["entitlement"].as_str().unwrap())
        .collect();
    gone.sort();
    assert_eq!(
        gone,
        [
            "corp-ldap:engineering",
            "corp-ldap:vpn",
            "k8s:ClusterRole/view"
        ]
    );
    for r in &left {
        assert_eq!(r["change"], "revoked");
        assert_eq!(r["identity"], "alice");
        assert_eq!(r["signer"], "hr-bot");
        assert_eq!(r["reason"], "leaver: identity is Terminated");
    }
    // Rows are in time order.
    let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
}

#[test]
fn invalid_commits_are_reported_on_stderr_naming_commit_and_file() {
    let h = history();
    let out = audit(&h, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let short = &h.ids["invalid"][..12];
    assert!(stderr.contains(short), "{stderr}");
    assert!(stderr.contains("identities/broken.yaml"), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
    assert!(stderr.contains("is not applied"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "commit {} stays in force",
            &h.ids["exception"][..12]
        )),
        "{stderr}"
    );
    // The fixed commit is not warned about.
    assert!(!stderr.contains(&h.ids["fix"][..12]), "{stderr}");
}

#[test]
fn identity_filter_and_since() {
    let h = history();
    let carol = json_rows(&h, &["carol"]);
    assert!(!carol.is_empty());
    assert!(carol.iter().all(|r| r["identity"] == "carol"));
    let namespaced = json_rows(&h, &["acme/carol"]);
    assert_eq!(namespaced, carol);
    assert!(json_rows(&h, &["other/carol"]).is_empty());
    let nobody = audit(&h, &["nobody"]);
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no identity nobody appears"));

    let all = json_rows(&h, &[]);
    let since = json_rows(&h, &["--since", "2026-02-10"]);
    assert!(!since.is_empty() && since.len() < all.len());
    assert!(
        since
            .iter()
            .all(|r| r["time"].as_str().unwrap() >= "2026-02-10")
    );
    // The state before --since is still right: the mover's revocations are there.
    assert!(
        since
            .iter()
            .any(|r| r["commit"] == h.ids["mover"] && r["change"] == "revoked")
    );
    let expected: Vec<&Value> = all
        .iter()
        .filter(|r| r["time"].as_str().unwrap() >= "2026-02-10")
        .collect();
    assert_eq!(since.iter().collect::<Vec<_>>(), expected);
    let rfc3339 = json_rows(&h, &["alice", "--since", "2026-04-01T09:00:00Z"]);
    assert_eq!(rfc3339.len(), 3);
}

/// A minimal RFC 4180 reader: fields, quotes, doubled quotes, CRLF records.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    records
}

#[test]
fn csv_and_text_outputs() {
    let h = history();
    let json = json_rows(&h, &[]);
    let out = audit(&h, &["--output", "csv"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\"Doe, Jane \"\"JJ\"\" Smith <jane@hr.example>\""),
        "{text}"
    );
    let records = parse_csv(&text);
    assert_eq!(records[0][0], "time");
    assert_eq!(records.len(), json.len() + 1);
    let header = &records[0];
    for (record, row) in records[1..].iter().zip(&json) {
        assert_eq!(record.len(), header.len());
        for (name, value) in header.iter().zip(record) {
            let expected = match &row[name.as_str()] {
                Value::String(s) => s.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            assert_eq!(&expected, value, "field {name}");
        }
    }

    let text = String::from_utf8(audit(&h, &["alice"]).stdout).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    for column in [
        "DATE",
        "COMMIT",
        "AUTHOR",
        "SIGNER",
        "APPROVED BY",
        "IDENTITY",
        "ENTITLEMENT",
        "CHANGE",
        "SOURCE",
        "REASON",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let leaver = text
        .lines()
        .find(|l| l.contains(&h.ids["leaver"][..12]) && l.contains("k8s:ClusterRole/view"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(leaver.contains("revoked") && leaver.contains("hr-bot") && leaver.contains("leaver"));
}

#[test]
fn a_force_push_rewrites_what_a_linear_walk_sees() {
    // The audit walks the history of --ref as it is now: after a force-push back to an
    // older commit the dropped commits are not in that history. They remain readable by
    // id while the objects exist (here: --ref with the old head).
    let h = history();
    let leaver = h.ids["leaver"].clone();
    h.repo.reset_hard(&h.ids["fix"]);
    let rows = json_rows(&h, &["alice"]);
    assert!(rows.iter().all(|r| r["commit"] != leaver));
    assert!(
        rows.iter()
            .all(|r| r["reason"] != "leaver: identity is Terminated")
    );
    let old = json_rows(&h, &["alice", "--ref", &leaver]);
    assert!(old.iter().any(|r| r["commit"] == leaver));

    // The reflog holds every position the branch had: the leaver, then the step back,
    // which grants alice's access again as a `rewind`.
    let moves = json_rows(&h, &["alice", "--reflog", "--ref", "main"]);
    let left: Vec<&Value> = moves.iter().filter(|r| r["commit"] == leaver).collect();
    assert_eq!(left.len(), 3, "{moves:?}");
    assert!(
        left.iter()
            .all(|r| r["change"] == "revoked" && r["trigger"] == "commit")
    );
    let back: Vec<&Value> = moves.iter().filter(|r| r["trigger"] == "rewind").collect();
    let mut regained: Vec<&str> = back
        .iter()
        .map(|r| r["entitlement"].as_str().unwrap())
        .collect();
    regained.sort();
    assert_eq!(
        regained,
        [
            "corp-ldap:engineering",
            "corp-ldap:vpn",
            "k8s:ClusterRole/view"
        ]
    );
    for r in &back {
        assert_eq!(r["change"], "granted");
        assert_eq!(r["commit"], h.ids["fix"]);
        assert!(
            r["reason"].as_str().unwrap().starts_with("rewind to "),
            "{r}"
        );
        assert!(r["time"].as_str().unwrap() > "2026-04-01T09:00:00Z");
    }
    // Before the step back, the reflog replay and the history replay agree.
    let linear = json_rows(&h, &["alice", "--ref", &leaver]);
    let before: Vec<&Value> = moves.iter().filter(|r| r["trigger"] != "rewind").collect();
    assert_eq!(before, linear.iter().collect::<Vec<_>>());
}

#[test]
fn without_allowed_signers_signatures_show_as_untrusted_and_usage_errors_are_clear() {
    let h = history();
    let repo = h.repo.path().display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args([
            "audit", "--repo", &repo, "--path", DIR, "--now", NOW, "-o", "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let signers: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r["signer"].as_str().unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(signers, ["untrusted"].into_iter().collect());

    let bad = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["audit", "--repo", &repo, "--since", "last tuesday"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));
    let bad = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["audit", "--repo", &repo, "--ref", "no-such-branch"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no-such-branch"));
    let bad = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["audit", "--repo", &repo, "--path", "tenants/acmee"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("check --path"));
    let help = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["audit", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("as of that commit's committer time"),
        "{help}"
    );
    assert!(Path::new(&repo).exists());
}

/// The rows, replayed from nothing, give exactly what a full evaluation of the last commit
/// gives: the incremental replay (identity-only commits update the engine in place; only
/// changed files are re-parsed) loses nothing over a synthetic history of joiners, movers,
/// leavers and policy edits.
#[test]
fn incremental_replay_ends_where_a_full_evaluation_of_head_does() {
    use gatehouse::engine::{NothingHeld, Settings, WithheldReason, evaluate};
    use gatehouse::synthetic::{NAMESPACE, OrgSize, identity_name, identity_yaml, rules_yaml};
    use std::collections::BTreeSet;

    let size = OrgSize {
        identities: 400,
        policies: 50,
        exceptions: 0,
    };
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"));
    let path = |i: usize| format!("identities/{}.yaml", identity_name(i));
    let start = 1_767_225_600; // 2026-01-01
    let mut files = rules_yaml(size);
    files.extend((0..size.identities).map(|i| (path(i), identity_yaml(i, 0))));
    let mut commits = vec![gitrepo::BulkCommit {
        message: "org".into(),
        author: HR.into(),
        time: start,
        files,
        deletes: vec![],
    }];
    let mut next = size.identities;
    for c in 0..60usize {
        let pick = (c * 7919) % size.identities;
        let mut commit = gitrepo::BulkCommit {
            message: format!("change {c}"),
            author: HR.into(),
            time: start + (c as i64 + 1) * 3600,
            ..Default::default()
        };
        match c % 5 {
            0 => {
                commit.files.push((path(next), identity_yaml(next, 0)));
                next += 1;
            }
            1 | 2 => commit
                .files
                .push((path(pick), identity_yaml(pick, 1 + c % 4))),
            3 => commit.files.push((
                path(pick),
                identity_yaml(pick, 0).replace("status: Active", "status: Terminated"),
            )),
            _ => {
                let p = c % size.policies;
                let (file, body) = rules_yaml(size)
                    .into_iter()
                    .find(|(f, _)| f == &format!("policies/p{p:04}.yaml"))
                    .unwrap();
                commit.author = IAM.into();
                commit.files.push((
                    file,
                    body.replace(
                        "  entitlements:\n",
                        &format!("  entitlements:\n    - {{target: corp-ldap, name: x{c}}}\n"),
                    ),
                ));
                if c % 10 == 9 {
                    commit.deletes.push(path(pick));
                }
            }
        }
        commits.push(commit);
    }
    let ids = repo.fast_import(&commits);
    let last = commits.last().unwrap().time;
    let until = jiff::Timestamp::from_second(last).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["audit", "--repo"])
        .arg(repo.path())
        .args(["-n", NAMESPACE, "--now", &until.to_string(), "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut held: BTreeSet<(String, String)> = BTreeSet::new();
    for r in &rows {
        let key = (
            r["identity"].as_str().unwrap().to_string(),
            r["entitlement"].as_str().unwrap().to_string(),
        );
        match r["change"].as_str().unwrap() {
            "granted" => assert!(held.insert(key.clone()), "granted twice: {key:?}"),
            _ => assert!(held.remove(&key), "revoked but not held: {key:?}"),
        }
    }
    let commits_with_rows: BTreeSet<&str> =
        rows.iter().map(|r| r["commit"].as_str().unwrap()).collect();
    assert!(commits_with_rows.len() > 40, "{}", commits_with_rows.len());
    assert!(
        commits_with_rows
            .iter()
            .all(|c| ids.iter().any(|id| id == c))
    );

    let git = git2::Repository::open(repo.path()).unwrap();
    let tree = gatehouse::source::read_tree(&git, "HEAD", None, NAMESPACE).unwrap();
    assert!(!tree.loaded.diagnostics.has_errors());
    let desired = evaluate(
        &tree.loaded.snapshot,
        until,
        &Settings::default(),
        &NothingHeld,
    );
    // Separation of duties depends on what was held before; leave those identities out.
    let sod: BTreeSet<&str> = desired
        .identities
        .values()
        .filter(|a| {
            a.withheld
                .iter()
                .any(|w| matches!(w.reason, WithheldReason::SeparationOfDuties { .. }))
        })
        .map(|a| a.key.name.as_str())
        .collect();
    let expected: BTreeSet<(String, String)> = desired
        .identities
        .values()
        .filter(|a| !sod.contains(a.key.name.as_str()))
        .flat_map(|a| {
            a.entitlements
                .iter()
                .map(|g| (a.key.name.clone(), g.entitlement.to_string()))
        })
        .collect();
    let replayed: BTreeSet<(String, String)> = held
        .into_iter()
        .filter(|(who, _)| !sod.contains(who.as_str()))
        .collect();
    assert!(expected.len() > 100, "{}", expected.len());
    assert_eq!(replayed, expected);
}

/// `gatehouse audit --keyring` names OpenPGP signers (a forge's merge commit included) next
/// to SSH ones from --allowed-signers; `gatehouse validate --repo --keyring` refuses a head
/// signed by an unknown OpenPGP key, naming the commit and the key.
#[test]
fn openpgp_keyring_in_audit_and_validate() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let hana = PgpKey::generate(&keys, HR);
    let forge = PgpKey::generate(&keys, "GitHub <noreply@github.com>");
    let stranger = PgpKey::generate(&keys, "Mallory <mallory@evil.example>");
    let iam = SigningKey::generate(&keys, "iam-lead");
    let allowed = write_allowed_signers(&tmp.path().join("allowed_signers"), &[&iam]);
    let keyring = tmp.path().join("keyring.asc");
    std::fs::write(
        &keyring,
        format!("{}{}", hana.public_key(), forge.public_key()),
    )
    .unwrap();

    let mut repo = Repo::init(&tmp.path().join("repo"));
    let f = |p: &str| format!("{DIR}/{p}");
    repo.set_date(Some("2026-01-05T10:00:00Z"));
    repo.write(
        &f("targets/corp-ldap.yaml"),
        &target(
            "corp-ldap",
            "LDAP",
            "ldap: {url: 'ldaps://ldap', baseDN: 'dc=acme'}",
        ),
    );
    repo.write(
        &f("policies/all-staff.yaml"),
        &policy(
            "all-staff",
            "type: Human",
            &["{target: corp-ldap, name: vpn}"],
        ),
    );
    repo.write(
        &f("identities/ceo.yaml"),
        &identity("ceo", "exec", "Active", "2020-01-01"),
    );
    repo.commit_signed("targets and policies", IAM, Sign::Ssh(&iam));
    repo.set_date(Some("2026-01-06T10:00:00Z"));
    git(repo.path(), &["checkout", "-q", "-b", "joiner"]);
    repo.write(
        &f("identities/alice.yaml"),
        &identity("alice", "finance", "Active", "2026-01-01"),
    );
    repo.commit_signed("alice joins", HR, Sign::Pgp(&hana));
    git(repo.path(), &["checkout", "-q", "main"]);
    repo.set_date(Some("2026-01-07T10:00:00Z"));
    repo.merge(
        "joiner",
        "Merge pull request #7",
        "GitHub <noreply@github.com>",
        Sign::Pgp(&forge),
        &[(
            &f("identities/bob.yaml"),
            &identity("bob", "finance", "Active", "2026-01-01"),
        )],
    );

    let repo_path = repo.path().display().to_string();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .output()
            .expect("binary runs")
    };
    let (allowed, keyring) = (allowed.display().to_string(), keyring.display().to_string());
    let out = run(&[
        "audit",
        "--repo",
        &repo_path,
        "--path",
        DIR,
        "--now",
        NOW,
        "-o",
        "json",
        "--allowed-signers",
        &allowed,
        "--keyring",
        &keyring,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let signer_of = |who: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r["identity"].as_str().unwrap_or("").contains(who))
            .map(|r| r["signer"].as_str().unwrap().to_string())
            .collect()
    };
    // The replay follows the first parent: the ceo's row is the SSH-signed commit's, and
    // alice (from the merged branch) and bob (added by the merge) arrive with the forge's
    // merge commit.
    assert_eq!(signer_of("ceo"), vec!["iam-lead".to_string()], "{rows:?}");
    assert_eq!(
        signer_of("alice"),
        vec!["noreply@github.com".to_string()],
        "{rows:?}"
    );
    assert_eq!(
        signer_of("bob"),
        vec!["noreply@github.com".to_string()],
        "{rows:?}"
    );

    // validate: the newest commit that shaped the folder is the forge's merge: trusted.
    let validate = |extra: &[&str]| {
        let mut args = vec![
            "validate", "--repo", &repo_path, "--path", DIR, "--now", NOW,
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let ok = validate(&["--keyring", &keyring]);
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    repo.write(
        &f("identities/eve.yaml"),
        &identity("eve", "finance", "Active", "2026-01-01"),
    );
    let bad = repo.commit_signed("eve", HR, Sign::Pgp(&stranger));
    let refused = validate(&["--keyring", &keyring, "--allowed-signers", &allowed]);
    let text = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("commit {}", &bad[..12])), "{text}");
    assert!(
        text.contains(&format!("OpenPGP {}", stranger.fingerprint)),
        "{text}"
    );
    // Without keys, validate does not look at signatures.
    assert!(validate(&[]).status.success());
}

/// Each row names who signed the changes its commit brought (`authoredBy`) and whose
/// signed merges approved them (`approvedBy`): nobody for a direct push or a self-merge,
/// the forge for its merge of a pull request (and nobody once the merge changes files
/// itself, since nobody else approved those).
#[test]
fn rows_name_the_authors_and_the_approvers() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let hana = PgpKey::generate(&keys, HR);
    let forge = PgpKey::generate(&keys, "GitHub <noreply@github.com>");
    let iam = SigningKey::generate(&keys, "iam-lead");
    let allowed = write_allowed_signers(&tmp.path().join("allowed_signers"), &[&iam]);
    let keyring = tmp.path().join("keyring.asc");
    std::fs::write(
        &keyring,
        format!("{}{}", hana.public_key(), forge.public_key()),
    )
    .unwrap();
    let mut repo = Repo::init(&tmp.path().join("repo"));
    let f = |p: &str| format!("{DIR}/{p}");
    repo.set_date(Some("2026-01-05T10:00:00Z"));
    repo.write(
        &f("targets/corp-ldap.yaml"),
        &target(
            "corp-ldap",
            "LDAP",
            "ldap: {url: 'ldaps://ldap', baseDN: 'dc=acme'}",
        ),
    );
    repo.write(
        &f("policies/all-staff.yaml"),
        &policy(
            "all-staff",
            "type: Human",
            &["{target: corp-ldap, name: vpn}"],
        ),
    );
    repo.write(
        &f("identities/ceo.yaml"),
        &identity("ceo", "exec", "Active", "2020-01-01"),
    );
    let direct = repo.commit_signed("targets and policies", IAM, Sign::Ssh(&iam));
    let pull_request = |repo: &mut Repo, branch: &str, name: &str, date: &str, sign: Sign<'_>| {
        repo.set_date(Some(date));
        git(repo.path(), &["checkout", "-q", "-b", branch, "main"]);
        repo.write(
            &f(&format!("identities/{name}.yaml")),
            &identity(name, "finance", "Active", "2026-01-01"),
        );
        repo.commit_signed(name, HR, sign);
        git(repo.path(), &["checkout", "-q", "main"]);
    };
    pull_request(
        &mut repo,
        "pr-1",
        "alice",
        "2026-01-06T10:00:00Z",
        Sign::Pgp(&hana),
    );
    let forge_merge = repo.merge(
        "pr-1",
        "Merge pull request #1",
        "GitHub <noreply@github.com>",
        Sign::Pgp(&forge),
        &[],
    );
    pull_request(
        &mut repo,
        "pr-2",
        "bob",
        "2026-01-07T10:00:00Z",
        Sign::Ssh(&iam),
    );
    let self_merge = repo.merge("pr-2", "Merge pr-2", IAM, Sign::Ssh(&iam), &[]);
    pull_request(
        &mut repo,
        "pr-3",
        "carol",
        "2026-01-08T10:00:00Z",
        Sign::Pgp(&hana),
    );
    let resolving = repo.merge(
        "pr-3",
        "Merge pull request #3",
        "GitHub <noreply@github.com>",
        Sign::Pgp(&forge),
        &[(
            &f("identities/dave.yaml"),
            &identity("dave", "finance", "Active", "2026-01-01"),
        )],
    );

    let repo_path = repo.path().display().to_string();
    let (allowed, keyring) = (allowed.display().to_string(), keyring.display().to_string());
    let run = |output: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args([
                "audit",
                "--repo",
                &repo_path,
                "--path",
                DIR,
                "--now",
                NOW,
                "-o",
                output,
                "--allowed-signers",
                &allowed,
                "--keyring",
                &keyring,
            ])
            .output()
            .expect("binary runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let rows: Vec<Value> = serde_json::from_str(&run("json")).unwrap();
    let review = |who: &str| -> (String, Value, Value) {
        let row = rows
            .iter()
            .find(|r| r["identity"] == who)
            .unwrap_or_else(|| panic!("no row for {who}: {rows:?}"));
        (
            row["commit"].as_str().unwrap().to_string(),
            row["authoredBy"].clone(),
            row["approvedBy"].clone(),
        )
    };
    let none = serde_json::json!([]);
    assert_eq!(
        review("ceo"),
        (direct, serde_json::json!(["iam-lead"]), none.clone()),
        "a direct push: its signer wrote it, nobody approved it"
    );
    assert_eq!(
        review("alice"),
        (
            forge_merge.clone(),
            serde_json::json!(["hana@hr.example"]),
            serde_json::json!(["noreply@github.com"])
        ),
        "the forge's merge approved Hana's pull request"
    );
    assert_eq!(
        review("bob"),
        (self_merge, serde_json::json!(["iam-lead"]), none.clone()),
        "a merge by the change's own signer approves nothing"
    );
    assert_eq!(
        review("dave"),
        (
            resolving,
            serde_json::json!(["hana@hr.example", "noreply@github.com"]),
            none
        ),
        "what the merge added itself was approved by nobody else"
    );
    let text = run("text");
    let alice = text
        .lines()
        .find(|l| l.contains("acme/alice"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        text.lines().next().unwrap().contains("APPROVED BY")
            && alice.contains("noreply@github.com"),
        "{text}"
    );
    let csv = run("csv");
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",authoredBy,approvedBy"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.contains(&forge_merge) && l.ends_with(",hana@hr.example,noreply@github.com")),
        "{csv}"
    );
}

/// `--break-glass`: the ledger the controller writes (built here with the controller's own
/// `ledger_entry`, so writer and reader agree) adds break-glass rows, merged by time and
/// filtered like the others.
#[test]
fn break_glass_ledger_rows() {
    use gatehouse::api::{BreakGlassStatus, Exception, ExceptionStatus};
    use gatehouse::controller::break_glass::{ledger_entry, transition};
    let h = history();
    let exc: Exception = serde_yaml::from_str(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Exception\nmetadata: {name: inc-7, namespace: acme, uid: 0123456789abcdef}\nspec: {identity: alice, entitlements: [{target: ldap, name: ledger_admin}], justification: INC-7, requestedBy: alice, approvedBy: [], validFrom: '2026-03-01T10:00:00Z', expiresAt: '2026-03-01T14:00:00Z', breakGlass: true}\n",
    )
    .unwrap();
    let status = |phase: &str, outcome: Option<&str>| ExceptionStatus {
        phase: Some(phase.into()),
        break_glass: Some(BreakGlassStatus {
            by: Some("ana".into()),
            from: "2026-03-01T10:00:00Z".into(),
            until: "2026-03-01T14:00:00Z".into(),
            ratified: false,
            ratify_by: Some("2026-03-01T11:00:00Z".into()),
            activated_at: Some("2026-03-01T10:00:03Z".into()),
            ended_at: outcome.map(|_| "2026-03-01T11:00:01Z".into()),
            outcome: outcome.map(str::to_string),
        }),
        ..ExceptionStatus::default()
    };
    let mut data = serde_json::Map::new();
    let mut before: Option<ExceptionStatus> = None;
    for (phase, outcome, at) in [
        ("Active", None, "2026-03-01T10:00:03Z"),
        ("Revoked", Some("RevokedUnratified"), "2026-03-01T11:00:01Z"),
    ] {
        let next = status(phase, outcome);
        let said = transition("inc-7", "alice", before.as_ref(), &next).expect("a transition");
        let (key, value) = ledger_entry(&exc, &next, &said, at.parse().unwrap());
        data.insert(key, value.into());
        before = Some(next);
    }
    let ledger = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "gatehouse-break-glass", "namespace": "acme"},
        "data": data,
    });
    let file = h.repo.path().parent().unwrap().join("bg-ledger.json");
    std::fs::write(&file, ledger.to_string()).unwrap();
    let path = file.display().to_string();

    let rows = json_rows(&h, &["--break-glass", &path]);
    let bg: Vec<&Value> = rows
        .iter()
        .filter(|r| r["trigger"] == "break-glass")
        .collect();
    let seen: Vec<(&str, &str, &str)> = bg
        .iter()
        .map(|r| {
            (
                r["time"].as_str().unwrap(),
                r["change"].as_str().unwrap(),
                r["entitlement"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("2026-03-01T10:00:03Z", "granted", "ldap:ledger_admin"),
            ("2026-03-01T11:00:00Z", "revoked", "ldap:ledger_admin"),
        ]
    );
    assert_eq!(bg[0]["author"], "ana");
    assert_eq!(bg[0]["source"], "Exception/inc-7");
    assert!(bg[1]["reason"].as_str().unwrap().contains("not ratified"));
    // Merged by time with the Git rows.
    let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // Filtered like the others.
    let carol = json_rows(&h, &["carol", "--break-glass", &path]);
    assert!(carol.iter().all(|r| r["trigger"] != "break-glass"));
    let alice = json_rows(&h, &["alice", "--break-glass", &path]);
    assert_eq!(
        alice
            .iter()
            .filter(|r| r["trigger"] == "break-glass")
            .count(),
        2
    );
}
