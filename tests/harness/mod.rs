//! A real control plane for tests: etcd and kube-apiserver built from Go modules
//! (`scripts/build-control-plane.sh`) and started on loopback by
//! `scripts/start-control-plane.sh`, once per test binary, with the CRDs from `crds/`
//! installed and a fresh namespace per test.

#![allow(dead_code)] // each test binary uses its own part of the harness

#[path = "../peer_script.rs"]
mod peer_script;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

/// The running control plane of this test binary.
pub struct ControlPlane {
    /// Directory holding certificates, data and logs.
    pub dir: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Starts the control plane on first use; it is stopped when the test binary exits.
pub fn control_plane() -> &'static ControlPlane {
    static PLANE: OnceLock<ControlPlane> = OnceLock::new();
    PLANE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gatehouse-cp-{}", std::process::id()));
        let name = "start-control-plane.sh";
        let vars = peer_script::run(name, &dir, &[], "see stderr above");
        let kubeconfig = PathBuf::from(peer_script::var(&vars, name, "KUBECONFIG"));
        peer_script::stop_at_exit(name, &dir);
        ControlPlane { dir, kubeconfig }
    })
}

/// An admin client for the test control plane, with the gatehouse CRDs installed.
pub async fn client() -> Client {
    // `RUST_LOG=gatehouse=debug cargo test ...` shows the controller's logs.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let plane = control_plane();
    let kubeconfig = Kubeconfig::read_from(&plane.kubeconfig).expect("kubeconfig is readable");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid");
    let client = Client::try_from(config).expect("client builds");
    install_crds(&client).await;
    client
}

/// Applies every CRD in `crds/` (server-side apply, idempotent) and waits until each is
/// established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("gatehouse-tests").force();
    for (_, crd) in gatehouse::crds::all() {
        let name = crd.metadata.name.clone().expect("CRDs are named");
        let committed = std::fs::read_to_string(repo().join("crds").join(format!(
            "{}.yaml",
            crd.spec.names.singular.as_deref().unwrap_or_default()
        )))
        .expect("crds/ holds the CRD");
        let from_file: CustomResourceDefinition = serde_yaml::from_str(
            committed
                .trim_start_matches(|c| c != '-')
                .trim_start_matches("---\n"),
        )
        .expect("committed CRD parses");
        api.patch(&name, &params, &Patch::Apply(&from_file))
            .await
            .unwrap_or_else(|e| panic!("the API server refused CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not established within 30 s"))
        .expect("watching the CRD works");
    }
}

/// Creates a fresh namespace for one test.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
    name
}

/// Server-side applies one object from YAML into `ns` (as field manager `gatehouse-tests`)
/// and returns what the server stored.
pub async fn apply<K>(client: &Client, ns: &str, yaml: &str) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let mut value: serde_json::Value =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"));
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value["metadata"]["namespace"] = ns.into();
    let name = value["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
        .to_string();
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply("gatehouse-tests").force(),
            &Patch::Apply(&value),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {ns}/{name}: {e}", K::kind(&())))
}

/// Polls `probe` every 200 ms until it returns `Ok`, failing the test with the last
/// `Err` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The condition of `type_` in a status's conditions, as (status, reason, message).
pub fn condition(
    conditions: &[gatehouse::api::Condition],
    type_: &str,
) -> Option<(String, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the object's `type_` condition has `status`; returns (reason, message).
pub async fn wait_for_condition<K>(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    conditions: fn(&K) -> Vec<gatehouse::api::Condition>,
) -> (String, String)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    eventually(
        &format!("{} {ns}/{name} {type_}={status}", K::kind(&())),
        Duration::from_secs(30),
        || async {
            let object = api.get(name).await.map_err(|e| e.to_string())?;
            match condition(&conditions(&object), type_) {
                Some((s, reason, message)) if s == status => Ok((reason, message)),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// How many Identities in `api` have `Ready=True`.
pub async fn ready_identities(api: &Api<gatehouse::api::Identity>) -> Result<usize, String> {
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .iter()
        .filter(|i| {
            i.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count())
}

/// The value of the Prometheus series `series` (name and labels, exactly as exposed) on a
/// controller's `/metrics`; `None` while it does not answer.
pub async fn metric(address: std::net::SocketAddr, series: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Mutating requests (POST, PUT, PATCH, DELETE, server-side APPLY) the API server has served,
/// from its own `/metrics`, except on the `excluded` resources (e.g. `leases`).
pub async fn api_writes(client: &Client, excluded: &[&str]) -> u64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| {
            ["POST", "PUT", "PATCH", "DELETE", "APPLY"]
                .iter()
                .any(|v| l.contains(&format!("verb=\"{v}\"")))
        })
        .filter(|l| {
            !excluded
                .iter()
                .any(|r| l.contains(&format!("resource=\"{r}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Stores connector credentials as the Secret `name` of `ns`.
pub async fn secret(
    client: &Client,
    ns: &str,
    name: &str,
    credentials: &gatehouse::targets::Credentials,
    keys: &[&str],
) {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let data: std::collections::BTreeMap<String, ByteString> = keys
        .iter()
        .filter_map(|k| Some((k.to_string(), ByteString(credentials.bytes(k)?.to_vec()))))
        .collect();
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.into());
    secret.data = Some(data);
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("gatehouse-tests").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name},
                "data": secret.data,
            })),
        )
        .await
        .unwrap();
}

/// The address a `gatehouse run --listen 127.0.0.1:0` child reports it bound, read from its
/// log file (JSON or text format) as soon as it is written.
pub async fn served_address(log: &Path) -> std::net::SocketAddr {
    let found = |text: &str| {
        text.lines().find_map(|line| {
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
                let address = json.get("address").or(json["fields"].get("address"));
                return address?.as_str()?.parse().ok();
            }
            let (_, rest) = line.split_once("address=")?;
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    eventually(
        "the served address in the log",
        Duration::from_secs(30),
        || async {
            found(&std::fs::read_to_string(log).unwrap_or_default())
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await
}
