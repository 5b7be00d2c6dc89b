//! The Helm chart against real tools: helm built from its Go module (`scripts/build-helm.sh`)
//! lints and renders it; the test harness's real kube-apiserver validates every rendered
//! object with a server-side dry run; and the controller runs a joiner → mover → leaver
//! scenario as a user bound only to the chart's roles, proving its RBAC is sufficient.

mod gitrepo;
mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use gatehouse::api::{AccessPolicy, Identity, PolicySource, TargetSystem};
use gatehouse::controller::{LeaderOptions, Options, run};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Discovery, Scope};
use kube::{Client, Config};
use serde_json::Value;

const RELEASE_NS: &str = "gatehouse-system";
const TENANT: &str = "chart-tenant";
/// A second tenant, whose objects come from Git through a PolicySource.
const SOURCE_TENANT: &str = "chart-source";
const USER: &str = "gatehouse-e2e";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/gatehouse")
}

/// The helm binary, built once into the test cache by `scripts/build-helm.sh`.
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("scripts/build-helm.sh"))
            .arg("--print-paths")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("bash runs scripts/build-helm.sh");
        assert!(out.status.success(), "scripts/build-helm.sh failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout
            .lines()
            .find_map(|l| l.strip_prefix("HELM="))
            .expect("scripts/build-helm.sh prints HELM=");
        PathBuf::from(path)
    })
}

/// Runs helm; returns (success, stdout + stderr).
fn run_helm(args: &[&str]) -> (bool, String) {
    let out = Command::new(helm())
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("gatehouse-helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("gatehouse-helm/config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("gatehouse-helm/data"),
        )
        .output()
        .expect("helm runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A values file in a temporary directory.
fn values_file(body: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), body).unwrap();
    file
}

/// Values exercising every optional part of the chart.
const CUSTOM: &str = "
replicaCount: 3
image: {repository: registry.example/iam/gatehouse, tag: 0.1.0-rc1, pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
controller:
  resync: 10m
  watchNamespace: team-a
  leaderElection: {leaseName: gh-leader, leaseDuration: 30s}
  logFormat: text
  logLevel: info,gatehouse=debug
  sourceCache: {sizeLimit: 2Gi}
  extraArgs: [--instance=$(POD_NAME)]
  extraEnv: [{name: HTTPS_PROXY, value: 'http://proxy:3128'}]
rbac:
  bind:
    clusterRoles: {resourceNames: [view, edit]}
    roles: {enabled: false}
  tenantNamespaces: [team-a, team-b]
crds: {keep: false}
service: {annotations: {a: b}}
metrics: {serviceMonitor: {enabled: true, labels: {release: prometheus}}}
networkPolicy:
  enabled: true
  ingressFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
  egress: [{}]
podDisruptionBudget: {maxUnavailable: 50%}
resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: 2, memory: 1Gi}}
podAnnotations: {team: iam}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Exists}]
topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app.kubernetes.io/name: gatehouse}}}]
";

/// `helm template` of the chart; panics with helm's message when it fails.
fn template(extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "gatehouse",
        chart.to_str().unwrap(),
        "--namespace",
        RELEASE_NS,
    ];
    args.extend_from_slice(extra);
    let (ok, out) = run_helm(&args);
    assert!(ok, "helm template {extra:?} failed:\n{out}");
    serde_yaml::Deserializer::from_str(&out)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("helm renders YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

#[test]
fn lint_passes_with_default_and_custom_values() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let (ok, out) = run_helm(&["lint", "--strict", chart]);
    assert!(ok, "helm lint (default values) failed:\n{out}");
    let custom = values_file(CUSTOM);
    let (ok, out) = run_helm(&[
        "lint",
        "--strict",
        chart,
        "-f",
        custom.path().to_str().unwrap(),
    ]);
    assert!(ok, "helm lint (custom values) failed:\n{out}");
    let wide = ["--set", "rbac.secretsClusterWide=true,crds.install=false"];
    let (ok, out) = run_helm(&[&["lint", "--strict", chart][..], &wide].concat());
    assert!(ok, "helm lint (secretsClusterWide) failed:\n{out}");
}

#[test]
fn values_violating_the_schema_fail_lint_naming_the_value() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for (values, expected) in [
        // A typo in a key: rejected, not silently ignored.
        (
            "rbac: {secretsClusterwide: true}",
            "additional properties 'secretsClusterwide' not allowed",
        ),
        (
            "replicaCount: two",
            "at '/replicaCount': got string, want integer",
        ),
        (
            "controller: {resync: 5 minutes}",
            "at '/controller/resync': '5 minutes' does not match pattern",
        ),
        (
            "controller: {logFormat: yaml}",
            "at '/controller/logFormat': value must be one of 'json', 'text'",
        ),
        (
            "rbac: {tenantNamespaces: [Team_A]}",
            "at '/rbac/tenantNamespaces/0': 'Team_A' does not match pattern",
        ),
    ] {
        let file = values_file(values);
        let (ok, out) = run_helm(&["lint", chart, "-f", file.path().to_str().unwrap()]);
        assert!(!ok, "helm lint accepted {values}:\n{out}");
        assert!(
            out.contains("values don't meet the specifications of the schema"),
            "{values}: {out}"
        );
        assert!(
            out.contains(expected),
            "{values}: expected {expected:?} in:\n{out}"
        );
    }
}

#[test]
fn committed_chart_crds_and_manifests_match_the_sources() {
    // The chart's CRDs are the generated ones.
    let mut chart_crds = BTreeSet::new();
    for entry in std::fs::read_dir(chart().join("files/crds")).unwrap() {
        chart_crds.insert(entry.unwrap().file_name().to_string_lossy().to_string());
    }
    let mut crds = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("crds")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().to_string();
        let source = std::fs::read_to_string(repo().join("crds").join(&file)).unwrap();
        let copy =
            std::fs::read_to_string(chart().join("files/crds").join(&file)).unwrap_or_default();
        assert_eq!(
            copy, source,
            "charts/gatehouse/files/crds/{file} differs from crds/{file}: run `bash scripts/render-manifests.sh` and commit the result"
        );
        crds.insert(file);
    }
    assert_eq!(
        chart_crds, crds,
        "charts/gatehouse/files/crds/ holds other files than crds/: run `bash scripts/render-manifests.sh`"
    );

    // The plain install is the chart rendered with default values.
    let out = Command::new("bash")
        .arg(repo().join("scripts/render-manifests.sh"))
        .arg("--print")
        .env("HELM", helm())
        .output()
        .expect("bash runs scripts/render-manifests.sh");
    assert!(
        out.status.success(),
        "scripts/render-manifests.sh --print failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed =
        std::fs::read_to_string(repo().join("manifests/install.yaml")).unwrap_or_default();
    assert!(
        committed == String::from_utf8_lossy(&out.stdout),
        "manifests/install.yaml is stale: run `bash scripts/render-manifests.sh` and commit the result"
    );
    let kustomization =
        std::fs::read_to_string(repo().join("manifests/kustomization.yaml")).unwrap();
    assert!(kustomization.contains("- install.yaml"));
}

/// Every verb, resource and API group of a rendered role's rules.
fn rule_sets(role: &Value) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    role["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            )
        })
        .collect()
}

/// The roles bound cluster-wide that grant anything on Secrets.
fn secrets_cluster_wide(objects: &[Value]) -> Vec<String> {
    let cluster_bound: BTreeSet<&str> = objects
        .iter()
        .filter(|o| kind(o) == "ClusterRoleBinding")
        .filter_map(|o| o["roleRef"]["name"].as_str())
        .collect();
    objects
        .iter()
        .filter(|o| kind(o) == "ClusterRole" && cluster_bound.contains(name(o)))
        .filter(|o| {
            rule_sets(o).iter().any(|(groups, resources, _)| {
                groups.contains(&String::new()) && resources.iter().any(|r| r == "secrets")
            })
        })
        .map(|o| name(o).to_string())
        .collect()
}

#[test]
fn rendered_rbac_grants_no_wildcards_and_no_secrets_cluster_wide() {
    for values in [&[][..], &["--set", "rbac.tenantNamespaces={a,b}"][..]] {
        let objects = template(values);
        // The controller's roles; the break-glass group's role is checked below.
        let roles: Vec<&Value> = objects
            .iter()
            .filter(|o| matches!(kind(o), "ClusterRole" | "Role"))
            .filter(|o| !name(o).ends_with("-break-glass"))
            .collect();
        assert_eq!(
            roles.len(),
            3,
            "ClusterRole, tenant ClusterRole, leader-election Role"
        );
        for role in &roles {
            for (groups, resources, verbs) in rule_sets(role) {
                for word in groups.iter().chain(&resources).chain(&verbs) {
                    assert!(
                        !word.contains('*'),
                        "{} {}: wildcard {word:?}",
                        kind(role),
                        name(role)
                    );
                }
                assert!(!verbs.is_empty() && !resources.is_empty());
                // Nothing escalates or impersonates; `bind` only on roles.
                for verb in &verbs {
                    assert!(
                        !matches!(verb.as_str(), "escalate" | "impersonate"),
                        "{}: {verb}",
                        name(role)
                    );
                    if verb == "bind" {
                        assert!(
                            resources
                                .iter()
                                .all(|r| r == "clusterroles" || r == "roles")
                        );
                    }
                }
            }
        }
        assert_eq!(
            secrets_cluster_wide(&objects),
            Vec::<String>::new(),
            "no Secrets cluster-wide by default"
        );
        // Leases only in the release namespace, never through the ClusterRole.
        for role in &roles {
            let leases = rule_sets(role)
                .iter()
                .any(|(_, r, _)| r.contains(&"leases".to_string()));
            assert_eq!(leases, kind(role) == "Role", "{}", name(role));
        }
    }
    let tenants = template(&["--set", "rbac.tenantNamespaces={a,b}"]);
    let bound: Vec<&str> = tenants
        .iter()
        .filter(|o| kind(o) == "RoleBinding" && o["roleRef"]["name"] == "gatehouse-tenant")
        .filter_map(|o| o["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(bound, ["a", "b"], "one RoleBinding per tenant namespace");

    // Only the documented option binds Secrets cluster-wide.
    let wide = template(&["--set", "rbac.secretsClusterWide=true"]);
    assert_eq!(secrets_cluster_wide(&wide), ["gatehouse-tenant"]);

    // bind limited to names when asked.
    let limited = template(&["--set", "rbac.bind.clusterRoles.resourceNames={view,edit}"]);
    let role = limited
        .iter()
        .find(|o| kind(o) == "ClusterRole" && name(o) == "gatehouse")
        .unwrap();
    let bind = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verbs"][0] == "bind" && r["resources"][0] == "clusterroles")
        .unwrap();
    assert_eq!(bind["resourceNames"], serde_json::json!(["view", "edit"]));
}

#[test]
fn default_deployment_is_hardened() {
    let objects = template(&[]);
    let deployment = objects.iter().find(|o| kind(o) == "Deployment").unwrap();
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &spec["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for arg in [
        "run",
        "--leader-elect=true",
        "--listen=0.0.0.0:8080",
        "--source-cache-dir=/var/cache/gatehouse",
    ] {
        assert!(args.contains(&arg), "{arg} in {args:?}");
    }
    let env: Vec<(&str, &str)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert!(env.contains(&("POD_NAMESPACE", "metadata.namespace")));
    assert!(env.contains(&("POD_NAME", "metadata.name")));
    // Every gatehouse CRD, kept on uninstall by default.
    let crds: Vec<&Value> = objects
        .iter()
        .filter(|o| kind(o) == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), gatehouse::crds::all().len());
    for crd in crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    let without = template(&["--set", "crds.install=false"]);
    assert!(
        !without
            .iter()
            .any(|o| kind(o) == "CustomResourceDefinition")
    );
}

/// Creates a namespace unless it exists.
async fn ensure_namespace(client: &Client, name: &str) {
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("namespace {name}: {e}"),
    }
}

/// Server-side applies one rendered object (a dry run unless `for_real`), as resolved by
/// discovery; returns the API server's refusal.
async fn apply_object(
    client: &Client,
    discovery: &Discovery,
    object: &Value,
    for_real: bool,
) -> Result<(), String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind(object));
    let (resource, capabilities) = discovery
        .resolve_gvk(&gvk)
        .ok_or_else(|| format!("the API server does not serve {gvk:?}"))?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or(RELEASE_NS),
            &resource,
        ),
    };
    let mut params = PatchParams::apply("gatehouse-chart-test").force();
    params.dry_run = !for_real;
    api.patch(name(object), &params, &Patch::Apply(object))
        .await
        .map(drop)
        .map_err(|e| format!("{} {}: {e}", kind(object), name(object)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_object_passes_a_server_side_dry_run() {
    let client = harness::client().await;
    for ns in [RELEASE_NS, "team-a", "team-b"] {
        ensure_namespace(&client, ns).await;
    }
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    // The custom values without the ServiceMonitor: the harness has no prometheus-operator
    // CRDs (its ServiceMonitor is checked by `helm lint` and rendered above).
    let custom = values_file(CUSTOM);
    let renders = [
        template(&[]),
        template(&[
            "-f",
            custom.path().to_str().unwrap(),
            "--set",
            "metrics.serviceMonitor.enabled=false",
        ]),
        template(&[
            "--set",
            "rbac.secretsClusterWide=true,podDisruptionBudget.enabled=false",
        ]),
    ];
    let mut checked = BTreeSet::new();
    for objects in &renders {
        assert!(!objects.is_empty());
        for object in objects {
            apply_object(&client, &discovery, object, false)
                .await
                .unwrap_or_else(|e| panic!("the API server refused {e}"));
            checked.insert(kind(object).to_string());
        }
    }
    for expected in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(
            checked.contains(expected),
            "{expected} was rendered and checked: {checked:?}"
        );
    }
}

/// A client for `user`, with a client certificate signed by the harness CA.
async fn client_as(user: &str) -> Client {
    let plane = harness::control_plane();
    let pki = plane.dir.join("pki");
    let dir = tempfile::tempdir().unwrap().keep();
    let (key, csr, crt) = (
        dir.join("user.key"),
        dir.join("user.csr"),
        dir.join("user.crt"),
    );
    // A v3 client certificate, as rustls requires (the same extensions as the harness's admin).
    let ext = dir.join("client.ext");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req".as_ref(),
        "-newkey".as_ref(),
        "rsa:2048".as_ref(),
        "-nodes".as_ref(),
        "-subj".as_ref(),
        format!("/CN={user}").as_ref(),
        "-keyout".as_ref(),
        key.as_os_str(),
        "-out".as_ref(),
        csr.as_os_str(),
    ]);
    openssl(&[
        "x509".as_ref(),
        "-req".as_ref(),
        "-in".as_ref(),
        csr.as_os_str(),
        "-CA".as_ref(),
        pki.join("ca.crt").as_os_str(),
        "-CAkey".as_ref(),
        pki.join("ca.key").as_os_str(),
        "-CAcreateserial".as_ref(),
        "-CAserial".as_ref(),
        dir.join("ca.srl").as_os_str(),
        "-days".as_ref(),
        "1".as_ref(),
        "-out".as_ref(),
        crt.as_os_str(),
        "-extfile".as_ref(),
        ext.as_os_str(),
    ]);
    let admin = Kubeconfig::read_from(&plane.kubeconfig).unwrap();
    let server = admin.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: {user}}}\ncurrent-context: test\n",
            pki.join("ca.crt").display(),
            crt.display(),
            key.display()
        ),
    )
    .unwrap();
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// (role, kind/name of the subject) of every binding for the tenant's identities, sorted;
/// a Role as `namespace/name`.
async fn bound(client: &Client, ns: &str) -> Vec<(String, String)> {
    let list = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&ListParams::default().labels(&format!("gatehouse.dev/tenant={ns}")))
        .await
        .unwrap();
    let namespaced = Api::<RoleBinding>::all(client.clone())
        .list(&ListParams::default().labels(&format!("gatehouse.dev/tenant={ns}")))
        .await
        .unwrap();
    let mut out: Vec<(String, String)> = list
        .items
        .into_iter()
        .map(|b| (b.role_ref.name, b.subjects))
        .chain(namespaced.items.into_iter().map(|b| {
            let namespace = b.metadata.namespace.unwrap_or_default();
            (format!("{namespace}/{}", b.role_ref.name), b.subjects)
        }))
        .flat_map(|(role, subjects)| {
            subjects
                .unwrap_or_default()
                .into_iter()
                .map(move |s| (role.clone(), format!("{}/{}", s.kind, s.name)))
        })
        .collect();
    out.sort();
    out
}

fn pair(role: &str, subject: &str) -> (String, String) {
    (role.to_string(), subject.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_runs_the_lifecycle_with_only_the_charts_rbac() {
    let admin = harness::client().await;
    for ns in [RELEASE_NS, TENANT, SOURCE_TENANT, "not-a-tenant"] {
        ensure_namespace(&admin, ns).await;
    }
    let discovery = Discovery::new(admin.clone()).run().await.unwrap();
    // The chart's roles, bound to USER instead of the ServiceAccount.
    let tenants = format!("rbac.tenantNamespaces={{{TENANT},{SOURCE_TENANT}}}");
    let mut rbac = 0;
    for mut object in template(&["--set", &tenants]) {
        if name(&object).ends_with("-break-glass") {
            continue; // the break-glass group's role, not the controller's
        }
        match kind(&object) {
            "ClusterRole" | "Role" => {}
            "ClusterRoleBinding" | "RoleBinding" => {
                object["subjects"] = serde_json::json!([
                    {"kind": "User", "name": USER, "apiGroup": "rbac.authorization.k8s.io"}
                ]);
            }
            _ => continue,
        }
        apply_object(&admin, &discovery, &object, true)
            .await
            .unwrap_or_else(|e| panic!("applying the chart's RBAC: {e}"));
        rbac += 1;
    }
    assert_eq!(
        rbac, 7,
        "2 ClusterRoles and their ClusterRoleBinding, the leader-election Role and its RoleBinding, 2 tenant RoleBindings"
    );

    let user = client_as(USER).await;
    // Least privilege, seen from the user's side: no Secrets outside the tenant namespaces.
    let denied = Api::<Secret>::namespaced(user.clone(), "not-a-tenant")
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(&denied, Err(kube::Error::Api(e)) if e.code == 403),
        "Secrets outside the tenant namespaces are forbidden: {denied:?}"
    );

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cache = tempfile::tempdir().unwrap();
    let options = Options {
        resync: Duration::from_secs(60),
        leader: Some(LeaderOptions {
            lease: "gatehouse-controller".into(),
            namespace: RELEASE_NS.into(),
            identity: "e2e-replica".into(),
            duration: Duration::from_secs(15),
        }),
        instance: Some("e2e-replica".into()),
        source_cache_dir: cache.path().to_path_buf(),
        ..Options::default()
    };
    let health = options.health.clone();
    let metrics = options.metrics.clone();
    // /metrics, /readyz and the Git webhook receiver, with the same identity.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let routes = gatehouse::http::router(health.clone(), metrics.clone())
        .merge(gatehouse::http::hooks(user.clone()));
    tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
    let controller = tokio::spawn(run(user.clone(), options, async {
        let _ = stopped.await;
    }));

    let ns = TENANT;
    let post = PostParams::default();
    // Roles with rules of their own: the bootstrap `view` and `edit` are aggregated roles
    // whose rules only kube-controller-manager fills in (not running here), and binding an
    // empty role needs no `bind` permission. These make Kubernetes' escalation check apply.
    let roles = [
        ("ClusterRole", None, "chart-e2e-reader", "get"),
        ("ClusterRole", None, "chart-e2e-writer", "update"),
        ("Role", Some("apps"), "app-reader", "list"),
    ];
    ensure_namespace(&admin, "apps").await;
    for (kind, namespace, role, verb) in roles {
        let mut object = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": role},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": [verb]}],
        });
        if let Some(namespace) = namespace {
            object["metadata"]["namespace"] = namespace.into();
        }
        apply_object(&admin, &discovery, &object, true)
            .await
            .unwrap();
    }
    Api::<TargetSystem>::namespaced(admin.clone(), ns)
        .create(
            &post,
            &yaml(&format!(
                "metadata: {{name: k8s, namespace: {ns}}}\nspec: {{type: Kubernetes, onLeave: Delete}}"
            )),
        )
        .await
        .unwrap();
    let policies: Api<AccessPolicy> = Api::namespaced(admin.clone(), ns);
    for (name, selector, entitlements) in [
        (
            "finance",
            "{matchAttributes: {department: finance}}",
            "[{target: k8s, kind: ClusterRole, name: chart-e2e-reader}]",
        ),
        (
            "engineering",
            "{matchAttributes: {department: engineering}}",
            "[{target: k8s, kind: ClusterRole, name: chart-e2e-writer}, {target: k8s, kind: Role, namespace: apps, name: app-reader}]",
        ),
        (
            "machines",
            "{matchAttributes: {type: NonHuman}}",
            "[{target: k8s, kind: ClusterRole, name: chart-e2e-reader}]",
        ),
    ] {
        policies
            .create(
                &post,
                &yaml(&format!(
                    "metadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {selector}, entitlements: {entitlements}}}"
                )),
            )
            .await
            .unwrap();
    }
    let identities: Api<Identity> = Api::namespaced(admin.clone(), ns);
    let apply = PatchParams::apply("hr-sync").force();
    let human = |name: &str, dept: &str, status: &str| -> Identity {
        yaml(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{type: Human, employment: {{status: {status}, department: {dept}, manager: olivia}}}}"
        ))
    };
    identities
        .patch(
            "olivia",
            &apply,
            &Patch::Apply(&human("olivia", "board", "Active")),
        )
        .await
        .unwrap();
    let robot: Identity = yaml(&format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: robot, namespace: {ns}}}\nspec: {{type: NonHuman, owner: olivia}}"
    ));
    identities
        .patch("robot", &apply, &Patch::Apply(&robot))
        .await
        .unwrap();

    let wait = |what: &'static str, expected: Vec<(String, String)>| {
        let admin = admin.clone();
        async move {
            harness::eventually(what, Duration::from_secs(30), || async {
                let seen = bound(&admin, ns).await;
                if seen == expected {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            })
            .await
        }
    };

    // Joiner.
    identities
        .patch(
            "alice",
            &apply,
            &Patch::Apply(&human("alice", "finance", "Active")),
        )
        .await
        .unwrap();
    wait(
        "the joiner's binding and the machine's",
        vec![
            pair("chart-e2e-reader", "ServiceAccount/robot"),
            pair("chart-e2e-reader", "User/alice"),
        ],
    )
    .await;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    assert!(
        accounts.get_opt("robot").await.unwrap().is_some(),
        "robot's ServiceAccount"
    );

    // Mover.
    identities
        .patch(
            "alice",
            &apply,
            &Patch::Apply(&human("alice", "engineering", "Active")),
        )
        .await
        .unwrap();
    wait(
        "the mover's new binding, and the old one gone",
        vec![
            pair("apps/app-reader", "User/alice"),
            pair("chart-e2e-reader", "ServiceAccount/robot"),
            pair("chart-e2e-writer", "User/alice"),
        ],
    )
    .await;

    // Leaver (alice), and the machine deleted with a long-lived token Secret.
    let token: Secret = yaml(&format!(
        "metadata: {{name: robot-token, namespace: {ns}, annotations: {{kubernetes.io/service-account.name: robot}}}}\ntype: kubernetes.io/service-account-token"
    ));
    Api::<Secret>::namespaced(admin.clone(), ns)
        .create(&post, &token)
        .await
        .unwrap();
    identities
        .patch(
            "alice",
            &apply,
            &Patch::Apply(&human("alice", "engineering", "Terminated")),
        )
        .await
        .unwrap();
    identities
        .delete("robot", &Default::default())
        .await
        .unwrap();
    wait("every binding gone", vec![]).await;
    harness::eventually(
        "robot's account and token gone",
        Duration::from_secs(30),
        || async {
            let sa = accounts.get_opt("robot").await.map_err(|e| e.to_string())?;
            let secret = Api::<Secret>::namespaced(admin.clone(), ns)
                .get_opt("robot-token")
                .await
                .map_err(|e| e.to_string())?;
            let gone = identities
                .get_opt("robot")
                .await
                .map_err(|e| e.to_string())?;
            match (sa, secret, gone) {
                (None, None, None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let (reason, _) =
        harness::wait_for_condition(&admin, ns, "alice", "Revoked", "True", |i: &Identity| {
            i.status.clone().unwrap_or_default().conditions
        })
        .await;
    assert!(!reason.is_empty());
    harness::wait_for_condition(&admin, ns, "k8s", "Ready", "True", |t: &TargetSystem| {
        t.status.clone().unwrap_or_default().conditions
    })
    .await;

    // Status, Events and the Lease were written with the chart's permissions.
    let lease = Api::<Lease>::namespaced(admin.clone(), RELEASE_NS)
        .get("gatehouse-controller")
        .await
        .expect("the Lease exists in the release namespace");
    assert_eq!(
        lease.spec.unwrap_or_default().holder_identity.as_deref(),
        Some("e2e-replica")
    );
    let events = Api::<Event>::namespaced(admin.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reporting_controller.as_deref() == Some("gatehouse")),
        "the controller recorded Events: {:?}",
        events.items
    );
    assert!(health.is_ready());
    let rendered = metrics.render();
    assert!(
        rendered.contains("gatehouse_reconcile_errors_total 0"),
        "{rendered}"
    );
    assert!(!rendered.contains("result=\"error\""), "{rendered}");

    policy_source_phase(&admin, address).await;
    let rendered = metrics.render();
    assert!(!rendered.contains("result=\"error\""), "{rendered}");
    let _ = stop.send(());
    controller.await.unwrap().unwrap();
}

/// One HTTP/1.1 POST; returns the whole response.
async fn post(address: std::net::SocketAddr, path: &str, headers: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// The objects come from Git: a PolicySource (with a credentials Secret and a webhook
/// Secret) applies them, a webhook delivery wakes the next sync, and pruning a removed
/// Identity revokes its access, all with the chart's permissions only.
async fn policy_source_phase(admin: &Client, address: std::net::SocketAddr) {
    const HR: &str = "Hanna HR <hanna@acme.example>";
    let ns = SOURCE_TENANT;
    let dir = tempfile::tempdir().unwrap();
    let repo = gitrepo::Repo::init(&dir.path().join("access"));
    repo.write(
        "tenants/acme/identities/carol.yaml",
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {name: carol}\nspec: {type: Human, employment: {status: Active, department: finance, manager: carol}}\n",
    );
    repo.write(
        "tenants/acme/policies/finance.yaml",
        "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: finance}\nspec: {selector: {matchAttributes: {department: finance}}, entitlements: [{target: k8s, kind: ClusterRole, name: chart-e2e-reader}]}\n",
    );
    repo.write(
        "tenants/acme/targets/k8s.yaml",
        "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {name: k8s}\nspec: {type: Kubernetes}\n",
    );
    let first = repo.commit("baseline", HR, None);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    for (name, data) in [
        (
            "access-repo",
            "{username: gatehouse-bot, password: unused-for-file-urls}",
        ),
        ("access-hook", "{token: hook-secret}"),
    ] {
        secrets
            .create(
                &PostParams::default(),
                &yaml(&format!(
                    "metadata: {{name: {name}, namespace: {ns}}}\nstringData: {data}"
                )),
            )
            .await
            .unwrap();
    }
    // A long interval: after the first sync only the webhook wakes the source.
    harness::apply::<PolicySource>(
        admin,
        ns,
        &format!(
            "metadata: {{name: access}}\nspec:\n  url: {}\n  ref: {{branch: main}}\n  path: tenants/acme\n  interval: 1h\n  secretRef: {{name: access-repo}}\n  prune: true\n  webhook: {{secretRef: {{name: access-hook}}}}\n",
            repo.url_file()
        ),
    )
    .await;
    let sources: Api<PolicySource> = Api::namespaced(admin.clone(), ns);
    let applied = |commit: String| {
        let sources = sources.clone();
        async move {
            harness::eventually(
                &format!("commit {commit} applied"),
                Duration::from_secs(30),
                || async {
                    let status = sources
                        .get("access")
                        .await
                        .map_err(|e| e.to_string())?
                        .status
                        .unwrap_or_default();
                    let ready = harness::condition(&status.conditions, "Ready");
                    if status.last_applied_commit.as_deref() == Some(commit.as_str())
                        && ready.as_ref().is_some_and(|r| r.0 == "True")
                    {
                        Ok(())
                    } else {
                        Err(format!("{status:?}"))
                    }
                },
            )
            .await
        }
    };
    applied(first).await;
    let bindings = |expected: Vec<(String, String)>| async move {
        harness::eventually("the source's bindings", Duration::from_secs(30), || async {
            let seen = bound(admin, ns).await;
            if seen == expected {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        })
        .await
    };
    bindings(vec![pair("chart-e2e-reader", "User/carol")]).await;

    // carol leaves Git; the Git host's webhook (GitLab's token header) wakes the source.
    repo.remove("tenants/acme/identities/carol.yaml");
    let second = repo.commit("carol leaves", HR, None);
    let refused = post(
        address,
        &format!("/hook/{ns}/access"),
        "X-Gitlab-Token: wrong\r\n",
        "{}",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let response = post(
        address,
        &format!("/hook/{ns}/access"),
        "X-Gitlab-Token: hook-secret\r\n",
        "{}",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    applied(second).await;
    bindings(vec![]).await;
    let identities: Api<Identity> = Api::namespaced(admin.clone(), ns);
    harness::eventually("carol pruned", Duration::from_secs(30), || async {
        match identities
            .get_opt("carol")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(i) => Err(format!("{:?}", i.metadata.deletion_timestamp)),
        }
    })
    .await;
}

/// A plain HTTP/1.1 GET; returns the whole response, or the connection error.
async fn get(address: std::net::SocketAddr, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_accepts_the_deployments_arguments_and_serves_its_probes() {
    let objects = template(&[]);
    let deployment = objects.iter().find(|o| kind(o) == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let cache = tempfile::tempdir().unwrap();
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| match a.as_str() {
            "--listen=0.0.0.0:8080" => "--listen=127.0.0.1:0".to_string(),
            "--source-cache-dir=/var/cache/gatehouse" => {
                format!("--source-cache-dir={}", cache.path().display())
            }
            _ => a,
        })
        .collect();
    // An API server that never answers: the process must start, serve /livez, and stay
    // unready (its caches cannot fill) instead of exiting on a flag.
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:9'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n",
    )
    .unwrap();
    let log = home.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", home.path())
        .env("POD_NAMESPACE", RELEASE_NS)
        .env("POD_NAME", "gatehouse-0")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("gatehouse starts");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let address = harness::served_address(&log).await;
    let live = harness::eventually("/livez", Duration::from_secs(20), || async {
        get(address, "/livez").await
    })
    .await;
    let exited = child.try_wait().unwrap();
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    let ready = get(address, "/readyz").await.unwrap();
    assert!(
        ready.starts_with("HTTP/1.1 503"),
        "unready without an API server: {ready}"
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(exited.is_none(), "gatehouse {args:?} exited: {}", logs());
    let logs = logs();
    assert!(
        !logs.is_empty()
            && logs
                .lines()
                .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["level"].is_string())),
        "--log-format=json writes one JSON object per line: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_limited_to_named_roles_refuses_the_others() {
    let admin = harness::client().await;
    ensure_namespace(&admin, RELEASE_NS).await;
    let discovery = Discovery::new(admin.clone()).run().await.unwrap();
    for role in ["bind-allowed", "bind-refused"] {
        let object = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        });
        apply_object(&admin, &discovery, &object, true)
            .await
            .unwrap();
    }
    // Another release of the chart, allowed to bind one ClusterRole by name, bound to a user.
    let user_name = "gatehouse-limited";
    for mut object in template(&[
        "--set",
        "fullnameOverride=limited,rbac.bind.clusterRoles.resourceNames={bind-allowed}",
    ]) {
        match kind(&object) {
            "ClusterRole" | "Role" => {}
            "ClusterRoleBinding" | "RoleBinding" => {
                object["subjects"] = serde_json::json!([
                    {"kind": "User", "name": user_name, "apiGroup": "rbac.authorization.k8s.io"}
                ]);
            }
            _ => continue,
        }
        apply_object(&admin, &discovery, &object, true)
            .await
            .unwrap_or_else(|e| panic!("applying the chart's RBAC: {e}"));
    }
    let user = client_as(user_name).await;
    let bindings: Api<ClusterRoleBinding> = Api::all(user);
    let params = PatchParams::apply("gatehouse").force();
    let binding = |role: &str| {
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("limited-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": "someone", "apiGroup": "rbac.authorization.k8s.io"}],
        })
    };
    bindings
        .patch(
            "limited-bind-allowed",
            &params,
            &Patch::Apply(binding("bind-allowed")),
        )
        .await
        .expect("a listed role can be bound");
    let refused = bindings
        .patch(
            "limited-bind-refused",
            &params,
            &Patch::Apply(binding("bind-refused")),
        )
        .await;
    match refused {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403, "{e:?}");
            assert!(
                e.message
                    .contains("is attempting to grant RBAC permissions not currently held"),
                "{}",
                e.message
            );
        }
        other => panic!("binding an unlisted role must be forbidden: {other:?}"),
    }
}

#[test]
fn break_glass_policy_and_group_role_ship_and_can_be_turned_off() {
    let objects = template(&[]);
    let kinds: Vec<(&str, &str)> = objects
        .iter()
        .filter(|o| name(o).contains("break-glass") || name(o).ends_with("-exceptions"))
        .map(|o| (kind(o), name(o)))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("ClusterRole", "gatehouse-break-glass"),
            ("ClusterRoleBinding", "gatehouse-break-glass"),
            ("ValidatingAdmissionPolicy", "gatehouse-exceptions"),
            ("ValidatingAdmissionPolicyBinding", "gatehouse-exceptions"),
        ]
    );
    let role = objects
        .iter()
        .find(|o| kind(o) == "ClusterRole" && name(o) == "gatehouse-break-glass")
        .unwrap();
    for (_, resources, verbs) in rule_sets(role) {
        assert_eq!(resources, vec!["exceptions"]);
        assert!(
            !verbs
                .iter()
                .any(|v| v == "patch" || v == "update" || v.contains('*'))
        );
    }
    let custom = template(&[
        "--set",
        "breakGlass.group=oncall",
        "--set",
        "breakGlass.gitAppliers.users={argocd}",
    ]);
    let policy = custom
        .iter()
        .find(|o| kind(o) == "ValidatingAdmissionPolicy")
        .unwrap()
        .to_string();
    assert!(
        policy.contains("oncall") && policy.contains("argocd"),
        "{policy}"
    );
    let off = template(&["--set", "breakGlass.admissionPolicy=false"]);
    assert!(
        !off.iter()
            .any(|o| kind(o).starts_with("ValidatingAdmissionPolicy")
                || name(o).ends_with("-break-glass"))
    );
}
