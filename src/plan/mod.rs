//! The pure planner: the difference between a base state (observed, or the desired state
//! of a base revision) and the engine's desired state, as ordered operations.
//!
//! Ordering is the safety property: every account disable, session revocation,
//! entitlement revocation and account deletion comes before any account creation or
//! grant, and leavers come first within each step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::api::{EntitlementRef, OnLeave};
use crate::engine::{AccountIntent, DesiredState, Held, IdentityKey, Source, TargetInfo};

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
    pub entitlements: BTreeMap<EntitlementRef, Vec<Arc<Source>>>,
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
                    .insert((*grant.entitlement).clone(), grant.sources.clone());
            }
            if !holding.accounts.is_empty() {
                identities.insert(key.clone(), holding);
            }
        }
        Self { identities }
    }

    /// The state after applying `plan` to `self`.
    pub fn apply(&self, plan: &Plan) -> Self {
        let mut next = self.clone();
        for op in &plan.operations {
            let holding = next.identities.entry(op.identity.clone()).or_default();
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
                Action::CreateAccount { enabled } => {
                    let state = if *enabled {
                        AccountState::Enabled
                    } else {
                        AccountState::Disabled
                    };
                    holding.accounts.insert(op.target.clone(), state);
                }
                Action::DeleteAccount => {
                    holding.accounts.remove(&op.target);
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
            if holding.accounts.is_empty() && holding.entitlements.is_empty() {
                next.identities.remove(&op.identity);
            }
        }
        next
    }
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Lock the account (LDAP lock, SCIM `active=false`, `NOLOGIN`).
    DisableAccount,
    /// End live sessions where the target can.
    RevokeSessions,
    /// Remove an entitlement.
    Revoke {
        /// The entitlement.
        entitlement: EntitlementRef,
    },
    /// Delete the account.
    DeleteAccount,
    /// Create the account.
    CreateAccount {
        /// Whether it can log in.
        enabled: bool,
    },
    /// Unlock the account.
    EnableAccount,
    /// Add an entitlement.
    Grant {
        /// The entitlement.
        entitlement: EntitlementRef,
    },
}

impl Action {
    /// Position in the plan: everything that takes access away (0..=3) precedes
    /// everything that gives it (4..=6).
    pub fn rank(&self) -> u8 {
        match self {
            Self::DisableAccount => 0,
            Self::RevokeSessions => 1,
            Self::Revoke { .. } => 2,
            Self::DeleteAccount => 3,
            Self::CreateAccount { .. } => 4,
            Self::EnableAccount => 5,
            Self::Grant { .. } => 6,
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
    /// Who.
    pub identity: IdentityKey,
    /// Target system name.
    pub target: String,
    /// What.
    pub action: Action,
    /// The identity is a leaver (its steps run first).
    pub leaver: bool,
    /// Why: the policies or exceptions behind a grant, or behind the revoked grant.
    pub sources: Vec<Arc<Source>>,
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

    /// Revocations per (namespace, target), for the blast-radius guard.
    pub fn revocations_per_target(&self) -> BTreeMap<(String, String), usize> {
        let mut counts = BTreeMap::new();
        for op in self
            .operations
            .iter()
            .filter(|op| matches!(op.action, Action::Revoke { .. }))
        {
            *counts
                .entry((op.identity.namespace.clone(), op.target.clone()))
                .or_default() += 1;
        }
        counts
    }
}

/// Plans the operations that take `base` to `desired`. Identities absent from `desired`
/// (deleted from Git) are treated as leavers.
pub fn plan(base: &AccessState, desired: &DesiredState) -> Plan {
    let target_state = AccessState::from_desired(desired);
    let keys: BTreeSet<&IdentityKey> = base
        .identities
        .keys()
        .chain(desired.identities.keys())
        .collect();
    let empty = Holding::default();
    let mut operations = Vec::new();
    for key in keys {
        let have = base.identities.get(key).unwrap_or(&empty);
        let leaver = desired
            .identities
            .get(key)
            .is_none_or(|a| a.account == AccountIntent::Revoked);
        let on_leave = |target: &str| {
            desired
                .targets
                .get(&(key.namespace.clone(), target.to_string()))
                .map(|t: &TargetInfo| t.on_leave)
                .unwrap_or_default()
        };
        let mut push = |target: &str, action: Action, sources: Vec<Arc<Source>>| {
            operations.push(Operation {
                identity: key.clone(),
                target: target.to_string(),
                action,
                leaver,
                sources,
            });
        };
        let want = if leaver {
            &empty
        } else {
            target_state.identities.get(key).unwrap_or(&empty)
        };
        for (entitlement, sources) in &have.entitlements {
            if !want.entitlements.contains_key(entitlement) {
                push(
                    &entitlement.target,
                    Action::Revoke {
                        entitlement: entitlement.clone(),
                    },
                    sources.clone(),
                );
            }
        }
        for (entitlement, sources) in &want.entitlements {
            if !have.entitlements.contains_key(entitlement) {
                push(
                    &entitlement.target,
                    Action::Grant {
                        entitlement: entitlement.clone(),
                    },
                    sources.clone(),
                );
            }
        }
        for (target, state) in &have.accounts {
            match (state, want.accounts.get(target)) {
                (AccountState::Enabled, Some(AccountState::Disabled)) => {
                    push(target, Action::DisableAccount, vec![]);
                    push(target, Action::RevokeSessions, vec![]);
                }
                (AccountState::Disabled, Some(AccountState::Enabled)) => {
                    push(target, Action::EnableAccount, vec![])
                }
                (_, Some(_)) => {}
                // No longer needed on this target: a leaver, or a mover who lost every entitlement there.
                (state, None) => {
                    if *state == AccountState::Enabled {
                        push(target, Action::DisableAccount, vec![]);
                        push(target, Action::RevokeSessions, vec![]);
                    }
                    if on_leave(target) == OnLeave::Delete {
                        push(target, Action::DeleteAccount, vec![]);
                    }
                }
            }
        }
        for (target, state) in &want.accounts {
            if !have.accounts.contains_key(target) {
                push(
                    target,
                    Action::CreateAccount {
                        enabled: *state == AccountState::Enabled,
                    },
                    vec![],
                );
            }
        }
    }
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
