//! `gatehouse hr import` against real Git repositories: the acme cast's first import and a
//! second feed with every lifecycle case, correlation edge cases, the mass-change brake,
//! idempotence, signatures checked by the PolicySource verification code, every bad-input
//! case, and properties of the pure import.

mod gitrepo;

use std::path::Path;
use std::process::{Command, Output};

use gatehouse::api::PathOwner;
use gatehouse::hr::{ExistingFile, Limit, Mapping, Missing, Options, feed};
use gatehouse::source::history::changes;
use gatehouse::source::verify::{PathRules, TrustedKeys, verify_changes};
use git2::{Oid, Repository};
use gitrepo::{Repo, SigningKey, git};

const NOW: &str = "2026-12-01T09:00:00Z";
const ALICE: &str = "Alice HR <alice@hr.example>";

fn gatehouse(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("gatehouse starts");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example(file: &str) -> String {
    format!("{}/examples/hr/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// A repository holding examples/acme under `tenants/acme`, committed on main.
fn acme_repo(dir: &Path) -> Repo {
    let repo = Repo::init(dir);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/acme");
    copy_dir(&src, &dir.join("tenants/acme"));
    repo.commit("acme", ALICE, None);
    repo
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

fn import(repo: &Repo, feed: &str, extra: &[&str]) -> Output {
    let mapping = example("mapping.yaml");
    let repo_path = repo.path().display().to_string();
    let mut args = vec![
        "hr",
        "import",
        "--from",
        feed,
        "--format",
        "csv",
        "--mapping",
        &mapping,
        "--repo",
        &repo_path,
        "--path",
        "tenants/acme",
        "--now",
        NOW,
    ];
    args.extend_from_slice(extra);
    gatehouse(&args, None)
}

fn show(repo: &Repo, rev_path: &str) -> String {
    git(repo.path(), &["show", rev_path])
}

fn rev(repo: &Repo, rev: &str) -> String {
    git(repo.path(), &["rev-parse", rev]).trim().to_string()
}

#[test]
fn acme_first_import_links_everyone_then_the_next_feed_is_joiner_mover_leaver_rehire_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = acme_repo(&tmp.path().join("repo"));
    let hr = SigningKey::generate(&tmp.path().join("keys"), "hr-bot");
    let iam = SigningKey::generate(&tmp.path().join("keys"), "iam-lead");
    let key = hr.private_key_path.display().to_string();
    let main = rev(&repo, "main");

    // First import: the feed reproduces the cast, so only the employee ids are added.
    let out = import(
        &repo,
        &example("acme-feed.csv"),
        &[
            "--commit",
            "--branch",
            "hr/import",
            "--sign-with",
            &key,
            "--no-plan",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("other updates 33, errors 0"), "{stdout}");
    assert!(!stdout.contains("Needs attention"), "{stdout}");
    let first = rev(&repo, "hr/import");
    let diff = git(repo.path(), &["diff", "--numstat", &main, &first]);
    assert_eq!(diff.lines().count(), 33, "{diff}");
    assert!(
        diff.lines().all(|l| l.starts_with("1\t0\t")),
        "one line added per file: {diff}"
    );
    let alice = show(
        &repo,
        &format!("{first}:tenants/acme/identities/alice.yaml"),
    );
    assert!(
        alice.ends_with("    costCenter: \"4100\"\n    employeeId: E1022\n"),
        "{alice}"
    );
    // The working tree and main are untouched.
    assert_eq!(rev(&repo, "main"), main);
    assert!(
        !std::fs::read_to_string(repo.path().join("tenants/acme/identities/alice.yaml"))
            .unwrap()
            .contains("employeeId")
    );

    // Idempotent: the same feed again makes no commit.
    let out = import(
        &repo,
        &example("acme-feed.csv"),
        &["--commit", "--branch", "hr/import", "--sign-with", &key],
    );
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("Nothing to change"), "{stdout}");
    assert_eq!(rev(&repo, "hr/import"), first);

    // The next day's feed.
    let out = import(
        &repo,
        &example("acme-feed-next.csv"),
        &[
            "--commit",
            "--branch",
            "hr/import",
            "--sign-with",
            &key,
            "-o",
            "markdown",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let second = rev(&repo, "hr/import");
    assert_ne!(second, first);
    let message = git(repo.path(), &["log", "-1", "--format=%B", &second]);
    assert!(
        message.starts_with("hr import: joiners 1, movers 1, leavers 1, scheduled leavers 1, rehires 1, conversions 1, other updates 0, errors 0\n"),
        "{message}"
    );
    let at = |name: &str| {
        show(
            &repo,
            &format!("{second}:tenants/acme/identities/{name}.yaml"),
        )
    };
    // Joiner with a future start: PreHire, in canonical layout.
    assert_eq!(
        at("mia"),
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: mia\n  namespace: acme\nspec:\n  type: Human\n  displayName: Mia Schneider\n  email: mia@acme.example\n  employment:\n    status: PreHire\n    type: Employee\n    department: engineering\n    location: berlin\n    title: Software Engineer\n    manager: rachel\n    startDate: \"2027-01-11\"\n  attributes:\n    costCenter: \"2100\"\n    employeeId: E1034\n"
    );
    // Mover: department, title, manager (by employee id) and cost centre; comments and IAM fields kept.
    let emma = at("emma");
    assert!(emma.contains("    department: engineering\n    location: paris\n    title: Data Engineer\n    manager: rachel\n"), "{emma}");
    assert!(emma.contains("  proofing:\n    level: IAL2\n"), "{emma}");
    // Leaver, rehire (same name, end date gone), conversion (end date gone), future leaver kept Active.
    assert!(
        at("nina").contains("    status: Terminated\n")
            && at("nina").contains("    endDate: \"2026-11-30\"\n")
    );
    let kofi = at("kofi");
    assert!(
        kofi.contains("    status: Active\n")
            && !kofi.contains("endDate")
            && kofi.contains("startDate: \"2026-12-01\""),
        "{kofi}"
    );
    let felix = at("felix");
    assert!(
        felix.contains("    type: Employee\n") && !felix.contains("endDate"),
        "{felix}"
    );
    let zoe = at("zoe");
    assert!(
        zoe.contains("    status: Active\n") && zoe.contains("    endDate: \"2026-12-31\"\n"),
        "{zoe}"
    );
    // The markdown plan of the branch against main follows the import report.
    assert!(stdout.starts_with("### HR import"), "{stdout}");
    assert!(stdout.contains("| rehire | `kofi` | E1009 |"), "{stdout}");
    assert!(stdout.contains("acme/nina"), "{stdout}");
    assert!(stdout.contains("revoke"), "{stdout}");

    // The commits verify under PolicySource rules: hr-bot owns identities/**.
    let git_repo = Repository::open(repo.path()).unwrap();
    let trusted = TrustedKeys::new([
        ("hr-bot".to_string(), hr.public_key.clone()),
        ("iam-lead".to_string(), iam.public_key.clone()),
    ])
    .unwrap();
    let owners: Vec<PathOwner> = serde_json::from_str(
        r#"[{"path": "identities/**", "keys": ["hr-bot"]}, {"path": "policies/**", "keys": ["iam-lead"]}]"#,
    )
    .unwrap();
    let rules = PathRules::new(&owners, &trusted).unwrap();
    let range = changes(
        &git_repo,
        Some(Oid::from_str(&main).unwrap()),
        Oid::from_str(&second).unwrap(),
        Some("tenants/acme"),
        100,
    )
    .unwrap();
    assert_eq!(range.len(), 2);
    let signers = verify_changes(&git_repo, &range, &trusted, &rules).unwrap();
    assert!(signers.iter().all(|(_, k)| k == "hr-bot"), "{signers:?}");
    // `git verify-commit` agrees.
    let allowed = gitrepo::write_allowed_signers(&tmp.path().join("allowed"), &[&hr]);
    let config = format!("gpg.ssh.allowedSignersFile={}", allowed.display());
    let verified = gitrepo::git_output(repo.path(), &["-c", &config, "verify-commit", &second]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );

    // The same import signed with IAM's key is refused: it does not own identities/**.
    let iam_key = iam.private_key_path.display().to_string();
    let out = import(
        &repo,
        &example("acme-feed-next.csv"),
        &[
            "--commit",
            "--branch",
            "wrong-key",
            "--base",
            &first,
            "--sign-with",
            &iam_key,
            "--no-plan",
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let wrong = rev(&repo, "wrong-key");
    let range = changes(
        &git_repo,
        Some(Oid::from_str(&first).unwrap()),
        Oid::from_str(&wrong).unwrap(),
        Some("tenants/acme"),
        100,
    )
    .unwrap();
    let rejection = verify_changes(&git_repo, &range, &trusted, &rules).unwrap_err();
    assert_eq!(rejection.key.as_deref(), Some("iam-lead"));
    assert!(
        rejection.reason.contains("may only be changed by hr-bot"),
        "{rejection}"
    );
    // Unsigned: refused too.
    let out = import(
        &repo,
        &example("acme-feed-next.csv"),
        &[
            "--commit",
            "--branch",
            "unsigned",
            "--base",
            &first,
            "--no-plan",
        ],
    );
    assert!(out.status.success());
    let unsigned = rev(&repo, "unsigned");
    let range = changes(
        &git_repo,
        Some(Oid::from_str(&first).unwrap()),
        Oid::from_str(&unsigned).unwrap(),
        Some("tenants/acme"),
        100,
    )
    .unwrap();
    assert!(
        verify_changes(&git_repo, &range, &trusted, &rules)
            .unwrap_err()
            .reason
            .contains("is not signed")
    );
}

#[test]
fn working_tree_import_writes_files_and_is_byte_identical_when_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = acme_repo(&tmp.path().join("repo"));
    let tobias = repo.path().join("tenants/acme/identities/tobias.yaml");
    let before = std::fs::read_to_string(&tobias).unwrap();
    let out = import(&repo, &example("acme-feed.csv"), &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    let after = std::fs::read_to_string(&tobias).unwrap();
    // The leading comment block survives; only the id line is added.
    assert!(
        after.starts_with("# Separation-of-duties violation"),
        "{after}"
    );
    assert_eq!(
        after,
        before.replace(
            "    approvalLimit: \"10000\"\n",
            "    approvalLimit: \"10000\"\n    employeeId: E1015\n"
        )
    );
    let status = git(repo.path(), &["status", "--porcelain"]);
    assert_eq!(status.lines().count(), 33, "{status}");
    repo.commit("ids", ALICE, None);
    let out = import(&repo, &example("acme-feed.csv"), &[]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("Nothing to change"), "{stdout}");
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), "");
}

/// A small organisation written by a first import, for the edge cases.
const MAPPING: &str = "namespace: t\ncorrelation: {employeeId: id}\nname: \"{{ lower(first) }}.{{ lower(last) }}\"\nfields:\n  status: {from: status, values: {Active: Active, Leave: OnLeave, Terminated: Terminated}}\n  type: {from: type, values: {E: Employee, C: Contractor}}\n  department: {from: dept, values: {Fin: finance, Eng: engineering}}\n  manager: mgr\n  startDate: start\n  endDate: end\n";
const HEADER: &str = "id,first,last,status,type,dept,mgr,start,end\n";

fn small_rows() -> Vec<String> {
    (1..=20)
        .map(|i| format!("{i},Ann,Lee{i},Active,E,Fin,1,2024-01-01,"))
        .collect()
}

fn csv_of(rows: &[String]) -> String {
    format!("{HEADER}{}\n", rows.join("\n"))
}

struct Small {
    _tmp: tempfile::TempDir,
    repo: Repo,
    mapping: String,
}

impl Small {
    fn new() -> Small {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repo::init(&tmp.path().join("repo"));
        repo.write("README.md", "t\n");
        repo.commit("init", ALICE, None);
        let mapping = tmp.path().join("mapping.yaml");
        std::fs::write(&mapping, MAPPING).unwrap();
        let small = Small {
            mapping: mapping.display().to_string(),
            _tmp: tmp,
            repo,
        };
        let out = small.run(&csv_of(&small_rows()), &[]);
        assert!(out.status.success(), "{:?}", text(&out));
        small.repo.commit("first import", ALICE, None);
        small
    }

    fn run(&self, csv: &str, extra: &[&str]) -> Output {
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
        ];
        args.extend_from_slice(extra);
        gatehouse(&args, Some(csv.as_bytes()))
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.repo.path().join(format!("identities/{name}.yaml")))
            .unwrap_or_default()
    }

    fn dirty(&self) -> String {
        git(self.repo.path(), &["status", "--porcelain"])
    }
}

#[test]
fn missing_records_are_kept_with_a_warning_or_terminated_and_delta_feeds_touch_only_their_records()
{
    let s = Small::new();
    assert!(s.read("ann.lee20").contains("employeeId: \"20\""));
    let mut rows = small_rows();
    rows.pop(); // 20 is gone from the full feed
    let out = s.run(&csv_of(&rows), &[]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("ann.lee20 (identities/ann.lee20.yaml): employee 20 is not in this full feed; kept as Active"), "{stdout}");
    assert_eq!(s.dirty(), "");

    let out = s.run(&csv_of(&rows), &["--missing", "terminate"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("missing from feed, terminated ann.lee20"),
        "{stdout}"
    );
    let file = s.read("ann.lee20");
    assert!(
        file.contains("status: Terminated") && file.contains("endDate: \"2026-12-01\""),
        "{file}"
    );
    s.repo.commit("terminate 20", ALICE, None);

    // A delta feed with one mover: nobody else changes, nobody is missing.
    let out = s.run(
        &csv_of(&["3,Ann,Lee3,Active,E,Eng,1,2024-01-01,".into()]),
        &["--delta"],
    );
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(
        stdout.contains("joiners 0, movers 1, leavers 0"),
        "{stdout}"
    );
    assert!(!stdout.contains("not in this full feed"), "{stdout}");
    assert_eq!(s.dirty().trim(), "M identities/ann.lee3.yaml");
    // --delta with --missing is a usage error.
    assert_eq!(
        s.run(&csv_of(&rows), &["--delta", "--missing", "terminate"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn correlation_never_renames_and_reports_what_it_cannot_decide() {
    let s = Small::new();
    // HR renames Ann Lee5: the Identity keeps its name; a new Ann Lee1 gets a suffix.
    let mut rows = small_rows();
    rows[4] = "5,Ann,Smith,Active,E,Fin,1,2024-01-01,".into();
    rows.push("21,Ann,Lee1,Active,E,Fin,1,2026-11-01,".into());
    let out = s.run(&csv_of(&rows), &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!s.repo.path().join("identities/ann.smith.yaml").exists());
    assert!(
        s.read("ann.lee1-2").contains("employeeId: \"21\""),
        "{stdout}"
    );
    assert!(s.read("ann.lee1-2").contains("manager: ann.lee1"));
    s.repo.commit("joiner", ALICE, None);

    // Two files with the same employee id: the record is reported, neither file changed.
    let copy = s
        .read("ann.lee7")
        .replace("name: ann.lee7", "name: ann.copy");
    s.repo.write("identities/ann.copy.yaml", &copy);
    // An Identity without an employee id whose name a joiner would take.
    s.repo.write("identities/bo.ek.yaml", "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: bo.ek\n  namespace: t\nspec:\n  type: Human\n  employment:\n    status: Active\n");
    s.repo.commit("oddities", ALICE, None);
    let mut rows = rows.clone();
    rows[6] = "7,Ann,Lee7,Leave,E,Fin,1,2024-01-01,".into();
    rows.push("22,Bo,Ek,Active,E,Eng,1,2024-01-01,".into());
    let out = s.run(&csv_of(&rows), &[]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("matches several Identities: ann.copy (identities/ann.copy.yaml), ann.lee7 (identities/ann.lee7.yaml); not imported"), "{stdout}");
    assert!(
        stdout.contains(
            "Identity bo.ek (identities/bo.ek.yaml) has no employee id; if it is this person"
        ),
        "{stdout}"
    );
    assert_eq!(s.dirty(), "", "nothing guessed");
}

#[test]
fn the_mass_change_brake_stops_and_then_says_so_first() {
    let s = Small::new();
    // 3 of 20 terminated: over 10 % (2).
    let mut rows = small_rows();
    for r in rows.iter_mut().take(3) {
        *r = r.replace("Active", "Terminated");
    }
    let out = s.run(&csv_of(&rows), &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("terminates 3 of 20 identities, over --max-changes (2)"),
        "{stderr}"
    );
    assert_eq!(s.dirty(), "");
    // An absolute limit that allows it.
    assert_eq!(
        s.run(&csv_of(&rows), &["--max-changes", "3"]).status.code(),
        Some(0)
    );
    git(s.repo.path(), &["checkout", "--", "."]);
    // Allowed: the first line says so, in the report and in the commit message.
    let out = s.run(
        &csv_of(&rows),
        &[
            "--allow-mass-change",
            "--commit",
            "--branch",
            "hr",
            "--no-plan",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("⚠ MASS CHANGE: this import terminates 3 of 20 identities"),
        "{stdout}"
    );
    let message = git(s.repo.path(), &["log", "-1", "--format=%B", "hr"]);
    assert!(
        message.lines().nth(2).unwrap().starts_with("MASS CHANGE"),
        "{message}"
    );
    // Missing records count too.
    let out = s.run(&csv_of(&small_rows()[..15]), &["--missing", "terminate"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn bad_input_is_reported_per_record_and_nothing_is_written_unless_skip_invalid() {
    let s = Small::new();
    let mut rows = small_rows();
    rows[1] = "2,Ann,Lee2,Active,E,Marketing,1,2024-01-01,".into(); // line 3: unknown department
    rows[2] = "3,Ann,Lee3,Active,E,Fin,99,2024-01-01,".into(); // line 4: unknown manager
    rows[3] = "4,Ann,Lee4,Active,E,Fin,1,01/02/2024,".into(); // line 5: bad date
    rows[4] = "5,Ann,Lee5,Active".into(); // line 6: malformed
    rows[5] = "4,Ann,Twin,Active,E,Fin,1,2024-01-01,".into(); // line 7: duplicate id 4
    rows[6] = "7,Ann,Lee7,Active,C,Eng,1,2024-01-01,".into(); // line 8: contractor without end
    rows[7] = "8,Ann,Lee8,Gone,E,Fin,1,2024-01-01,".into(); // line 9: unknown status value
    rows[8] = "9,Ann,Lee9,Active,E,Eng,1,2024-01-01,".into(); // line 10: a valid mover
    let out = s.run(&csv_of(&rows), &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "line 3 (employee 2), department (column \"dept\"): unknown value \"Marketing\" (known: Eng, Fin): add it to fields.department.values in MAPPING.yaml",
        "line 4 (employee 3), manager (column \"mgr\"): manager id \"99\" is not the employee id of anyone",
        "line 5 (employee 4), startDate (column \"start\"): \"01/02/2024\" is not a date in %Y-%m-%d",
        "line 6: malformed: has 4 fields, the header has 9",
        "line 7 (employee 4), column \"id\": duplicate employee id (rows line 5, line 7)",
        "line 8 (employee 7), endDate (column \"end\"): a Contractor needs an end date",
        "line 9 (employee 8), status (column \"status\"): unknown value \"Gone\"",
        "nothing was written",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in\n{stderr}"
        );
    }
    assert_eq!(s.dirty(), "");

    let out = s.run(&csv_of(&rows), &["--skip-invalid"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("joiners 0, movers 1"), "{stdout}");
    assert!(
        stdout.contains("Skipped (invalid, --skip-invalid):"),
        "{stdout}"
    );
    assert!(stdout.contains("line 6: malformed"), "{stdout}");
    assert_eq!(s.dirty().trim(), "M identities/ann.lee9.yaml");
    // Invalid and malformed records are not "missing"; 6, replaced by the duplicate row, is.
    assert!(
        !stdout.contains("employee 5 is not in this full feed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("employee 6 is not in this full feed"),
        "{stdout}"
    );
    assert!(!stdout.contains("employee 2 is not"), "{stdout}");

    // A mapping error names its line; exit 1.
    let bad = s.repo.path().join("../bad.yaml");
    std::fs::write(&bad, "correlation: {employeeId: id}\nname: \"{{ lower(first) }}\"\nfields:\n  department: {from: dept, format: \"%Y\"}\n").unwrap();
    let out = gatehouse(
        &[
            "hr",
            "import",
            "--from",
            "-",
            "--format",
            "csv",
            "--mapping",
            bad.to_str().unwrap(),
            "--repo",
            s.repo.path().to_str().unwrap(),
        ],
        Some(b"id\n1\n"),
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr
            .contains("line 4: fields.department.format: format is for startDate and endDate only"),
        "{stderr}"
    );
}

#[test]
fn scim_bulk_requests_and_json_reports_import_like_csv() {
    let s = Small::new();
    let mapping = s.repo.path().join("../scim.yaml");
    std::fs::write(&mapping, "namespace: t\ncorrelation: {employeeId: enterprise.employeeNumber}\nname: \"{{ lower(name.givenName) }}.{{ lower(name.familyName) }}\"\nfields:\n  status: {from: active, values: {\"true\": Active, \"false\": Terminated}}\n  email: emails.value\n  department: {from: enterprise.department, values: {Fin: finance, Eng: engineering}}\n  manager: enterprise.manager.value\n").unwrap();
    let bulk = br#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [
      {"method": "POST", "bulkId": "b1", "path": "/Users", "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "externalId": "2", "userName": "ann.lee2", "active": false,
        "name": {"givenName": "Ann", "familyName": "Lee2"}, "emails": [{"value": "ann2@t.example", "primary": true}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "2", "department": "Fin", "manager": {"value": "1"}}}},
      {"method": "POST", "bulkId": "b2", "path": "/Users", "data": {"active": true, "name": {"givenName": "Cy", "familyName": "New"},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "30", "department": "Eng", "manager": {"value": "2"}}}}]}"#;
    let repo = s.repo.path().display().to_string();
    let out = gatehouse(
        &[
            "hr",
            "import",
            "--from",
            "-",
            "--format",
            "scim",
            "--mapping",
            mapping.to_str().unwrap(),
            "--repo",
            &repo,
            "--delta",
            "--now",
            NOW,
        ],
        Some(bulk),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("joiners 1, movers 0, leavers 1"),
        "{stdout}"
    );
    assert!(s.read("ann.lee2").contains("status: Terminated"));
    assert!(s.read("ann.lee2").contains("email: ann2@t.example"));
    assert!(
        s.read("cy.new").contains("manager: ann.lee2"),
        "{}",
        s.read("cy.new")
    );

    let json = br#"[{"id": 3, "first": "Ann", "last": "Lee3", "status": "Leave", "type": "E", "dept": "Fin", "mgr": 1, "start": "2024-01-01"}]"#;
    let out = gatehouse(
        &[
            "hr",
            "import",
            "--from",
            "-",
            "--format",
            "json",
            "--mapping",
            &s.mapping,
            "--repo",
            &repo,
            "--delta",
            "--now",
            NOW,
        ],
        Some(json),
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(s.read("ann.lee3").contains("status: OnLeave"));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn run(feed_text: &str, files: &[ExistingFile]) -> Vec<(String, String)> {
        let mapping = Mapping::parse(MAPPING).unwrap();
        let feed = feed::parse_csv(feed_text.as_bytes()).unwrap();
        let options = Options {
            today: "2026-12-01".parse().unwrap(),
            delta: false,
            missing: Missing::Terminate,
            max_changes: Limit::Percent(100.0),
        };
        let outcome = gatehouse::hr::import(&mapping, &feed, files, &options);
        outcome
            .changes
            .into_iter()
            .map(|c| (c.path, c.text))
            .collect()
    }

    fn apply(files: &mut Vec<ExistingFile>, writes: Vec<(String, String)>) {
        for (path, text) in writes {
            match files.iter_mut().find(|f| f.path == path) {
                Some(f) => f.text = text,
                None => files.push(ExistingFile { path, text }),
            }
        }
    }

    fn row() -> impl Strategy<Value = String> {
        (
            1..40u32,
            prop::sample::select(vec!["Ann", "Bo", "Zoë", "Li"]),
            prop::sample::select(vec!["Lee", "Ek", "Ng"]),
            prop::sample::select(vec!["Active", "Leave", "Terminated"]),
            prop::sample::select(vec!["Fin", "Eng"]),
            1..40u32,
            prop::sample::select(vec!["2024-01-01", "2027-03-01"]),
            prop::sample::select(vec!["", "2026-06-30", "2027-12-31"]),
        )
            .prop_map(|(id, f, l, st, d, m, start, end)| {
                format!("{id},{f},{l},{st},E,{d},{m},{start},{end}")
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn importing_the_same_feed_twice_changes_nothing_the_second_time(
            first in prop::collection::vec(row(), 1..25),
            second in prop::collection::vec(row(), 1..25),
        ) {
            let mut files = Vec::new();
            let w = run(&csv_of(&first), &files);
            apply(&mut files, w);
            let w = run(&csv_of(&second), &files);
            apply(&mut files, w);
            prop_assert_eq!(run(&csv_of(&second), &files), vec![]);
        }

        #[test]
        fn the_order_of_rows_never_changes_the_output(
            base in prop::collection::vec(row(), 1..20),
            rows in prop::collection::vec(row(), 1..25),
            seed in any::<u64>(),
        ) {
            let mut files = Vec::new();
            let w = run(&csv_of(&base), &files);
            apply(&mut files, w);
            let mut shuffled = rows.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(run(&csv_of(&rows), &files), run(&csv_of(&shuffled), &files));
        }
    }
}
