//! `gatehouse hr import` and the NHI owner-exit playbook, on a real Git repository: a
//! machine identity whose owner leaves in the import gets `spec.owner: <the owner's
//! manager>` in the same commit (every other byte of its file kept), with a line in the
//! summary; one whose owner stays, or left before, is untouched.

mod gitrepo;

use std::process::{Command, Output};

use gitrepo::{Repo, git};

const NOW: &str = "2026-12-01T09:00:00Z";
const ALICE: &str = "Alice HR <alice@hr.example>";
const MAPPING: &str = "namespace: t\ncorrelation: {employeeId: id}\nname: \"{{ lower(first) }}\"\nfields:\n  status: {from: status, values: {Active: Active, Terminated: Terminated}}\n  type: {from: type, values: {E: Employee}}\n  department: {from: dept, values: {Eng: engineering}}\n  manager: mgr\n  endDate: end\n";
const HEADER: &str = "id,first,status,type,dept,mgr,end\n";

/// Head (1) manages bea (2), who manages cy (3), who manages dee (4); eve (5) reports to
/// the head.
const STAFF: [&str; 5] = [
    "1,Head,Active,E,Eng,1,",
    "2,Bea,Active,E,Eng,1,",
    "3,Cy,Active,E,Eng,2,",
    "4,Dee,Active,E,Eng,3,",
    "5,Eve,Active,E,Eng,1,",
];

/// A machine file as people write them: comments, odd spacing, quoted values.
fn machine(name: &str, owner: &str) -> String {
    format!(
        "# {name}: deploys the ledger\napiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: {name}   # keep\n  namespace: t\nspec:\n  type: NonHuman\n  owner: {owner}  # who answers for it\n  attributes:\n    tier: \"gold\"\n"
    )
}

/// [`machine`] after the import re-owned it: the owner replaced, the leaver annotated;
/// every other byte as it was.
fn reowned(name: &str, old: &str, new: &str) -> String {
    machine(name, old)
        .replace(&format!("owner: {old}  #"), &format!("owner: {new}  #"))
        .replace(
            "  namespace: t\n",
            &format!("  namespace: t\n  annotations:\n    gatehouse.dev/previous-owner: {old}\n"),
        )
}

fn gatehouse(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gatehouse starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

struct Org {
    _tmp: tempfile::TempDir,
    repo: Repo,
    mapping: String,
}

impl Org {
    fn new() -> Org {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repo::init(&tmp.path().join("repo"));
        repo.write("README.md", "t\n");
        repo.commit("init", ALICE, None);
        let mapping = tmp.path().join("mapping.yaml");
        std::fs::write(&mapping, MAPPING).unwrap();
        let org = Org {
            mapping: mapping.display().to_string(),
            _tmp: tmp,
            repo,
        };
        let out = org.run(&STAFF, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, owner) in [
            ("ledger-bot", "cy"),
            ("dee-bot", "dee"),
            ("eve-bot", "eve"),
            ("head-bot", "head"),
        ] {
            org.repo
                .write(&format!("machines/{name}.yaml"), &machine(name, owner));
        }
        org.repo.commit("people and machines", ALICE, None);
        org
    }

    fn run(&self, rows: &[&str], extra: &[&str]) -> Output {
        let repo = self.repo.path().display().to_string();
        let mut args = vec![
            "hr",
            "import",
            "--from",
            "-",
            "--format",
            "csv",
            "--mapping",
            &self.mapping,
            "--repo",
            &repo,
            "--now",
            NOW,
            "--max-changes",
            "100%",
        ];
        args.extend_from_slice(extra);
        let csv = format!("{HEADER}{}\n", rows.join("\n"));
        gatehouse(&args, csv.as_bytes())
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.repo.path().join(path)).unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_leaving_owners_machines_go_to_their_manager_in_the_same_change() {
    let org = Org::new();
    // cy and dee leave together: cy's bot goes to bea (cy's manager); dee's manager is cy,
    // who leaves too, so dee's bot goes to bea as well.
    let rows = [
        STAFF[0],
        STAFF[1],
        "3,Cy,Terminated,E,Eng,2,2026-11-30",
        "4,Dee,Terminated,E,Eng,3,2026-11-30",
        STAFF[4],
    ];
    let out = org.run(&rows, &[]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("leavers 2,") && report.contains("machine identities re-owned 2"),
        "{report}"
    );
    assert!(
        report.contains("re-owned (owner leaves) ledger-bot: owner: cy -> bea (cy's manager, proposed as interim owner; annotated gatehouse.dev/previous-owner: cy, so its credentials are still rotated once)"),
        "{report}"
    );
    assert!(
        report.contains("re-owned (owner leaves) dee-bot: owner: dee -> bea"),
        "{report}"
    );
    // Only the owner's value changed and the leaver is annotated; every other byte of the
    // file is kept.
    assert_eq!(
        org.read("machines/ledger-bot.yaml"),
        reowned("ledger-bot", "cy", "bea")
    );
    assert_eq!(
        org.read("machines/dee-bot.yaml"),
        reowned("dee-bot", "dee", "bea")
    );
    // Owners who stay: untouched.
    assert_eq!(org.read("machines/eve-bot.yaml"), machine("eve-bot", "eve"));
    assert_eq!(
        org.read("machines/head-bot.yaml"),
        machine("head-bot", "head")
    );
    let dirty = git(org.repo.path(), &["status", "--porcelain"]);
    let mut dirty: Vec<&str> = dirty.lines().collect();
    dirty.sort();
    assert_eq!(
        dirty,
        [
            " M identities/cy.yaml",
            " M identities/dee.yaml",
            " M machines/dee-bot.yaml",
            " M machines/ledger-bot.yaml"
        ]
    );
    org.repo.commit("cy and dee leave", ALICE, None);

    // The same feed again: the leavers are already gone, so nothing is proposed twice
    // (a re-owned machine keeps its new owner).
    let out = org.run(&rows, &[]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("re-owned"), "{report}");
    assert_eq!(git(org.repo.path(), &["status", "--porcelain"]), "");
}

#[test]
fn the_commit_carries_the_re_ownership_and_a_summary_line() {
    let org = Org::new();
    let rows = [
        STAFF[0],
        STAFF[1],
        STAFF[2],
        STAFF[3],
        "5,Eve,Terminated,E,Eng,1,2026-11-30",
    ];
    let out = org.run(&rows, &["--commit", "--branch", "hr/eve", "--no-plan"]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let message = git(org.repo.path(), &["log", "-1", "--format=%B", "hr/eve"]);
    assert!(
        message.starts_with("hr import: joiners 0, movers 0, leavers 1, scheduled leavers 0, rehires 0, conversions 0, other updates 0, errors 0, machine identities re-owned 1\n"),
        "{message}"
    );
    assert!(
        message.contains("re-owned (owner leaves) eve-bot: owner: eve -> head"),
        "{message}"
    );
    let changed = git(
        org.repo.path(),
        &["diff", "--name-only", "hr/eve~1", "hr/eve"],
    );
    assert_eq!(
        changed.lines().collect::<Vec<_>>(),
        ["identities/eve.yaml", "machines/eve-bot.yaml"]
    );
    let bot = git(org.repo.path(), &["show", "hr/eve:machines/eve-bot.yaml"]);
    assert_eq!(bot, reowned("eve-bot", "eve", "head"));
    // The working tree is not touched by --commit.
    assert_eq!(org.read("machines/eve-bot.yaml"), machine("eve-bot", "eve"));
}

#[test]
fn without_an_active_manager_the_import_asks_for_an_owner_by_hand() {
    let org = Org::new();
    // The head of the organisation leaves: nobody above to propose.
    let rows = [
        "1,Head,Terminated,E,Eng,1,2026-11-30",
        STAFF[1],
        STAFF[2],
        STAFF[3],
        STAFF[4],
    ];
    let out = org.run(&rows, &[]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("head-bot (machines/head-bot.yaml): its owner head leaves in this import and has no active manager to take it over"),
        "{report}"
    );
    assert!(!report.contains("re-owned"), "{report}");
    assert_eq!(
        org.read("machines/head-bot.yaml"),
        machine("head-bot", "head")
    );
}
