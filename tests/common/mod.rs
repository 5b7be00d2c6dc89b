//! Shared builders for the engine and planner tests: objects are written as YAML (flow
//! style, so one object fits on one line) and parsed with `serde_yaml`, exactly as a
//! manifest in Git would be.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use gatehouse::api::{AccessPolicy, EntitlementRef, Exception, Identity, TargetSystem};
use gatehouse::engine::{
    DesiredState, Held, IdentityAccess, IdentityKey, NothingHeld, Settings, Snapshot, Violation,
    ViolationKind, WithheldReason, evaluate,
};
use gatehouse::plan::{AccessState, AccountState, Holding};
use jiff::Timestamp;
use serde::de::DeserializeOwned;

/// The default tenant.
pub const NS: &str = "acme";
/// The default evaluation instant: mid-day, so "today" is 2026-06-15.
pub const NOW: &str = "2026-06-15T12:00:00Z";

/// Parses a YAML document, naming it on failure.
pub fn yaml<T: DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("bad test YAML ({e}):\n{text}"))
}

/// One `gatehouse.dev/v1alpha1` object; `spec` is the inside of a YAML flow mapping.
pub fn object<T: DeserializeOwned>(kind: &str, ns: &str, name: &str, spec: &str) -> T {
    yaml(&format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: \"{name}\", namespace: \"{ns}\"}}\nspec: {{{spec}}}\n"
    ))
}

/// A human in `ns`; `employment` is the inside of `spec.employment`, `extra` more spec fields.
pub fn human_in(ns: &str, name: &str, employment: &str, extra: &str) -> Identity {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    object(
        "Identity",
        ns,
        name,
        &format!("type: Human, employment: {{{employment}}}{extra}"),
    )
}

/// A non-human identity in `ns`; an empty owner leaves `spec.owner` unset.
pub fn machine_in(ns: &str, name: &str, owner: &str) -> Identity {
    if owner.is_empty() {
        object("Identity", ns, name, "type: NonHuman")
    } else {
        object(
            "Identity",
            ns,
            name,
            &format!("type: NonHuman, owner: \"{owner}\""),
        )
    }
}

pub fn policy_in(ns: &str, name: &str, spec: &str) -> AccessPolicy {
    object("AccessPolicy", ns, name, spec)
}

pub fn exception_in(ns: &str, name: &str, spec: &str) -> Exception {
    object("Exception", ns, name, spec)
}

/// A target; `type_` is LDAP, SCIM, PostgreSQL or Kubernetes, `on_leave` Disable or Delete.
pub fn target_in(ns: &str, name: &str, type_: &str, on_leave: &str) -> TargetSystem {
    object(
        "TargetSystem",
        ns,
        name,
        &format!("type: {type_}, onLeave: {on_leave}"),
    )
}

/// A snapshot under construction. `Org::new()` has three targets in [`NS`]:
/// `ldap` (onLeave Disable), `scim` (onLeave Delete) and `pg` (onLeave Disable).
#[derive(Clone, Debug, Default)]
pub struct Org {
    pub snap: Snapshot,
}

impl Org {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn new() -> Self {
        Self::empty()
            .target(NS, "ldap", "LDAP", "Disable")
            .target(NS, "scim", "SCIM", "Delete")
            .target(NS, "pg", "PostgreSQL", "Disable")
    }

    pub fn target(mut self, ns: &str, name: &str, type_: &str, on_leave: &str) -> Self {
        self.snap.targets.push(target_in(ns, name, type_, on_leave));
        self
    }

    /// A human in [`NS`].
    pub fn human(self, name: &str, employment: &str) -> Self {
        self.human_x(NS, name, employment, "")
    }

    /// A human with a namespace and extra spec fields.
    pub fn human_x(mut self, ns: &str, name: &str, employment: &str, extra: &str) -> Self {
        self.snap
            .identities
            .push(human_in(ns, name, employment, extra));
        self
    }

    /// A non-human identity in [`NS`].
    pub fn machine(mut self, name: &str, owner: &str) -> Self {
        self.snap.identities.push(machine_in(NS, name, owner));
        self
    }

    /// A target in [`NS`] with a whole spec (the inside of a YAML flow mapping).
    pub fn target_spec(mut self, name: &str, spec: &str) -> Self {
        self.snap
            .targets
            .push(object("TargetSystem", NS, name, spec));
        self
    }

    pub fn identity(mut self, identity: Identity) -> Self {
        self.snap.identities.push(identity);
        self
    }

    /// A policy in [`NS`].
    pub fn policy(self, name: &str, spec: &str) -> Self {
        self.policy_in(NS, name, spec)
    }

    pub fn policy_in(mut self, ns: &str, name: &str, spec: &str) -> Self {
        self.snap.policies.push(policy_in(ns, name, spec));
        self
    }

    /// An exception in [`NS`].
    pub fn exception(self, name: &str, spec: &str) -> Self {
        self.exception_in(NS, name, spec)
    }

    pub fn exception_in(mut self, ns: &str, name: &str, spec: &str) -> Self {
        self.snap.exceptions.push(exception_in(ns, name, spec));
        self
    }

    /// Removes an identity (for leaver-by-deletion scenarios).
    pub fn without(mut self, ns: &str, name: &str) -> Self {
        self.snap.identities.retain(|i| {
            !(i.metadata.name.as_deref() == Some(name)
                && i.metadata.namespace.as_deref() == Some(ns))
        });
        self
    }

    pub fn eval(&self, now: &str) -> DesiredState {
        self.eval_with(now, &Settings::default(), &NothingHeld)
    }

    pub fn eval_held(&self, now: &str, held: &dyn Held) -> DesiredState {
        self.eval_with(now, &Settings::default(), held)
    }

    pub fn eval_with(&self, now: &str, settings: &Settings, held: &dyn Held) -> DesiredState {
        evaluate(&self.snap, ts(now), settings, held)
    }
}

pub fn ts(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("bad timestamp {text:?}: {e}"))
}

pub fn key(name: &str) -> IdentityKey {
    IdentityKey::new(NS, name)
}

/// The verdict on `NS/name`.
pub fn access<'a>(d: &'a DesiredState, name: &str) -> &'a IdentityAccess {
    access_in(d, NS, name)
}

pub fn access_in<'a>(d: &'a DesiredState, ns: &str, name: &str) -> &'a IdentityAccess {
    d.identities
        .get(&IdentityKey::new(ns, name))
        .unwrap_or_else(|| panic!("no verdict for {ns}/{name}"))
}

/// An entitlement as `target:name` (or the `EntitlementRef` display form).
pub fn ent_name(e: &EntitlementRef) -> String {
    e.to_string()
}

/// Effective entitlements (enforced or not), as sorted `target:name` strings.
pub fn ents(a: &IdentityAccess) -> Vec<String> {
    a.entitlements
        .iter()
        .map(|g| ent_name(&g.entitlement))
        .collect()
}

/// Withheld entitlements with their reasons, as (`target:name`, source name, reason), sorted.
pub fn withheld(a: &IdentityAccess) -> Vec<(String, String, WithheldReason)> {
    let mut out: Vec<_> = a
        .withheld
        .iter()
        .map(|w| {
            (
                ent_name(&w.entitlement),
                w.source.name.clone(),
                w.reason.clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1, format!("{:?}", a.2)).cmp(&(&b.0, &b.1, format!("{:?}", b.2))));
    out
}

/// Findings about `object` (`Kind/name`) in `ns`.
/// Findings about `object`, without attribute-flow findings (a manager without an account
/// on a target the report's mapping writes the manager to): those have their own tests
/// (`attribute_findings_on`), and would otherwise appear wherever a test's manager holds
/// nothing.
pub fn findings_on<'a>(d: &'a DesiredState, ns: &str, object: &str) -> Vec<&'a Violation> {
    d.violations
        .iter()
        .filter(|v| v.namespace == ns && v.object == object)
        .filter(|v| v.kind != ViolationKind::UnresolvedAttribute)
        .collect()
}

/// Attribute-flow findings about `object`.
pub fn attribute_findings_on<'a>(
    d: &'a DesiredState,
    ns: &str,
    object: &str,
) -> Vec<&'a Violation> {
    d.violations
        .iter()
        .filter(|v| v.namespace == ns && v.object == object)
        .filter(|v| v.kind == ViolationKind::UnresolvedAttribute)
        .collect()
}

/// Kinds of finding about `object` in [`NS`], sorted and deduplicated.
pub fn kinds_on(d: &DesiredState, object: &str) -> Vec<ViolationKind> {
    let set: BTreeSet<ViolationKind> = findings_on(d, NS, object).iter().map(|v| v.kind).collect();
    set.into_iter().collect()
}

/// Builds an entitlement reference from `target:name`.
pub fn eref(text: &str) -> EntitlementRef {
    let (target, name) = text.split_once(':').expect("target:name");
    EntitlementRef {
        target: target.into(),
        kind: None,
        namespace: None,
        name: name.into(),
    }
}

/// An observed state: per identity in [`NS`], the `target:name` entitlements it holds
/// (accounts enabled on their targets).
pub fn held(entries: &[(&str, &[&str])]) -> AccessState {
    let mut identities = BTreeMap::new();
    for (name, list) in entries {
        let mut holding = Holding::default();
        for text in *list {
            let e = eref(text);
            holding
                .accounts
                .insert(e.target.clone(), AccountState::Enabled);
            holding.entitlements.insert(e.into(), Default::default());
        }
        identities.insert(key(name), holding);
    }
    AccessState { identities }
}

/// Entitlement keys per identity, for comparing states.
pub fn entitlement_sets(state: &AccessState) -> BTreeMap<IdentityKey, BTreeSet<EntitlementRef>> {
    state
        .identities
        .iter()
        .map(|(k, h)| {
            let set: BTreeSet<EntitlementRef> = h
                .entitlements
                .keys()
                .map(|e| std::borrow::Borrow::<EntitlementRef>::borrow(e).clone())
                .collect();
            (k.clone(), set)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}
