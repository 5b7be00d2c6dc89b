//! The pure planner: the difference between a base state (observed, or the desired state
//! of a base revision) and the engine's desired state, as ordered operations.
//!
//! Ordering is the safety property: every account disable, credential rotation, session
//! revocation, entitlement revocation and account deletion comes before any account
//! creation or grant, and leavers come first within each step.
//!
//! **Owner exit.** A non-human identity whose owner left ([`IdentityAccess::owner_exit`])
//! gets one [`Action::RotateCredentials`] on each target where it has an account, the
//! target's type can rotate ([`crate::engine::owner_exit::rotates_credentials`]) and the
//! observed rotation marker ([`Holding::rotated`]) is older than the owner's exit. The
//! marker lives on the target, so the rotation happens once per exit and is confirmed by
//! the next observation.

pub mod decide;
pub mod guard;

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;

use crate::api::{EntitlementRef, OnLeave};
use crate::engine::attributes::{self, AttributeChange, Attributes};
use crate::engine::owner_exit::rotates_credentials;
use crate::engine::{
    AccountIntent, DesiredState, Grant, Held, IdentityAccess, IdentityKey, Sources, TargetInfo,
};

/// State of an account on a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum AccountState {
    /// Can log in.
    Enabled,
    /// Exists, cannot log in.
    Disabled,
}

/// What one identity holds: accounts per target and entitlements with their sources
/// (sources are empty when the state was observed on a target).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    /// Account per target name.
    pub accounts: BTreeMap<String, AccountState>,
    /// Entitlements held, with the objects that granted them.
    pub entitlements: BTreeMap<Arc<EntitlementRef>, Sources>,
    /// Per target: the owned attributes of the account there (the target's mapped
    /// attributes only; an absent one is unset). Targets without a mapping are absent.
    pub attributes: BTreeMap<String, Attributes>,
    /// Per target: the owner-exit instant the account's last credential rotation was for
    /// (the target's rotation marker). Targets without one are absent.
    pub rotated: BTreeMap<String, Timestamp>,
}

/// Accounts and entitlements per identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessState {
    /// Holdings by identity; identities holding nothing are absent.
    pub identities: BTreeMap<IdentityKey, Holding>,
}

impl Held for AccessState {
    fn holds(&self, identity: &IdentityKey, entitlement: &EntitlementRef) -> bool {
        self.identities
            .get(identity)
            .is_some_and(|h| h.entitlements.contains_key(entitlement))
    }
}

impl AccessState {
    /// The state a fully applied desired state leaves behind: enabled (or, on leave,
    /// disabled) accounts on every target of an enforced entitlement; nothing for
    /// pre-hires and leavers.
    pub fn from_desired(desired: &DesiredState) -> Self {
        let mut identities = BTreeMap::new();
        for (key, access) in &desired.identities {
            let state = match access.account {
                AccountIntent::Enabled => AccountState::Enabled,
                AccountIntent::Disabled => AccountState::Disabled,
                AccountIntent::None | AccountIntent::Revoked => continue,
            };
            let mut holding = Holding::default();
            for grant in access.enforced() {
                holding
                    .accounts
                    .insert(grant.entitlement.target.clone(), state);
                holding
                    .entitlements
                    .insert(grant.entitlement.clone(), grant.sources.clone());
            }
            if let Some(exit) = &access.owner_exit {
                for target in holding.accounts.keys() {
                    if rotates_on(desired, key, target) {
                        holding.rotated.insert(target.clone(), exit.left_at);
                    }
                }
            }
            for target in holding.accounts.keys() {
                if let Some(attrs) =
                    attributes::desired_for(desired, key, target).filter(|a| !a.is_empty())
                {
                    holding.attributes.insert(target.clone(), attrs);
                }
            }
            if !holding.accounts.is_empty() {
                identities.insert(key.clone(), holding);
            }
        }
        Self { identities }
    }

    /// Respells the entitlements held on `target` the way `desired` spells them for the same
    /// identity when the two differ only in case, for a target whose names compare
    /// case-insensitively (an LDAP directory that returns `cn=Finance` for the policy's
    /// `finance`). Without it every sync would revoke the one spelling and grant the other.
    /// Returns whether anything was respelled.
    pub fn respell(&mut self, desired: &DesiredState, target: &str) -> bool {
        let mut changed = false;
        for (key, holding) in &mut self.identities {
            let Some(access) = desired.identities.get(key) else {
                continue;
            };
            let renames: Vec<(Arc<EntitlementRef>, Arc<EntitlementRef>)> = holding
                .entitlements
                .keys()
                .filter(|held| held.target == target)
                .filter(|held| {
                    !access
                        .entitlements
                        .iter()
                        .any(|g| *g.entitlement == ***held)
                })
                .filter_map(|held| {
                    access
                        .entitlements
                        .iter()
                        .find(|g| {
                            let want = &g.entitlement;
                            want.target == held.target
                                && want.kind == held.kind
                                && want.namespace == held.namespace
                                && want.name.to_lowercase() == held.name.to_lowercase()
                        })
                        .map(|g| (held.clone(), g.entitlement.clone()))
                })
                .collect();
            for (from, to) in renames {
                if let Some(sources) = holding.entitlements.remove(&from) {
                    holding.entitlements.entry(to).or_insert(sources);
                    changed = true;
                }
            }
        }
        changed
    }

    /// The state after applying `plan` to `self`.
    pub fn apply(&self, plan: &Plan) -> Self {
        let mut next = self.clone();
        next.apply_in_place(&plan.operations);
        next
    }

    /// Applies operations to `self`, in order, as [`AccessState::apply`] does: how the
    /// controller keeps its cache of a target in step with the operations it confirmed.
    pub fn apply_in_place<'a>(&mut self, operations: impl IntoIterator<Item = &'a Operation>) {
        let next = self;
        for op in operations {
            let holding = next.identities.entry((*op.identity).clone()).or_default();
            match &op.action {
                Action::DisableAccount => {
                    holding
                        .accounts
                        .insert(op.target.clone(), AccountState::Disabled);
                }
                Action::EnableAccount => {
                    holding
                        .accounts
                        .insert(op.target.clone(), AccountState::Enabled);
                }
                Action::CreateAccount {
                    enabled,
                    attributes,
                    rotated_for,
                } => {
                    let state = if *enabled {
                        AccountState::Enabled
                    } else {
                        AccountState::Disabled
                    };
                    holding.accounts.insert(op.target.clone(), state);
                    if let Some(at) = rotated_for {
                        holding.rotated.insert(op.target.clone(), *at);
                    }
                    if !attributes.is_empty() {
                        holding
                            .attributes
                            .insert(op.target.clone(), attributes.clone());
                    }
                }
                Action::UpdateAttributes { changes } => {
                    let attrs = holding.attributes.entry(op.target.clone()).or_default();
                    for change in changes {
                        match &change.to {
                            Some(v) => attrs.insert(change.name.clone(), v.clone()),
                            None => attrs.remove(&change.name),
                        };
                    }
                    if attrs.is_empty() {
                        holding.attributes.remove(&op.target);
                    }
                }
                Action::DeleteAccount => {
                    holding.accounts.remove(&op.target);
                    holding.attributes.remove(&op.target);
                    holding.rotated.remove(&op.target);
                }
                Action::RotateCredentials { owner_left_at } => {
                    holding.rotated.insert(op.target.clone(), *owner_left_at);
                }
                Action::RevokeSessions => {}
                Action::Revoke { entitlement } => {
                    holding.entitlements.remove(entitlement);
                }
                Action::Grant { entitlement } => {
                    holding
                        .entitlements
                        .insert(entitlement.clone(), op.sources.clone());
                }
            }
            if holding.accounts.is_empty()
                && holding.entitlements.is_empty()
                && holding.attributes.is_empty()
                && holding.rotated.is_empty()
            {
                next.identities.remove(&op.identity);
            }
        }
    }
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Lock the account (LDAP lock, SCIM `active=false`, `NOLOGIN`).
    DisableAccount,
    /// Owner exit: invalidate the non-human identity's credentials on the target
    /// (PostgreSQL `PASSWORD NULL` and its sessions ended; Kubernetes token Secrets
    /// deleted) and record the rotation marker there.
    RotateCredentials {
        /// The owner's exit instant the rotation is for (written as the marker).
        #[serde(rename = "ownerLeftAt")]
        owner_left_at: Timestamp,
    },
    /// End live sessions where the target can.
    RevokeSessions,
    /// Remove an entitlement.
    Revoke {
        /// The entitlement.
        entitlement: Arc<EntitlementRef>,
    },
    /// Delete the account.
    DeleteAccount,
    /// Create the account.
    CreateAccount {
        /// Whether it can log in.
        enabled: bool,
        /// The owned attributes it is created with (text only: references to other
        /// accounts follow in an [`Action::UpdateAttributes`], once those exist).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        attributes: Attributes,
        /// A machine's account created after its owner left: born rotated for that exit
        /// (the connector writes the rotation marker with it), so it is never rotated.
        #[serde(
            default,
            rename = "rotatedFor",
            skip_serializing_if = "Option::is_none"
        )]
        rotated_for: Option<Timestamp>,
    },
    /// Bring the account's owned attributes (the target's mapping of the HR record) in
    /// line: after every revocation, before any grant.
    UpdateAttributes {
        /// Each attribute, old value to new.
        changes: Vec<AttributeChange>,
    },
    /// Unlock the account.
    EnableAccount,
    /// Add an entitlement.
    Grant {
        /// The entitlement.
        entitlement: Arc<EntitlementRef>,
    },
}

impl Action {
    /// The action's name as it appears in JSON reports and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::DisableAccount => "disableAccount",
            Self::RotateCredentials { .. } => "rotateCredentials",
            Self::RevokeSessions => "revokeSessions",
            Self::Revoke { .. } => "revoke",
            Self::DeleteAccount => "deleteAccount",
            Self::CreateAccount { .. } => "createAccount",
            Self::UpdateAttributes { .. } => "updateAttributes",
            Self::EnableAccount => "enableAccount",
            Self::Grant { .. } => "grant",
        }
    }

    /// Position in the plan: everything that takes access away (0..=3; a credential
    /// rotation ranks with the account disables, right after them) precedes attribute
    /// updates (5, after the creations they may refer to) and everything that gives
    /// access (4..=7).
    pub fn rank(&self) -> u8 {
        match self {
            Self::DisableAccount | Self::RotateCredentials { .. } => 0,
            Self::RevokeSessions => 1,
            Self::Revoke { .. } => 2,
            Self::DeleteAccount => 3,
            Self::CreateAccount { .. } => 4,
            Self::UpdateAttributes { .. } => 5,
            Self::EnableAccount => 6,
            Self::Grant { .. } => 7,
        }
    }

    /// Whether the step removes access.
    pub fn is_revocation(&self) -> bool {
        self.rank() <= 3
    }
}

/// One operation on one target for one identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Operation {
    /// Who (shared by all of one identity's operations).
    pub identity: Arc<IdentityKey>,
    /// Target system name.
    pub target: String,
    /// What.
    pub action: Action,
    /// The identity is a leaver, or the step is an owner exit's credential rotation (its
    /// steps run first, and go ahead as cut-offs when the guard holds the rest).
    pub leaver: bool,
    /// Why: the policies or exceptions behind a grant, or behind the revoked grant.
    pub sources: Sources,
}

/// Ordered operations that take a base state to the desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Revocations first, then grants; leavers first within each step.
    pub operations: Vec<Operation>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

/// Plans the operations that take `base` to `desired`. Identities absent from `desired`
/// (deleted from Git) are treated as leavers.
pub fn plan(base: &AccessState, desired: &DesiredState) -> Plan {
    let empty = Holding::default();
    let mut operations = Vec::new();
    // Where each identity's operations begin.
    let mut starts = Vec::new();
    for (key, have, access) in merge_keys(&base.identities, &desired.identities) {
        let key = Arc::new(key.clone());
        let have = have.unwrap_or(&empty);
        let state = access.and_then(|a| match a.account {
            AccountIntent::Enabled => Some(AccountState::Enabled),
            AccountIntent::Disabled => Some(AccountState::Disabled),
            AccountIntent::None | AccountIntent::Revoked => None,
        });
        let leaver = access.is_none_or(|a| a.account == AccountIntent::Revoked);
        // Desired grants, sorted like `have.entitlements` (both by entitlement).
        let want: Vec<&Grant> = match (state, access) {
            (Some(_), Some(a)) => a.enforced().collect(),
            _ => Vec::new(),
        };
        starts.push(operations.len());
        let mut rotations = Vec::new();
        if let Some(exit) = access.and_then(|a| a.owner_exit.as_ref()) {
            for target in have.accounts.keys() {
                let rotates = rotates_on(desired, &key, target);
                let done = have
                    .rotated
                    .get(target)
                    .is_some_and(|at| *at >= exit.left_at);
                if rotates && !done {
                    rotations.push(Operation {
                        identity: key.clone(),
                        target: target.clone(),
                        action: Action::RotateCredentials {
                            owner_left_at: exit.left_at,
                        },
                        leaver: true,
                        sources: Sources::new(),
                    });
                }
            }
        }
        let mut push = |target: &str, action: Action, sources: Sources| {
            operations.push(Operation {
                identity: key.clone(),
                target: target.to_string(),
                action,
                leaver,
                sources,
            });
        };
        diff_entitlements(have, &want, &mut push);
        // Accounts wanted: one per target of a desired grant (grants are sorted by target).
        let mut targets: Vec<&str> = want.iter().map(|g| g.entitlement.target.as_str()).collect();
        targets.dedup();
        for (target, held) in &have.accounts {
            let wanted = targets.binary_search(&target.as_str()).is_ok();
            match (held, state.filter(|_| wanted)) {
                (AccountState::Enabled, Some(AccountState::Disabled)) => {
                    push(target, Action::DisableAccount, Sources::new());
                    push(target, Action::RevokeSessions, Sources::new());
                }
                (AccountState::Disabled, Some(AccountState::Enabled)) => {
                    push(target, Action::EnableAccount, Sources::new())
                }
                (_, Some(_)) => {}
                // No longer needed on this target: a leaver, or a mover who lost every entitlement there.
                (held, None) => {
                    if *held == AccountState::Enabled {
                        push(target, Action::DisableAccount, Sources::new());
                        push(target, Action::RevokeSessions, Sources::new());
                    }
                    let on_leave = desired
                        .targets
                        .get(&(key.namespace.clone(), target.clone()))
                        .map(|t: &TargetInfo| t.on_leave)
                        .unwrap_or_default();
                    if on_leave == OnLeave::Delete {
                        push(target, Action::DeleteAccount, Sources::new());
                    }
                }
            }
        }
        if let Some(state) = state {
            for target in targets {
                let want = attributes::desired_for(desired, &key, target).unwrap_or_default();
                if have.accounts.contains_key(target) {
                    let changes = attributes::diff(have.attributes.get(target), &want);
                    if !changes.is_empty() {
                        push(target, Action::UpdateAttributes { changes }, Sources::new());
                    }
                    continue;
                }
                // Created with its text attributes; references to other accounts follow
                // once every creation of the plan has run.
                let (references, text): (Attributes, Attributes) = want
                    .into_iter()
                    .partition(|(_, v)| matches!(v, attributes::AttrValue::Account { .. }));
                let rotated_for = access
                    .and_then(|a| a.owner_exit.as_ref())
                    .filter(|_| rotates_on(desired, &key, target))
                    .map(|exit| exit.left_at);
                push(
                    target,
                    Action::CreateAccount {
                        enabled: state == AccountState::Enabled,
                        attributes: text,
                        rotated_for,
                    },
                    Sources::new(),
                );
                if !references.is_empty() {
                    let changes = attributes::diff(None, &references);
                    push(target, Action::UpdateAttributes { changes }, Sources::new());
                }
            }
        }
        operations.extend(rotations);
    }
    end_break_glass_sessions(desired, &mut operations, &starts);
    operations.sort_by(|a, b| {
        (
            a.action.rank(),
            !a.leaver,
            &a.identity,
            &a.target,
            &a.action,
        )
            .cmp(&(
                b.action.rank(),
                !b.leaver,
                &b.identity,
                &b.target,
                &b.action,
            ))
    });
    Plan { operations }
}

/// Adds a session revocation on each target where a plan revokes an entitlement of an
/// ended break-glass exception (unless the identity's sessions there already end), so
/// nothing opened under emergency access outlives it. `starts` gives where each
/// identity's operations begin.
fn end_break_glass_sessions(
    desired: &DesiredState,
    operations: &mut Vec<Operation>,
    starts: &[usize],
) {
    if desired.break_glass_ended.is_empty() {
        return;
    }
    let mut bounds: Vec<usize> = starts.to_vec();
    bounds.push(operations.len());
    let mut extra = Vec::new();
    for pair in bounds.windows(2) {
        let ops = &operations[pair[0]..pair[1]];
        let Some(first) = ops.first() else { continue };
        let Some(ended) = desired.break_glass_ended.get(&first.identity) else {
            continue;
        };
        let mut targets: Vec<&str> = ops
            .iter()
            .filter_map(|op| match &op.action {
                Action::Revoke { entitlement } if ended.iter().any(|e| e == entitlement) => {
                    Some(op.target.as_str())
                }
                _ => None,
            })
            .collect();
        targets.sort_unstable();
        targets.dedup();
        for target in targets {
            let already = ops
                .iter()
                .any(|op| op.target == target && op.action == Action::RevokeSessions);
            if !already {
                extra.push(Operation {
                    identity: first.identity.clone(),
                    target: target.to_string(),
                    action: Action::RevokeSessions,
                    leaver: first.leaver,
                    sources: Sources::new(),
                });
            }
        }
    }
    operations.extend(extra);
}

/// Whether gatehouse rotates credentials on `target` of the identity's namespace.
fn rotates_on(desired: &DesiredState, key: &IdentityKey, target: &str) -> bool {
    desired
        .targets
        .get(&(key.namespace.clone(), target.to_string()))
        .is_some_and(|t| rotates_credentials(t.target_type))
}

/// Walks the identities of both sides in key order.
fn merge_keys<'a>(
    base: &'a BTreeMap<IdentityKey, Holding>,
    desired: &'a BTreeMap<IdentityKey, IdentityAccess>,
) -> impl Iterator<
    Item = (
        &'a IdentityKey,
        Option<&'a Holding>,
        Option<&'a IdentityAccess>,
    ),
> {
    let mut left = base.iter().peekable();
    let mut right = desired.iter().peekable();
    std::iter::from_fn(move || match (left.peek(), right.peek()) {
        (Some((a, _)), Some((b, _))) if a == b => {
            let (key, have) = left.next()?;
            let (_, want) = right.next()?;
            Some((key, Some(have), Some(want)))
        }
        (Some((a, _)), Some((b, _))) if a > b => right.next().map(|(k, w)| (k, None, Some(w))),
        (Some(_), _) => left.next().map(|(k, h)| (k, Some(h), None)),
        (None, Some(_)) => right.next().map(|(k, w)| (k, None, Some(w))),
        (None, None) => None,
    })
}

/// Revokes what is held but not wanted and grants what is wanted but not held, walking
/// both sorted sides once.
fn diff_entitlements(
    have: &Holding,
    want: &[&Grant],
    push: &mut impl FnMut(&str, Action, Sources),
) {
    let mut held = have.entitlements.iter().peekable();
    let mut wanted = want.iter().peekable();
    loop {
        // Which side is behind: the held entitlement (revoke), the wanted one (grant), or neither.
        let order = match (held.peek(), wanted.peek()) {
            (Some((h, _)), Some(w)) => (***h).cmp(&*w.entitlement),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => break,
        };
        match order {
            std::cmp::Ordering::Equal => {
                held.next();
                wanted.next();
            }
            std::cmp::Ordering::Less => {
                let (h, sources) = held.next().expect("peeked");
                push(
                    &h.target,
                    Action::Revoke {
                        entitlement: h.clone(),
                    },
                    sources.clone(),
                );
            }
            std::cmp::Ordering::Greater => {
                let w = wanted.next().expect("peeked");
                push(
                    &w.entitlement.target,
                    Action::Grant {
                        entitlement: w.entitlement.clone(),
                    },
                    w.sources.clone(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_match_their_json_tags() {
        let e = Arc::new(EntitlementRef {
            target: "t".into(),
            kind: None,
            namespace: None,
            name: "n".into(),
        });
        for action in [
            Action::DisableAccount,
            Action::RotateCredentials {
                owner_left_at: Timestamp::UNIX_EPOCH,
            },
            Action::RevokeSessions,
            Action::Revoke {
                entitlement: e.clone(),
            },
            Action::DeleteAccount,
            Action::CreateAccount {
                enabled: true,
                attributes: Default::default(),
                rotated_for: None,
            },
            Action::UpdateAttributes { changes: vec![] },
            Action::EnableAccount,
            Action::Grant { entitlement: e },
        ] {
            let json = serde_json::to_value(&action).unwrap();
            assert_eq!(json["action"], action.name());
        }
    }
}
