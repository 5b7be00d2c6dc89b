//! OpenPGP commit signatures made by real `gpg`, checked by gatehouse's own verifier (rPGP):
//! primary keys and signing subkeys, a forge-style merge commit over author-signed parents,
//! SSH signatures side by side, and unsigned, unknown, expired and revoked keys refused
//! with a reason naming the commit and the key.

mod gitrepo;

use gatehouse::api::PathOwner;
use gatehouse::source::history::changes;
use gatehouse::source::verify::{PathRules, Signer, TrustedKeys, commit_signer, verify_changes};
use git2::{Oid, Repository};
use gitrepo::{PgpKey, Repo, Sign, SigningKey, git};

const ALICE: &str = "Alice HR <alice@hr.example>";

fn oid(id: &str) -> Oid {
    Oid::from_str(id).unwrap()
}

fn owners(json: &str) -> Vec<PathOwner> {
    serde_json::from_str(json).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn openpgp_and_ssh_signatures_side_by_side_with_a_forge_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let alice = PgpKey::generate(&keys, ALICE);
    let bob = PgpKey::generate(&keys, "Bob IAM <bob@iam.example>");
    let bob_subkey = bob.add_signing_subkey();
    let forge = PgpKey::generate(&keys, "Forge <noreply@forge.example>");
    let ci = SigningKey::generate(&keys, "ci-ssh");
    let public = alice.public_key();
    assert!(
        public.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{public}"
    );

    let repo = Repo::init(&tmp.path().join("repo"));
    repo.write("identities/alice.yaml", "a: 1\n");
    let base = repo.commit_signed("base", ALICE, Sign::Pgp(&alice));
    git(repo.path(), &["checkout", "-q", "-b", "feature"]);
    repo.write("identities/bob.yaml", "b: 1\n");
    let by_alice = repo.commit_signed("bob joins", ALICE, Sign::Pgp(&alice));
    repo.write("policies/p.yaml", "p: 1\n");
    let by_ci = repo.commit_signed("policy", "CI <ci@example.org>", Sign::Ssh(&ci));
    repo.write("identities/carol.yaml", "c: 1\n");
    let by_subkey = repo.commit_signed("carol", "Bob <bob@iam.example>", Sign::Pgp(&bob));
    git(repo.path(), &["checkout", "-q", "main"]);
    repo.write("identities/dave.yaml", "d: 1\n");
    let on_main = repo.commit_signed("dave", ALICE, Sign::Pgp(&alice));
    // The forge's merge commit resolves something itself, so it is checked on its own too.
    let merge = repo.merge(
        "feature",
        "Merge pull request #1",
        "Forge <noreply@forge.example>",
        Sign::Pgp(&forge),
        &[("identities/merged.yaml", "m: 1\n")],
    );
    let parents = git(repo.path(), &["log", "-1", "--format=%P", &merge]);
    assert_eq!(parents.split_whitespace().count(), 2, "{parents}");
    let header = git(repo.path(), &["cat-file", "commit", &merge]);
    assert!(
        header.contains("gpgsig -----BEGIN PGP SIGNATURE-----"),
        "{header}"
    );

    let trusted = TrustedKeys::new([
        ("alice-pgp".to_string(), alice.public_key()),
        ("bob-pgp".to_string(), bob.public_key()),
        ("forge".to_string(), forge.public_key()),
        ("ci-ssh".to_string(), ci.public_key.clone()),
    ])
    .unwrap();
    let git2repo = Repository::open(repo.path()).unwrap();
    let signer = |id: &str| commit_signer(&git2repo, oid(id), &trusted);
    assert_eq!(signer(&base), Signer::Trusted("alice-pgp".into()));
    assert_eq!(signer(&by_ci), Signer::Trusted("ci-ssh".into()));
    assert_eq!(signer(&by_subkey), Signer::Trusted("bob-pgp".into()));
    assert_eq!(signer(&merge), Signer::Trusted("forge".into()));
    // The subkey really signed it (not the primary key).
    let raw = git2repo
        .extract_signature(&oid(&by_subkey), None)
        .unwrap()
        .0;
    let sig =
        gatehouse::source::openpgp::parse_signature(std::str::from_utf8(&raw).unwrap()).unwrap();
    assert_eq!(gatehouse::source::openpgp::issuer(&sig[0]), bob_subkey);

    // Every commit of the range passes, with path owners naming OpenPGP and SSH keys alike.
    let rules = PathRules::new(
        &owners(
            r#"[{"path": "identities/**", "keys": ["alice-pgp", "bob-pgp", "forge"]},
                {"path": "policies/**", "keys": ["ci-ssh"]}]"#,
        ),
        &trusted,
    )
    .unwrap();
    let range = changes(&git2repo, Some(oid(&base)), oid(&merge), None, 100).unwrap();
    let ids: Vec<String> = range.iter().map(|c| c.commit.to_string()).collect();
    for id in [&merge, &on_main, &by_alice, &by_ci, &by_subkey] {
        assert!(ids.contains(id), "{id} not in {ids:?}");
    }
    let signers = verify_changes(&git2repo, &range, &trusted, &rules).unwrap();
    assert_eq!(signers.len(), 5);
    assert!(signers.contains(&(oid(&merge), "forge".to_string())));

    // An OpenPGP key outside its paths is refused like an SSH key, naming path and owners.
    repo.write("policies/q.yaml", "q: 1\n");
    let wrong = repo.commit_signed("policy by alice", ALICE, Sign::Pgp(&alice));
    let range = changes(&git2repo, Some(oid(&merge)), oid(&wrong), None, 100).unwrap();
    let rejection = verify_changes(&git2repo, &range, &trusted, &rules).unwrap_err();
    assert_eq!(rejection.key.as_deref(), Some("alice-pgp"));
    assert_eq!(rejection.path.as_deref(), Some("policies/q.yaml"));
    assert!(
        rejection.reason.contains("may only be changed by ci-ssh"),
        "{rejection}"
    );

    // A key block holding several keys (as GitHub's web-flow.gpg does) trusts each of them.
    let both = format!("{}{}", forge.public_key(), alice.public_key());
    let web_flow = TrustedKeys::new([("web-flow".to_string(), both)]).unwrap();
    assert_eq!(
        commit_signer(&git2repo, oid(&merge), &web_flow),
        Signer::Trusted("web-flow".into())
    );
    assert_eq!(
        commit_signer(&git2repo, oid(&base), &web_flow),
        Signer::Trusted("web-flow".into())
    );
    // Without the SSH key, the SSH-signed commit is untrusted, by SSH fingerprint.
    assert!(matches!(
        commit_signer(&git2repo, oid(&by_ci), &web_flow),
        Signer::Untrusted { fingerprint } if fingerprint.starts_with("SHA256:")
    ));
}

#[test]
fn unsigned_unknown_expired_and_revoked_are_refused_with_commit_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let alice = PgpKey::generate(&keys, ALICE);
    let stranger = PgpKey::generate(&keys, "Mallory <mallory@evil.example>");
    // Made ten days ago, valid for one day, and used then: expired now.
    let old = PgpKey::generate_with(
        &keys,
        "Old <old@hr.example>",
        "1d",
        Some(now() - 10 * 86_400),
    );
    let carol = PgpKey::generate(&keys, "Carol <carol@hr.example>");

    let repo = Repo::init(&tmp.path().join("repo"));
    repo.write("identities/a.yaml", "a: 1\n");
    let base = repo.commit_signed("base", ALICE, Sign::Pgp(&alice));
    repo.write("identities/u.yaml", "u: 1\n");
    let unsigned = repo.commit_signed("unsigned", ALICE, Sign::No);
    repo.write("identities/m.yaml", "m: 1\n");
    let unknown = repo.commit_signed("mallory", ALICE, Sign::Pgp(&stranger));
    repo.write("identities/o.yaml", "o: 1\n");
    let expired = repo.commit_signed("old key", ALICE, Sign::Pgp(&old));
    repo.write("identities/c.yaml", "c: 1\n");
    let revoked = repo.commit_signed("carol", ALICE, Sign::Pgp(&carol));
    let carol_before = carol.public_key();
    carol.revoke();
    let carol_after = carol.public_key();
    assert_ne!(carol_before, carol_after);

    let git2repo = Repository::open(repo.path()).unwrap();
    let trusted = |carol: &str| {
        TrustedKeys::new([
            ("alice".to_string(), alice.public_key()),
            ("old".to_string(), old.public_key()),
            ("carol".to_string(), carol.to_string()),
        ])
        .unwrap()
    };
    let now_trusted = trusted(&carol_after);
    let rules = PathRules::new(&[], &now_trusted).unwrap();
    let refuse = |from: &str, to: &str, keys: &TrustedKeys| {
        let range = changes(&git2repo, Some(oid(from)), oid(to), None, 100).unwrap();
        assert_eq!(range.len(), 1);
        let r = verify_changes(&git2repo, &range, keys, &rules).unwrap_err();
        assert_eq!(r.commit, to);
        let text = r.to_string();
        assert!(text.starts_with(&format!("commit {}", &to[..12])), "{text}");
        r
    };

    assert_eq!(
        commit_signer(&git2repo, oid(&base), &now_trusted),
        Signer::Trusted("alice".into())
    );
    let r = refuse(&base, &unsigned, &now_trusted);
    assert!(r.reason.contains("is not signed"), "{r}");

    let r = refuse(&unsigned, &unknown, &now_trusted);
    assert_eq!(r.key, Some(format!("OpenPGP {}", stranger.fingerprint)));
    assert!(
        r.reason.contains(&format!(
            "signed by OpenPGP {}, which is not in spec.verify.keys",
            stranger.fingerprint
        )),
        "{r}"
    );

    let r = refuse(&unknown, &expired, &now_trusted);
    assert_eq!(r.key.as_deref(), Some("old"));
    assert!(
        r.reason.contains(&format!("OpenPGP {}", old.fingerprint)),
        "{r}"
    );
    assert!(r.reason.contains("expired on"), "{r}");
    assert!(matches!(
        commit_signer(&git2repo, oid(&expired), &now_trusted),
        Signer::Unusable { name, why, .. } if name == "old" && why.starts_with("expired on")
    ));

    // Carol's signature is good against her key as it was, refused once the key is revoked.
    assert_eq!(
        commit_signer(&git2repo, oid(&revoked), &trusted(&carol_before)),
        Signer::Trusted("carol".into())
    );
    let r = refuse(&expired, &revoked, &now_trusted);
    assert_eq!(r.key.as_deref(), Some("carol"));
    assert!(
        r.reason.contains(&format!("OpenPGP {}", carol.fingerprint)),
        "{r}"
    );
    assert!(r.reason.contains("was revoked on"), "{r}");

    // A signature that does not match the commit is invalid, not unknown: swap Carol's
    // signature onto a commit with another message.
    let body = git(repo.path(), &["cat-file", "commit", &base]);
    let tampered = body.replacen("\n\nbase", "\n\nbase, tampered", 1);
    let mut cmd = gitrepo::git_command(repo.path());
    cmd.args(["hash-object", "-t", "commit", "-w", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(tampered.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let forged = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(matches!(
        commit_signer(&git2repo, oid(&forged), &now_trusted),
        Signer::Invalid(why) if why.contains("does not verify")
    ));

    // Keys that are not public keys are refused at parse time, never echoed.
    let error = TrustedKeys::new([(
        "x".to_string(),
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQHYBGsecret\n".to_string(),
    )])
    .unwrap_err();
    assert!(
        error.contains("private key") && !error.contains("lQHYBGsecret"),
        "{error}"
    );
}

#[test]
fn keyring_names_keys_by_mail_like_allowed_signers() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let alice = PgpKey::generate(&keys, ALICE);
    let forge = PgpKey::generate(&keys, "GitHub <noreply@github.com>");
    let ring =
        TrustedKeys::from_keyring(&format!("{}\n{}", alice.public_key(), forge.public_key()))
            .unwrap();
    assert!(ring.contains("alice@hr.example"));
    assert!(ring.contains("noreply@github.com"));
    let repo = Repo::init(&tmp.path().join("repo"));
    repo.write("a.yaml", "a: 1\n");
    let id = repo.commit_signed("a", ALICE, Sign::Pgp(&forge));
    let git2repo = Repository::open(repo.path()).unwrap();
    assert_eq!(
        commit_signer(&git2repo, oid(&id), &ring),
        Signer::Trusted("noreply@github.com".into())
    );
    assert!(TrustedKeys::from_keyring("not a key").is_err());
}

/// A third party's revocation: Kim's key names the security team's key as its designated
/// revoker, and the team revokes it (`gpg --desig-revoke`). Listed with the revoker's key,
/// Kim's commit is refused naming the commit, Kim's key and the revoker; listed without it,
/// the revocation cannot be checked and is refused too, saying what to add.
#[test]
fn a_revocation_by_a_designated_revoker_refuses_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let security = PgpKey::generate(&keys, "Security <security@acme.example>");
    let kim = PgpKey::generate_with_revoker(&keys, "Kim HR <kim@hr.example>", &security);
    let repo = Repo::init(&tmp.path().join("repo"));
    repo.write("identities/a.yaml", "a: 1\n");
    let base = repo.commit_signed("base", ALICE, Sign::Pgp(&security));
    repo.write("identities/k.yaml", "k: 1\n");
    let by_kim = repo.commit_signed("kim", "Kim HR <kim@hr.example>", Sign::Pgp(&kim));
    let git2repo = Repository::open(repo.path()).unwrap();
    let before = kim.public_key();
    let trusted = |kim_key: &str, with_revoker: bool| {
        let mut list = vec![("kim".to_string(), kim_key.to_string())];
        if with_revoker {
            list.push(("security".to_string(), security.public_key()));
        }
        TrustedKeys::new(list).unwrap()
    };
    assert_eq!(
        commit_signer(&git2repo, oid(&by_kim), &trusted(&before, true)),
        Signer::Trusted("kim".into()),
        "designating a revoker revokes nothing"
    );

    let revoked = security.designated_revoke(&kim);
    assert_ne!(revoked, before);
    let keys_now = trusted(&revoked, true);
    let range = changes(&git2repo, Some(oid(&base)), oid(&by_kim), None, 100).unwrap();
    let rules = PathRules::new(&[], &keys_now).unwrap();
    let r = verify_changes(&git2repo, &range, &keys_now, &rules).unwrap_err();
    assert_eq!(r.commit, by_kim);
    assert_eq!(r.key.as_deref(), Some("kim"));
    let text = r.to_string();
    assert!(
        text.starts_with(&format!("commit {}", &by_kim[..12]))
            && text.contains(&format!("kim (OpenPGP {})", kim.fingerprint))
            && text.contains("was revoked on")
            && text.contains(&format!(
                "by its designated revoker OpenPGP {}",
                security.fingerprint
            )),
        "{text}"
    );
    // The revoker's own commits are untouched.
    assert_eq!(
        commit_signer(&git2repo, oid(&base), &keys_now),
        Signer::Trusted("security".into())
    );

    // Without the revoker's key the revocation cannot be checked: refused, saying so.
    let alone = trusted(&revoked, false);
    let r = verify_changes(
        &git2repo,
        &range,
        &alone,
        &PathRules::new(&[], &alone).unwrap(),
    )
    .unwrap_err();
    assert!(
        r.reason.contains(&format!(
            "carries a revocation by its designated revoker OpenPGP {}, which cannot be checked without that key",
            security.fingerprint
        )),
        "{r}"
    );
}

/// A `gpgsig-sha256` header (a signature over the commit's SHA-256 form, as git writes in a
/// SHA-256 repository or with object-format interoperability) is not mistaken for no
/// signature: it is an unsupported one, and the refusal says what it is.
#[test]
fn a_gpgsig_sha256_header_is_refused_as_unsupported() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = PgpKey::generate(&tmp.path().join("keys"), ALICE);
    let repo = Repo::init(&tmp.path().join("repo"));
    repo.write("identities/a.yaml", "a: 1\n");
    let base = repo.commit_signed("base", ALICE, Sign::Pgp(&alice));
    repo.write("identities/b.yaml", "b: 1\n");
    let signed = repo.commit_signed("b", ALICE, Sign::Pgp(&alice));
    // The same commit with its signature under the SHA-256 header name.
    let body = git(repo.path(), &["cat-file", "commit", &signed]);
    let renamed = body.replacen("\ngpgsig ", "\ngpgsig-sha256 ", 1);
    assert_ne!(renamed, body);
    let mut cmd = gitrepo::git_command(repo.path());
    cmd.args(["hash-object", "-t", "commit", "-w", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(renamed.as_bytes())
        .unwrap();
    let sha256 = String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let git2repo = Repository::open(repo.path()).unwrap();
    let trusted = TrustedKeys::new([("alice".to_string(), alice.public_key())]).unwrap();
    assert!(matches!(
        commit_signer(&git2repo, oid(&sha256), &trusted),
        Signer::Unsupported(what) if what.starts_with("gpgsig-sha256")
    ));
    let range = changes(&git2repo, Some(oid(&base)), oid(&sha256), None, 100).unwrap();
    let r = verify_changes(&git2repo, &range, &trusted, &PathRules::default()).unwrap_err();
    assert!(
        r.to_string().contains(&format!("commit {}", &sha256[..12]))
            && r.reason
                .contains("has an unsupported signature (gpgsig-sha256"),
        "{r}"
    );
}
