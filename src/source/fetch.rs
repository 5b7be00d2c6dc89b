//! Talking to a Git remote with git2: the head commit of a branch or tag (a cheap poll),
//! and fetching its history into a bare cache repository. Nothing is checked out.
//!
//! HTTPS: basic credentials (`username`/`password`) answer the server's challenge; a
//! `bearerToken` is sent as `Authorization: Bearer …` with every request; a `ca.crt`
//! replaces the system's CA certificates for this source's server (checked with rustls
//! from libgit2's certificate callback, so one source's CA is never trusted for another).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use base64::Engine as _;
use git2::{
    Binding, CertificateCheckStatus, Cred, FetchOptions, Oid, ProxyOptions, RemoteCallbacks,
    Repository,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::api::GitRef;

/// The Secret key of the PEM CA certificates an HTTPS source trusts.
pub const CA_KEY: &str = "ca.crt";
/// The Secret key of a token sent as `Authorization: Bearer`.
pub const BEARER_KEY: &str = "bearerToken";

/// Credentials from a PolicySource's Secret. `Debug` shows which keys are present only.
#[derive(Clone, Default)]
pub struct GitCredentials {
    /// The Secret they come from, `namespace/name`, for messages.
    pub secret: Option<String>,
    /// HTTPS user name (default `git`).
    pub username: Option<String>,
    /// HTTPS password or token, for basic authentication.
    pub password: Option<String>,
    /// HTTPS token sent as `Authorization: Bearer <token>` with every request.
    pub bearer_token: Option<String>,
    /// PEM CA certificates that the HTTPS server's certificate must chain to, instead of
    /// the system's.
    pub ca: Option<String>,
    /// SSH private key (OpenSSH or PEM).
    pub identity: Option<String>,
    /// SSH `known_hosts` lines the server's host key must match.
    pub known_hosts: Option<String>,
}

impl std::fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitCredentials")
            .field("secret", &self.secret)
            .field("username", &self.username.is_some())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("known_hosts", &self.known_hosts.is_some())
            .finish()
    }
}

impl GitCredentials {
    /// `Secret ns/name` (or `spec.secretRef`), for messages.
    fn secret_label(&self) -> String {
        match &self.secret {
            Some(name) => format!("Secret {name}"),
            None => "spec.secretRef".into(),
        }
    }

    /// The HTTP headers every request carries: the bearer token's.
    fn headers(&self) -> Vec<String> {
        self.bearer_token
            .iter()
            .map(|t| format!("Authorization: Bearer {}", t.trim()))
            .collect()
    }

    /// A verifier trusting only `ca.crt`, when the Secret has one.
    fn tls_verifier(&self) -> Result<Option<Arc<WebPkiServerVerifier>>, FetchError> {
        let Some(pem) = &self.ca else {
            return Ok(None);
        };
        let bad = |why: String| {
            FetchError::Config(format!(
                "{}: key {CA_KEY:?} {why}: put the PEM certificate of the CA that signed the Git server's certificate there",
                self.secret_label()
            ))
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| bad(format!("is not a PEM certificate bundle ({e})")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("holds an unusable certificate ({e})")))?;
        }
        if roots.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map(Some)
            .map_err(|e| bad(format!("cannot be used ({e})")))
    }
}

/// Checks the server's certificate (DER) for `host` against `verifier`: the reason when
/// it does not chain to `ca.crt` or does not name the host.
fn check_certificate(
    verifier: &WebPkiServerVerifier,
    der: &[u8],
    host: &str,
    credentials: &GitCredentials,
) -> Result<(), String> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("cannot check the TLS certificate of {host:?}: {e}"))?;
    let cert = CertificateDer::from(der.to_vec());
    verifier
        .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| {
            format!(
                "the TLS certificate of {host} is refused: {e}; it must be signed by a CA in key {CA_KEY:?} of {} and name {host}: put the CA that signed the server's certificate (and any intermediate CA) there",
                credentials.secret_label()
            )
        })
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
    verifier: Option<Arc<WebPkiServerVerifier>>,
    refusal: &'a Refusal,
) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0;
    callbacks.credentials(move |_url, username_from_url, allowed| {
        attempts += 1;
        if credentials.bearer_token.is_some() && credentials.password.is_none() {
            // The token went with the request: asked again, the server refused it.
            let reason = format!(
                "the remote refused the bearer token in key {BEARER_KEY:?} of {} (HTTP 401): renew the token, or check it may read {}",
                credentials.secret_label(),
                redact(url)
            );
            *refusal.borrow_mut() = Some(reason.clone());
            return Err(git2::Error::from_str(&reason));
        }
        if attempts > 2 {
            let reason = format!(
                "the remote refused the credentials in {}",
                credentials.secret_label()
            );
            *refusal.borrow_mut() = Some(reason.clone());
            return Err(git2::Error::from_str(&reason));
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
        let reason = "the remote asks for credentials: set spec.secretRef to a Secret with username/password or bearerToken (HTTPS), or identity/known_hosts (SSH)";
        *refusal.borrow_mut() = Some(reason.to_string());
        Err(git2::Error::from_str(reason))
    });
    callbacks.certificate_check(move |cert, host| {
        if let Some(x509) = cert.as_x509() {
            // TLS: without ca.crt, libgit2's own check against the system's CAs stands.
            let Some(verifier) = &verifier else {
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            return match check_certificate(verifier, x509.data(), host, credentials) {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(reason) => {
                    *refusal.borrow_mut() = Some(reason.clone());
                    Err(git2::Error::from_str(&reason))
                }
            };
        }
        let Some(hostkey) = cert.as_hostkey() else {
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

fn classify(
    url: &str,
    error: git2::Error,
    refusal: &Refusal,
    credentials: &GitCredentials,
) -> FetchError {
    if let Some(reason) = refusal.borrow_mut().take() {
        return FetchError::Config(reason);
    }
    let message = format!("{}: {}", redact(url), error.message());
    if error.message().contains("object format 'sha256'") {
        return FetchError::Config(format!(
            "{message}: the repository uses SHA-256 object names (git init --object-format=sha256), which gatehouse cannot read yet (libgit2 reads SHA-1 repositories only): sync from a SHA-1 repository"
        ));
    }
    // A refused bearer token comes back as a challenge libgit2 cannot answer.
    if credentials.bearer_token.is_some()
        && error.class() == git2::ErrorClass::Http
        && (error.message().contains("authentication") || error.message().contains("401"))
    {
        return FetchError::Config(format!(
            "{message}: the remote refused the bearer token in key {BEARER_KEY:?} of {}: renew the token, or check it may read the repository",
            credentials.secret_label()
        ));
    }
    if error.code() == git2::ErrorCode::Certificate
        || (error.class() == git2::ErrorClass::Ssl && error.message().contains("certificate"))
    {
        return FetchError::Config(format!(
            "{message}: the server's TLS certificate is not trusted by the system's CA certificates: put the CA that signed it in key {CA_KEY:?} of the Secret of spec.secretRef"
        ));
    }
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

/// Connects `remote` for fetching with `callbacks` and extra HTTP `headers` (git2's
/// `connect_auth` sends none, and a bearer token must go with the first request).
/// `callbacks` must stay alive until the remote is disconnected.
fn connect(
    remote: &mut git2::Remote<'_>,
    callbacks: &RemoteCallbacks<'_>,
    headers: &[String],
) -> Result<(), git2::Error> {
    let headers: Vec<CString> = headers
        .iter()
        .map(|h| CString::new(h.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| git2::Error::from_str("an HTTP header holds a NUL byte"))?;
    let pointers: Vec<*const std::os::raw::c_char> = headers.iter().map(|h| h.as_ptr()).collect();
    let array = libgit2_sys::git_strarray {
        strings: pointers.as_ptr() as *mut *mut std::os::raw::c_char,
        count: pointers.len(),
    };
    let raw_callbacks = callbacks.raw();
    let proxy = ProxyOptions::new();
    let raw_proxy = proxy.raw();
    // SAFETY: every pointer passed lives until the call returns (libgit2 copies the
    // headers and the callback table); the callbacks' payload points at `callbacks`, which
    // the caller keeps alive until it disconnects.
    let code = unsafe {
        libgit2_sys::git_remote_connect(
            remote.raw(),
            libgit2_sys::GIT_DIRECTION_FETCH,
            &raw_callbacks,
            &raw_proxy,
            &array,
        )
    };
    if code < 0 {
        return Err(git2::Error::last_error(code));
    }
    Ok(())
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
    let verifier = credentials.tls_verifier()?;
    let callbacks = Box::new(callbacks(url, credentials, verifier, &refusal));
    connect(&mut remote, &callbacks, &credentials.headers())
        .map_err(|e| classify(url, e, &refusal, credentials))?;
    let wanted = ref_name(git_ref);
    let peeled = format!("{wanted}^{{}}");
    let heads = remote
        .list()
        .map_err(|e| classify(url, e, &refusal, credentials));
    let mut found = None;
    let mut listed = Vec::new();
    for head in heads? {
        listed.push((head.name().to_string(), head.oid()));
    }
    let _ = remote.disconnect();
    drop(callbacks);
    for (name, oid) in listed {
        if name == peeled {
            return Ok(oid);
        }
        if name == wanted {
            found = Some(oid);
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
    let verifier = credentials.tls_verifier()?;
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(url, credentials, verifier, &refusal));
    options.download_tags(git2::AutotagOption::None);
    let headers = credentials.headers();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    options.custom_headers(&headers);
    remote
        .fetch(&[format!("+{wanted}:{local}")], Some(&mut options), None)
        .map_err(|e| classify(url, e, &refusal, credentials))?;
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
    fn a_bad_ca_bundle_names_the_secret_and_key_and_secrets_stay_redacted() {
        let credentials = GitCredentials {
            secret: Some("acme/repo".into()),
            ca: Some("not a certificate".into()),
            bearer_token: Some("t0ken".into()),
            password: Some("pw".into()),
            ..GitCredentials::default()
        };
        let error = credentials.tls_verifier().unwrap_err().to_string();
        assert!(
            error.contains("Secret acme/repo: key \"ca.crt\" holds no PEM certificate"),
            "{error}"
        );
        let debug = format!("{credentials:?}");
        assert!(
            !debug.contains("t0ken") && !debug.contains("pw\""),
            "{debug}"
        );
        assert_eq!(credentials.headers(), ["Authorization: Bearer t0ken"]);
        assert!(GitCredentials::default().tls_verifier().unwrap().is_none());
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
