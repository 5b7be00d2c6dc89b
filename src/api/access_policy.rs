use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, EntitlementRef, Mode};

/// Rules that turn identity attributes into access. Owned by IAM.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    plural = "accesspolicies",
    namespaced,
    status = "AccessPolicyStatus",
    shortname = "ap",
    category = "gatehouse",
    cel,
    doc = "Grants entitlements to the identities its selector matches.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Matched",
        type_ = "integer",
        json_path = ".status.matchedIdentities"
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
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// What the policy is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Which identities the policy applies to (label-selector semantics over attributes).
    #[serde(default)]
    pub selector: AttributeSelector,
    /// Preconditions an identity must meet to receive anything from this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<Requirements>,
    /// Entitlements granted to every matching identity.
    #[serde(default)]
    pub entitlements: Vec<EntitlementRef>,
    /// Toxic combinations, checked over each identity's effective access in the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub separation_of_duties: Vec<SodRule>,
    /// Limits on exceptions for the entitlements this policy grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_policy: Option<ExceptionPolicy>,
    /// `Enforce` applies the policy; `Observe` only reports what it would grant.
    #[serde(default)]
    pub mode: Mode,
}

/// Kubernetes label-selector semantics over identity attributes. An empty selector
/// matches every identity in the namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeSelector {
    /// Attributes that must equal the given values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_attributes: BTreeMap<String, String>,
    /// Set-based requirements, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<AttributeRequirement>,
}

/// One set-based selector requirement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("(self.operator == 'In' || self.operator == 'NotIn') ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)").message("In and NotIn need at least one value; Exists and DoesNotExist take none")
)]
#[serde(rename_all = "camelCase")]
pub struct AttributeRequirement {
    /// Attribute name.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Selector operators, as in Kubernetes label selectors.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SelectorOperator {
    /// The attribute's value is one of `values`.
    In,
    /// The attribute is absent or its value is none of `values`.
    NotIn,
    /// The attribute is present.
    Exists,
    /// The attribute is absent.
    DoesNotExist,
}

/// Preconditions for receiving anything from a policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    /// Minimum identity assurance level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proofing: Option<super::ProofingLevel>,
}

/// A toxic combination: no identity may hold all of these at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SodRule {
    /// Rule name, shown in violations.
    pub name: String,
    /// The combination (two or more entitlements).
    #[schemars(length(min = 2))]
    pub entitlements: Vec<EntitlementRef>,
}

/// Limits on exceptions for this policy's entitlements.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionPolicy {
    /// Longest allowed exception window, e.g. `720h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"))]
    pub max_duration: Option<String>,
}

/// Observed state of an AccessPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Identities the selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_identities: Option<i64>,
    /// Conditions: `Ready`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
