use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Condition;

/// A person or a machine whose access gatehouse manages. Owned by HR (or the system of
/// record for vendors and machines).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "Identity",
    plural = "identities",
    namespaced,
    status = "IdentityStatus",
    shortname = "idn",
    category = "gatehouse",
    cel,
    doc = "A human or non-human identity whose access gatehouse manages.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".spec.employment.status"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Entitlements",
        type_ = "integer",
        json_path = ".status.entitlementCount"
    ),
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
    validation = Rule::new("self.type != 'NonHuman' || has(self.owner)").message("a NonHuman identity needs spec.owner: the accountable human Identity"),
    validation = Rule::new("self.type != 'NonHuman' || !has(self.employment)").message("a NonHuman identity has no spec.employment; set spec.owner instead"),
    validation = Rule::new("self.type != 'Human' || has(self.employment)").message("a Human identity needs spec.employment (at least status)"),
    validation = Rule::new("self.type != 'Human' || !has(self.owner)").message("spec.owner is for NonHuman identities; a Human's line manager is spec.employment.manager")
)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// `Human` or `NonHuman` (service accounts, API keys, bots).
    #[serde(rename = "type")]
    pub type_: IdentityType,
    /// Name shown to people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Primary e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The HR employment record (Human only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employment: Option<Employment>,
    /// The accountable human Identity (NonHuman only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Identity-proofing evidence (NIST SP 800-63A).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proofing: Option<Proofing>,
    /// Per-target account names; the default is `metadata.name`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub accounts: BTreeMap<String, String>,
    /// Further attributes visible to policy selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// Whether an identity is a person or a machine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum IdentityType {
    /// A person with an employment record.
    Human,
    /// A service account, API key or bot with an accountable human owner.
    NonHuman,
}

/// The employment record, owned by HR.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!(has(self.type) && (self.type == 'Contractor' || self.type == 'Vendor')) || has(self.endDate)").message("a Contractor or Vendor needs spec.employment.endDate (the last working day)"),
    validation = Rule::new("!has(self.startDate) || !has(self.endDate) || self.startDate <= self.endDate").message("spec.employment.endDate must not be before startDate")
)]
#[serde(rename_all = "camelCase")]
pub struct Employment {
    /// Where the person stands in the employment lifecycle.
    pub status: EmploymentStatus,
    /// Kind of employment.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<EmploymentType>,
    /// Department, e.g. `finance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Work location, e.g. `berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `metadata.name` of the line manager's Identity in this namespace; the head of the
    /// organisation names itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// First working day, `YYYY-MM-DD`; access starts at 00:00 UTC that day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub start_date: Option<String>,
    /// Last working day, `YYYY-MM-DD`, inclusive; access ends at 00:00 UTC the day after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub end_date: Option<String>,
}

/// HR employment status.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum EmploymentStatus {
    /// Hired, not yet started.
    PreHire,
    /// Working.
    Active,
    /// On a leave of absence: accounts disabled, entitlements kept.
    OnLeave,
    /// Left: everything revoked.
    Terminated,
}

/// Kind of employment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum EmploymentType {
    /// Permanent employee.
    Employee,
    /// Contractor: needs an end date.
    Contractor,
    /// Vendor staff: needs an end date.
    Vendor,
    /// Intern.
    Intern,
}

/// Identity-proofing evidence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Proofing {
    /// NIST SP 800-63A identity assurance level.
    pub level: ProofingLevel,
    /// When the evidence was verified (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
}

/// NIST SP 800-63A identity assurance level, ordered from weakest to strongest.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum ProofingLevel {
    /// Self-asserted.
    IAL1,
    /// Remote or in-person evidence verified.
    IAL2,
    /// In-person, supervised verification.
    IAL3,
}

/// Observed state of an Identity, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase computed by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Number of effective entitlements (for printer columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement_count: Option<i64>,
    /// Effective entitlements with provenance and per-target apply state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entitlements: Vec<EntitlementStatus>,
    /// Per target: whether what the identity should have there is applied, pending or
    /// failed, and for a leaver when the target confirmed the cut-off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<IdentityTargetStatus>,
    /// For a leaver: when it became one (its end date passing, or the HR change or
    /// deletion first seen). The revocation SLA is measured from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaver_since: Option<Time>,
    /// Conditions: `Ready`, `AttributesValid`, `Provisioned`, `Revoked`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Where an identity stands on one target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityTargetStatus {
    /// TargetSystem name.
    pub target: String,
    /// `Applied` (the target holds what it should, or acknowledged every operation),
    /// `Pending` (operations not carried out yet, with the reason) or `Failed`.
    pub state: String,
    /// Operations outstanding on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_operations: Option<i64>,
    /// The first failed or held operation, e.g. `revoke erp-scim:payments`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Why: the target's answer, or the reason the operation is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a leaver: when a re-observation of the target confirmed nothing is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,
    /// For a leaver: seconds from `leaverSince` to `revokedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_seconds: Option<f64>,
}

/// One effective entitlement as reported in Identity status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementStatus {
    /// The entitlement.
    #[serde(flatten)]
    pub entitlement: super::EntitlementRef,
    /// Why it is held: the policy or exception, and its Git provenance.
    pub source: SourceStatus,
    /// Apply state on the target: `Applied`, `Pending`, `Failed`, `Blocked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// The object an entitlement comes from, with Git provenance when known.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// `AccessPolicy` or `Exception`.
    pub kind: String,
    /// Object name.
    pub name: String,
    /// Git commit the object was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// File path in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Author of that commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Trusted key that signed that commit, when the PolicySource verifies signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}
