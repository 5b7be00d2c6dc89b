//! Status conventions shared by every kind (kstatus / Flux): `Ready` always present,
//! `Reconciling` and `Stalled` only while true.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Condition types used across kinds.
pub mod condition_types {
    /// The object is fully reconciled.
    pub const READY: &str = "Ready";
    /// Work is in progress (present only while true).
    pub const RECONCILING: &str = "Reconciling";
    /// Progress is blocked and needs a human (present only while true).
    pub const STALLED: &str = "Stalled";
    /// Identity: the HR record carries every attribute access depends on.
    pub const ATTRIBUTES_VALID: &str = "AttributesValid";
    /// Identity: desired access is applied on every target.
    pub const PROVISIONED: &str = "Provisioned";
    /// Identity: every entitlement has been revoked (leaver).
    pub const REVOKED: &str = "Revoked";
    /// Exception: the approvals satisfy the rules.
    pub const APPROVED: &str = "Approved";
    /// Exception: inside its validity window.
    pub const ACTIVE: &str = "Active";
    /// Exception: past `expiresAt`.
    pub const EXPIRED: &str = "Expired";
    /// TargetSystem: the controller can reach and authenticate to it.
    pub const CONNECTED: &str = "Connected";
    /// TargetSystem: observed state equals desired state.
    pub const IN_SYNC: &str = "InSync";
    /// PolicySource: the commits applied are signed by trusted keys that may change them.
    pub const VERIFIED: &str = "Verified";
}
