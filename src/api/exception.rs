use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, EntitlementRef};

/// Time-bound access outside policy, requested and approved by named people.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "Exception",
    plural = "exceptions",
    namespaced,
    status = "ExceptionStatus",
    shortname = "exc",
    category = "gatehouse",
    cel,
    doc = "Time-bound access outside policy.",
    printcolumn(name = "Identity", type_ = "string", json_path = ".spec.identity"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".spec.expiresAt"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
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
    validation = Rule::new("(has(self.breakGlass) && self.breakGlass) || size(self.approvedBy) > 0").message("an Exception needs at least one approver in spec.approvedBy (only a breakGlass Exception takes effect without one)"),
    validation = Rule::new("!(self.requestedBy in self.approvedBy)").message("the requester may not approve their own request: remove spec.requestedBy from spec.approvedBy"),
    validation = Rule::new("!(self.identity in self.approvedBy)").message("the subject may not approve their own exception: remove spec.identity from spec.approvedBy"),
    validation = Rule::new("timestamp(self.expiresAt) > timestamp(self.validFrom)").message("spec.expiresAt must be after spec.validFrom"),
    validation = Rule::new("!(has(self.breakGlass) && self.breakGlass) || timestamp(self.expiresAt) - timestamp(self.validFrom) <= duration('24h')").message("a breakGlass Exception lasts at most 24h: bring spec.expiresAt within 24h of spec.validFrom")
)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionSpec {
    /// The Identity receiving the access.
    #[schemars(length(min = 1))]
    pub identity: String,
    /// What is granted.
    #[schemars(length(min = 1))]
    pub entitlements: Vec<EntitlementRef>,
    /// Why it is needed.
    #[schemars(length(min = 1))]
    pub justification: String,
    /// Who asked for it (may be the subject's manager).
    #[schemars(length(min = 1))]
    pub requested_by: String,
    /// Who approved it: never the requester, the subject or the subject's manager.
    pub approved_by: Vec<String>,
    /// Start of the window (RFC 3339).
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
    ))]
    pub valid_from: String,
    /// End of the window, exclusive (RFC 3339).
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
    ))]
    pub expires_at: String,
    /// Change or ticket reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Emergency access applied outside Git by a member of the break-glass group: in
    /// force at once without approvers, for at most `--break-glass-max` (≤ 24 h), and
    /// revoked early unless a Git commit of the same Exception ratifies it in time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
}

/// The longest a break-glass Exception may ever last, whatever `--break-glass-max` says.
pub const BREAK_GLASS_HARD_MAX_HOURS: i64 = 24;

/// Observed state of an Exception.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Active`, `Expired` or `Invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Conditions: `Ready`, `Approved`, `Active`, `Expired`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// A break-glass exception's use: who, its real window, ratification and end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlassStatus>,
}

/// The record of one break-glass use, kept in status (and appended by the controller to
/// the tenant's `gatehouse-break-glass` ConfigMap, which outlives the Exception).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlassStatus {
    /// Who created it outside Git (`gatehouse.dev/break-glass-by`), else the Git author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Start of the window (RFC 3339).
    pub from: String,
    /// End of the window: `min(expiresAt, validFrom + --break-glass-max)` (RFC 3339).
    pub until: String,
    /// Whether a Git commit of the same Exception carries it.
    pub ratified: bool,
    /// While unratified: when it is revoked unless ratified (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratify_by: Option<String>,
    /// When the controller first found it in force (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// How it ended: `Expired` or `RevokedUnratified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}
