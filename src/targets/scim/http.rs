//! The HTTP side of the SCIM connector: one reqwest client (rustls with ring, the system's
//! roots plus an optional CA from the Secret), authentication, and the retry policy:
//! `429` waits for `Retry-After`, connection failures, timeouts and `500/502/503/504` are
//! retried with a bounded exponential backoff, and every other status is answered at once
//! (a `4xx` fails the same way again). A `POST` (creating a user or group, a Bulk request)
//! is not idempotent: it is retried only when it cannot have been carried out (the
//! connection was never made, `429`, `503` with `Retry-After`); after a timeout, a lost
//! connection or another server error it fails as transient, and the next sync observes
//! before it decides again.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::types::ErrorBody;
use crate::targets::{TargetConfig, TargetError};

/// Tries per request (the first plus retries).
const ATTEMPTS: u32 = 4;
/// First backoff; doubled per retry, with jitter.
const BACKOFF: Duration = Duration::from_millis(200);
/// The longest `Retry-After` waited for; a longer one fails the request as transient.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Secret key of the CA bundle trusted for HTTPS.
pub const CA_KEY: &str = "ca.crt";

/// How requests authenticate. `Debug` never prints the secret.
#[derive(Clone)]
enum Auth {
    Bearer(String),
    Basic(String, String),
}

/// An answer from the server (after retries).
#[derive(Debug)]
pub struct Reply {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub etag: Option<String>,
    /// The server's `Retry-After` hint, when it sent one.
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The body as `T`, or a permanent error that names the request.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, TargetError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            TargetError::Permanent(format!(
                "{} {}: HTTP {} with a body that is not the expected SCIM JSON ({e}): {}",
                self.method,
                self.path,
                self.status.as_u16(),
                excerpt(&self.body)
            ))
        })
    }

    /// The SCIM error body, when there is one.
    pub fn scim_error(&self) -> ErrorBody {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// The `scimType` of an error answer.
    pub fn scim_type(&self) -> Option<String> {
        self.scim_error().scim_type
    }

    /// This (failed) answer as a classified error (see [`classify_status`]), with the
    /// server's `scimType` and detail in the message.
    pub fn error(&self) -> TargetError {
        let error = self.scim_error();
        let detail = match (&error.scim_type, &error.detail) {
            (Some(t), Some(d)) => format!("{t}: {d}"),
            (None, Some(d)) => d.clone(),
            (Some(t), None) => t.clone(),
            (None, None) => excerpt(&self.body),
        };
        let what = format!("{} {}", self.method, self.path);
        classify_status(self.status.as_u16(), self.retry_after, &what, &detail)
    }

    /// The id at the end of a `Location` style URL.
    pub fn id_from_location(location: &str) -> Option<String> {
        let path = location.split(['?', '#']).next().unwrap_or_default();
        path.trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .map(percent_decode)
    }
}

/// A failed SCIM answer classified by what it means for the controller:
///
/// | status | class |
/// |---|---|
/// | 401 | `Config`: the credentials Secret's token (or username and password) is wrong |
/// | 429, 503, 409 with `Retry-After` | `RetryAfter`: not before the server's time |
/// | 408, 412, 425, 429, 500, 502, 503, 504, other 5xx but 501 | `Transient` |
/// | 400, 403, 404, 405, 409 without `Retry-After`, 501, other 4xx | `Permanent`: the same request fails the same way until someone changes something |
///
/// `what` names the request, `detail` carries the server's `scimType` and detail.
pub fn classify_status(
    status: u16,
    retry_after: Option<Duration>,
    what: &str,
    detail: &str,
) -> TargetError {
    let what = format!("{what}: HTTP {status}");
    let message = match status {
        401 => format!(
            "{what}: the server rejected the credentials; check the token (or username and password) in the credentials Secret ({detail})"
        ),
        403 => format!(
            "{what}: permission denied; give the service account the right to this request ({detail})"
        ),
        405 | 501 => format!("{what}: the server does not support this request ({detail})"),
        409 => format!("{what}: conflict with the server's state ({detail})"),
        _ => format!("{what}: {detail}"),
    };
    match (status, retry_after) {
        (401, _) => TargetError::Config(message),
        (409 | 429 | 503, Some(wait)) => TargetError::RetryAfter(message, wait),
        (501, _) => TargetError::Permanent(message),
        (408 | 412 | 425 | 429 | 500..=599, _) => TargetError::Transient(message),
        _ => TargetError::Permanent(message),
    }
}

/// Up to 300 printable characters of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if text.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        text.trim().to_string()
    }
}

/// The HTTP client of one SCIM target.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    base: Url,
    auth: Auth,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl Http {
    /// Builds the client from `spec.scim` and the credentials Secret.
    pub fn new(config: &TargetConfig) -> Result<Self, TargetError> {
        let scim = config.block(&config.spec.scim, "scim")?;
        let bad_url = |why: &str| {
            TargetError::Config(format!(
                "TargetSystem {}/{}: spec.scim.url {:?} {why}",
                config.namespace,
                config.name,
                redact_userinfo(&scim.url)
            ))
        };
        let mut base =
            Url::parse(scim.url.trim()).map_err(|e| bad_url(&format!("is not a URL ({e})")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad_url("must start with https:// (or http://)"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad_url(
                "must not carry credentials; put them in the credentials Secret",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad_url("must not have a query or a fragment"));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let creds = &config.credentials;
        let auth = match scim.auth {
            crate::api::ScimAuth::Bearer => {
                Auth::Bearer(creds.required("token")?.trim().to_string())
            }
            crate::api::ScimAuth::Basic => Auth::Basic(
                creds.required("username")?.to_string(),
                creds.required("password")?.to_string(),
            ),
        };
        let tls = tls_config(base.scheme() == "https", creds.bytes(CA_KEY), &creds.secret)?;
        let timeout = Duration::from_secs(u64::from(scim.timeout_seconds.unwrap_or(30).max(1)));
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TargetError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client, base, auth })
    }

    /// Sends one request with the retry policy. `path` is relative to the base URL
    /// (`Users`, `Groups/123`); `query` pairs are encoded here.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, TargetError> {
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| TargetError::Permanent(format!("cannot build a URL for {path:?}: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let shown = path.to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .header("Accept", "application/scim+json, application/json");
            request = match &self.auth {
                Auth::Bearer(token) => request.bearer_auth(token),
                Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
            };
            if let Some(etag) = if_match {
                request = request.header("If-Match", etag);
            }
            if let Some(body) = &body {
                request = request
                    .header("Content-Type", "application/scim+json")
                    .body(body.clone());
            }
            let wait = match request.send().await {
                Err(error) if tls_refused(&error) => {
                    return Err(TargetError::Config(format!(
                        "{method} {shown}: the TLS handshake with {} failed ({}); if the server's certificate comes from a private CA, put that CA's PEM certificate under key {CA_KEY:?} of the credentials Secret",
                        self.host(),
                        error_chain(&error)
                    )));
                }
                Err(error) => {
                    let (what, failure) = if error.is_timeout() {
                        ("timed out".to_string(), Failure::Lost)
                    } else if error.is_connect() {
                        (
                            format!("cannot connect to {}", self.host()),
                            Failure::Connect,
                        )
                    } else {
                        ("request failed".to_string(), Failure::Lost)
                    };
                    if !may_retry(&method, &failure) {
                        return Err(TargetError::Transient(format!(
                            "{method} {shown}: {what} ({}); not retried, since the server may have carried it out: the next sync looks first",
                            error_chain(&error)
                        )));
                    }
                    if attempt >= ATTEMPTS {
                        return Err(TargetError::Transient(format!(
                            "{method} {shown}: {what} after {attempt} tries ({})",
                            error_chain(&error)
                        )));
                    }
                    backoff(attempt)
                }
                Ok(response) => {
                    let status = response.status();
                    let etag = response
                        .headers()
                        .get("ETag")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let retry_after = response
                        .headers()
                        .get("Retry-After")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let retryable = may_retry(
                        &method,
                        &Failure::Status(status.as_u16(), retry_after.is_some()),
                    );
                    let body = match response.bytes().await {
                        Ok(b) => b.to_vec(),
                        Err(e) if attempt < ATTEMPTS && may_retry(&method, &Failure::Lost) => {
                            tracing::debug!(%method, path = %shown, error = %e.without_url(), "reading the body failed; retrying");
                            tokio::time::sleep(backoff(attempt)).await;
                            continue;
                        }
                        Err(e) => {
                            return Err(TargetError::Transient(format!(
                                "{method} {shown}: the answer broke off ({})",
                                e.without_url()
                            )));
                        }
                    };
                    let reply = Reply {
                        method: method.clone(),
                        path: shown.clone(),
                        status,
                        etag,
                        retry_after,
                        body,
                    };
                    if !retryable
                        && matches!(status.as_u16(), 500 | 502 | 503 | 504)
                        && method == Method::POST
                    {
                        // The server may have done it before failing to answer.
                        let error = reply.error();
                        let message = error.message();
                        return Err(TargetError::Transient(format!(
                            "{message}; not retried, since the server may have carried it out: the next sync looks first"
                        )));
                    }
                    if !retryable || attempt >= ATTEMPTS {
                        return Ok(reply);
                    }
                    match retry_after {
                        Some(wait) if wait > MAX_RETRY_AFTER => return Ok(reply),
                        Some(wait) => wait,
                        None => backoff(attempt),
                    }
                }
            };
            tracing::debug!(%method, path = %shown, attempt, ?wait, "retrying a SCIM request");
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends and demands a success.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, TargetError> {
        let reply = self.send(method, path, query, body, if_match).await?;
        if reply.ok() {
            Ok(reply)
        } else {
            Err(reply.error())
        }
    }

    fn host(&self) -> String {
        match (self.base.host_str(), self.base.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => self.base.to_string(),
        }
    }
}

/// How one try of a request failed.
#[derive(Debug)]
enum Failure {
    /// No connection was made: the request never reached the server.
    Connect,
    /// Timed out, the connection broke, or the answer broke off: the server may have
    /// carried the request out.
    Lost,
    /// An answer with this status, with or without `Retry-After`.
    Status(u16, bool),
}

/// Whether a failed try may be sent again. Idempotent methods are retried after any
/// transient failure; `POST` only when the server cannot have carried it out.
fn may_retry(method: &Method, failure: &Failure) -> bool {
    let idempotent = *method != Method::POST;
    match failure {
        Failure::Connect => true,
        Failure::Lost => idempotent,
        Failure::Status(429, _) => true,
        Failure::Status(503, retry_after) => idempotent || *retry_after,
        Failure::Status(500 | 502 | 504, _) => idempotent,
        Failure::Status(..) => false,
    }
}

/// `kind/id` relative to the SCIM root, with the id (chosen by the server) percent-encoded
/// as one path segment: an id like `../Groups/x` or `a?b` names no other resource.
pub fn resource_path(kind: &str, id: &str) -> Result<String, TargetError> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(TargetError::Permanent(format!(
            "the server gave a {kind} resource the id {id:?}, which cannot be used in a URL path"
        )));
    }
    let mut out = format!("{kind}/");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// Decodes `%XX` escapes (a segment of a `Location`); invalid escapes stay as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL (or what was meant as one) with any `user:password@` replaced by `***@`.
pub fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(n) => url.split_at(n + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// The messages of an error and its sources, joined.
fn error_chain(error: &reqwest::Error) -> String {
    let mut parts = vec!["error sending the request".to_string()];
    let mut next = std::error::Error::source(error);
    while let Some(e) = next {
        parts.push(e.to_string());
        next = e.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// Whether a request failed because the server's certificate was refused (retrying cannot
/// help: the CA bundle must change).
fn tls_refused(error: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        next = e.source();
    }
    // Some layers wrap the rustls error so that only its message is left.
    let chain = error_chain(error);
    chain.contains("invalid peer certificate") || chain.contains("no certificates presented")
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = at.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(8));
    // Jitter of up to a quarter, from the clock: no random number generator needed.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// rustls with ring: the system's roots for HTTPS, plus every certificate of `ca.crt`.
fn tls_config(
    https: bool,
    ca: Option<&[u8]>,
    secret: &str,
) -> Result<rustls::ClientConfig, TargetError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if https {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    if let Some(pem) = ca {
        let bad = |why: String| {
            TargetError::Config(format!(
                "Secret {secret}: key {CA_KEY:?} is not a usable PEM CA bundle: {why}"
            ))
        };
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("it holds no CERTIFICATE block".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TargetError::Config(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_ids_come_from_locations() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            Reply::id_from_location("https://x/t/v2/Users/abc123").as_deref(),
            Some("abc123")
        );
        assert_eq!(Reply::id_from_location("").as_deref(), None);
    }

    #[test]
    fn post_is_retried_only_when_the_server_cannot_have_carried_it_out() {
        use Failure::*;
        for method in [Method::GET, Method::PUT, Method::PATCH, Method::DELETE] {
            for failure in [
                Connect,
                Lost,
                Status(429, false),
                Status(500, false),
                Status(502, false),
                Status(503, false),
                Status(504, false),
            ] {
                assert!(may_retry(&method, &failure), "{method} {failure:?}");
            }
            assert!(!may_retry(&method, &Status(400, false)), "{method}");
            assert!(!may_retry(&method, &Status(409, true)), "{method}");
        }
        let post = Method::POST;
        for failure in [
            Connect,
            Status(429, false),
            Status(429, true),
            Status(503, true),
        ] {
            assert!(may_retry(&post, &failure), "POST {failure:?}");
        }
        for failure in [
            Lost,
            Status(500, false),
            Status(502, true),
            Status(503, false),
            Status(504, false),
            Status(409, false),
        ] {
            assert!(!may_retry(&post, &failure), "POST {failure:?}");
        }
    }

    #[test]
    fn server_ids_are_one_escaped_path_segment() {
        let base = Url::parse("https://x.example/t/v2/").unwrap();
        let join = |id: &str| {
            base.join(&resource_path("Users", id).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(
            join("abc-123_x.y~z"),
            "https://x.example/t/v2/Users/abc-123_x.y~z"
        );
        assert_eq!(
            join("../Groups/x"),
            "https://x.example/t/v2/Users/..%2FGroups%2Fx"
        );
        assert_eq!(join("a?b#c"), "https://x.example/t/v2/Users/a%3Fb%23c");
        assert_eq!(join("%2e%2e"), "https://x.example/t/v2/Users/%252e%252e");
        assert_eq!(join("ü 1"), "https://x.example/t/v2/Users/%C3%BC%201");
        for bad in ["", ".", ".."] {
            assert!(
                matches!(resource_path("Groups", bad), Err(TargetError::Permanent(_))),
                "{bad:?}"
            );
        }
        // An id read back from a Location is decoded, so it is not encoded twice.
        assert_eq!(
            Reply::id_from_location("https://x/t/v2/Users/a%3Fb%2Fc").as_deref(),
            Some("a?b/c")
        );
        assert_eq!(
            Reply::id_from_location("https://x/t/v2/Users/100%").as_deref(),
            Some("100%")
        );
    }

    #[test]
    fn urls_in_messages_never_show_userinfo() {
        assert_eq!(
            redact_userinfo("https://admin:hunter2@scim.example/v2"),
            "https://***@scim.example/v2"
        );
        assert_eq!(
            redact_userinfo("https://a:b@c@scim.example:8443/v2?x=@"),
            "https://***@scim.example:8443/v2?x=@"
        );
        assert_eq!(
            redact_userinfo("https://scim.example/v2/a@b"),
            "https://scim.example/v2/a@b"
        );
        assert_eq!(redact_userinfo("admin:pw@host"), "***@host");

        let config = |url: &str| TargetConfig {
            namespace: "acme".into(),
            name: "saas".into(),
            spec: serde_yaml::from_str(&format!("{{type: SCIM, scim: {{url: {url:?}}}}}")).unwrap(),
            credentials: crate::targets::Credentials::new(
                "saas-scim",
                [("token".to_string(), b"t".to_vec())].into(),
            ),
        };
        for url in [
            "https://admin:hunter2@scim.example/v2",
            "https://admin:hunter2@scim.example:99999/v2",
            "ftp://admin:hunter2@scim.example/v2",
        ] {
            let error = Http::new(&config(url)).unwrap_err();
            assert!(
                matches!(&error, TargetError::Config(m) if m.contains("spec.scim.url") && m.contains("***@scim.example") && !m.contains("hunter2") && !m.contains("admin")),
                "{error:?}"
            );
        }
        assert!(Http::new(&config("https://scim.example/v2")).is_ok());
    }

    #[test]
    fn statuses_are_classified_by_meaning() {
        use TargetError::*;
        let wait = Some(Duration::from_secs(7));
        // (status, Retry-After, expected class)
        type Expect = fn(&TargetError) -> bool;
        let table: &[(u16, Option<Duration>, Expect)] = &[
            (400, None, |e| matches!(e, Permanent(_))),
            (
                401,
                None,
                |e| matches!(e, Config(m) if m.contains("credentials Secret")),
            ),
            (
                403,
                None,
                |e| matches!(e, Permanent(m) if m.contains("permission denied")),
            ),
            (404, None, |e| matches!(e, Permanent(_))),
            (
                405,
                None,
                |e| matches!(e, Permanent(m) if m.contains("does not support")),
            ),
            (
                409,
                None,
                |e| matches!(e, Permanent(m) if m.contains("conflict")),
            ),
            (
                409,
                wait,
                |e| matches!(e, RetryAfter(_, d) if d.as_secs() == 7),
            ),
            (408, None, |e| matches!(e, Transient(_))),
            (412, None, |e| matches!(e, Transient(_))),
            (422, None, |e| matches!(e, Permanent(_))),
            (429, None, |e| matches!(e, Transient(_))),
            (
                429,
                wait,
                |e| matches!(e, RetryAfter(_, d) if d.as_secs() == 7),
            ),
            (500, None, |e| matches!(e, Transient(_))),
            (
                501,
                None,
                |e| matches!(e, Permanent(m) if m.contains("does not support")),
            ),
            (501, wait, |e| matches!(e, Permanent(_))),
            (502, None, |e| matches!(e, Transient(_))),
            (503, None, |e| matches!(e, Transient(_))),
            (503, wait, |e| matches!(e, RetryAfter(..))),
            (504, None, |e| matches!(e, Transient(_))),
        ];
        for (status, retry_after, expected) in table {
            let e = classify_status(*status, *retry_after, "PATCH Groups/1", "noTarget: gone");
            assert!(expected(&e), "{status} {retry_after:?}: {e:?}");
            assert!(
                e.message().contains("PATCH Groups/1: HTTP")
                    && e.message().contains("noTarget: gone"),
                "{e:?}"
            );
        }

        let reply = |code: u16, body: &str| Reply {
            method: Method::PATCH,
            path: "Groups/1".into(),
            status: StatusCode::from_u16(code).unwrap(),
            etag: None,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        };
        let e = reply(
            400,
            r#"{"status": "400", "scimType": "invalidValue", "detail": "bad"}"#,
        )
        .error();
        assert!(matches!(&e, TargetError::Permanent(m) if m.contains("invalidValue: bad")));
        assert!(
            reply(503, "<html>down</html>")
                .error()
                .message()
                .contains("<html>down</html>")
        );
        let e = reply(200, "{not json")
            .json::<serde_json::Value>()
            .unwrap_err();
        assert!(
            matches!(&e, TargetError::Permanent(m) if m.contains("not the expected SCIM JSON"))
        );
    }
}
