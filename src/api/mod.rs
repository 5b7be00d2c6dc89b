//! The `gatehouse.dev/v1alpha1` API: the custom resources that live in Git.
//!
//! Every kind is namespaced; a namespace is a tenant. Field names follow the settled API
//! sketch in ARCHITECTURE.md. Rules the API server can check on one object alone are
//! CEL rules in the schema (and are evaluated offline by `gatehouse validate` too); rules
//! that need other objects live in the engine.

// kube's `printcolumn(...)` repeats `type_ = "string"` by design; clippy reads that as a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
mod access_policy;
#[allow(clippy::duplicated_attributes)]
mod access_review;
#[allow(clippy::duplicated_attributes)]
mod access_review_response;
mod conditions;
#[allow(clippy::duplicated_attributes)]
mod exception;
#[allow(clippy::duplicated_attributes)]
mod identity;
mod kind;
#[allow(clippy::duplicated_attributes)]
mod policy_source;
#[allow(clippy::duplicated_attributes)]
mod target_system;

pub use access_policy::*;
pub use access_review::*;
pub use access_review_response::*;
pub use conditions::*;
pub use exception::*;
pub use identity::*;
pub use kind::{Kind, Kinded, ObjectKey, UnknownKind};
pub use policy_source::*;
pub use target_system::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every gatehouse kind.
pub const GROUP: &str = "gatehouse.dev";
/// The API version of every gatehouse kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "gatehouse.dev/v1alpha1";

/// Annotations that carry an object's Git provenance into the cluster and into status.
pub mod annotations {
    /// Commit the object was read from.
    pub const COMMIT: &str = "gatehouse.dev/commit";
    /// Path of the file inside the repository.
    pub const PATH: &str = "gatehouse.dev/path";
    /// Author of the commit that last changed the file.
    pub const AUTHOR: &str = "gatehouse.dev/author";
    /// Key that signed that commit, when verified.
    pub const SIGNER: &str = "gatehouse.dev/signer";
    /// Digest of the object as last applied from Git, to skip unchanged objects.
    pub const DIGEST: &str = "gatehouse.dev/digest";
    /// Set (to a timestamp) on a PolicySource to ask for a sync now; the webhook does this.
    pub const REQUESTED_AT: &str = "gatehouse.dev/requested-at";
    /// On a break-glass Exception: the user who created it outside Git. The admission
    /// policy requires it to equal the requesting user, so it is the API server's word.
    pub const BREAK_GLASS_BY: &str = "gatehouse.dev/break-glass-by";
    /// On a non-human Identity re-owned because its owner left (`gatehouse hr import`
    /// writes it with the new `spec.owner`): the leaving owner, whose exit still rotates
    /// the identity's credentials once.
    pub const PREVIOUS_OWNER: &str = "gatehouse.dev/previous-owner";
}

/// Labels gatehouse puts on objects it manages.
pub mod labels {
    /// The PolicySource an object was applied from, for pruning.
    pub const SOURCE: &str = "gatehouse.dev/source";
}

/// Whether an object's decisions are carried out or only reported.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Mode {
    /// Decisions are applied to target systems.
    #[default]
    Enforce,
    /// Decisions are computed and reported, never applied.
    Observe,
}

/// One entitlement on one target system: a group, a role, a role binding.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementRef {
    /// Name of a TargetSystem in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub target: String,
    /// Target-specific kind, e.g. `ClusterRole` or `Role` on a Kubernetes target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace of a namespaced entitlement (a Kubernetes `Role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The group, role or membership name on the target.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl std::fmt::Display for EntitlementRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.target)?;
        if let Some(kind) = &self.kind {
            write!(f, "{kind}/")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        f.write_str(&self.name)
    }
}

/// A reference to a Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
}
