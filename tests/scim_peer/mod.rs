//! The real SCIM peer for tests and the benchmark: python-scim's scim2-server, installed by
//! `scripts/install-scim.sh` and started by `scripts/start-scim.sh` on a free loopback port,
//! once per test binary (and once more with a minimal service provider configuration), and
//! stopped by PID when the binary exits. Each test uses its own tenant, `/<tenant>/v2`.

#![allow(dead_code)] // the tests and the benchmark use different parts

#[path = "../peer_script.rs"]
mod peer_script;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use gatehouse::api::TargetSystemSpec;
use gatehouse::targets::{Credentials, TargetConfig};

/// One running scim2-server.
pub struct Peer {
    /// `http://127.0.0.1:PORT`, without a tenant.
    pub base: String,
    /// The bearer token it accepts.
    pub token: String,
    /// Its directory (log in `scim.log`).
    pub dir: PathBuf,
    /// Whether `/<tenant>/v2` prefixes are separate stores (scim2-server); else `base` is
    /// the SCIM root and every test shares the one store (django-scim2).
    pub tenants: bool,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn start(name: &str, spc: Option<&str>) -> Peer {
    let dir = std::env::temp_dir().join(format!("gatehouse-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let name = "start-scim.sh";
    let file = dir.join("service-provider-config.json");
    if let Some(spc) = spc {
        std::fs::write(&file, spc).expect("write the service provider config");
    }
    let args: Vec<&std::ffi::OsStr> = spc.map(|_| file.as_os_str()).into_iter().collect();
    let vars = peer_script::run(name, &dir, &args, "see stderr above");
    peer_script::stop_at_exit(name, &dir);
    let get = |k: &str| peer_script::var(&vars, name, k.trim_end_matches('='));
    Peer {
        base: get("SCIM_BASE="),
        token: get("SCIM_TOKEN="),
        dir,
        tenants: true,
    }
}

/// The second real server: django-scim2 (`scripts/start-django-scim.sh`), whose SCIM root
/// is `base`. It has no tenants: tests on it use their own names.
pub fn django_peer() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        let name = "start-django-scim.sh";
        let dir =
            std::env::temp_dir().join(format!("gatehouse-django-scim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let vars = peer_script::run(name, &dir, &[], "see stderr above");
        peer_script::stop_at_exit(name, &dir);
        let get = |k: &str| peer_script::var(&vars, name, k);
        Peer {
            base: get("DJANGO_SCIM_BASE"),
            token: get("DJANGO_SCIM_TOKEN"),
            dir,
            tenants: false,
        }
    })
}

/// The server with every feature on (PATCH, Bulk, filters, ETags, sorting).
pub fn peer() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| start("scim", None))
}

/// A server that announces (and allows) neither PATCH, Bulk, filtering nor ETags.
pub fn minimal_peer() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        start(
            "scim-minimal",
            Some(
                r#"{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
                   "patch": {"supported": false},
                   "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
                   "filter": {"supported": false, "maxResults": 50},
                   "changePassword": {"supported": false},
                   "sort": {"supported": false},
                   "etag": {"supported": false}}"#,
            ),
        )
    })
}

impl Peer {
    /// A fresh tenant name.
    pub fn tenant(&self, prefix: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!("{prefix}{}", NEXT.fetch_add(1, Ordering::SeqCst))
    }

    /// The SCIM root of a tenant.
    pub fn url(&self, tenant: &str) -> String {
        if self.tenants {
            format!("{}/{tenant}/v2", self.base)
        } else {
            self.base.clone()
        }
    }

    /// A connector configuration for target `target` of namespace `ns` on `tenant`;
    /// `extra` is more of `spec.scim` as YAML flow entries (`bulk: false`).
    pub fn config(
        &self,
        ns: &str,
        target: &str,
        tenant: &str,
        extra: &str,
        on_leave: &str,
    ) -> TargetConfig {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        };
        let spec: TargetSystemSpec = serde_yaml::from_str(&format!(
            "{{type: SCIM, onLeave: {on_leave}, scim: {{url: \"{}\"{extra}}}, credentialsSecretRef: {{name: scim-token}}}}",
            self.url(tenant)
        ))
        .expect("spec parses");
        TargetConfig {
            namespace: ns.to_string(),
            name: target.to_string(),
            spec,
            credentials: Credentials::new(
                "scim-token",
                BTreeMap::from([("token".to_string(), self.token.clone().into_bytes())]),
            ),
        }
    }

    /// The server's request log so far.
    pub fn log(&self) -> String {
        let file = if self.tenants {
            "scim.log"
        } else {
            "django-scim.log"
        };
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }
}

/// A plain client for checking and editing the server's state behind the connector's back.
pub struct Raw {
    client: reqwest::Client,
    root: String,
    token: String,
}

impl Raw {
    pub fn new(peer: &Peer, tenant: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .use_preconfigured_tls(
                    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                )
                .build()
                .unwrap(),
            root: peer.url(tenant),
            token: peer.token.clone(),
        }
    }

    /// Sends a request; returns the status, the ETag and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        if_match: Option<&str>,
    ) -> (u16, Option<String>, serde_json::Value) {
        let mut request = self
            .client
            .request(method, format!("{}/{path}", self.root))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/scim+json")
                .body(body.to_string());
        }
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        let response = request.send().await.expect("the SCIM server answers");
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("ETag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response.bytes().await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, etag, json)
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        let (status, _, json) = self.call(reqwest::Method::GET, path, None, None).await;
        assert!(status < 300, "GET {path}: {status} {json}");
        json
    }

    /// Every resource of a kind (one big page).
    pub async fn all(&self, resource: &str) -> Vec<serde_json::Value> {
        let json = self.get(&format!("{resource}?count=100000")).await;
        json["Resources"].as_array().cloned().unwrap_or_default()
    }

    /// The user with this userName.
    pub async fn user(&self, user_name: &str) -> Option<serde_json::Value> {
        self.all("Users")
            .await
            .into_iter()
            .find(|u| u["userName"].as_str() == Some(user_name))
    }

    /// The group with this displayName.
    pub async fn group(&self, name: &str) -> Option<serde_json::Value> {
        self.all("Groups")
            .await
            .into_iter()
            .find(|g| g["displayName"].as_str() == Some(name))
    }

    /// The userNames of a group's members that are existing users, sorted.
    pub async fn members(&self, group: &str) -> Vec<String> {
        let users = self.all("Users").await;
        let Some(g) = self.group(group).await else {
            return Vec::new();
        };
        let mut names: Vec<String> = g["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|m| {
                let id = m["value"].as_str()?;
                users
                    .iter()
                    .find(|u| u["id"].as_str() == Some(id))
                    .and_then(|u| u["userName"].as_str())
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    /// Creates a user by hand; returns its id.
    pub async fn create_user(&self, user_name: &str, external_id: Option<&str>) -> String {
        let mut body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
        });
        if let Some(e) = external_id {
            body["externalId"] = e.into();
        }
        let (status, _, json) = self
            .call(reqwest::Method::POST, "Users", Some(body), None)
            .await;
        assert_eq!(status, 201, "{json}");
        json["id"].as_str().unwrap().to_string()
    }

    /// Creates a group by hand; returns its id.
    pub async fn create_group(&self, name: &str) -> String {
        let body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
        });
        let (status, _, json) = self
            .call(reqwest::Method::POST, "Groups", Some(body), None)
            .await;
        assert_eq!(status, 201, "{json}");
        json["id"].as_str().unwrap().to_string()
    }

    /// Adds (or removes) a member by hand.
    pub async fn membership(&self, group_id: &str, user_id: &str, add: bool) {
        let op = if add {
            serde_json::json!({"op": "add", "path": "members", "value": [{"value": user_id}]})
        } else {
            serde_json::json!({"op": "remove", "path": format!("members[value eq \"{user_id}\"]")})
        };
        let body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [op],
        });
        let (status, _, json) = self
            .call(
                reqwest::Method::PATCH,
                &format!("Groups/{group_id}"),
                Some(body),
                None,
            )
            .await;
        assert!(status < 300, "{status} {json}");
    }
}

/// The HTTPS fault-injecting front of [`peer`] (`tests/scim_peer/fault_proxy.py`).
pub struct Proxy {
    /// `https://127.0.0.1:PORT`.
    pub base: String,
    /// The PEM of the CA that signed its certificate.
    pub ca: Vec<u8>,
    /// Its directory; `proxy.log` has one line per request with the status answered.
    pub dir: PathBuf,
    /// The server behind it.
    pub upstream: &'static Peer,
}

pub fn proxy() -> &'static Proxy {
    static PROXY: OnceLock<Proxy> = OnceLock::new();
    PROXY.get_or_init(|| start_proxy(peer(), "scim-proxy", ""))
}

/// The front of [`django_peer`] with `faults` (fault_proxy.py's words) on every request.
pub fn django_proxy(faults: &'static str) -> Proxy {
    start_proxy(django_peer(), &format!("django-proxy-{faults}"), faults)
}

fn start_proxy(upstream: &'static Peer, name: &str, faults: &str) -> Proxy {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("gatehouse-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let log = std::fs::File::create(dir.join("proxy.log")).expect("log file");
    let mut child = Command::new("python3")
        .arg(repo().join("tests/scim_peer/fault_proxy.py"))
        .arg(&dir)
        .arg(&upstream.base)
        .arg(faults)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("python3 runs the fault proxy");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut get = |key: &str| {
        let line = lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("the fault proxy did not start; see {}", dir.display()));
        line.strip_prefix(key)
            .unwrap_or_else(|| panic!("expected {key}, got {line}"))
            .to_string()
    };
    let port = get("PORT=");
    let ca = std::fs::read(get("CA=")).expect("CA file");
    let watcher = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill {child}; rm -rf '{dir}'",
        pid = std::process::id(),
        child = child.id(),
        dir = dir.display()
    );
    #[allow(clippy::zombie_processes)]
    let _watcher = Command::new("bash")
        .args(["-c", &watcher])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the cleanup watcher starts");
    // The proxy runs until the watcher stops it; its handle is dropped on purpose.
    std::mem::forget(child);
    Proxy {
        base: format!("https://127.0.0.1:{port}"),
        ca,
        dir,
        upstream,
    }
}

impl Proxy {
    /// The request lines it logged for `tenant` with the status it answered, e.g.
    /// `PATCH /t/v2/Groups/1 HTTP/1.1" 501`.
    pub fn requests(&self, tenant: &str) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default();
        let needle = format!(" /{tenant}/");
        log.lines()
            .filter(|l| l.contains(&needle))
            .map(|l| l.trim_start_matches('"').trim_end_matches(" -").to_string())
            .collect()
    }

    /// A configuration reaching `tenant` through the proxy, trusting its CA.
    pub fn config(&self, ns: &str, tenant: &str, extra: &str) -> TargetConfig {
        let upstream = self.upstream;
        let mut config = upstream.config(ns, "saas", tenant, extra, "Disable");
        config.spec.scim.as_mut().unwrap().url =
            format!("{}{}", self.base, url_path(&upstream.url(tenant)));
        config.credentials = Credentials::new(
            "scim-token",
            BTreeMap::from([
                ("token".to_string(), upstream.token.clone().into_bytes()),
                ("ca.crt".to_string(), self.ca.clone()),
            ]),
        );
        config
    }
}

/// The path of a URL (`/scim/v2` of `http://127.0.0.1:1/scim/v2`).
fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/')
        .map_or(String::new(), |i| rest[i..].to_string())
}
