use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AttributeSelector, Condition};

/// A recurring certification campaign over standing access. Owned by IAM.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "AccessReview",
    plural = "accessreviews",
    namespaced,
    status = "AccessReviewStatus",
    shortname = "arv",
    category = "gatehouse",
    cel,
    doc = "A recurring access review: who reviews which standing access, how often, and what happens without an answer.",
    printcolumn(name = "Every", type_ = "string", json_path = ".spec.every"),
    printcolumn(name = "Cycle", type_ = "string", json_path = ".status.cycle"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
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
pub struct AccessReviewSpec {
    /// What the review is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Which standing access is reviewed.
    pub scope: ReviewScope,
    /// Who decides on each item (never the item's subject).
    pub reviewers: Reviewers,
    /// Cadence: a new cycle is due this long after the last one opened, e.g. `90d` or `2160h`.
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(d|h|m|s))+$"))]
    pub every: String,
    /// How long reviewers have to answer after a cycle opens, e.g. `14d`.
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(d|h|m|s))+$"))]
    pub due_period: String,
    /// What an item still `pending` after the due date becomes.
    #[serde(default)]
    pub on_no_response: NoResponse,
}

/// Which access a review covers: exactly one of the four forms.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("(has(self.selector) ? 1 : 0) + (has(self.policies) && size(self.policies) > 0 ? 1 : 0) + (has(self.targets) && size(self.targets) > 0 ? 1 : 0) + (has(self.exceptions) && self.exceptions ? 1 : 0) == 1").message("spec.scope needs exactly one of selector, policies, targets or exceptions: true")
)]
#[serde(rename_all = "camelCase")]
pub struct ReviewScope {
    /// Every entitlement of the identities this selects (AccessPolicy selector semantics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<AttributeSelector>,
    /// Every entitlement granted by these AccessPolicies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Every entitlement on these TargetSystems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Every entitlement granted by an Exception.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exceptions: bool,
}

/// Who reviews an item.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("(self.by == 'Identities') == (has(self.identities) && size(self.identities) > 0)").message("spec.reviewers.identities is set exactly when spec.reviewers.by is Identities")
)]
#[serde(rename_all = "camelCase")]
pub struct Reviewers {
    /// `Manager`: the subject's line manager; `Owner`: a NonHuman subject's owner (a
    /// Human's manager); `Identities`: the first listed identity that is not the subject.
    pub by: ReviewerRule,
    /// With `by: Identities`: the reviewers, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
}

/// How an item's reviewer is chosen.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ReviewerRule {
    /// The subject's `spec.employment.manager`.
    Manager,
    /// A NonHuman subject's `spec.owner`; for a Human, the manager.
    Owner,
    /// Named identities.
    Identities,
}

/// What an unanswered item becomes after the due date.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum NoResponse {
    /// The access is kept (reported as overdue).
    #[default]
    Keep,
    /// The access is withheld, as if the reviewer had said `revoke`.
    Revoke,
}

/// Observed state of an AccessReview: the latest cycle's progress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessReviewStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Start date of the latest cycle with response files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<String>,
    /// When the latest cycle's answers are due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// Items still pending in the latest cycle.
    #[serde(default)]
    pub pending: i64,
    /// Items kept.
    #[serde(default)]
    pub kept: i64,
    /// Items revoked (by decision, or by no response under `onNoResponse: Revoke`).
    #[serde(default)]
    pub revoked: i64,
    /// Reviewers with pending items past the due date.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overdue_reviewers: Vec<String>,
    /// Conditions: `Ready`, `Reconciling` (answers outstanding before the due date),
    /// `Stalled` (overdue answers, or a new cycle is due).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
