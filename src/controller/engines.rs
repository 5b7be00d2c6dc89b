//! Each tenant's [`Engine`], kept between passes: built once, then fed the Identity
//! changes (`upsert_identity`/`remove_identity`, which keep its indexes in step), and
//! rebuilt when a policy, an exception, a target or a review changes, and at the resync. The
//! evaluation itself still covers the whole tenant each pass.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use kube::api::ObjectMeta;

use super::pass::{SharedIdentity, TenantObjects};
use crate::engine::{Engine, IdentityKey, Settings};

/// One tenant's engine and what it was fed.
struct TenantEngine {
    engine: Engine,
    /// The resourceVersion of each Identity fed to it, by name.
    identities: HashMap<String, Option<String>>,
    /// What of the tenant's policies, exceptions and targets it was built from.
    others: u64,
}

/// Every tenant's engine.
pub struct Engines {
    settings: Settings,
    tenants: HashMap<String, TenantEngine>,
}

/// What of an object's metadata can change the engine's index of it: the spec (by
/// generation), labels and annotations (provenance), and the object itself (uid).
fn meta_hash(meta: &ObjectMeta, h: &mut impl Hasher) {
    meta.name.hash(h);
    meta.uid.hash(h);
    meta.generation.hash(h);
    meta.labels.hash(h);
    meta.annotations.hash(h);
}

fn others_hash(tenant: &TenantObjects) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let s = tenant;
    s.policies.len().hash(&mut h);
    s.policies
        .iter()
        .for_each(|p| meta_hash(&p.metadata, &mut h));
    s.exceptions.len().hash(&mut h);
    s.exceptions
        .iter()
        .for_each(|e| meta_hash(&e.metadata, &mut h));
    s.targets.len().hash(&mut h);
    s.targets
        .iter()
        .for_each(|t| meta_hash(&t.metadata, &mut h));
    s.reviews.len().hash(&mut h);
    s.reviews
        .iter()
        .for_each(|r| meta_hash(&r.metadata, &mut h));
    s.responses.len().hash(&mut h);
    s.responses
        .iter()
        .for_each(|r| meta_hash(&r.metadata, &mut h));
    h.finish()
}

/// What happened to a tenant's engine this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// Built from the whole snapshot (first pass, resync, a policy, exception or target
    /// changed).
    Rebuilt,
    /// Fed this many Identity changes.
    Incremental(usize),
}

impl Engines {
    /// No engines yet.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            tenants: HashMap::new(),
        }
    }

    /// Drops the tenant's engine: its next pass rebuilds it from the whole snapshot.
    pub fn resync(&mut self, namespace: &str) {
        self.tenants.remove(namespace);
    }

    /// The tenant's engine, brought up to date with its objects.
    pub fn update(&mut self, tenant: &TenantObjects) -> (&Engine, Update) {
        let others = others_hash(tenant);
        let versions = || {
            tenant
                .identities
                .iter()
                .map(SharedIdentity::get)
                .map(|i| {
                    (
                        i.metadata.name.clone().unwrap_or_default(),
                        i.metadata.resource_version.clone(),
                    )
                })
                .collect::<HashMap<_, _>>()
        };
        let kept = self
            .tenants
            .get(&tenant.namespace)
            .is_some_and(|t| t.others == others);
        if !kept {
            let engine = Engine::new(&tenant.to_snapshot(), self.settings.clone());
            let fresh = TenantEngine {
                engine,
                identities: versions(),
                others,
            };
            let slot = self
                .tenants
                .entry(tenant.namespace.clone())
                .insert_entry(fresh)
                .into_mut();
            return (&slot.engine, Update::Rebuilt);
        }
        let state = self
            .tenants
            .get_mut(&tenant.namespace)
            .expect("checked above");
        let mut changes = 0;
        let mut present = std::collections::HashSet::new();
        for identity in tenant.identities.iter().map(SharedIdentity::get) {
            let name = identity.metadata.name.clone().unwrap_or_default();
            let version = &identity.metadata.resource_version;
            if state.identities.get(&name) != Some(version) {
                state.engine.upsert_identity(identity);
                state.identities.insert(name.clone(), version.clone());
                changes += 1;
            }
            present.insert(name);
        }
        let gone: Vec<String> = state
            .identities
            .keys()
            .filter(|n| !present.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            state
                .engine
                .remove_identity(&IdentityKey::new(&tenant.namespace, &name));
            state.identities.remove(&name);
            changes += 1;
        }
        (&state.engine, Update::Incremental(changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NothingHeld;

    fn identity(name: &str, dept: &str, version: &str) -> crate::api::Identity {
        serde_yaml::from_str(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}, namespace: t, resourceVersion: '{version}'}}\nspec: {{type: Human, employment: {{status: Active, department: {dept}, manager: {name}}}}}"
        ))
        .unwrap()
    }

    fn tenant(identities: Vec<crate::api::Identity>, policy_generation: i64) -> TenantObjects {
        let policy = serde_yaml::from_str(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: fin, namespace: t, generation: {policy_generation}}}\nspec: {{selector: {{matchAttributes: {{department: finance}}}}, entitlements: [{{target: k8s, kind: ClusterRole, name: view}}]}}"
        ))
        .unwrap();
        let target = serde_yaml::from_str(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {name: k8s, namespace: t, generation: 1}\nspec: {type: Kubernetes}",
        )
        .unwrap();
        TenantObjects {
            namespace: "t".into(),
            identities: identities.into_iter().map(SharedIdentity::new).collect(),
            policies: vec![policy],
            exceptions: vec![],
            targets: vec![target],
            deleting: vec![],
            ..Default::default()
        }
    }

    /// Fed only the Identity changes, the kept engine evaluates like one built afresh.
    #[test]
    fn identity_changes_are_fed_and_other_changes_rebuild() {
        let now = "2026-12-01T00:00:00Z".parse().unwrap();
        let mut engines = Engines::new(Settings::default());
        let first = tenant(
            vec![identity("a", "finance", "1"), identity("b", "sales", "1")],
            1,
        );
        assert_eq!(engines.update(&first).1, Update::Rebuilt);
        assert_eq!(engines.update(&first).1, Update::Incremental(0));
        // b moves to finance, c joins, a leaves the tenant.
        let next = tenant(
            vec![identity("b", "finance", "2"), identity("c", "finance", "1")],
            1,
        );
        let (engine, update) = engines.update(&next);
        assert_eq!(update, Update::Incremental(3));
        let fresh = Engine::new(&next.to_snapshot(), Settings::default());
        assert_eq!(
            engine.evaluate_namespace("t", now, &NothingHeld).identities,
            fresh.evaluate_namespace("t", now, &NothingHeld).identities
        );
        // A policy change rebuilds; so does the resync.
        assert_eq!(engines.update(&tenant(vec![], 2)).1, Update::Rebuilt);
        engines.resync("t");
        assert_eq!(engines.update(&tenant(vec![], 2)).1, Update::Rebuilt);
    }
}
