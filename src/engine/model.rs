//! The engine's input ([`Snapshot`]) and output ([`DesiredState`]) types.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;

use crate::api::{
    AccessPolicy, AccessReview, AccessReviewResponse, EntitlementRef, Exception, Identity,
    IdentityType, Mode, OnLeave, TargetSystem, TargetType, annotations,
};

/// Everything the engine reads: the custom resources of one or more namespaces.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// HR records and machine identities.
    pub identities: Vec<Identity>,
    /// IAM rules.
    pub policies: Vec<AccessPolicy>,
    /// Time-bound approvals.
    pub exceptions: Vec<Exception>,
    /// Target systems.
    pub targets: Vec<TargetSystem>,
    /// Access reviews (certification campaigns).
    pub reviews: Vec<AccessReview>,
    /// Reviewers' answers to them.
    pub responses: Vec<AccessReviewResponse>,
}

/// Namespace and name of an identity: the key of every per-person result.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct IdentityKey {
    /// Tenant namespace.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl IdentityKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where an object came from in Git, read from its `gatehouse.dev/*` annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// Commit id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// File path in the repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Commit author.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Verified signer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

impl Provenance {
    /// Reads the provenance annotations of an object.
    pub fn of(meta: &kube::api::ObjectMeta) -> Self {
        let get = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key)).cloned();
        Self {
            commit: get(annotations::COMMIT),
            path: get(annotations::PATH),
            author: get(annotations::AUTHOR),
            signer: get(annotations::SIGNER),
        }
    }
}

/// The kind of object an entitlement comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum SourceKind {
    /// Granted by a policy.
    AccessPolicy,
    /// Granted by an exception.
    Exception,
}

/// Why an entitlement is held: the policy or exception, and its Git provenance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Source {
    /// Policy or exception.
    pub kind: SourceKind,
    /// Object name (same namespace as the identity).
    pub name: String,
    /// Git provenance of the object.
    #[serde(flatten)]
    pub provenance: Provenance,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}/{}", self.kind, self.name)
    }
}

/// Lifecycle phase of an identity, computed from HR data and `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Phase {
    /// Hired, start date not reached (or status PreHire without a start date): no access.
    PreHire,
    /// Working: access from matching policies and valid exceptions.
    Active,
    /// Leave of absence: accounts disabled, entitlements kept for return.
    OnLeave,
    /// Leaver (status Terminated or end date passed): everything revoked.
    Terminated,
    /// Non-human identity whose owner left: kept during the grace period, then revoked.
    OwnerTerminated,
    /// Non-human identity without a valid, active human owner: no access.
    Unowned,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What should happen to an identity's accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum AccountIntent {
    /// No account yet (pre-hire).
    None,
    /// Accounts enabled where the identity holds entitlements.
    Enabled,
    /// Accounts kept but disabled (on leave).
    Disabled,
    /// Leaver: disable or delete every account (per target), revoke sessions.
    Revoked,
}

/// The sources of one entitlement; almost always exactly one, kept inline.
pub type Sources = smallvec::SmallVec<[Arc<Source>; 1]>;

/// One effective entitlement with every source that grants it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Grant {
    /// The entitlement.
    pub entitlement: Arc<EntitlementRef>,
    /// Policies and exceptions granting it, policies first, then by name.
    pub sources: Sources,
    /// False when every source is an `Observe`-mode policy: reported, never applied.
    pub enforced: bool,
}

/// Why an entitlement a matching policy or valid exception names is not granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum WithheldReason {
    /// The identity is not in a phase that receives access.
    Phase {
        /// The phase.
        phase: Phase,
    },
    /// The HR record lacks attributes access depends on.
    MissingAttributes {
        /// Missing or invalid attributes.
        attributes: Vec<String>,
    },
    /// Below the policy's required proofing level.
    InsufficientProofing {
        /// Required level.
        required: String,
        /// The identity's level, if any.
        actual: Option<String>,
    },
    /// The grant would complete a toxic combination.
    SeparationOfDuties {
        /// The SoD rule.
        rule: String,
        /// The policy declaring it.
        policy: String,
    },
    /// The entitlement names a target that does not exist.
    UnknownTarget,
    /// An access review revoked it (by decision, or by no response past the due date).
    Review {
        /// The AccessReview.
        review: String,
    },
}

impl fmt::Display for WithheldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Phase { phase } => write!(f, "identity is {phase}"),
            Self::MissingAttributes { attributes } => {
                write!(f, "HR record lacks {}", attributes.join(", "))
            }
            Self::InsufficientProofing { required, actual } => write!(
                f,
                "requires proofing {required}, identity has {}",
                actual.as_deref().unwrap_or("none")
            ),
            Self::SeparationOfDuties { rule, policy } => {
                write!(
                    f,
                    "would complete toxic combination {rule} (AccessPolicy/{policy})"
                )
            }
            Self::UnknownTarget => f.write_str("target system does not exist"),
            Self::Review { review } => write!(f, "review:{review}"),
        }
    }
}

/// An entitlement that was not granted, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Withheld {
    /// The entitlement.
    pub entitlement: Arc<EntitlementRef>,
    /// The policy or exception that names it.
    pub source: Arc<Source>,
    /// Why not.
    #[serde(flatten)]
    pub reason: WithheldReason,
}

/// The engine's verdict on one identity.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityAccess {
    /// Namespace and name.
    pub key: IdentityKey,
    /// Human or NonHuman.
    pub identity_type: IdentityType,
    /// Lifecycle phase.
    pub phase: Phase,
    /// What should happen to the identity's accounts.
    pub account: AccountIntent,
    /// Effective entitlements, sorted.
    pub entitlements: Vec<Grant>,
    /// Entitlements named by matching policies or exceptions but not granted.
    pub withheld: Vec<Withheld>,
    /// The next instant at which this verdict changes without any edit.
    pub next_change: Option<Timestamp>,
    /// Non-human identity whose owner is a leaver, or that was re-owned from one
    /// (`gatehouse.dev/previous-owner`): the owner-exit playbook's facts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_exit: Option<OwnerExit>,
    /// What attribute templates read from the Identity.
    #[serde(skip)]
    pub profile: Arc<super::attributes::Profile>,
}

/// A non-human identity's owner has left: whose exit, since when, and who could take over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerExit {
    /// The leaving owner (`spec.owner`).
    pub owner: String,
    /// The instant the owner left: the end of their end date, or the Unix epoch for a
    /// record marked Terminated without one. Credentials rotated at or after this instant
    /// (the target's rotation marker) count as rotated for this exit.
    pub left_at: Timestamp,
    /// The first active human up the owner's manager chain: the proposed interim owner
    /// (none once re-owned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposed_owner: Option<String>,
}

impl IdentityAccess {
    /// The targets the identity should have an account on: those of its enforced grants,
    /// while it is not a pre-hire or a leaver.
    pub fn account_targets(&self) -> Vec<&str> {
        if !matches!(
            self.account,
            AccountIntent::Enabled | AccountIntent::Disabled
        ) {
            return Vec::new();
        }
        let mut targets: Vec<&str> = self
            .enforced()
            .map(|g| g.entitlement.target.as_str())
            .collect();
        targets.dedup();
        targets
    }

    /// Entitlements that are applied to targets (excludes Observe-mode-only grants).
    pub fn enforced(&self) -> impl Iterator<Item = &Grant> {
        self.entitlements.iter().filter(|g| g.enforced)
    }
}

/// How bad a finding is: errors fail `gatehouse validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Severity {
    /// Must be fixed.
    Error,
    /// Worth a look; does not fail validation.
    Warning,
}

/// Kinds of finding, stable in JSON output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ViolationKind {
    /// A toxic combination is (or would be) held.
    SeparationOfDuties,
    /// An exception breaks an approval or duration rule.
    InvalidException,
    /// An exception's window has passed; it can be deleted.
    ExpiredException,
    /// Below a matching policy's required proofing level.
    InsufficientProofing,
    /// HR record lacks attributes access depends on.
    MissingAttributes,
    /// A non-human identity's owner has left.
    OwnerTerminated,
    /// A non-human identity's owner is on leave or has not started.
    OwnerInactive,
    /// A non-human identity's owner has left: its owner's manager is proposed as interim
    /// owner (set `spec.owner` in Git to keep its access past the grace period).
    InterimOwnerProposed,
    /// A non-human identity's owner has left and a target of it cannot rotate its
    /// credentials: rotate them by hand.
    CredentialsNotRotated,
    /// A name that resolves to nothing (or to the wrong type).
    UnknownReference,
    /// Managers form a cycle.
    ManagerCycle,
    /// A field value is malformed (dates, durations, attribute templates).
    InvalidValue,
    /// An attribute refers to an account that does not exist on the target (a manager
    /// without one): it is left unset.
    UnresolvedAttribute,
    /// A break-glass exception is in force: emergency access outside the reviewed path.
    BreakGlassActive,
    /// A break-glass exception was not ratified by a Git commit in time and was revoked.
    BreakGlassUnratified,
    /// A review decision that does not count: the reviewer is the subject, or not the
    /// reviewer the AccessReview names.
    ReviewRefused,
    /// The reviewer requested or approved the access under review.
    ReviewerGranted,
    /// Review items left pending past the due date.
    ReviewOverdue,
}

impl ViolationKind {
    /// The default severity of this kind.
    pub fn severity(self) -> Severity {
        match self {
            Self::SeparationOfDuties
            | Self::InvalidException
            | Self::UnknownReference
            | Self::ManagerCycle
            | Self::InvalidValue
            | Self::ReviewRefused => Severity::Error,
            Self::ExpiredException
            | Self::InsufficientProofing
            | Self::MissingAttributes
            | Self::OwnerTerminated
            | Self::OwnerInactive
            | Self::UnresolvedAttribute
            | Self::BreakGlassActive
            | Self::BreakGlassUnratified
            | Self::InterimOwnerProposed
            | Self::CredentialsNotRotated
            | Self::ReviewerGranted
            | Self::ReviewOverdue => Severity::Warning,
        }
    }

    /// Whether the finding is about the HR record's attributes (an Identity's
    /// `AttributesValid` condition), rather than about policies or exceptions.
    pub fn is_attribute_problem(self) -> bool {
        matches!(
            self,
            Self::MissingAttributes
                | Self::InvalidValue
                | Self::UnknownReference
                | Self::ManagerCycle
        )
    }
}

/// A finding about the input, naming the object and field to fix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Violation {
    /// Kind of finding.
    pub kind: ViolationKind,
    /// Error or warning.
    pub severity: Severity,
    /// Namespace of the objects concerned.
    pub namespace: String,
    /// The identity affected, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The object to fix, as `Kind/name`.
    pub object: String,
    /// The field to fix, when one field is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

/// Settings of the connector a target uses, as far as planning needs them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetInfo {
    /// Connector type.
    pub target_type: TargetType,
    /// Enforce or Observe.
    pub mode: Mode,
    /// What happens to a leaver's account.
    pub on_leave: OnLeave,
    /// Blast-radius limit.
    pub max_revocations_per_sync: Option<i64>,
    /// PostgreSQL: the prefix every entitlement's group role must start with.
    pub group_prefix: Option<String>,
    /// The attributes gatehouse owns on the target's accounts.
    #[serde(skip)]
    pub attributes: Arc<super::attributes::Mapping>,
}

/// Computed state of an exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ExceptionPhase {
    /// Valid, window not yet open.
    Pending,
    /// Valid and inside its window.
    Active,
    /// Window closed.
    Expired,
    /// Breaks a rule: grants nothing.
    Invalid,
    /// A break-glass exception created outside Git and not ratified by a Git commit in
    /// time: revoked before its end.
    Revoked,
}

/// The engine's verdict on one exception.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExceptionVerdict {
    /// Computed phase.
    pub phase: ExceptionPhase,
    /// Why it is invalid (empty otherwise).
    pub problems: Vec<String>,
    /// For a break-glass exception: who used it, its real window and its ratification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlassVerdict>,
}

/// The engine's view of a break-glass exception.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlassVerdict {
    /// Who created it outside Git (admission-checked annotation), else the Git author.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Start of the window.
    pub from: Timestamp,
    /// End of the window: `min(expiresAt, validFrom + --break-glass-max)`.
    pub until: Timestamp,
    /// Whether a Git commit of the same Exception carries it (created in Git, or
    /// applied from Git after the fact).
    pub ratified: bool,
    /// While unratified: the instant it is revoked unless ratified by then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratify_by: Option<Timestamp>,
}

impl BreakGlassVerdict {
    /// The instants at which this verdict changes without an edit.
    pub fn boundaries(&self) -> impl Iterator<Item = Timestamp> {
        [Some(self.from), Some(self.until), self.ratify_by]
            .into_iter()
            .flatten()
    }
}

/// The engine's output for a snapshot at an instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    /// The instant evaluated.
    pub now: Timestamp,
    /// Per-identity verdicts.
    pub identities: BTreeMap<IdentityKey, IdentityAccess>,
    /// Every finding, sorted.
    pub violations: Vec<Violation>,
    /// Target settings, by namespace and name.
    pub targets: BTreeMap<(String, String), TargetInfo>,
    /// Exception verdicts, by namespace and name.
    pub exceptions: BTreeMap<(String, String), ExceptionVerdict>,
    /// Identities matched per policy (namespace, name).
    pub policy_matches: BTreeMap<(String, String), usize>,
    /// The earliest instant at which any verdict changes without an edit.
    pub next_change: Option<Timestamp>,
    /// Per identity: entitlements of its break-glass exceptions that have ended (expired
    /// or revoked unratified). Revoking one of them also ends the identity's sessions on
    /// that target, so nothing opened under emergency access outlives it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub break_glass_ended: BTreeMap<IdentityKey, Vec<Arc<EntitlementRef>>>,
    /// Progress of each access review's latest cycle, by namespace and name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reviews: BTreeMap<(String, String), super::review::ReviewProgress>,
}
