//! OpenPGP commit signatures (git's default `gpg.format=openpgp`, and what GitHub, GitLab
//! and Gitea sign web and merge commits with): armored public keys with their subkeys,
//! expiry and revocations, checked with rPGP (the `pgp` crate). No gpg is run.
//!
//! A signing key (the primary key or a signing subkey bound to it) must be valid both when
//! the signature was made and now: not expired and not revoked, like `git verify-commit`
//! with gpg, which refuses signatures by expired or revoked keys.

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey};
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag};

/// The armor line that starts an OpenPGP public key block.
const PUBLIC_KEY_BLOCK: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
/// The armor line that starts an OpenPGP signature.
pub const SIGNATURE_BLOCK: &str = "-----BEGIN PGP SIGNATURE-----";

/// One or more OpenPGP certificates (primary keys with their subkeys and signatures).
#[derive(Clone, Debug)]
pub struct Keyring {
    certs: Vec<SignedPublicKey>,
}

/// Whether `text` looks like an armored OpenPGP key (public or private).
pub fn is_armored_key(text: &str) -> bool {
    let text = text.trim_start();
    text.starts_with(PUBLIC_KEY_BLOCK) || text.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----")
}

impl Keyring {
    /// Parses every certificate of an armored `PGP PUBLIC KEY BLOCK` (`gpg --armor
    /// --export`; several keys may share one block, as GitHub's `web-flow.gpg` does).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.contains("PGP PRIVATE KEY BLOCK") {
            // Never echo it: this is a secret.
            return Err(
                "is an OpenPGP private key: paste the public key (gpg --armor --export KEYID)"
                    .into(),
            );
        }
        let mut certs = Vec::new();
        // Concatenated blocks (`cat a.asc b.asc`) are read one by one.
        for block in split_blocks(text) {
            let (iter, _) = SignedPublicKey::from_string_many(block)
                .map_err(|e| format!("is not an armored OpenPGP public key ({e})"))?;
            for cert in iter {
                let cert =
                    cert.map_err(|e| format!("is not an armored OpenPGP public key ({e})"))?;
                if newest_self_signature(&cert).is_none() {
                    return Err(format!(
                        "OpenPGP key {:X} has no valid self-signature",
                        cert.primary_key.fingerprint()
                    ));
                }
                certs.push(cert);
            }
        }
        if certs.is_empty() {
            return Err("holds no OpenPGP public key".into());
        }
        Ok(Self { certs })
    }

    /// The certificates' primary fingerprints (upper-case hex).
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| format!("{:X}", c.primary_key.fingerprint()))
            .collect()
    }

    /// The e-mail address of each certificate's first user ID (else the user ID, else its
    /// fingerprint): how `gatehouse audit --keyring` names the key.
    pub fn names(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| {
                let id = c
                    .details
                    .users
                    .first()
                    .map(|u| String::from_utf8_lossy(u.id.id()).into_owned());
                match id {
                    Some(id) => match (id.rfind('<'), id.rfind('>')) {
                        (Some(open), Some(close)) if open < close => {
                            id[open + 1..close].to_string()
                        }
                        _ => id,
                    },
                    None => format!("{:X}", c.primary_key.fingerprint()),
                }
            })
            .collect()
    }

    /// Splits the keyring into one keyring per certificate.
    pub fn split(self) -> Vec<Keyring> {
        self.certs
            .into_iter()
            .map(|c| Keyring { certs: vec![c] })
            .collect()
    }
}

/// Splits concatenated armored blocks.
fn split_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN PGP ") {
        let from = &rest[start..];
        let end = from
            .find("-----END PGP ")
            .and_then(|e| from[e..].find('\n').map(|n| e + n + 1).or(Some(from.len())))
            .unwrap_or(from.len());
        blocks.push(&from[..end]);
        rest = &from[end..];
    }
    if blocks.is_empty() {
        blocks.push(text);
    }
    blocks
}

/// What one keyring says about one signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// No key of the keyring issued it.
    NotOurs,
    /// A good signature by a key valid then and now.
    Good,
    /// Issued by a key of the keyring, but it does not verify.
    Bad(String),
    /// A good signature by a key that is expired, revoked or not for signing.
    Unusable {
        /// The signing key's fingerprint.
        key: String,
        /// What is wrong with it (`expired on …`, `was revoked on …`).
        why: String,
    },
}

/// Parses git's `gpgsig` header: an armored detached signature.
pub fn parse_signature(text: &str) -> Result<Vec<Signature>, String> {
    let (iter, _) = DetachedSignature::from_string_many(text).map_err(|e| e.to_string())?;
    let sigs = iter
        .map(|s| s.map(|s| s.signature))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if sigs.is_empty() {
        return Err("holds no signature packet".into());
    }
    Ok(sigs)
}

/// The issuer of a signature, as it names itself: its fingerprint, else its key id
/// (upper-case hex), else `unknown`.
pub fn issuer(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        return format!("{fp:X}");
    }
    match sig.issuer_key_id().first() {
        Some(id) => id.to_string().to_uppercase(),
        None => "unknown".into(),
    }
}

/// Checks `sig` over `data` against the keyring at `now` (seconds since the epoch).
/// `revokers` are the other trusted keys, where the keys that a certificate designates as
/// its revokers are looked up to check their revocations of it.
pub fn check(
    keyring: &Keyring,
    sig: &Signature,
    data: &[u8],
    now: i64,
    revokers: &[&Keyring],
) -> Check {
    let mut outcome = Check::NotOurs;
    for cert in &keyring.certs {
        match check_cert(cert, sig, data, now, revokers) {
            Check::Good => return Check::Good,
            Check::NotOurs => {}
            other => {
                if outcome == Check::NotOurs {
                    outcome = other;
                }
            }
        }
    }
    outcome
}

fn issued_by(sig: &Signature, key: &impl KeyDetails) -> bool {
    let (fps, ids) = (sig.issuer_fingerprint(), sig.issuer_key_id());
    if fps.is_empty() && ids.is_empty() {
        return true;
    }
    fps.iter().any(|fp| **fp == key.fingerprint())
        || ids.iter().any(|id| **id == key.legacy_key_id())
}

fn check_cert(
    cert: &SignedPublicKey,
    sig: &Signature,
    data: &[u8],
    now: i64,
    revokers: &[&Keyring],
) -> Check {
    if !matches!(
        sig.typ(),
        Some(SignatureType::Binary) | Some(SignatureType::Text)
    ) && (issued_by(sig, &cert.primary_key)
        || cert.public_subkeys.iter().any(|s| issued_by(sig, &s.key)))
    {
        return Check::Bad(format!(
            "signature type {:?} is not a data signature",
            sig.typ()
        ));
    }
    let made = sig.created().map(|t| i64::from(t.as_secs()));
    if issued_by(sig, &cert.primary_key) && sig.verify(&cert.primary_key, data).is_ok() {
        let key = format!("{:X}", cert.primary_key.fingerprint());
        return match primary_problem(cert, made, now, true, revokers) {
            Some(why) => Check::Unusable { key, why },
            None => signature_time_problem(sig, made, now)
                .map(Check::Bad)
                .unwrap_or(Check::Good),
        };
    }
    for sub in &cert.public_subkeys {
        if issued_by(sig, &sub.key) && sig.verify(&sub.key, data).is_ok() {
            let key = format!("{:X}", sub.key.fingerprint());
            let problem = primary_problem(cert, made, now, false, revokers)
                .map(|why| {
                    format!(
                        "belongs to primary key {:X}, which {why}",
                        cert.primary_key.fingerprint()
                    )
                })
                .or_else(|| subkey_problem(cert, sub, made, now));
            return match problem {
                Some(why) => Check::Unusable { key, why },
                None => signature_time_problem(sig, made, now)
                    .map(Check::Bad)
                    .unwrap_or(Check::Good),
            };
        }
    }
    let named = issued_by(sig, &cert.primary_key)
        || cert.public_subkeys.iter().any(|s| issued_by(sig, &s.key));
    let anonymous = sig.issuer_fingerprint().is_empty() && sig.issuer_key_id().is_empty();
    if named && !anonymous {
        Check::Bad(format!("does not verify with OpenPGP key {}", issuer(sig)))
    } else {
        Check::NotOurs
    }
}

fn signature_time_problem(sig: &Signature, made: Option<i64>, now: i64) -> Option<String> {
    let made = made?;
    let expiry = sig
        .signature_expiration_time()
        .map(|d| i64::from(d.as_secs()))?;
    (expiry > 0 && made + expiry <= now)
        .then(|| format!("the signature expired on {}", date(made + expiry)))
}

/// RFC 3339 of a Unix time.
fn date(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

fn revocation_text(sig: &Signature) -> String {
    let at = sig
        .created()
        .map(|t| format!(" on {}", date(i64::from(t.as_secs()))))
        .unwrap_or_default();
    let reason = match sig.revocation_reason_code() {
        Some(pgp::packet::RevocationCode::KeyCompromised) => " (key compromised)",
        Some(pgp::packet::RevocationCode::KeySuperseded) => " (key superseded)",
        Some(pgp::packet::RevocationCode::KeyRetired) => " (key retired)",
        _ => "",
    };
    format!("was revoked{at}{reason}")
}

/// The newest valid self-signature of the primary key (direct-key or user ID
/// certification): where its expiry and key flags are read.
fn newest_self_signature(cert: &SignedPublicKey) -> Option<&Signature> {
    let primary = &cert.primary_key;
    let direct = cert
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.verify_key(primary).is_ok());
    let users = cert.details.users.iter().flat_map(|u| {
        u.signatures.iter().filter(move |s| {
            s.is_certification()
                && s.typ() != Some(SignatureType::CertRevocation)
                && s.verify_certification(primary, Tag::UserId, &u.id).is_ok()
        })
    });
    direct
        .chain(users)
        .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// The fingerprints (upper-case hex) of the keys the certificate's owner designated as its
/// revokers: the Revocation Key subpackets of its valid self-signatures.
fn designated_revokers(cert: &SignedPublicKey) -> Vec<String> {
    let primary = &cert.primary_key;
    let direct = cert
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.verify_key(primary).is_ok());
    let users = cert.details.users.iter().flat_map(|u| {
        u.signatures.iter().filter(move |s| {
            s.is_certification() && s.verify_certification(primary, Tag::UserId, &u.id).is_ok()
        })
    });
    let mut out: Vec<String> = direct
        .chain(users)
        .filter_map(|s| s.config())
        .flat_map(|c| c.hashed_subpackets())
        .filter_map(|p| match &p.data {
            SubpacketData::RevocationKey(k) => Some(hex::encode_upper(&k.fingerprint)),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A revocation of `cert` by a key it designated as its revoker: `Some(why)` when one
/// verifies with that key among `revokers`, or when the revoker's key is not there to check
/// it (refused rather than trusted: the owner said that key may revoke this one).
/// Revocations by keys the owner did not designate count for nothing.
fn third_party_revocation(cert: &SignedPublicKey, revokers: &[&Keyring]) -> Option<String> {
    let revocations: Vec<&Signature> = cert
        .details
        .revocation_signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::KeyRevocation))
        .collect();
    if revocations.is_empty() {
        return None;
    }
    let designated = designated_revokers(cert);
    for rev in revocations {
        let Some(fingerprint) = designated.iter().find(|fp| {
            rev.issuer_fingerprint()
                .iter()
                .any(|i| format!("{i:X}") == **fp)
                || rev
                    .issuer_key_id()
                    .iter()
                    .any(|id| fp.ends_with(&id.to_string().to_uppercase()))
        }) else {
            continue;
        };
        let revoked = || {
            Some(format!(
                "{} by its designated revoker OpenPGP {fingerprint}",
                revocation_text(rev)
            ))
        };
        let mut found = false;
        for revoker in revokers.iter().flat_map(|r| r.certs.iter()) {
            if format!("{:X}", revoker.primary_key.fingerprint()) == *fingerprint {
                found = true;
                if rev
                    .verify_key_third_party(&cert.primary_key, &revoker.primary_key)
                    .is_ok()
                {
                    return revoked();
                }
            }
            for sub in &revoker.public_subkeys {
                if format!("{:X}", sub.key.fingerprint()) == *fingerprint {
                    found = true;
                    if rev
                        .verify_key_third_party(&cert.primary_key, &sub.key)
                        .is_ok()
                    {
                        return revoked();
                    }
                }
            }
        }
        if !found {
            return Some(format!(
                "carries a revocation by its designated revoker OpenPGP {fingerprint}, which cannot be checked without that key: add the revoker's public key to the trusted keys"
            ));
        }
    }
    None
}

/// What makes the primary key unusable, if anything. `signs` also requires it to be a
/// signing key (not needed when a subkey signed).
fn primary_problem(
    cert: &SignedPublicKey,
    made: Option<i64>,
    now: i64,
    signs: bool,
    revokers: &[&Keyring],
) -> Option<String> {
    let primary = &cert.primary_key;
    if let Some(rev) =
        cert.details.revocation_signatures.iter().find(|s| {
            s.typ() == Some(SignatureType::KeyRevocation) && s.verify_key(primary).is_ok()
        })
    {
        return Some(revocation_text(rev));
    }
    if let Some(why) = third_party_revocation(cert, revokers) {
        return Some(why);
    }
    let Some(selfsig) = newest_self_signature(cert) else {
        return Some("has no valid self-signature".into());
    };
    if signs && has_key_flags(selfsig) && !selfsig.key_flags().sign() {
        return Some("is not a signing key".into());
    }
    validity_problem(
        i64::from(primary.created_at().as_secs()),
        selfsig
            .key_expiration_time()
            .map(|d| i64::from(d.as_secs())),
        made,
        now,
    )
}

fn subkey_problem(
    cert: &SignedPublicKey,
    sub: &SignedPublicSubKey,
    made: Option<i64>,
    now: i64,
) -> Option<String> {
    let primary = &cert.primary_key;
    let valid = |s: &&Signature| s.verify_subkey_binding(primary, &sub.key).is_ok();
    if let Some(rev) = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
        .find(valid)
    {
        return Some(revocation_text(rev));
    }
    let Some(binding) = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .filter(valid)
        .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
    else {
        return Some("is not bound to its primary key".into());
    };
    let back = binding
        .embedded_signature()
        .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
    if !binding.key_flags().sign() || !back {
        return Some("is not a signing subkey".into());
    }
    validity_problem(
        i64::from(sub.key.created_at().as_secs()),
        binding
            .key_expiration_time()
            .map(|d| i64::from(d.as_secs())),
        made,
        now,
    )
}

/// A key created at `created` and valid for `lifetime` seconds (none or 0: for ever) must
/// be valid when the signature was `made` and `now`.
fn validity_problem(
    created: i64,
    lifetime: Option<i64>,
    made: Option<i64>,
    now: i64,
) -> Option<String> {
    if let Some(made) = made
        && made < created
    {
        return Some(format!(
            "was created on {}, after the signature",
            date(created)
        ));
    }
    let expires = lifetime.filter(|&l| l > 0).map(|l| created + l)?;
    let latest = made.map_or(now, |m| m.max(now));
    (expires <= latest).then(|| format!("expired on {}", date(expires)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_private_keys_are_refused_without_echo() {
        let e = Keyring::parse("-----BEGIN PGP PRIVATE KEY BLOCK-----\nsecretstuff\n").unwrap_err();
        assert!(e.contains("private key"), "{e}");
        assert!(!e.contains("secretstuff"), "{e}");
        assert!(
            Keyring::parse(
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nzz\n-----END PGP PUBLIC KEY BLOCK-----\n"
            )
            .is_err()
        );
        assert!(
            parse_signature("-----BEGIN PGP SIGNATURE-----\n\n!!\n-----END PGP SIGNATURE-----\n")
                .is_err()
        );
        assert!(parse_signature("").is_err());
    }

    #[test]
    fn validity_window() {
        assert_eq!(validity_problem(100, None, Some(150), 1_000), None);
        assert_eq!(validity_problem(100, Some(0), Some(150), 1_000), None);
        assert!(
            validity_problem(100, Some(500), Some(150), 1_000)
                .unwrap()
                .starts_with("expired on")
        );
        assert_eq!(validity_problem(100, Some(5_000), Some(150), 1_000), None);
        assert!(
            validity_problem(100, None, Some(50), 1_000)
                .unwrap()
                .contains("after the signature")
        );
    }

    #[test]
    fn split_concatenated_blocks() {
        let a = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nA\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let b = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nB\n-----END PGP PUBLIC KEY BLOCK-----";
        assert_eq!(split_blocks(&format!("{a}{b}")), vec![a, b]);
    }
}
