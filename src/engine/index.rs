//! Per-namespace indexes over the snapshot: identities by name, policies by the attribute
//! they anchor on, exceptions by subject. Built once; updated per identity.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};

use super::lifecycle::{parse_date, parse_duration, parse_timestamp};
use super::model::{Provenance, Source, SourceKind, TargetInfo, ViolationKind};
use crate::api::{
    AccessPolicy, EmploymentStatus, EmploymentType, EntitlementRef, Exception, Identity,
    IdentityType, Mode, ProofingLevel, SelectorOperator, TargetSystem, TargetType,
};

/// The parsed HR fields of a human.
#[derive(Clone, Debug)]
pub struct HumanRecord {
    pub status: EmploymentStatus,
    pub employment_type: EmploymentType,
    pub manager: Option<String>,
    pub department: Option<String>,
    pub start_date: Option<Date>,
    pub end_date: Option<Date>,
}

/// One identity with what the engine derives from its spec alone.
#[derive(Clone, Debug)]
pub struct IdentityRecord {
    pub name: String,
    pub identity_type: IdentityType,
    pub human: Option<HumanRecord>,
    pub owner: Option<String>,
    /// `gatehouse.dev/previous-owner`: the owner it was taken from when that one left.
    pub previous_owner: Option<String>,
    pub proofing: Option<ProofingLevel>,
    /// Selector-visible attributes, sorted by key.
    pub attributes: Vec<(String, String)>,
    /// Malformed values: (field, message).
    pub invalid: Vec<(String, String)>,
    /// What attribute templates read.
    pub profile: Arc<super::attributes::Profile>,
}

impl IdentityRecord {
    pub fn new(identity: &Identity) -> Self {
        let spec = &identity.spec;
        let name = identity.metadata.name.clone().unwrap_or_default();
        let mut invalid = Vec::new();
        let mut attributes: BTreeMap<String, String> = spec.attributes.clone();
        let type_name = match spec.type_ {
            IdentityType::Human => "Human",
            IdentityType::NonHuman => "NonHuman",
        };
        attributes.insert("type".into(), type_name.into());
        let human = spec
            .employment
            .as_ref()
            .filter(|_| spec.type_ == IdentityType::Human)
            .map(|e| {
                let mut date = |field: &str, value: &Option<String>| {
                    value.as_deref().and_then(|v| match parse_date(v) {
                        Ok(d) => Some(d),
                        Err(msg) => {
                            invalid.push((format!("spec.employment.{field}"), msg));
                            None
                        }
                    })
                };
                let start_date = date("startDate", &e.start_date);
                let end_date = date("endDate", &e.end_date);
                let employment_type = e.type_.unwrap_or(EmploymentType::Employee);
                attributes.insert("status".into(), format!("{:?}", e.status));
                attributes.insert("employmentType".into(), format!("{employment_type:?}"));
                for (key, value) in [
                    ("department", &e.department),
                    ("location", &e.location),
                    ("title", &e.title),
                    ("manager", &e.manager),
                ] {
                    if let Some(value) = value {
                        attributes.insert(key.into(), value.clone());
                    }
                }
                HumanRecord {
                    status: e.status,
                    employment_type,
                    manager: e.manager.clone(),
                    department: e.department.clone().filter(|d| !d.is_empty()),
                    start_date,
                    end_date,
                }
            });
        Self {
            name,
            identity_type: spec.type_,
            human,
            owner: spec.owner.clone(),
            previous_owner: identity
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::api::annotations::PREVIOUS_OWNER))
                .filter(|_| spec.type_ == IdentityType::NonHuman)
                .cloned(),
            proofing: spec.proofing.as_ref().map(|p| p.level),
            attributes: attributes.into_iter().collect(),
            invalid,
            profile: Arc::new(super::attributes::Profile::of(identity)),
        }
    }

    /// The value of a selector-visible attribute.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.attributes[i].1.as_str())
    }
}

/// A compiled attribute selector.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    equals: Vec<(String, String)>,
    expressions: Vec<(String, SelectorOperator, Vec<String>)>,
}

impl Selector {
    /// Compiles a selector from its API form.
    pub fn compile(selector: &crate::api::AttributeSelector) -> Self {
        Self {
            equals: selector
                .match_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            expressions: selector
                .match_expressions
                .iter()
                .map(|e| (e.key.clone(), e.operator, e.values.clone()))
                .collect(),
        }
    }

    pub fn matches(&self, rec: &IdentityRecord) -> bool {
        self.equals
            .iter()
            .all(|(k, v)| rec.attribute(k) == Some(v.as_str()))
            && self.expressions.iter().all(|(key, op, values)| {
                let value = rec.attribute(key);
                match op {
                    SelectorOperator::In => value.is_some_and(|v| values.iter().any(|x| x == v)),
                    SelectorOperator::NotIn => {
                        !value.is_some_and(|v| values.iter().any(|x| x == v))
                    }
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// The first failing term, for `explain`.
    pub fn first_mismatch(&self, rec: &IdentityRecord) -> Option<String> {
        for (k, v) in &self.equals {
            let actual = rec.attribute(k);
            if actual != Some(v.as_str()) {
                return Some(format!("{k} is {} (needs {v})", actual.unwrap_or("unset")));
            }
        }
        for (key, op, values) in &self.expressions {
            let single = Selector {
                equals: vec![],
                expressions: vec![(key.clone(), *op, values.clone())],
            };
            if !single.matches(rec) {
                return Some(format!(
                    "{key} is {} (needs {op:?} [{}])",
                    rec.attribute(key).unwrap_or("unset"),
                    values.join(", ")
                ));
            }
        }
        None
    }

    /// Attribute values that every match must have: (key, any of values). Keys with low
    /// selectivity come last so the index anchors on the most telling attribute.
    fn anchors(&self) -> Option<(String, Vec<String>)> {
        let weak = |k: &str| matches!(k, "type" | "status" | "employmentType");
        let mut options: Vec<(String, Vec<String>)> = self
            .equals
            .iter()
            .map(|(k, v)| (k.clone(), vec![v.clone()]))
            .chain(
                self.expressions
                    .iter()
                    .filter(|(_, op, _)| *op == SelectorOperator::In)
                    .map(|(k, _, v)| (k.clone(), v.clone())),
            )
            .collect();
        options.sort_by_key(|(k, v)| (weak(k), v.len()));
        options.into_iter().next()
    }
}

/// A policy as the engine uses it.
#[derive(Clone, Debug)]
pub struct PolicyRecord {
    pub name: String,
    pub source: Arc<Source>,
    pub selector: Selector,
    pub required_proofing: Option<ProofingLevel>,
    pub entitlements: Vec<Arc<EntitlementRef>>,
    /// Interned ids of `entitlements`, in the same order.
    pub ids: Vec<u32>,
    pub mode: Mode,
    pub max_exception: Option<SignedDuration>,
    /// Malformed values: (field, message).
    pub invalid: Vec<(String, String)>,
}

/// A separation-of-duties rule in force in a namespace.
#[derive(Clone, Debug)]
pub struct SodRecord {
    pub rule: String,
    pub policy: String,
    pub entitlements: Vec<Arc<EntitlementRef>>,
    /// Interned ids of `entitlements`, in the same order.
    pub ids: Vec<u32>,
}

/// An exception as the engine uses it.
#[derive(Clone, Debug)]
pub struct ExceptionRecord {
    pub name: String,
    pub source: Arc<Source>,
    pub subject: String,
    pub requested_by: String,
    pub approved_by: Vec<String>,
    pub valid_from: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub entitlements: Vec<Arc<EntitlementRef>>,
    /// Interned ids of `entitlements`, in the same order.
    pub ids: Vec<u32>,
    pub invalid: Vec<(String, String)>,
    /// `spec.breakGlass`.
    pub break_glass: bool,
    /// `metadata.creationTimestamp`: when a break-glass exception appeared in the cluster.
    pub created_at: Option<Timestamp>,
    /// Who created it outside Git (the admission-checked annotation).
    pub created_by: Option<String>,
    /// Applied from Git (a commit annotation or a PolicySource label), or read from files
    /// (no creation timestamp: `plan`, `validate`, `audit`): not made outside Git.
    pub from_git: bool,
}

/// Everything the engine knows about one namespace.
#[derive(Clone, Debug, Default)]
pub struct Namespace {
    pub name: String,
    pub identities: BTreeMap<String, IdentityRecord>,
    pub policies: Vec<PolicyRecord>,
    pub sod: Vec<SodRecord>,
    pub exceptions: Vec<ExceptionRecord>,
    pub exceptions_by_subject: HashMap<String, Vec<usize>>,
    pub targets: BTreeMap<String, TargetInfo>,
    /// Broken `spec.attributes` entries: (target, field, message).
    pub target_invalid: Vec<(String, String, String)>,
    /// Policy indexes by anchor attribute and value (a fast non-cryptographic hash: the
    /// keys come from reviewed manifests, and this lookup runs per identity attribute).
    by_attribute: FastMap<String, FastMap<String, Vec<usize>>>,
    /// Policies without an anchor: checked against everyone.
    unanchored: Vec<usize>,
    /// Identities whose manager chain loops back.
    pub in_manager_cycle: HashSet<String>,
    /// Every entitlement named in the namespace, sorted: an id is an index here, so ids
    /// order like the entitlements themselves.
    pub entitlement_table: Vec<Arc<EntitlementRef>>,
    /// Per entitlement id: the strictest exception `maxDuration` among policies granting
    /// it, with the policy's index.
    pub max_exception_by_id: Vec<Option<(SignedDuration, usize)>>,
    /// Per entitlement id: whether its target exists in the namespace.
    pub target_known_by_id: Vec<bool>,
    /// Who names a person as manager or owner: person -> identities.
    pub referrers: HashMap<String, BTreeSet<String>>,
    /// Exceptions a person requested or approved: person -> exception indexes.
    pub exceptions_by_party: HashMap<String, Vec<usize>>,
    /// Access reviews and their answers.
    pub reviews: super::review::Reviews,
}

/// Whether an object came from Git: applied by a PolicySource (commit annotation or source
/// label), or read from files, which have no creation timestamp and no creator annotation.
fn made_in_git(meta: &kube::api::ObjectMeta) -> bool {
    let annotated = |key: &str| {
        meta.annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(key))
    };
    let labelled = meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(crate::api::labels::SOURCE));
    annotated(crate::api::annotations::COMMIT)
        || labelled
        || (meta.creation_timestamp.is_none()
            && !annotated(crate::api::annotations::BREAK_GLASS_BY))
}

fn source(kind: SourceKind, meta: &kube::api::ObjectMeta) -> Arc<Source> {
    Arc::new(Source {
        kind,
        name: meta.name.clone().unwrap_or_default(),
        provenance: Provenance::of(meta),
    })
}

impl Namespace {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Self::default()
        }
    }

    pub fn add_target(&mut self, target: &TargetSystem) {
        let spec = &target.spec;
        let name = target.metadata.name.clone().unwrap_or_default();
        let (mapping, errors) = super::attributes::Mapping::compile(spec);
        for e in errors {
            self.target_invalid.push((name.clone(), e.field, e.message));
        }
        self.targets.insert(
            name,
            TargetInfo {
                target_type: spec.type_,
                mode: spec.mode,
                on_leave: spec.on_leave,
                max_revocations_per_sync: spec
                    .limits
                    .as_ref()
                    .and_then(|l| l.max_revocations_per_sync),
                group_prefix: spec
                    .postgresql
                    .as_ref()
                    .and_then(|p| p.group_role_prefix.clone())
                    .filter(|p| !p.is_empty()),
                attributes: Arc::new(mapping),
            },
        );
    }

    pub fn add_policy(&mut self, policy: &AccessPolicy) {
        let spec = &policy.spec;
        let mut invalid = Vec::new();
        let max_exception = spec
            .exception_policy
            .as_ref()
            .and_then(|p| p.max_duration.as_deref())
            .and_then(|d| {
                parse_duration(d)
                    .map_err(|msg| {
                        invalid.push(("spec.exceptionPolicy.maxDuration".to_string(), msg))
                    })
                    .ok()
            });
        let selector = Selector::compile(&spec.selector);
        let name = policy.metadata.name.clone().unwrap_or_default();
        if spec.mode == Mode::Enforce {
            for rule in &spec.separation_of_duties {
                self.sod.push(SodRecord {
                    rule: rule.name.clone(),
                    policy: name.clone(),
                    entitlements: rule.entitlements.iter().cloned().map(Arc::new).collect(),
                    ids: Vec::new(),
                });
            }
        }
        self.policies.push(PolicyRecord {
            name,
            source: source(SourceKind::AccessPolicy, &policy.metadata),
            selector,
            required_proofing: spec.requires.as_ref().and_then(|r| r.proofing),
            entitlements: spec.entitlements.iter().cloned().map(Arc::new).collect(),
            ids: Vec::new(),
            mode: spec.mode,
            max_exception,
            invalid,
        });
    }

    pub fn add_exception(&mut self, exception: &Exception) {
        let spec = &exception.spec;
        let mut invalid = Vec::new();
        let mut ts = |field: &str, value: &str| {
            parse_timestamp(value)
                .map_err(|msg| invalid.push((format!("spec.{field}"), msg)))
                .ok()
        };
        let valid_from = ts("validFrom", &spec.valid_from);
        let expires_at = ts("expiresAt", &spec.expires_at);
        self.exceptions_by_subject
            .entry(spec.identity.clone())
            .or_default()
            .push(self.exceptions.len());
        for party in spec.approved_by.iter().chain([&spec.requested_by]) {
            let slot = self.exceptions_by_party.entry(party.clone()).or_default();
            if slot.last() != Some(&self.exceptions.len()) {
                slot.push(self.exceptions.len());
            }
        }
        self.exceptions.push(ExceptionRecord {
            name: exception.metadata.name.clone().unwrap_or_default(),
            source: source(SourceKind::Exception, &exception.metadata),
            subject: spec.identity.clone(),
            requested_by: spec.requested_by.clone(),
            approved_by: spec.approved_by.clone(),
            valid_from,
            expires_at,
            entitlements: spec.entitlements.iter().cloned().map(Arc::new).collect(),
            ids: Vec::new(),
            invalid,
            break_glass: spec.break_glass,
            created_at: exception.metadata.creation_timestamp.as_ref().map(|t| t.0),
            created_by: exception
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::api::annotations::BREAK_GLASS_BY))
                .cloned(),
            from_git: made_in_git(&exception.metadata),
        });
    }

    /// Replaces every identity at once (a later record with the same name wins).
    pub fn set_identities(&mut self, mut records: Vec<IdentityRecord>) {
        records.sort_by(|a, b| a.name.cmp(&b.name));
        self.identities = records.into_iter().map(|r| (r.name.clone(), r)).collect();
        self.referrers.clear();
        for rec in self.identities.values() {
            for person in Self::references(rec) {
                self.referrers
                    .entry(person.to_string())
                    .or_default()
                    .insert(rec.name.clone());
            }
        }
    }

    /// Adds or replaces an identity, keeping the referrer index current.
    pub fn insert_identity(&mut self, rec: IdentityRecord) {
        self.remove_identity(&rec.name.clone());
        for person in Self::references(&rec) {
            self.referrers
                .entry(person.to_string())
                .or_default()
                .insert(rec.name.clone());
        }
        self.identities.insert(rec.name.clone(), rec);
    }

    /// Removes an identity, keeping the referrer index current.
    pub fn remove_identity(&mut self, name: &str) -> Option<IdentityRecord> {
        let old = self.identities.remove(name)?;
        for person in Self::references(&old) {
            if let Some(set) = self.referrers.get_mut(person) {
                set.remove(name);
            }
        }
        Some(old)
    }

    /// The people an identity's verdict depends on directly: its manager, its owner and
    /// the owner it was re-owned from.
    fn references(rec: &IdentityRecord) -> impl Iterator<Item = &str> {
        rec.human
            .as_ref()
            .and_then(|h| h.manager.as_deref())
            .into_iter()
            .chain(rec.owner.as_deref())
            .chain(rec.previous_owner.as_deref())
    }

    /// Sorts policies by name, interns entitlements and builds the attribute index. Call
    /// after adding policies and exceptions.
    pub fn index_policies(&mut self) {
        self.policies.sort_by(|a, b| a.name.cmp(&b.name));
        self.sod
            .sort_by(|a, b| (&a.policy, &a.rule).cmp(&(&b.policy, &b.rule)));
        self.intern_entitlements();
        self.by_attribute.clear();
        self.unanchored.clear();
        for (i, policy) in self.policies.iter().enumerate() {
            match policy.selector.anchors() {
                Some((key, values)) => {
                    let by_value = self.by_attribute.entry(key).or_default();
                    for value in values {
                        let slot = by_value.entry(value).or_default();
                        if slot.last() != Some(&i) {
                            slot.push(i);
                        }
                    }
                }
                None => self.unanchored.push(i),
            }
        }
    }

    fn intern_entitlements(&mut self) {
        let mut table: Vec<Arc<EntitlementRef>> = self
            .policies
            .iter()
            .flat_map(|p| p.entitlements.iter())
            .chain(self.exceptions.iter().flat_map(|e| e.entitlements.iter()))
            .chain(self.sod.iter().flat_map(|r| r.entitlements.iter()))
            .cloned()
            .collect();
        table.sort();
        table.dedup();
        let intern = |list: &mut Vec<Arc<EntitlementRef>>, ids: &mut Vec<u32>| {
            *ids = list
                .iter_mut()
                .map(|e| {
                    let id = table
                        .binary_search(e)
                        .expect("every entitlement is in the table");
                    *e = table[id].clone();
                    id as u32
                })
                .collect();
        };
        for p in &mut self.policies {
            intern(&mut p.entitlements, &mut p.ids);
        }
        for e in &mut self.exceptions {
            intern(&mut e.entitlements, &mut e.ids);
        }
        for r in &mut self.sod {
            intern(&mut r.entitlements, &mut r.ids);
        }
        self.max_exception_by_id = vec![None; table.len()];
        for (i, policy) in self.policies.iter().enumerate() {
            let Some(limit) = policy.max_exception else {
                continue;
            };
            for &id in &policy.ids {
                let slot = &mut self.max_exception_by_id[id as usize];
                if slot.is_none_or(|(current, _)| limit < current) {
                    *slot = Some((limit, i));
                }
            }
        }
        self.target_known_by_id = table
            .iter()
            .map(|e| self.targets.contains_key(&e.target))
            .collect();
        self.entitlement_table = table;
    }

    /// Policies whose selector matches the identity, in name order.
    pub fn matching_policies(&self, rec: &IdentityRecord) -> Vec<usize> {
        let mut found: Vec<usize> = self.unanchored.clone();
        for (key, value) in &rec.attributes {
            if let Some(hits) = self.by_attribute.get(key).and_then(|m| m.get(value)) {
                found.extend_from_slice(hits);
            }
        }
        found.sort_unstable();
        found.dedup();
        found.retain(|&i| self.policies[i].selector.matches(rec));
        found
    }

    /// Recomputes which identities sit on a manager cycle.
    pub fn find_manager_cycles(&mut self) {
        let mut cycle = HashSet::new();
        let mut done: HashSet<&str> = HashSet::new();
        for start in self.identities.keys() {
            let mut path: Vec<&str> = Vec::new();
            let mut on_path: HashMap<&str, usize> = HashMap::new();
            let mut current = Some(start.as_str());
            while let Some(name) = current {
                if done.contains(name) {
                    break;
                }
                if let Some(&at) = on_path.get(name) {
                    // A self-loop marks the head of the organisation; longer loops are errors.
                    if path.len() - at > 1 {
                        cycle.extend(path[at..].iter().map(|s| s.to_string()));
                    }
                    break;
                }
                on_path.insert(name, path.len());
                path.push(name);
                current = self.manager_of(name);
            }
            done.extend(path);
        }
        self.in_manager_cycle = cycle;
    }

    /// The identities on the manager cycle through `name` (none for a self-loop, which
    /// marks the head of the organisation). An identity has one manager, so it sits on at
    /// most one cycle, and a change to its manager can only break or close that one: the
    /// cycle through it before the change and after it are all that changes.
    pub fn cycle_through(&self, name: &str) -> Vec<String> {
        let mut path: Vec<&str> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let Some((start, _)) = self.identities.get_key_value(name) else {
            return Vec::new();
        };
        let mut current = Some(start.as_str());
        while let Some(at) = current {
            if at == start && !path.is_empty() {
                return if path.len() > 1 {
                    path.into_iter().map(str::to_string).collect()
                } else {
                    Vec::new()
                };
            }
            if !seen.insert(at) {
                // Led into a loop that does not come back to `name`.
                return Vec::new();
            }
            path.push(at);
            current = self.manager_of(at);
        }
        Vec::new()
    }

    /// Replaces the cycle through an identity before a change (`before`, from
    /// [`Namespace::cycle_through`]) with the one after it; returns the identities whose
    /// membership changed.
    pub fn update_cycle(&mut self, before: Vec<String>, after: Vec<String>) -> Vec<String> {
        let after: HashSet<String> = after.into_iter().collect();
        let mut changed = Vec::new();
        for name in before {
            if !after.contains(&name) {
                self.in_manager_cycle.remove(&name);
                changed.push(name);
            }
        }
        for name in after {
            if self.in_manager_cycle.insert(name.clone()) {
                changed.push(name);
            }
        }
        changed
    }

    /// The manager an identity names, if it names an existing identity.
    pub fn manager_of(&self, name: &str) -> Option<&str> {
        let manager = self
            .identities
            .get(name)?
            .human
            .as_ref()?
            .manager
            .as_deref()?;
        self.identities
            .get_key_value(manager)
            .map(|(k, _)| k.as_str())
    }

    /// Whether `target` exists in this namespace.
    pub fn has_target(&self, target: &str) -> bool {
        self.targets.contains_key(target)
    }

    /// What is wrong with an entitlement on its target: (finding kind, field under the
    /// entitlement, message).
    pub fn entitlement_problem(
        &self,
        e: &EntitlementRef,
    ) -> Option<(ViolationKind, &'static str, String)> {
        let Some(info) = self.targets.get(&e.target) else {
            return Some((
                ViolationKind::UnknownReference,
                "target",
                format!(
                    "target {:?} is not a TargetSystem in namespace {}",
                    e.target, self.name
                ),
            ));
        };
        if info.target_type != TargetType::Kubernetes {
            let what = match info.target_type {
                TargetType::LDAP => {
                    "an LDAP entitlement names a group (its cn under spec.ldap.groupsOU)"
                }
                TargetType::SCIM => "a SCIM entitlement names a Group (its displayName)",
                _ => "a PostgreSQL entitlement names a group role",
            };
            if e.kind.is_some() || e.namespace.is_some() {
                return Some((
                    ViolationKind::InvalidValue,
                    if e.kind.is_some() {
                        "kind"
                    } else {
                        "namespace"
                    },
                    format!("{e}: {what}, with no kind or namespace: remove them"),
                ));
            }
            if e.name.trim().is_empty() || e.name.contains('\0') {
                return Some((
                    ViolationKind::InvalidValue,
                    "name",
                    format!("{e}: {what}; the name is empty or holds a NUL character"),
                ));
            }
        }
        if info.target_type == TargetType::PostgreSQL {
            // PostgreSQL truncates longer names (NAMEDATALEN 64), so the role would differ.
            if e.name.len() > 63 {
                return Some((
                    ViolationKind::InvalidValue,
                    "name",
                    format!(
                        "{e}: role name is {} bytes; PostgreSQL names are at most 63 bytes: use the group role's real name",
                        e.name.len()
                    ),
                ));
            }
            if let Some(prefix) = info
                .group_prefix
                .as_deref()
                .filter(|p| !e.name.starts_with(p))
            {
                return Some((
                    ViolationKind::InvalidValue,
                    "name",
                    format!(
                        "{e}: role {:?} is outside spec.postgresql.groupRolePrefix {prefix:?} of TargetSystem {}: gatehouse does not grant it; name a role starting with {prefix:?}",
                        e.name, e.target
                    ),
                ));
            }
        }
        if info.target_type == TargetType::Kubernetes {
            match (e.kind.as_deref(), e.namespace.is_some()) {
                (Some("ClusterRole"), _) | (Some("Role"), true) => {}
                (Some("Role"), false) => {
                    return Some((
                        ViolationKind::InvalidValue,
                        "namespace",
                        format!("Role {:?} needs a namespace", e.name),
                    ));
                }
                _ => {
                    return Some((
                        ViolationKind::InvalidValue,
                        "kind",
                        format!("{e} needs kind ClusterRole or Role on a Kubernetes target"),
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn person(name: &str, manager: Option<&str>) -> IdentityRecord {
        let manager = manager.map_or(String::new(), |m| format!(", manager: {m}"));
        let identity: Identity = serde_yaml::from_str(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}, namespace: t}}\nspec: {{type: Human, employment: {{status: Active{manager}}}}}"
        ))
        .unwrap();
        IdentityRecord::new(&identity)
    }

    proptest! {
        /// Kept up to date one edit at a time (the cycle through the edited identity
        /// before and after), the manager cycles equal a recomputation from scratch, and
        /// the identities named as changed are exactly those whose membership changed.
        #[test]
        fn cycles_kept_per_edit_equal_a_recomputation(
            edits in prop::collection::vec((0..6usize, prop::option::of(0..7usize)), 1..40),
        ) {
            let name = |i: usize| format!("p{i}");
            let mut ns = Namespace::new("t");
            for (who, manager) in edits {
                let who = name(who);
                let before_set = ns.in_manager_cycle.clone();
                let before = ns.cycle_through(&who);
                // Manager index 6 removes the identity instead.
                match manager {
                    Some(6) => { ns.remove_identity(&who); }
                    m => ns.insert_identity(person(&who, m.map(name).as_deref())),
                }
                let after = ns.cycle_through(&who);
                let changed: HashSet<String> = ns.update_cycle(before, after).into_iter().collect();
                let kept = ns.in_manager_cycle.clone();
                ns.find_manager_cycles();
                prop_assert_eq!(&kept, &ns.in_manager_cycle);
                let expected: HashSet<String> =
                    before_set.symmetric_difference(&kept).cloned().collect();
                prop_assert_eq!(changed, expected);
            }
        }
    }
}
