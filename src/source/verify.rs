//! Commit signature checks: SSH signatures (git's `gpg.format=ssh`) and OpenPGP signatures
//! (git's default, and the forges' web and merge commits) against named trusted keys, and
//! path ownership (which keys may change which files).

use std::collections::BTreeSet;
use std::fmt;

use git2::{Oid, Repository};
use globset::{Glob, GlobBuilder, GlobMatcher};
use ssh_key::{HashAlg, PublicKey, SshSig};

use super::history::Change;
use super::openpgp::{self, Keyring};
use crate::api::PathOwner;

/// The namespace git signs commits in (`ssh-keygen -Y sign -n git`).
const GIT_NAMESPACE: &str = "git";

/// One trusted key: an OpenSSH public key, or OpenPGP certificates (primary keys with
/// their subkeys).
#[derive(Clone, Debug)]
enum Key {
    Ssh(PublicKey),
    OpenPgp(Box<Keyring>),
}

/// Named public keys trusted to sign commits: OpenSSH keys and OpenPGP certificates.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, Key)>,
}

impl TrustedKeys {
    /// Parses `(name, key)` pairs: an OpenSSH public key line (`ssh-ed25519 AAAA… comment`)
    /// or an armored OpenPGP public key block (`gpg --armor --export KEYID`; every key in
    /// the block counts under the one name).
    pub fn new(keys: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let mut out = Self::default();
        for (name, text) in keys {
            let key = if openpgp::is_armored_key(&text) {
                Key::OpenPgp(Box::new(
                    Keyring::parse(&text).map_err(|e| format!("key {name:?} {e}"))?,
                ))
            } else {
                Key::Ssh(PublicKey::from_openssh(text.trim()).map_err(|e| {
                    format!("key {name:?} is neither an OpenSSH public key ({e}) nor an armored OpenPGP public key: paste the one line of its .pub file, or the output of gpg --armor --export")
                })?)
            };
            out.push(name, key)?;
        }
        Ok(out)
    }

    fn push(&mut self, name: String, key: Key) -> Result<(), String> {
        if self.contains(&name) {
            return Err(format!("key name {name:?} is listed twice"));
        }
        self.keys.push((name, key));
        Ok(())
    }

    /// Parses an armored OpenPGP keyring (`gpg --armor --export`, several keys or blocks
    /// allowed). Each key is named by the e-mail address of its first user ID, as
    /// allowed-signers files name SSH keys by principal.
    pub fn from_keyring(text: &str) -> Result<Self, String> {
        let keyring = Keyring::parse(text).map_err(|e| format!("keyring {e}"))?;
        let mut out = Self::default();
        for (name, cert) in keyring.names().into_iter().zip(keyring.split()) {
            let name = if out.contains(&name) {
                format!("{name} {}", cert.fingerprints().concat())
            } else {
                name
            };
            out.push(name, Key::OpenPgp(Box::new(cert)))?;
        }
        Ok(out)
    }

    /// Adds the keys of `other`; a name in both is an error.
    pub fn extend(&mut self, other: TrustedKeys) -> Result<(), String> {
        for (name, key) in other.keys {
            self.push(name, key)?;
        }
        Ok(())
    }

    /// Parses git's allowed-signers file (`gpg.ssh.allowedSignersFile`): one
    /// `<principal> [options] <keytype> <base64> [comment]` per line.
    pub fn from_allowed_signers(text: &str) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields
                .iter()
                .position(|f| {
                    f.starts_with("ssh-") || f.starts_with("ecdsa-") || f.starts_with("sk-")
                })
                .filter(|&i| i >= 1 && i + 1 < fields.len())
                .ok_or_else(|| {
                    format!(
                        "allowed signers line {}: expected `<principal> <keytype> <base64>`",
                        number + 1
                    )
                })?;
            pairs.push((fields[0].to_string(), fields[at..].join(" ")));
        }
        Self::new(pairs)
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key of this name is trusted.
    pub fn contains(&self, name: &str) -> bool {
        self.keys.iter().any(|(n, _)| n == name)
    }

    fn find(&self, key: &ssh_key::public::KeyData) -> Option<(&str, &PublicKey)> {
        self.keys.iter().find_map(|(n, k)| match k {
            Key::Ssh(k) if k.key_data() == key => Some((n.as_str(), k)),
            _ => None,
        })
    }
}

/// Who signed a commit, as far as the trusted keys tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// A valid signature by this trusted key.
    Trusted(String),
    /// A valid-looking signature by a key that is not trusted.
    Untrusted {
        /// SHA-256 fingerprint of the signing SSH key, or `OpenPGP <fingerprint or key id>`.
        fingerprint: String,
    },
    /// A good signature by a trusted key that may not sign now: expired, revoked, or not
    /// a signing key.
    Unusable {
        /// The trusted key's name.
        name: String,
        /// `OpenPGP <fingerprint>` of the (sub)key that signed.
        key: String,
        /// What is wrong with it, e.g. `expired on 2026-01-06T10:00:00Z`.
        why: String,
    },
    /// No signature.
    Unsigned,
    /// A signature that does not verify.
    Invalid(String),
    /// A signature format gatehouse does not check.
    Unsupported(String),
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Trusted(name) => f.write_str(name),
            Signer::Untrusted { fingerprint } => write!(f, "untrusted {fingerprint}"),
            Signer::Unusable { name, key, why } => write!(f, "{name} ({key}), which {why}"),
            Signer::Unsigned => f.write_str("unsigned"),
            Signer::Invalid(why) => write!(f, "invalid signature ({why})"),
            Signer::Unsupported(what) => write!(f, "unsupported signature ({what})"),
        }
    }
}

/// Checks the signature of one commit against the trusted keys.
pub fn commit_signer(repo: &Repository, commit: Oid, keys: &TrustedKeys) -> Signer {
    let (signature, data) = match repo.extract_signature(&commit, None) {
        Ok(parts) => parts,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return unsigned_or_sha256(repo, commit),
        Err(e) => return Signer::Invalid(e.message().to_string()),
    };
    let Ok(text) = std::str::from_utf8(&signature) else {
        return Signer::Invalid("signature is not text".into());
    };
    if text.starts_with(openpgp::SIGNATURE_BLOCK) {
        return openpgp_signer(text, &data, keys);
    }
    if !text.starts_with("-----BEGIN SSH SIGNATURE-----") {
        return Signer::Unsupported("not an SSH signature".into());
    }
    let sig = match SshSig::from_pem(text) {
        Ok(sig) => sig,
        Err(e) => return Signer::Invalid(e.to_string()),
    };
    if sig.namespace() != GIT_NAMESPACE {
        return Signer::Invalid(format!(
            "signed for namespace {:?}, not {GIT_NAMESPACE:?}",
            sig.namespace()
        ));
    }
    match keys.find(sig.public_key()) {
        Some((name, key)) => match key.verify(GIT_NAMESPACE, &data, &sig) {
            Ok(()) => Signer::Trusted(name.to_string()),
            Err(e) => Signer::Invalid(format!("does not verify with key {name:?}: {e}")),
        },
        None => Signer::Untrusted {
            fingerprint: PublicKey::from(sig.public_key().clone())
                .fingerprint(HashAlg::Sha256)
                .to_string(),
        },
    }
}

/// `Unsigned`, unless the commit carries only a `gpgsig-sha256` header: a signature over
/// the commit's SHA-256 form (git's object-format interoperability), which cannot be checked
/// against the SHA-1 object gatehouse reads.
fn unsigned_or_sha256(repo: &Repository, commit: Oid) -> Signer {
    let sha256 = repo.find_commit(commit).is_ok_and(|c| {
        c.raw_header_bytes()
            .split(|b| *b == b'\n')
            .any(|line| line.starts_with(b"gpgsig-sha256 "))
    });
    if sha256 {
        Signer::Unsupported(
            "gpgsig-sha256, a signature over the commit's SHA-256 form, which gatehouse cannot check: sign in a SHA-1 repository (gpgsig)".into(),
        )
    } else {
        Signer::Unsigned
    }
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Checks an OpenPGP signature (git's `gpgsig` header) over the commit without it.
fn openpgp_signer(text: &str, data: &[u8], keys: &TrustedKeys) -> Signer {
    let sigs = match openpgp::parse_signature(text) {
        Ok(sigs) => sigs,
        Err(e) => return Signer::Invalid(format!("OpenPGP signature: {e}")),
    };
    let now = unix_now();
    let revokers: Vec<&Keyring> = keys
        .keys
        .iter()
        .filter_map(|(_, k)| match k {
            Key::OpenPgp(ring) => Some(&**ring),
            Key::Ssh(_) => None,
        })
        .collect();
    let mut outcome = None;
    for sig in &sigs {
        for (name, key) in &keys.keys {
            let Key::OpenPgp(keyring) = key else { continue };
            match openpgp::check(keyring, sig, data, now, &revokers) {
                openpgp::Check::Good => return Signer::Trusted(name.clone()),
                openpgp::Check::NotOurs => {}
                openpgp::Check::Bad(why) => {
                    outcome.get_or_insert(Signer::Invalid(format!("{why} (key {name:?})")));
                }
                openpgp::Check::Unusable { key, why } => {
                    outcome.get_or_insert(Signer::Unusable {
                        name: name.clone(),
                        key: format!("OpenPGP {key}"),
                        why,
                    });
                }
            }
        }
    }
    outcome.unwrap_or_else(|| Signer::Untrusted {
        fingerprint: format!(
            "OpenPGP {}",
            sigs.first().map(openpgp::issuer).unwrap_or_default()
        ),
    })
}

/// One `pathOwners` entry, compiled.
#[derive(Clone, Debug)]
struct PathRule {
    glob: String,
    matcher: GlobMatcher,
    keys: BTreeSet<String>,
    approvals: u32,
}

/// Path globs mapped to the key names allowed to change matching files, and the number
/// of approvals changes to them need.
#[derive(Clone, Debug, Default)]
pub struct PathRules {
    rules: Vec<PathRule>,
}

/// A rule that wants approvals for a path: its glob, its owners, how many approvals.
#[derive(Clone, Copy, Debug)]
pub struct ApprovalRule<'a> {
    /// The `pathOwners[].path` glob.
    pub glob: &'a str,
    /// The `pathOwners[].keys`.
    pub owners: &'a BTreeSet<String>,
    /// `pathOwners[].requireApprovals`.
    pub approvals: u32,
}

impl PathRules {
    /// Compiles `pathOwners`, checking that every key name is a trusted key and that
    /// every `requireApprovals` can be met.
    pub fn new(owners: &[PathOwner], keys: &TrustedKeys) -> Result<Self, String> {
        let mut rules = Vec::new();
        for (i, owner) in owners.iter().enumerate() {
            let glob: Glob = GlobBuilder::new(owner.path.trim_start_matches('/'))
                .literal_separator(true)
                .build()
                .map_err(|e| format!("spec.pathOwners[{i}].path {:?}: {e}", owner.path))?;
            for key in &owner.keys {
                if !keys.contains(key) {
                    return Err(format!(
                        "spec.pathOwners[{i}].keys names {key:?}, which is not in spec.verify.keys"
                    ));
                }
            }
            let names: BTreeSet<String> = owner.keys.iter().cloned().collect();
            let approvals = owner.require_approvals.unwrap_or(0);
            if approvals as usize >= names.len() && approvals > 0 {
                return Err(format!(
                    "spec.pathOwners[{i}].requireApprovals is {approvals}, but {:?} has {} distinct key(s) and a change's own signer never approves it: list at least {} keys or lower requireApprovals",
                    owner.path,
                    names.len(),
                    approvals + 1
                ));
            }
            rules.push(PathRule {
                glob: owner.path.clone(),
                matcher: glob.compile_matcher(),
                keys: names,
                approvals,
            });
        }
        Ok(Self { rules })
    }

    /// The first rule that forbids `signer` to change `path`: its glob and allowed keys.
    fn forbidding(&self, path: &str, signer: &str) -> Option<(&str, &BTreeSet<String>)> {
        self.rules
            .iter()
            .find(|r| r.matcher.is_match(path) && !r.keys.contains(signer))
            .map(|r| (r.glob.as_str(), &r.keys))
    }

    /// Whether any rule asks for approvals.
    pub fn wants_approvals(&self) -> bool {
        self.rules.iter().any(|r| r.approvals > 0)
    }

    /// The rules matching `path` that ask for approvals, in `pathOwners` order.
    pub fn approvals_for<'a>(&'a self, path: &'a str) -> impl Iterator<Item = ApprovalRule<'a>> {
        self.rules
            .iter()
            .filter(move |r| r.approvals > 0 && r.matcher.is_match(path))
            .map(|r| ApprovalRule {
                glob: &r.glob,
                owners: &r.keys,
                approvals: r.approvals,
            })
    }
}

/// Why a range of commits was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The offending commit.
    pub commit: String,
    /// The key that signed it, if any.
    pub key: Option<String>,
    /// The file whose change was not allowed, for a path-ownership failure.
    pub path: Option<String>,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "commit {}", short(&self.commit))?;
        if let Some(path) = &self.path {
            write!(f, " changes {path}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The first 12 characters of a commit id.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Checks every change: each commit must be signed by a trusted key, and every path it
/// changed must be one that key may change. Returns the signer of each commit, in order.
pub fn verify_changes(
    repo: &Repository,
    changes: &[Change],
    keys: &TrustedKeys,
    rules: &PathRules,
) -> Result<Vec<(Oid, String)>, Rejection> {
    let mut signers = Vec::with_capacity(changes.len());
    for change in changes {
        let commit = change.commit.to_string();
        let name = match commit_signer(repo, change.commit, keys) {
            Signer::Trusted(name) => name,
            other => {
                let (key, reason) = match &other {
                    Signer::Untrusted { fingerprint } => (
                        Some(fingerprint.clone()),
                        format!("signed by {fingerprint}, which is not in spec.verify.keys"),
                    ),
                    Signer::Unusable { name, key, why } => (
                        Some(name.clone()),
                        format!(
                            "signed by {name} ({key}), which {why}: renew or replace the key and update spec.verify.keys, or sign the change again with a valid key"
                        ),
                    ),
                    Signer::Unsigned => (
                        None,
                        "is not signed: every commit that changes this source must be signed by a key in spec.verify.keys".into(),
                    ),
                    _ => (None, format!("has an {other}")),
                };
                return Err(Rejection {
                    commit,
                    key,
                    path: change.paths.first().cloned(),
                    reason,
                });
            }
        };
        for path in &change.paths {
            if let Some((glob, allowed)) = rules.forbidding(path, &name) {
                return Err(Rejection {
                    commit,
                    key: Some(name.clone()),
                    path: Some(path.clone()),
                    reason: format!(
                        "signed by {name}, but files matching {glob:?} may only be changed by {}",
                        allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        signers.push((change.commit, name));
    }
    Ok(signers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::history::{Movement, changes, movement};
    use std::path::Path;
    use std::process::Command;

    fn run(dir: &Path, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn key(dir: &Path, name: &str) -> (String, String) {
        let path = dir.join(name);
        run(
            dir,
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                name,
                "-f",
                path.to_str().unwrap(),
            ],
        );
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        (path.display().to_string(), public.trim().to_string())
    }

    fn commit(repo: &Path, file: &str, signing_key: Option<&str>) -> Oid {
        std::fs::create_dir_all(repo.join(file).parent().unwrap()).unwrap();
        std::fs::write(
            repo.join(file),
            format!("{file} {:?}\n", std::time::Instant::now()),
        )
        .unwrap();
        run(repo, "git", &["add", "-A"]);
        let mut args = vec!["-c", "gpg.format=ssh"];
        let config;
        if let Some(k) = signing_key {
            config = format!("user.signingkey={k}");
            args.extend(["-c", &config, "commit", "-q", "-S", "-m", file]);
        } else {
            args.extend(["commit", "-q", "-m", file]);
        }
        run(repo, "git", &args);
        Oid::from_str(&run(repo, "git", &["rev-parse", "HEAD"])).unwrap()
    }

    #[test]
    fn signatures_and_path_owners_over_a_real_repository() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        std::fs::create_dir(&keys_dir).unwrap();
        let (hr_private, hr_public) = key(&keys_dir, "hr");
        let (iam_private, iam_public) = key(&keys_dir, "iam");
        let (_, stranger_public) = key(&keys_dir, "stranger");
        let repo_dir = dir.path().join("repo");
        std::fs::create_dir(&repo_dir).unwrap();
        run(&repo_dir, "git", &["init", "-q", "-b", "main"]);
        run(&repo_dir, "git", &["config", "user.name", "T"]);
        run(&repo_dir, "git", &["config", "user.email", "t@example.org"]);
        let first = commit(&repo_dir, "tenant/identities/a.yaml", Some(&hr_private));
        let policy = commit(&repo_dir, "tenant/policies/p.yaml", Some(&iam_private));
        let elsewhere = commit(&repo_dir, "other/x.yaml", None);
        let unsigned = commit(&repo_dir, "tenant/identities/b.yaml", None);
        let repo = Repository::open(&repo_dir).unwrap();

        let trusted = TrustedKeys::new([
            ("hr-bot".to_string(), hr_public.clone()),
            ("iam-lead".to_string(), iam_public),
        ])
        .unwrap();
        assert_eq!(
            commit_signer(&repo, first, &trusted),
            Signer::Trusted("hr-bot".into())
        );
        assert_eq!(commit_signer(&repo, unsigned, &trusted), Signer::Unsigned);
        let only_stranger = TrustedKeys::new([("s".to_string(), stranger_public)]).unwrap();
        assert!(matches!(
            commit_signer(&repo, first, &only_stranger),
            Signer::Untrusted { fingerprint } if fingerprint.starts_with("SHA256:")
        ));
        let signers =
            TrustedKeys::from_allowed_signers(&format!("hr@acme.example {hr_public}\n")).unwrap();
        assert_eq!(
            commit_signer(&repo, first, &signers),
            Signer::Trusted("hr@acme.example".into())
        );

        // Only commits that touch the source folder count; the other tenant's is skipped.
        let range = changes(&repo, Some(first), unsigned, Some("tenant"), 100).unwrap();
        let ids: Vec<Oid> = range.iter().map(|c| c.commit).collect();
        assert_eq!(ids, vec![unsigned, policy]);
        assert!(!ids.contains(&elsewhere));
        assert_eq!(range[0].paths, vec!["identities/b.yaml".to_string()]);

        let owners: Vec<PathOwner> = serde_json::from_str(
            r#"[{"path": "identities/**", "keys": ["hr-bot"]}, {"path": "policies/**", "keys": ["iam-lead"]}]"#,
        )
        .unwrap();
        let rules = PathRules::new(&owners, &trusted).unwrap();
        let rejection = verify_changes(&repo, &range, &trusted, &rules).unwrap_err();
        assert_eq!(rejection.commit, unsigned.to_string());
        assert!(rejection.reason.contains("is not signed"), "{rejection}");

        // The HR file changed with the IAM key is refused, naming path, key and owners.
        let wrong = commit(&repo_dir, "tenant/identities/c.yaml", Some(&iam_private));
        let range = changes(&repo, Some(unsigned), wrong, Some("tenant"), 100).unwrap();
        let rejection = verify_changes(&repo, &range, &trusted, &rules).unwrap_err();
        assert_eq!(rejection.path.as_deref(), Some("identities/c.yaml"));
        assert_eq!(rejection.key.as_deref(), Some("iam-lead"));
        assert!(
            rejection.reason.contains("may only be changed by hr-bot"),
            "{rejection}"
        );

        let good = commit(&repo_dir, "tenant/identities/d.yaml", Some(&hr_private));
        let range = changes(&repo, Some(wrong), good, Some("tenant"), 100).unwrap();
        assert_eq!(
            verify_changes(&repo, &range, &trusted, &rules).unwrap(),
            vec![(good, "hr-bot".to_string())]
        );
        assert_eq!(movement(&repo, Some(wrong), good), Movement::FastForward);
        assert_eq!(movement(&repo, Some(good), first), Movement::Rollback);
        assert_eq!(movement(&repo, None, good), Movement::First);

        let bad_owner: Vec<PathOwner> =
            serde_json::from_str(r#"[{"path": "identities/**", "keys": ["nobody"]}]"#).unwrap();
        let error = PathRules::new(&bad_owner, &trusted).unwrap_err();
        assert!(error.contains("not in spec.verify.keys"), "{error}");
    }
}
