//! `gatehouse review open` on a real signed repository: the acme cast with an AccessReview,
//! one file of pending items per reviewer committed (signed) on a branch, the files load as
//! AccessReviewResponse objects, pathOwners lets only the reviewer (or IAM) change a
//! reviewer's file, a reviewer's `revoke` withholds the access, and a second run never
//! overwrites answers.

mod gitrepo;

use std::path::Path;
use std::process::{Command, Output};

use gatehouse::api::{PathOwner, ReviewDecision};
use gatehouse::engine::{NothingHeld, Settings, WithheldReason, evaluate};
use gatehouse::source::history::changes;
use gatehouse::source::read_tree;
use gatehouse::source::verify::{PathRules, TrustedKeys, verify_changes};
use git2::{Oid, Repository};
use gitrepo::{Repo, Sign, SigningKey, git};

const NOW: &str = "2026-12-01T09:00:00Z";
const IAM: &str = "IAM Lead <iam@acme.example>";
const BRANCH: &str = "review/finance-quarterly-2026-12-01";
const REVIEW: &str = "apiVersion: gatehouse.dev/v1alpha1
kind: AccessReview
metadata:
  name: finance-quarterly
  namespace: acme
spec:
  scope:
    selector:
      matchAttributes: {department: finance}
  reviewers: {by: Manager}
  every: 90d
  duePeriod: 14d
  onNoResponse: Revoke
";

fn gatehouse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .output()
        .expect("gatehouse runs")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn open(repo: &Repo, key: &SigningKey) -> (bool, String) {
    let path = repo.path().display().to_string();
    let key = key.private_key_path.display().to_string();
    let out = gatehouse(&[
        "review",
        "open",
        "finance-quarterly",
        "--repo",
        &path,
        "--path",
        "tenants/acme",
        "--sign-with",
        &key,
        "--author",
        IAM,
        "--now",
        NOW,
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn review_open_writes_signed_pending_files_that_reviewers_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = Repo::init(&dir);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/acme"),
        &dir.join("tenants/acme"),
    );
    repo.write("tenants/acme/reviews/finance-quarterly.yaml", REVIEW);
    let keys = tmp.path().join("keys");
    let iam = SigningKey::generate(&keys, "iam-lead");
    let sofia = SigningKey::generate(&keys, "sofia");
    let marcus = SigningKey::generate(&keys, "marcus");
    let main = repo.commit("acme with a quarterly finance review", IAM, Some(&iam));

    let (ok, out) = open(&repo, &iam);
    assert!(ok, "{out}");
    assert!(
        out.contains("Opened AccessReview/finance-quarterly cycle 2026-12-01: 50 item(s) for 4 reviewer(s), due 2026-12-15T00:00:00Z."),
        "{out}"
    );
    assert!(out.contains("(signed): 4 file(s)"), "{out}");
    let opened = git(repo.path(), &["rev-parse", BRANCH]).trim().to_string();
    assert_eq!(
        git(repo.path(), &["rev-parse", "HEAD"]).trim(),
        main,
        "the checked-out branch is untouched"
    );
    let files = git(repo.path(), &["diff", "--name-only", &main, &opened]);
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        [
            "tenants/acme/reviews/finance-quarterly/2026-12-01/claire.yaml",
            "tenants/acme/reviews/finance-quarterly/2026-12-01/helena.yaml",
            "tenants/acme/reviews/finance-quarterly/2026-12-01/marcus.yaml",
            "tenants/acme/reviews/finance-quarterly/2026-12-01/sofia.yaml",
        ]
    );

    // The files are AccessReviewResponse objects, every item pending, never the reviewer's own.
    let git_repo = Repository::open(repo.path()).unwrap();
    let tree = read_tree(&git_repo, BRANCH, Some("tenants/acme"), "default").unwrap();
    let responses = &tree.loaded.snapshot.responses;
    assert_eq!(responses.len(), 4);
    let mut items = 0;
    for r in responses {
        assert_eq!(r.spec.review, "finance-quarterly");
        assert_eq!(r.spec.cycle, "2026-12-01");
        for item in &r.spec.items {
            items += 1;
            assert_ne!(item.identity, r.spec.reviewer);
            assert_eq!(item.decision, ReviewDecision::Pending);
            assert!(item.source.digest.is_some());
            assert_eq!(item.last_change.as_deref(), Some(main.as_str()));
            assert!(item.granted_since.is_some());
        }
    }
    assert_eq!(items, 50);
    let text = git(
        repo.path(),
        &[
            "show",
            &format!("{BRANCH}:tenants/acme/reviews/finance-quarterly/2026-12-01/sofia.yaml"),
        ],
    );
    assert!(text.contains("    decision: pending\n"), "{text}");

    // pathOwners: a reviewer's file may be changed by that reviewer (and IAM, who opens it).
    let trusted = TrustedKeys::new([
        ("iam-lead".to_string(), iam.public_key.clone()),
        ("sofia".to_string(), sofia.public_key.clone()),
        ("marcus".to_string(), marcus.public_key.clone()),
    ])
    .unwrap();
    let owners: Vec<PathOwner> = serde_json::from_str(
        r#"[{"path": "reviews/*/*/sofia.yaml", "keys": ["sofia", "iam-lead"]},
            {"path": "reviews/*/*/marcus.yaml", "keys": ["marcus", "iam-lead"]},
            {"path": "reviews/*.yaml", "keys": ["iam-lead"]}]"#,
    )
    .unwrap();
    let rules = PathRules::new(&owners, &trusted).unwrap();
    let range = |from: &str, to: &str| {
        changes(
            &git_repo,
            Some(Oid::from_str(from).unwrap()),
            Oid::from_str(to).unwrap(),
            Some("tenants/acme"),
            100,
        )
        .unwrap()
    };
    let signers = verify_changes(&git_repo, &range(&main, &opened), &trusted, &rules).unwrap();
    assert!(signers.iter().all(|(_, k)| k == "iam-lead"), "{signers:?}");

    // Sofia answers: revoke one item, with a justification, signed with her key.
    git(repo.path(), &["checkout", "-q", BRANCH]);
    let sofia_file = "tenants/acme/reviews/finance-quarterly/2026-12-01/sofia.yaml";
    let before = std::fs::read_to_string(dir.join(sofia_file)).unwrap();
    let first = before
        .find("    decision: pending\n    justification: \"\"\n")
        .unwrap();
    let answered = format!(
        "{}    decision: revoke\n    justification: \"moved to controlling, no longer needed\"\n{}",
        &before[..first],
        &before[first + "    decision: pending\n    justification: \"\"\n".len()..]
    );
    repo.write(sofia_file, &answered);
    let answer = repo.commit(
        "sofia: finance-quarterly answers",
        "Sofia <sofia@acme.example>",
        Some(&sofia),
    );
    let signers = verify_changes(&git_repo, &range(&opened, &answer), &trusted, &rules).unwrap();
    assert_eq!(
        signers.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(),
        ["sofia"]
    );
    // Marcus may not answer for Sofia.
    repo.write(sofia_file, &before);
    let forged = repo.commit_signed(
        "marcus edits sofia's answers",
        "Marcus <marcus@acme.example>",
        Sign::Ssh(&marcus),
    );
    let refused =
        verify_changes(&git_repo, &range(&answer, &forged), &trusted, &rules).unwrap_err();
    assert_eq!(refused.key.as_deref(), Some("marcus"));
    git(repo.path(), &["reset", "-q", "--hard", &answer]);

    // The engine withholds the revoked item with reason review:finance-quarterly.
    let tree = read_tree(&git_repo, &answer, Some("tenants/acme"), "default").unwrap();
    let answered = tree
        .loaded
        .snapshot
        .responses
        .iter()
        .find(|r| r.spec.reviewer == "sofia")
        .unwrap();
    let item = answered.spec.items[0].clone();
    assert_eq!(item.decision, ReviewDecision::Revoke);
    let desired = evaluate(
        &tree.loaded.snapshot,
        NOW.parse().unwrap(),
        &Settings::default(),
        &NothingHeld,
    );
    let access = &desired.identities[&gatehouse::engine::IdentityKey::new("acme", &item.identity)];
    assert!(
        access
            .withheld
            .iter()
            .any(|w| *w.entitlement == item.entitlement
                && w.source.name == item.source.name
                && w.reason
                    == WithheldReason::Review {
                        review: "finance-quarterly".into()
                    }),
        "{:?}",
        access.withheld
    );
    assert!(
        !access
            .entitlements
            .iter()
            .any(|g| *g.entitlement == item.entitlement
                && g.sources.iter().all(|s| s.name == item.source.name))
    );
    let progress = &desired.reviews[&("acme".to_string(), "finance-quarterly".to_string())];
    assert_eq!(
        (progress.pending, progress.kept, progress.revoked),
        (49, 0, 1)
    );

    // `gatehouse audit` shows the decision (reviewer, justification, commit) and the revocation.
    let path = repo.path().display().to_string();
    let allowed =
        gitrepo::write_allowed_signers(&tmp.path().join("allowed"), &[&iam, &sofia, &marcus]);
    let allowed = allowed.display().to_string();
    let out = gatehouse(&[
        "audit",
        "--allowed-signers",
        &allowed,
        "--repo",
        &path,
        "--ref",
        BRANCH,
        "--path",
        "tenants/acme",
        "-o",
        "json",
        "--now",
        "2026-12-02T00:00:00Z",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let reviewed: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r["change"] == "reviewed").collect();
    assert_eq!(reviewed.len(), 1, "{reviewed:?}");
    let row = reviewed[0];
    assert_eq!(row["commit"], answer.as_str());
    assert_eq!(row["identity"], item.identity.as_str());
    assert_eq!(row["review"]["reviewer"], "sofia");
    assert_eq!(row["review"]["decision"], "revoke");
    assert_eq!(
        row["review"]["justification"],
        "moved to controlling, no longer needed"
    );
    assert_eq!(row["signer"], "sofia", "{row}");
    let revoked: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["change"] == "revoked" && r["commit"] == answer.as_str())
        .collect();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert!(
        revoked[0]["reason"]
            .as_str()
            .unwrap()
            .contains("review:finance-quarterly"),
        "{}",
        revoked[0]
    );

    // A second run keeps every existing file: answers are never overwritten.
    git(repo.path(), &["checkout", "-q", "main"]);
    let (ok, out) = open(&repo, &iam);
    assert!(ok, "{out}");
    assert!(
        out.contains("kept reviews/finance-quarterly/2026-12-01/sofia.yaml"),
        "{out}"
    );
    assert!(out.contains("Nothing to commit."), "{out}");
    assert_eq!(git(repo.path(), &["rev-parse", BRANCH]).trim(), answer);
}
