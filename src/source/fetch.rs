//! Talking to a Git remote with git2: the head commit of a branch or tag (a cheap poll),
//! and fetching its history into a bare cache repository. Nothing is checked out.

use std::path::{Path, PathBuf};
use std::sync::Once;

use base64::Engine as _;
use git2::{
    CertificateCheckStatus, Cred, Direction, FetchOptions, Oid, RemoteCallbacks, Repository,
};

use crate::api::GitRef;

/// Credentials from a PolicySource's Secret. `Debug` shows which keys are present only.
#[derive(Clone, Default)]
pub struct GitCredentials {
    /// HTTPS user name (default `git`).
    pub username: Option<String>,
    /// HTTPS password or token.
    pub password: Option<String>,
    /// SSH private key (OpenSSH or PEM).
    pub identity: Option<String>,
    /// SSH `known_hosts` lines the server's host key must match.
    pub known_hosts: Option<String>,
}

impl std::fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitCredentials")
            .field("username", &self.username.is_some())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("known_hosts", &self.known_hosts.is_some())
            .finish()
    }
}

/// Why talking to the remote failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The remote could not be reached or answered with an error; retry later.
    #[error("{0}")]
    Unreachable(String),
    /// The branch or tag does not exist on the remote.
    #[error("{0}")]
    MissingRef(String),
    /// The configuration cannot work (bad credentials, unknown host key, bad URL).
    #[error("{0}")]
    Config(String),
}

/// The full reference name of a branch or tag.
pub fn ref_name(git_ref: &GitRef) -> String {
    match (&git_ref.branch, &git_ref.tag) {
        (Some(branch), _) => format!("refs/heads/{branch}"),
        (None, Some(tag)) => format!("refs/tags/{tag}"),
        (None, None) => "HEAD".into(),
    }
}

/// A URL as safe to print: any user name or password removed.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

fn set_timeouts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: called once, before any remote operation of this process starts.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(10_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
        }
    });
}

/// Opens (or creates) the bare cache repository of one source under `cache_dir`.
pub fn open_cache(cache_dir: &Path, namespace: &str, name: &str) -> Result<Repository, String> {
    let dir: PathBuf = cache_dir.join(namespace).join(format!("{name}.git"));
    match Repository::open_bare(&dir) {
        Ok(repo) => Ok(repo),
        Err(_) => {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create the Git cache {}: {e}", dir.display()))?;
            Repository::init_bare(&dir).map_err(|e| {
                format!(
                    "cannot create the Git cache {}: {}",
                    dir.display(),
                    e.message()
                )
            })
        }
    }
}

/// Why a callback refused the connection: libgit2 replaces the callback's own message with
/// a generic one, so the reason is kept here and used in the error.
type Refusal = std::cell::RefCell<Option<String>>;

fn callbacks<'a>(
    url: &'a str,
    credentials: &'a GitCredentials,
    refusal: &'a Refusal,
) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0;
    callbacks.credentials(move |_url, username_from_url, allowed| {
        attempts += 1;
        if attempts > 2 {
            let reason = "the remote refused the credentials in spec.secretRef";
            *refusal.borrow_mut() = Some(reason.to_string());
            return Err(git2::Error::from_str(reason));
        }
        if allowed.contains(git2::CredentialType::SSH_KEY)
            && let Some(identity) = &credentials.identity {
                return Cred::ssh_key_from_memory(
                    username_from_url.unwrap_or("git"),
                    None,
                    identity,
                    None,
                );
            }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT)
            && let Some(password) = &credentials.password {
                let user = credentials
                    .username
                    .as_deref()
                    .or(username_from_url)
                    .unwrap_or("git");
                return Cred::userpass_plaintext(user, password);
            }
        let reason = "the remote asks for credentials: set spec.secretRef to a Secret with username/password (HTTPS) or identity/known_hosts (SSH)";
        *refusal.borrow_mut() = Some(reason.to_string());
        Err(git2::Error::from_str(reason))
    });
    callbacks.certificate_check(move |cert, host| {
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2 has already checked the chain against the system roots.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(presented) = hostkey.hostkey() else {
            return Err(git2::Error::from_str("the SSH server sent no host key"));
        };
        let reason = match &credentials.known_hosts {
            Some(known) if known_host_matches(known, host, presented) => {
                return Ok(CertificateCheckStatus::CertificateOk);
            }
            Some(_) => format!(
                "the host key of {host} is not in known_hosts of spec.secretRef ({}): add the `ssh-keyscan {host}` line for the right key",
                redact(url)
            ),
            None => "SSH needs a known_hosts key in the Secret of spec.secretRef, to check the server's host key".to_string(),
        };
        *refusal.borrow_mut() = Some(reason.clone());
        Err(git2::Error::from_str(&reason))
    });
    callbacks
}

/// Whether a known_hosts text lists `key` (the raw SSH host key blob) for `host`.
fn known_host_matches(known_hosts: &str, host: &str, key: &[u8]) -> bool {
    known_hosts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(blob)) = (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let host_listed = hosts.split(',').any(|h| {
            let h = h.trim_start_matches('[');
            h == host || h.split("]:").next() == Some(host)
        });
        host_listed
            && base64::engine::general_purpose::STANDARD
                .decode(blob)
                .is_ok_and(|decoded| decoded == key)
    })
}

fn classify(url: &str, error: git2::Error, refusal: &Refusal) -> FetchError {
    if let Some(reason) = refusal.borrow_mut().take() {
        return FetchError::Config(reason);
    }
    let message = format!("{}: {}", redact(url), error.message());
    match error.class() {
        git2::ErrorClass::Ssh | git2::ErrorClass::Callback => FetchError::Config(message),
        git2::ErrorClass::Http if message.contains("401") || message.contains("403") => {
            FetchError::Config(message)
        }
        _ => FetchError::Unreachable(message),
    }
}

/// A remote for `url` that is not saved in the cache's configuration.
fn anonymous<'r>(repo: &'r Repository, url: &str) -> Result<git2::Remote<'r>, FetchError> {
    set_timeouts();
    repo.remote_anonymous(url)
        .map_err(|e| FetchError::Config(format!("{}: {}", redact(url), e.message())))
}

/// The commit the remote's branch or tag points at, without fetching anything.
pub fn remote_head(
    repo: &Repository,
    url: &str,
    git_ref: &GitRef,
    credentials: &GitCredentials,
) -> Result<Oid, FetchError> {
    let mut remote = anonymous(repo, url)?;
    let refusal = Refusal::default();
    let connection = remote
        .connect_auth(
            Direction::Fetch,
            Some(callbacks(url, credentials, &refusal)),
            None,
        )
        .map_err(|e| classify(url, e, &refusal))?;
    let wanted = ref_name(git_ref);
    let peeled = format!("{wanted}^{{}}");
    let heads = connection.list().map_err(|e| classify(url, e, &refusal))?;
    let mut found = None;
    for head in heads {
        if head.name() == peeled {
            return Ok(head.oid());
        }
        if head.name() == wanted {
            found = Some(head.oid());
        }
    }
    found.ok_or_else(|| {
        FetchError::MissingRef(format!(
            "{wanted} does not exist in {}: check spec.ref",
            redact(url)
        ))
    })
}

/// Fetches the branch or tag with its history into the cache and returns its commit.
pub fn fetch(
    repo: &Repository,
    url: &str,
    git_ref: &GitRef,
    credentials: &GitCredentials,
) -> Result<Oid, FetchError> {
    let wanted = ref_name(git_ref);
    let local = "refs/gatehouse/head";
    let mut remote = anonymous(repo, url)?;
    let refusal = Refusal::default();
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(url, credentials, &refusal));
    options.download_tags(git2::AutotagOption::None);
    remote
        .fetch(&[format!("+{wanted}:{local}")], Some(&mut options), None)
        .map_err(|e| classify(url, e, &refusal))?;
    let reference = repo.find_reference(local).map_err(|_| {
        FetchError::MissingRef(format!(
            "{wanted} does not exist in {}: check spec.ref",
            redact(url)
        ))
    })?;
    reference
        .peel_to_commit()
        .map(|c| c.id())
        .map_err(|e| FetchError::MissingRef(format!("{wanted} is not a commit: {}", e.message())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_match_host_and_key() {
        let key = b"\x00\x00\x00\x0bssh-ed25519";
        let line = format!(
            "git.acme.example,10.0.0.1 ssh-ed25519 {}\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        assert!(known_host_matches(&line, "git.acme.example", key));
        assert!(known_host_matches(&line, "10.0.0.1", key));
        assert!(!known_host_matches(&line, "evil.example", key));
        assert!(!known_host_matches(&line, "git.acme.example", b"other"));
        let ported = format!(
            "[git.acme.example]:2222 ssh-ed25519 {}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        assert!(known_host_matches(&ported, "git.acme.example", key));
    }

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        assert_eq!(
            redact("https://bot:s3cret@git.acme.example/iam.git"),
            "https://git.acme.example/iam.git"
        );
        assert_eq!(redact("file:///srv/repo"), "file:///srv/repo");
    }
}
