use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, Mode, SecretRef};

/// A system gatehouse provisions accounts and entitlements in. Owned by operators.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "TargetSystem",
    plural = "targetsystems",
    namespaced,
    status = "TargetSystemStatus",
    shortname = "ts",
    category = "gatehouse",
    cel,
    doc = "A target system: Kubernetes RBAC, LDAP/AD, a SCIM 2.0 app or PostgreSQL.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.type != 'LDAP' || has(self.ldap)").message("a target of type LDAP needs spec.ldap"),
    validation = Rule::new("self.type != 'SCIM' || has(self.scim)").message("a target of type SCIM needs spec.scim"),
    validation = Rule::new("self.type != 'PostgreSQL' || has(self.postgresql)").message("a target of type PostgreSQL needs spec.postgresql"),
    validation = Rule::new("(has(self.ldap) ? 1 : 0) + (has(self.scim) ? 1 : 0) + (has(self.postgresql) ? 1 : 0) + (has(self.kubernetes) ? 1 : 0) <= 1").message("set only the connection block that matches spec.type")
)]
#[serde(rename_all = "camelCase")]
pub struct TargetSystemSpec {
    /// Connector type.
    #[serde(rename = "type")]
    pub type_: TargetType,
    /// Kubernetes RBAC connection (the local cluster when empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesTarget>,
    /// LDAP / Active Directory connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapTarget>,
    /// SCIM 2.0 connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim: Option<ScimTarget>,
    /// PostgreSQL connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<PostgresTarget>,
    /// Secret holding the credentials the connector uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// `Enforce` applies changes; `Observe` reports drift only.
    #[serde(default)]
    pub mode: Mode,
    /// What happens to a leaver's account: `Disable` (default) or `Delete`.
    #[serde(default)]
    pub on_leave: OnLeave,
    /// Safety limits per sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// How often the target is listed in full to find drift (changes made on the target
    /// behind gatehouse's back), as a Go duration such as `30m` or `24h`; default `1h`.
    /// Between listings a change is planned against the last listing plus the operations
    /// the target confirmed, and re-reads only the accounts nobody vouches for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"))]
    pub drift_interval: Option<String>,
    /// Attributes gatehouse owns on every account of this target: attribute name to a
    /// template over the Identity (`{{ displayName }}`, `{{ employment.title }}`,
    /// `{{ attributes.costCenter | default("none") }}`, `{{ manager.account }}` for the
    /// manager's account on this target). Added to the type's defaults; see
    /// docs/attributes.md. Owned attributes are written on creation and kept in sync;
    /// attributes not mapped are never touched.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// Whether the type's default mapping applies beneath `attributes` (default true).
    /// `false` owns only what `attributes` lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_attributes: Option<bool>,
}

/// Connector type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum TargetType {
    /// Kubernetes RBAC bindings.
    Kubernetes,
    /// LDAP or Active Directory groups.
    LDAP,
    /// SCIM 2.0 groups.
    SCIM,
    /// PostgreSQL group roles.
    PostgreSQL,
}

/// What happens to a leaver's account.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum OnLeave {
    /// Keep the account, disabled, with every entitlement removed.
    #[default]
    Disable,
    /// Delete the account.
    Delete,
}

/// Per-sync safety limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// A sync planning more revocations than this stops with `Stalled` (blast-radius guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_revocations_per_sync: Option<i64>,
}

/// Kubernetes target settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesTarget {
    /// Secret with a `kubeconfig` key for a remote cluster; the local cluster when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretRef>,
}

/// LDAP / Active Directory settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LdapTarget {
    /// `ldap://` (with StartTLS) or `ldaps://` URL.
    pub url: String,
    /// Base DN of the directory.
    #[serde(rename = "baseDN")]
    pub base_dn: String,
    /// `OpenLDAP` or `ActiveDirectory`.
    #[serde(default)]
    pub flavor: LdapFlavor,
    /// OU of managed accounts, relative to baseDN.
    #[serde(default, rename = "usersOU", skip_serializing_if = "Option::is_none")]
    pub users_ou: Option<String>,
    /// OU of managed groups, relative to baseDN.
    #[serde(default, rename = "groupsOU", skip_serializing_if = "Option::is_none")]
    pub groups_ou: Option<String>,
    /// For an `ldap://` URL: upgrade the connection with StartTLS before binding (default
    /// `true`). `false` sends the bind password in clear text; use it only on loopback.
    /// Ignored for `ldaps://`.
    #[serde(default, rename = "startTLS", skip_serializing_if = "Option::is_none")]
    pub start_tls: Option<bool>,
    /// Object classes of the accounts gatehouse creates, most specific last; existing
    /// accounts must carry the last one. Default: `[inetOrgPerson]` (OpenLDAP) or
    /// `[top, person, organizationalPerson, user]` (Active Directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub user_object_classes: Vec<String>,
    /// Attribute holding the account name: `uid` (OpenLDAP, also the RDN) or
    /// `sAMAccountName` (Active Directory, whose RDN is `CN`) by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_attribute: Option<String>,
    /// Attributes set only when gatehouse creates an account, never kept in sync: attribute
    /// name to a template in which `{account}`, `{identity}` and `{namespace}` are
    /// replaced. A name listed here is not owned: it leaves the default mapping of
    /// `spec.attributes` (see docs/attributes.md); listing it in both is an error.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// OpenLDAP only: the `member` a `groupOfNames` keeps when its last real member is
    /// revoked (the schema requires one, the server answers objectClassViolation
    /// otherwise); removed again when a real member is granted. Default: the empty DN,
    /// which names no entry. Use the same value as slapd's `olcRefintNothing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder_member: Option<String>,
    /// Entries per page of the paged searches (simple paged results control). Default 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub page_size: Option<i32>,
    /// Seconds one connection attempt or operation may take. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: Option<u32>,
}

/// Directory flavor.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LdapFlavor {
    /// OpenLDAP with inetOrgPerson, groupOfNames and ppolicy.
    #[default]
    OpenLDAP,
    /// Microsoft Active Directory.
    ActiveDirectory,
}

/// SCIM 2.0 settings. The credentials Secret holds `token` (bearer) or `username` and
/// `password` (basic), and optionally `ca.crt`, PEM certificates trusted for HTTPS besides
/// the system's roots. Gatehouse manages the users whose `externalId` starts with
/// `<namespace>/` (it writes `<namespace>/<identity>`); other users are never touched.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScimTarget {
    /// Base URL of the SCIM service (the `/v2` root).
    pub url: String,
    /// How to authenticate: `Bearer` (Secret key `token`, the default) or `Basic` (keys
    /// `username` and `password`).
    #[serde(default)]
    pub auth: ScimAuth,
    /// Seconds one HTTP request may take before it counts as a transient failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: Option<u32>,
    /// Use the Bulk endpoint when the server announces it (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<bool>,
    /// Resources per page when listing (`count`); capped by the server's
    /// `filter.maxResults`. Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub page_size: Option<u32>,
}

/// How the SCIM connector authenticates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ScimAuth {
    /// `Authorization: Bearer <token>` from Secret key `token`.
    #[default]
    Bearer,
    /// HTTP basic authentication from Secret keys `username` and `password`.
    Basic,
}

/// PostgreSQL settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Database to connect to.
    pub database: String,
    /// TLS: `verify-full` (the default: the server certificate must chain to the Secret's
    /// `ca.crt` and name `host`), `verify-ca` (chain only) or `disable` (plain TCP, for a
    /// loopback or a private socket only). libpq's `allow`, `prefer` and `require` are refused:
    /// they do not authenticate the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<String>,
    /// Prefix put before an account name to form its login role (with `u_`, account `alice`
    /// is role `u_alice`). Only roles that also carry gatehouse's marker comment
    /// (`managed-by=gatehouse tenant=<namespace> target=<name>`) are ever managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_role_prefix: Option<String>,
    /// When set, only group roles whose names start with this prefix can be entitlements;
    /// memberships in other roles are outside the managed scope (never observed, granted or
    /// revoked). When unset, every existing `NOLOGIN` role not managed by gatehouse can be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_role_prefix: Option<String>,
    /// The role that receives the objects of a deleted account (`REASSIGN OWNED ... TO`).
    /// Required with `onLeave: Delete`; it must not be a superuser role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassign_owned_to: Option<String>,
}

fn default_pg_port() -> u16 {
    5432
}

/// Observed state of a TargetSystem.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSystemStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Operations the last sync planned but did not carry out (Observe mode, the
    /// blast-radius guard, failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_operations: Option<i64>,
    /// Accounts in the managed scope that belong to no Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan_count: Option<i64>,
    /// The first orphan account names, sorted. They are reported, never removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<String>,
    /// What the connector found on the target that a person should look at (for example
    /// a role that became too powerful to grant), one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    /// Operations that failed and wait for their retry, with the target's answer: the
    /// first few, for `Stalled` and for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_operations: Vec<String>,
    /// Conditions: `Ready`, `Connected`, `InSync`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `spec.driftInterval` when unset: one hour.
pub const DEFAULT_DRIFT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

impl TargetSystemSpec {
    /// How often the target is listed in full: `spec.driftInterval`, else the default (the
    /// schema refuses a value that is not a duration; one that slips through counts as unset).
    pub fn drift_interval(&self) -> std::time::Duration {
        self.drift_interval
            .as_deref()
            .and_then(|d| crate::engine::lifecycle::parse_duration(d).ok())
            .and_then(|d| std::time::Duration::try_from(d).ok())
            .unwrap_or(DEFAULT_DRIFT_INTERVAL)
    }
}
