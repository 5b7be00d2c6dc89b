use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, EntitlementRef};

/// One reviewer's answers for one cycle of an AccessReview. Written as `pending` by
/// `gatehouse review open`; the merged, reviewer-signed file is the attestation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "AccessReviewResponse",
    plural = "accessreviewresponses",
    namespaced,
    status = "AccessReviewResponseStatus",
    shortname = "arr",
    category = "gatehouse",
    cel,
    doc = "One reviewer's decisions in one cycle of an AccessReview.",
    printcolumn(name = "Review", type_ = "string", json_path = ".spec.review"),
    printcolumn(name = "Reviewer", type_ = "string", json_path = ".spec.reviewer"),
    printcolumn(name = "Cycle", type_ = "string", json_path = ".spec.cycle"),
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
#[serde(rename_all = "camelCase")]
pub struct AccessReviewResponseSpec {
    /// The AccessReview (same namespace).
    #[schemars(length(min = 1))]
    pub review: String,
    /// The Identity deciding: never the subject of an item.
    #[schemars(length(min = 1))]
    pub reviewer: String,
    /// Start date of the cycle (`YYYY-MM-DD`); answers are due `duePeriod` after it.
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub cycle: String,
    /// One line per (identity, entitlement, source).
    #[serde(default)]
    pub items: Vec<ReviewItem>,
}

/// One standing access to decide on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.decision == 'pending' || (has(self.justification) && size(self.justification) > 0)").message("a keep or revoke decision needs a justification")
)]
#[serde(rename_all = "camelCase")]
pub struct ReviewItem {
    /// The Identity holding the access.
    #[schemars(length(min = 1))]
    pub identity: String,
    /// The entitlement.
    pub entitlement: EntitlementRef,
    /// The policy or exception granting it.
    pub source: ReviewSource,
    /// When the source was first committed (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_since: Option<String>,
    /// The commit that last changed the source, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<String>,
    /// `pending`, `keep` or `revoke`.
    #[serde(default)]
    pub decision: ReviewDecision,
    /// Why (required for keep and revoke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// The object granting a reviewed entitlement, as it was when the cycle opened.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewSource {
    /// `AccessPolicy` or `Exception`.
    pub kind: ReviewSourceKind,
    /// Its name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Digest of its spec when the cycle opened: a revoke holds until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Kinds that grant access.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ReviewSourceKind {
    /// An AccessPolicy.
    AccessPolicy,
    /// An Exception.
    Exception,
}

/// A reviewer's decision on one item.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewDecision {
    /// Not decided yet.
    #[default]
    Pending,
    /// The access stays.
    Keep,
    /// The access goes.
    Revoke,
}

/// Observed state of an AccessReviewResponse.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessReviewResponseStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Ready` (every decision counts: none refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
