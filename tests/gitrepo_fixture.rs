//! The Git fixtures themselves: signed commits verify with git, the HTTP server serves
//! clones and counts requests, and a downed server fails fetches.

mod gitrepo;

use gitrepo::{GitHttpServer, Repo, SigningKey, git, git_output, write_allowed_signers};

const ALICE: &str = "Alice HR <alice@hr.example>";

#[test]
fn signed_commit_verifies_with_git_and_unsigned_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(&tmp.path().join("keys"), "hr-bot");
    assert!(
        key.public_key.starts_with("ssh-ed25519 AAAA"),
        "{}",
        key.public_key
    );
    assert!(key.public_key.ends_with(" hr-bot"));
    let repo = Repo::init(&tmp.path().join("repo"));
    repo.write("identities/alice.yaml", "kind: Identity\n");
    let signed = repo.commit("add alice", ALICE, Some(&key));
    repo.write("identities/bob.yaml", "kind: Identity\n");
    let unsigned = repo.commit("add bob", ALICE, None);
    assert_eq!(repo.head(), unsigned);
    assert_eq!(signed.len(), 40);

    let allowed = write_allowed_signers(&tmp.path().join("allowed"), &[&key]);
    let config = format!("gpg.ssh.allowedSignersFile={}", allowed.display());
    let verify = |id: &str| git_output(repo.path(), &["-c", &config, "verify-commit", id]);
    let ok = verify(&signed);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stderr).contains("Good \"git\" signature for hr-bot"));
    assert!(!verify(&unsigned).status.success());
    let author = git(repo.path(), &["log", "-1", "--format=%an <%ae>", &signed]);
    assert_eq!(author.trim(), ALICE);

    // A key that is not in the allowed-signers file does not verify.
    let other = SigningKey::generate(&tmp.path().join("keys"), "intruder");
    repo.write("identities/eve.yaml", "kind: Identity\n");
    let foreign = repo.commit("add eve", ALICE, Some(&other));
    assert!(!verify(&foreign).status.success());
}

#[test]
fn tree_oddities_and_force_push() {
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::init(&tmp.path().join("repo"));
    repo.set_date(Some("2026-01-05T10:00:00Z"));
    repo.write("a.yaml", "a: 1\n");
    let first = repo.commit("first", ALICE, None);
    repo.symlink("link.yaml", "a.yaml");
    repo.add_submodule_entry("vendor/sub");
    repo.remove("a.yaml");
    let second = repo.commit("second", ALICE, None);
    let tree = git(repo.path(), &["ls-tree", "-r", &second]);
    assert!(tree.contains("120000 blob"), "{tree}");
    assert!(tree.contains("160000 commit"), "{tree}");
    assert!(!tree.contains("\ta.yaml\n"), "{tree}");
    let date = git(repo.path(), &["log", "-1", "--format=%cI", &first]);
    assert_eq!(date.trim(), "2026-01-05T10:00:00+00:00");
    repo.reset_hard(&first);
    assert_eq!(repo.head(), first);
    assert!(repo.path().join("a.yaml").exists());
    assert!(repo.url_file().starts_with("file:///"));
}

#[test]
fn bulk_writers() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("repo"));
    let files: Vec<(String, String)> = (0..200)
        .map(|i| (format!("identities/u{i:03}.yaml"), format!("n: {i}\n")))
        .collect();
    let base = repo.commit_files(&files, "bulk", ALICE, None);
    let commits: Vec<gitrepo::BulkCommit> = (0..5)
        .map(|i| gitrepo::BulkCommit {
            message: format!("change {i}"),
            author: ALICE.into(),
            time: 1_767_607_200 + i * 60,
            files: vec![(
                format!("identities/u{i:03}.yaml"),
                format!("n: changed {i}\n"),
            )],
            deletes: if i == 4 {
                vec!["identities/u199.yaml".into()]
            } else {
                vec![]
            },
        })
        .collect();
    let ids = repo.fast_import(&commits);
    assert_eq!(ids.len(), 5);
    assert_eq!(repo.head(), ids[4]);
    let parent = git(repo.path(), &["rev-parse", &format!("{}^", ids[0])]);
    assert_eq!(parent.trim(), base);
    let count = git(repo.path(), &["rev-list", "--count", "HEAD"]);
    assert_eq!(count.trim(), "6");
    assert_eq!(
        std::fs::read_to_string(repo.path().join("identities/u003.yaml")).unwrap(),
        "n: changed 3\n"
    );
    assert!(!repo.path().join("identities/u199.yaml").exists());
}

#[test]
fn http_server_serves_clones_counts_requests_and_goes_down() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("served");
    let repo = Repo::init(&root.join("access"));
    repo.write("identities/alice.yaml", "kind: Identity\n");
    let head = repo.commit("add alice", ALICE, None);
    let server = GitHttpServer::start(&root);
    let url = server.url("access");
    assert!(url.starts_with("http://127.0.0.1:"));

    let remote = git(tmp.path(), &["ls-remote", &url, "refs/heads/main"]);
    assert_eq!(
        remote.split_whitespace().next(),
        Some(head.as_str()),
        "{remote}"
    );
    let after_ls_remote = server.requests();
    assert!(after_ls_remote >= 1);

    git(tmp.path(), &["clone", "-q", &url, "clone"]);
    let cloned = git(&tmp.path().join("clone"), &["rev-parse", "HEAD"]);
    assert_eq!(cloned.trim(), head);
    assert!(tmp.path().join("clone/identities/alice.yaml").exists());
    assert!(server.requests() > after_ls_remote);

    // A new commit is fetched, and a force-push back is visible to ls-remote.
    repo.write("identities/bob.yaml", "kind: Identity\n");
    let second = repo.commit("add bob", ALICE, None);
    git(&tmp.path().join("clone"), &["pull", "-q", "--ff-only"]);
    let pulled = git(&tmp.path().join("clone"), &["rev-parse", "HEAD"]);
    assert_eq!(pulled.trim(), second);
    repo.reset_hard(&head);
    let remote = git(tmp.path(), &["ls-remote", &url, "refs/heads/main"]);
    assert_eq!(remote.split_whitespace().next(), Some(head.as_str()));

    // Unknown repositories are 404s, not crashes.
    assert!(
        !git_output(tmp.path(), &["ls-remote", &server.url("nope")])
            .status
            .success()
    );

    server.set_down(true);
    let before = server.requests();
    let failed = git_output(tmp.path(), &["ls-remote", &url]);
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("503"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(server.requests() > before);
    server.set_down(false);
    let remote = git(tmp.path(), &["ls-remote", &url, "refs/heads/main"]);
    assert_eq!(remote.split_whitespace().next(), Some(head.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_works_from_async_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("served/bare-src"));
    repo.write("x.yaml", "x: 1\n");
    let head = repo.commit("x", ALICE, None);
    // A bare clone is served too, as `<name>.git`.
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            &repo.url_file(),
            "served/mirror.git",
        ],
    );
    let server = GitHttpServer::start(&tmp.path().join("served"));
    let url = server.url("mirror.git");
    let dir = tmp.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || git(&dir, &["ls-remote", &url, "HEAD"]))
        .await
        .unwrap();
    assert_eq!(out.split_whitespace().next(), Some(head.as_str()));
    drop(server);
}
