use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, SecretRef};

/// A Git repository the other gatehouse kinds are synced from. Owned by operators.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "PolicySource",
    plural = "policysources",
    namespaced,
    status = "PolicySourceStatus",
    shortname = "psrc",
    category = "gatehouse",
    cel,
    doc = "A Git repository whose Identity, AccessPolicy, Exception and TargetSystem manifests are applied into this namespace, verified commit by commit.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(
        name = "Commit",
        type_ = "string",
        json_path = ".status.lastAppliedCommit"
    ),
    printcolumn(
        name = "Objects",
        type_ = "integer",
        json_path = ".status.inventoryCount"
    ),
    printcolumn(
        name = "Verified",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Verified\")].status"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.url.matches('^(https?|ssh|file)://')").message("spec.url must start with https://, http://, ssh:// or file://"),
    validation = Rule::new("size(self.pathOwners) == 0 || has(self.verify)").message("spec.pathOwners names keys: list them in spec.verify.keys")
)]
#[serde(rename_all = "camelCase")]
pub struct PolicySourceSpec {
    /// Repository URL: `https://`, `ssh://` or `file://` (`http://` only for loopback tests).
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// The branch or tag to follow.
    #[serde(rename = "ref")]
    pub git_ref: GitRef,
    /// Folder inside the repository holding the manifests (the root when empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    /// How often the repository is polled (Go duration). A webhook triggers a sync at once.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub interval: String,
    /// Secret with the credentials: `username` and `password` (or `token`) for HTTPS;
    /// `identity` (a private key) and `known_hosts` for SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Keys trusted to sign commits. When set, every commit from the last applied one to
    /// the new head that changes `path` must carry a valid SSH or OpenPGP signature by one
    /// of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verification>,
    /// Which keys may change which files: a change to a path matching `path` must be signed
    /// by one of `keys`. A path matching several entries needs a key allowed by each, and
    /// the approvals of each entry's `requireApprovals`.
    #[serde(default)]
    pub path_owners: Vec<PathOwner>,
    /// Delete objects this source applied earlier and that left Git.
    #[serde(default = "default_true")]
    pub prune: bool,
    /// Stop syncing; the objects last applied stay as they are.
    #[serde(default)]
    pub suspend: bool,
    /// Webhook receiver for `POST /hook/<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

fn default_interval() -> String {
    "1m".into()
}

fn default_true() -> bool {
    true
}

/// The Git reference followed: exactly one of `branch` or `tag`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.branch) != has(self.tag)").message("set exactly one of spec.ref.branch or spec.ref.tag")
)]
#[serde(rename_all = "camelCase")]
pub struct GitRef {
    /// Branch name, e.g. `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: Option<String>,
    /// Tag name, e.g. `v1.4.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub tag: Option<String>,
}

/// Keys trusted to sign commits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Named public keys: OpenSSH keys (`ssh-ed25519 AAAA… comment`, git's
    /// `gpg.format=ssh`) or armored OpenPGP keys (git's default, and forges' web and merge
    /// commits).
    #[schemars(length(min = 1))]
    pub keys: Vec<TrustedKey>,
}

/// One trusted signing key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustedKey {
    /// Name used in `pathOwners`, in status and in the `gatehouse.dev/signer` annotation.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The public key: one OpenSSH line, or an armored OpenPGP public key block
    /// (`gpg --armor --export KEYID`; every key in the block, subkeys included, counts
    /// under this name). OpenPGP keys must be unexpired and unrevoked when the signature
    /// was made and when it is checked.
    #[schemars(length(min = 1, max = 16384))]
    pub public_key: String,
}

/// Keys allowed to change paths matching a glob, and how many of them must approve.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("!has(self.requireApprovals) || self.requireApprovals < size(self.keys)").message("spec.pathOwners[].requireApprovals must be below the number of keys: a change's own signer never approves it, so N approvals need N+1 owners")
)]
#[serde(rename_all = "camelCase")]
pub struct PathOwner {
    /// Glob relative to `spec.path`, e.g. `identities/**`.
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
    /// Names of keys from `spec.verify.keys`.
    #[schemars(length(min = 1))]
    pub keys: Vec<String>,
    /// Approvals every change to matching files needs: it must reach the branch through
    /// merge commits signed by this many distinct keys of `keys`, none of them the key
    /// that signed the change. A commit pushed straight to the branch has none. Unset or
    /// 0: no approval needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 64))]
    pub require_approvals: Option<u32>,
}

/// Where the webhook receiver finds its shared secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Secret whose `token` key is the webhook's shared secret (GitHub and Gitea sign the
    /// body with it; GitLab sends it as `X-Gitlab-Token`).
    pub secret_ref: SecretRef,
}

/// Observed state of a PolicySource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySourceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The commit whose objects are in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_commit: Option<String>,
    /// When that commit was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_time: Option<String>,
    /// The newest commit tried, applied or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_commit: Option<String>,
    /// Objects this source keeps in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_count: Option<i64>,
    /// Conditions: `Ready`, `Verified`, `Stalled`, `Reconciling`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
