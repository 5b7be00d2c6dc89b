//! The decide stage of one tenant's pass: one evaluation against everything the tenant's
//! targets hold, one plan, split by target, each target's share checked against its mode
//! and its blast-radius limit. Status is reported from this same decision, so what status
//! says and what is applied can never come from two different evaluations.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::guard::{self, BlastRadiusExceeded};
use super::{AccessState, Action, Operation, plan};
use crate::api::Mode;
use crate::engine::{DesiredState, Engine};

/// What the decide stage knows about one target of the tenant.
#[derive(Clone, Debug)]
pub struct TargetView {
    /// TargetSystem name.
    pub name: String,
    /// What the tenant's identities hold there: this pass's observation, else the last
    /// one (or nothing). Only this target's accounts and entitlements are read from it.
    /// Shared with the controller's cache of the target, not copied.
    pub held: std::sync::Arc<AccessState>,
    /// Why the target was not observed this pass (unreachable, backing off); `None` when
    /// `held` is fresh.
    pub not_observed: Option<String>,
    /// Entitlement names compare case-insensitively there (LDAP groups).
    pub case_insensitive: bool,
}

/// Why some or all of a target's operations are not applied this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The target could not be observed: nothing can be applied.
    NotObserved(String),
    /// The target is in Observe mode: operations are reported, never applied.
    ObserveMode,
    /// More revocations than the limit allows: only leavers' cut-offs (account disables
    /// and session revocations, which take nothing away for good) go ahead. A disable of
    /// someone who is not a leaver (a mover left with nothing on the target: the mark of a
    /// bad policy change) is held with the rest.
    BlastRadius(BlastRadiusExceeded),
}

impl Hold {
    /// The reason, for status messages.
    pub fn message(&self) -> String {
        match self {
            Self::NotObserved(why) => format!("target not observed: {why}"),
            Self::ObserveMode => "target is in Observe mode".into(),
            Self::BlastRadius(exceeded) => exceeded.to_string(),
        }
    }
}

/// Whether an operation cuts a person off without taking anything away for good: an
/// account disable, an owner exit's credential rotation or a session revocation. These
/// never wait on anything else.
pub fn is_cut_off(action: &Action) -> bool {
    matches!(
        action,
        Action::DisableAccount | Action::RotateCredentials { .. } | Action::RevokeSessions
    )
}

/// One target's share of the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetPlan {
    /// Every planned operation on the target, in plan order.
    pub operations: Vec<Operation>,
    /// Why some or all of them are held back.
    pub hold: Option<Hold>,
    /// The plan was made against a fresh observation of the target.
    pub observed: bool,
}

impl TargetPlan {
    /// Whether `operation` (one of this plan's) may be applied this pass.
    pub fn may_apply(&self, operation: &Operation) -> bool {
        match &self.hold {
            None => true,
            Some(Hold::BlastRadius(_)) => operation.leaver && is_cut_off(&operation.action),
            Some(Hold::NotObserved(_) | Hold::ObserveMode) => false,
        }
    }
}

/// The tenant's decision: the one evaluation, what it was made against, and the plan.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The engine's verdict for the tenant's identities, evaluated against `held`.
    pub desired: DesiredState,
    /// What the tenant's identities hold on all its targets (entitlement names respelled
    /// like the policies on case-insensitive targets).
    pub held: AccessState,
    /// Each target's share of the plan, by TargetSystem name.
    pub targets: BTreeMap<String, TargetPlan>,
}

/// Decides one tenant's pass.
pub fn decide(engine: &Engine, namespace: &str, now: Timestamp, views: &[TargetView]) -> Decision {
    let mut held = AccessState::default();
    for view in views {
        merge_target(&mut held, &view.held, &view.name);
    }
    held.identities.retain(|key, _| key.namespace == namespace);
    let mut desired = engine.evaluate_namespace(namespace, now, &held);
    let mut respelled = false;
    for view in views.iter().filter(|v| v.case_insensitive) {
        respelled |= held.respell(&desired, &view.name);
    }
    if respelled {
        // Evaluated again: separation of duties looks at what is held.
        desired = engine.evaluate_namespace(namespace, now, &held);
    }
    let mut targets: BTreeMap<String, TargetPlan> = views
        .iter()
        .map(|v| {
            (
                v.name.clone(),
                TargetPlan {
                    observed: v.not_observed.is_none(),
                    hold: v.not_observed.clone().map(Hold::NotObserved),
                    ..TargetPlan::default()
                },
            )
        })
        .collect();
    for operation in plan(&held, &desired).operations {
        if operation.identity.namespace != namespace {
            continue;
        }
        if let Some(target) = targets.get_mut(&operation.target) {
            target.operations.push(operation);
        }
    }
    for (name, target) in &mut targets {
        if target.hold.is_some() {
            continue;
        }
        let info = desired.targets.get(&(namespace.to_string(), name.clone()));
        if info.is_some_and(|i| i.mode == Mode::Observe) {
            target.hold = Some(Hold::ObserveMode);
        } else if let Err(exceeded) = guard::check(
            &target.operations,
            info.and_then(|i| i.max_revocations_per_sync),
        ) {
            target.hold = Some(Hold::BlastRadius(exceeded));
        }
    }
    Decision {
        desired,
        held,
        targets,
    }
}

/// Adds what `from` says about `target` to `into`, ignoring anything it says about other
/// targets (a connector reports only its own, but the merge does not rely on it).
fn merge_target(into: &mut AccessState, from: &AccessState, target: &str) {
    for (key, holding) in &from.identities {
        let account = holding.accounts.get(target);
        let entitlements = holding
            .entitlements
            .iter()
            .filter(|(e, _)| e.target == target);
        let mut entitlements = entitlements.peekable();
        let attrs = holding.attributes.get(target);
        if account.is_none() && entitlements.peek().is_none() && attrs.is_none() {
            continue;
        }
        let slot = into.identities.entry(key.clone()).or_default();
        if let Some(state) = account {
            slot.accounts.insert(target.to_string(), *state);
        }
        if let Some(attrs) = attrs {
            slot.attributes.insert(target.to_string(), attrs.clone());
        }
        if let Some(at) = holding.rotated.get(target) {
            slot.rotated.insert(target.to_string(), *at);
        }
        for (e, sources) in entitlements {
            slot.entitlements.insert(e.clone(), sources.clone());
        }
    }
}
