//! Approvals proven from Git (`pathOwners[].requireApprovals`) over real repositories signed
//! by real `ssh-keygen` and `gpg` keys, checked the way a PolicySource sync checks them
//! (`gatehouse::source::sync::prepare`): a forge-style merge approves, a direct push, a
//! self-merge, a merge by a key that does not own the path and an unsigned merge do not;
//! nested merges add up to a threshold of two; the audit's per-step authors and approvers.

mod gitrepo;

use gatehouse::api::PolicySourceSpec;
use gatehouse::source::approvals::{self, Review};
use gatehouse::source::sync::{self, Refusal, SourceMemory};
use gatehouse::source::verify::{Signer, TrustedKeys, commit_signer};
use git2::{Oid, Repository};
use gitrepo::{PgpKey, Repo, Sign, SigningKey, git};

const IAM: &str = "Ivan IAM <ivan@acme.example>";
const FORGE: &str = "GitHub <noreply@github.com>";

fn person(name: &str) -> String {
    format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}}}\nspec:\n  type: Human\n  employment: {{status: Active, type: Employee, department: finance, manager: {name}, startDate: '2025-01-01'}}\n"
    )
}

fn policy(name: &str) -> String {
    format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchAttributes: {{department: finance}}}}\n  entitlements: [{{target: k8s, kind: ClusterRole, name: view}}]\n"
    )
}

struct Keys {
    hr: SigningKey,
    iam: SigningKey,
    iam2: SigningKey,
    iam3: SigningKey,
    forge: PgpKey,
}

impl Keys {
    fn new(dir: &std::path::Path) -> Keys {
        Keys {
            hr: SigningKey::generate(dir, "hr-bot"),
            iam: SigningKey::generate(dir, "iam-lead"),
            iam2: SigningKey::generate(dir, "iam-2"),
            iam3: SigningKey::generate(dir, "iam-3"),
            forge: PgpKey::generate(dir, FORGE),
        }
    }

    /// A PolicySource spec trusting every key, with `policies/**` owned by the IAM keys and
    /// the forge and needing `approvals`.
    fn spec(&self, approvals: u32) -> PolicySourceSpec {
        serde_yaml::from_str(&self.spec_yaml(approvals)).unwrap()
    }

    /// The YAML of [`Keys::spec`].
    fn spec_yaml(&self, approvals: u32) -> String {
        format!(
            "url: file:///unused\nref: {{branch: main}}\nverify:\n  keys:\n  - {{name: hr-bot, publicKey: '{}'}}\n  - {{name: iam-lead, publicKey: '{}'}}\n  - {{name: iam-2, publicKey: '{}'}}\n  - {{name: iam-3, publicKey: '{}'}}\n  - name: github\n    publicKey: |\n{}\npathOwners:\n- {{path: 'identities/**', keys: [hr-bot, github]}}\n- {{path: 'policies/**', keys: [iam-lead, iam-2, iam-3, github], requireApprovals: {approvals}}}\n",
            self.hr.public_key,
            self.iam.public_key,
            self.iam2.public_key,
            self.iam3.public_key,
            self.forge
                .public_key()
                .lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        )
    }

    fn trusted(&self) -> TrustedKeys {
        TrustedKeys::new([
            ("hr-bot".to_string(), self.hr.public_key.clone()),
            ("iam-lead".to_string(), self.iam.public_key.clone()),
            ("iam-2".to_string(), self.iam2.public_key.clone()),
            ("iam-3".to_string(), self.iam3.public_key.clone()),
            ("github".to_string(), self.forge.public_key()),
        ])
        .unwrap()
    }
}

/// Prepares `head` after `applied` as a sync would; the refusal's text, or `None` when
/// the commit is accepted.
fn outcome(
    repo: &Repo,
    spec: &PolicySourceSpec,
    applied: Option<&str>,
    head: &str,
) -> Option<String> {
    let git2repo = Repository::open(repo.path()).unwrap();
    let mut memory = SourceMemory::default();
    let result = sync::prepare(
        &git2repo,
        &mut memory,
        spec,
        "acme",
        "access",
        applied.map(|a| Oid::from_str(a).unwrap()),
        Oid::from_str(head).unwrap(),
        false,
    )
    .unwrap();
    match result {
        Ok(_) => None,
        Err(Refusal::Unverified(r)) => Some(r.to_string()),
        Err(other) => panic!("refused for another reason: {other:?}"),
    }
}

/// Opens a pull-request branch from `main`, commits `policies/<name>.yaml` on it signed by
/// `author`, and goes back to `main`. Returns the commit.
fn pull_request(repo: &Repo, branch: &str, name: &str, author: &SigningKey) -> String {
    git(repo.path(), &["checkout", "-q", "-b", branch, "main"]);
    repo.write(&format!("policies/{name}.yaml"), &policy(name));
    let commit = repo.commit_signed(name, IAM, Sign::Ssh(author));
    git(repo.path(), &["checkout", "-q", "main"]);
    commit
}

#[test]
fn a_forge_merge_approves_and_direct_self_wrong_owner_and_unsigned_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(&tmp.path().join("keys"));
    let spec = keys.spec(1);
    let repo = Repo::init(&tmp.path().join("repo"));
    repo.write("identities/alice.yaml", &person("alice"));
    let people = repo.commit_signed("alice", "HR <hr@acme.example>", Sign::Ssh(&keys.hr));
    // Identities need no approval: a direct push by their owner is fine.
    assert_eq!(outcome(&repo, &spec, None, &people), None);

    // The forge's merge button: iam-lead's commit, merged with GitHub's OpenPGP key.
    let by_iam = pull_request(&repo, "pr-1", "finance", &keys.iam);
    let merged = repo.merge(
        "pr-1",
        "Merge pull request #1",
        FORGE,
        Sign::Pgp(&keys.forge),
        &[],
    );
    assert_eq!(outcome(&repo, &spec, Some(&people), &merged), None);
    // A first sync checks the newest change, and finds the same merge above it.
    assert_eq!(outcome(&repo, &spec, None, &merged), None);

    // Pushed straight to main, signed only by its author.
    repo.write("policies/direct.yaml", &policy("direct"));
    let direct = repo.commit_signed("direct", IAM, Sign::Ssh(&keys.iam));
    let refused = outcome(&repo, &spec, Some(&merged), &direct).expect("refused");
    assert!(
        refused.starts_with(&format!(
            "commit {} changes policies/direct.yaml",
            &direct[..12]
        )),
        "{refused}"
    );
    assert!(
        refused.contains("signed by iam-lead (its author) without the approval it needs")
            && refused.contains("files matching \"policies/**\" need 1 approval by other owners (github, iam-2, iam-3)")
            && refused.contains("pushed to the branch directly"),
        "{refused}"
    );
    // On a first sync too: the newest change is the direct push.
    assert!(outcome(&repo, &spec, None, &direct).is_some());
    repo.reset_hard(&merged);

    // Merged by its own author, by a key that does not own policies/, and unsigned.
    for (branch, merger, expect) in [
        (
            "pr-self",
            Sign::Ssh(&keys.iam),
            "signed by iam-lead, the author, whose approval does not count".to_string(),
        ),
        (
            "pr-hr",
            Sign::Ssh(&keys.hr),
            "signed by hr-bot, which does not own \"policies/**\"".to_string(),
        ),
        ("pr-unsigned", Sign::No, "unsigned".to_string()),
    ] {
        let commit = pull_request(&repo, branch, branch, &keys.iam);
        let merge = repo.merge(branch, branch, IAM, merger, &[]);
        let refused = outcome(&repo, &spec, Some(&merged), &merge).expect(branch);
        assert!(
            refused.starts_with(&format!("commit {}", &commit[..12])),
            "{branch}: {refused}"
        );
        assert!(
            refused.contains(&format!("{} {expect}", &merge[..12])),
            "{branch}: {refused}"
        );
        repo.reset_hard(&merged);
    }

    // Another owner's signed merge approves; a change brought in by two merges lists both.
    let approved = pull_request(&repo, "pr-2", "hr", &keys.iam);
    let merge = repo.merge("pr-2", "Merge pr-2", IAM, Sign::Ssh(&keys.iam2), &[]);
    assert_eq!(outcome(&repo, &spec, Some(&merged), &merge), None);
    let git2repo = Repository::open(repo.path()).unwrap();
    let found = approvals::bringing_merges(
        &git2repo,
        Some(Oid::from_str(&merged).unwrap()),
        Oid::from_str(&merge).unwrap(),
        &[
            Oid::from_str(&approved).unwrap(),
            Oid::from_str(&by_iam).unwrap(),
        ],
        1000,
    )
    .unwrap();
    assert_eq!(
        found[&Oid::from_str(&approved).unwrap()],
        [Oid::from_str(&merge).unwrap()]
    );
    // by_iam is older than the base: looked up in the whole history, merged by the forge.
    assert_eq!(
        found[&Oid::from_str(&by_iam).unwrap()],
        [Oid::from_str(&merged).unwrap()]
    );
    // What a conflict resolution in a merge on main changes itself has no merge above it.
    git(repo.path(), &["checkout", "-q", "-b", "pr-3", "main"]);
    repo.write("identities/bob.yaml", &person("bob"));
    repo.commit_signed("bob", "HR <hr@acme.example>", Sign::Ssh(&keys.hr));
    git(repo.path(), &["checkout", "-q", "main"]);
    let resolved = repo.merge(
        "pr-3",
        "Merge pr-3",
        FORGE,
        Sign::Pgp(&keys.forge),
        &[("policies/resolved.yaml", &policy("resolved"))],
    );
    let refused = outcome(&repo, &spec, Some(&merge), &resolved).expect("refused");
    assert!(
        refused.contains(&format!(
            "commit {} changes policies/resolved.yaml",
            &resolved[..12]
        )) && refused.contains("signed by github (its author)"),
        "{refused}"
    );
}

#[test]
fn two_approvals_through_a_review_branch_and_the_audit_review_of_a_step() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(&tmp.path().join("keys"));
    let spec = keys.spec(2);
    let repo = Repo::init(&tmp.path().join("repo"));
    repo.write("identities/alice.yaml", &person("alice"));
    let base = repo.commit_signed("alice", "HR <hr@acme.example>", Sign::Ssh(&keys.hr));

    // One owner's merge is not enough for two.
    let change = pull_request(&repo, "pr-1", "finance", &keys.iam);
    let once = repo.merge("pr-1", "Merge pr-1", FORGE, Sign::Pgp(&keys.forge), &[]);
    let refused = outcome(&repo, &spec, Some(&base), &once).expect("refused");
    assert!(
        refused.contains("need 2 approvals") && refused.contains("it has 1 (github)"),
        "{refused}"
    );
    repo.reset_hard(&base);

    // iam-2 merges the change into a review branch, the forge merges that into main.
    git(repo.path(), &["checkout", "-q", "-b", "review", "main"]);
    let review = repo.merge("pr-1", "Review pr-1", IAM, Sign::Ssh(&keys.iam2), &[]);
    // Meanwhile HR pushes to main, and the author merges main into the review branch: that
    // sync merge brings in nothing new, and approves nothing.
    git(repo.path(), &["checkout", "-q", "main"]);
    repo.write("identities/bob.yaml", &person("bob"));
    repo.commit_signed("bob", "HR <hr@acme.example>", Sign::Ssh(&keys.hr));
    git(repo.path(), &["checkout", "-q", "review"]);
    repo.merge("main", "Sync main", IAM, Sign::Ssh(&keys.iam), &[]);
    git(repo.path(), &["checkout", "-q", "main"]);
    let twice = repo.merge("review", "Merge review", FORGE, Sign::Pgp(&keys.forge), &[]);
    assert_eq!(outcome(&repo, &spec, Some(&base), &twice), None);
    assert_eq!(outcome(&repo, &spec, None, &twice), None);

    // The audit's view of the step to `twice`: iam-lead wrote it, github and iam-2 approved.
    let git2repo = Repository::open(repo.path()).unwrap();
    let trusted = keys.trusted();
    let commit = git2repo
        .find_commit(Oid::from_str(&twice).unwrap())
        .unwrap();
    let signer = commit_signer(&git2repo, commit.id(), &trusted);
    assert_eq!(signer, Signer::Trusted("github".into()));
    let step = approvals::step(&git2repo, &commit, None, &trusted, &signer).unwrap();
    assert_eq!(
        step,
        Review {
            authors: vec!["iam-lead".into()],
            approvers: vec!["github".into(), "iam-2".into()],
        },
        "bob's commit was on main already; the sync merge brought nothing"
    );
    let _ = (change, review);
    // A direct commit: its signer is the author, nobody approved it.
    let first = git2repo.find_commit(Oid::from_str(&base).unwrap()).unwrap();
    let signer = commit_signer(&git2repo, first.id(), &trusted);
    let step = approvals::step(&git2repo, &first, None, &trusted, &signer).unwrap();
    assert_eq!(step.authors, ["hr-bot"]);
    assert!(step.approvers.is_empty());
}

/// `gatehouse validate --repo --policy-source` applies a PolicySource's keys, path owners and
/// approvals to the newest change, as its first sync does: a forge-merged head passes, a
/// direct push on top fails (exit 1) naming the commit, the path, the author and the
/// missing approval, and a PolicySource naming an unknown key is a usage error (exit 2).
#[test]
fn validate_applies_the_policy_sources_approvals() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(&tmp.path().join("keys"));
    let repo = Repo::init(&tmp.path().join("repo"));
    repo.write("tenant/identities/alice.yaml", &person("alice"));
    repo.write(
        "tenant/targets/k8s.yaml",
        "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {name: k8s}\nspec: {type: Kubernetes}\n",
    );
    repo.commit_signed("alice", "HR <hr@acme.example>", Sign::Ssh(&keys.hr));
    git(repo.path(), &["checkout", "-q", "-b", "pr-1", "main"]);
    repo.write("tenant/policies/finance.yaml", &policy("finance"));
    repo.commit_signed("finance", IAM, Sign::Ssh(&keys.iam));
    git(repo.path(), &["checkout", "-q", "main"]);
    repo.merge(
        "pr-1",
        "Merge pull request #1",
        FORGE,
        Sign::Pgp(&keys.forge),
        &[],
    );
    let manifest = tmp.path().join("psrc.yaml");
    let spec: String = keys
        .spec_yaml(1)
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: PolicySource\nmetadata: {{name: access}}\nspec:\n{spec}  path: tenant\n"
        ),
    )
    .unwrap();
    let validate = |manifest: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["validate", "--repo"])
            .arg(repo.path())
            .arg("--policy-source")
            .arg(manifest)
            .output()
            .expect("binary runs")
    };
    let ok = validate(&manifest);
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    repo.write("tenant/policies/direct.yaml", &policy("direct"));
    let direct = repo.commit_signed("direct", IAM, Sign::Ssh(&keys.iam));
    let refused = validate(&manifest);
    let text = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "commit {} changes policies/direct.yaml",
            &direct[..12]
        )) && text.contains("signed by iam-lead (its author)")
            && text.contains("pushed to the branch directly"),
        "{text}"
    );
    let broken = tmp.path().join("broken.yaml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("keys: [hr-bot, github]", "keys: [hr-bot, nobody]"),
    )
    .unwrap();
    let bad = validate(&broken);
    let stderr = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("spec.pathOwners[0].keys names \"nobody\", which is not in spec.verify.keys"),
        "{stderr}"
    );
}
