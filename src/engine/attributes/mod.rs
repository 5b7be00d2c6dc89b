//! Attribute flow: the HR record written onto every account, as each TargetSystem's
//! `spec.attributes` maps it (with per-type defaults), and kept in sync.
//!
//! Pure: a [`Mapping`] is compiled from a TargetSystem (bad templates become findings),
//! and rendered for one identity on one target into the [`Attributes`] its account should
//! carry. The planner diffs those against what the connector observed.

mod defaults;
mod template;

use std::collections::BTreeMap;

use serde::Serialize;

pub use template::Template;

use crate::api::{Identity, IdentityType, LdapFlavor, TargetSystemSpec, TargetType};

/// One attribute value as gatehouse owns it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum AttrValue {
    /// Text, written as is.
    Text(String),
    /// Another account on the same target (the manager's), written in the target's own
    /// form: a DN on LDAP, the resource id on SCIM.
    Account {
        /// The referenced account's name.
        account: String,
    },
}

impl std::fmt::Display for AttrValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(t) => f.write_str(t),
            Self::Account { account } => write!(f, "account {account}"),
        }
    }
}

/// Owned attributes of one account: name to value; an owned attribute that is absent
/// should be unset on the target.
pub type Attributes = BTreeMap<String, AttrValue>;

/// One attribute to change, old value to new (`None`: unset).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeChange {
    /// Attribute name on the target.
    pub name: String,
    /// What the target holds now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<AttrValue>,
    /// What it should hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<AttrValue>,
}

impl std::fmt::Display for AttributeChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |v: &Option<AttrValue>| match v {
            Some(AttrValue::Text(t)) => format!("{t:?}"),
            Some(reference) => reference.to_string(),
            None => "(unset)".into(),
        };
        write!(
            f,
            "{}: {} → {}",
            self.name,
            text(&self.from),
            text(&self.to)
        )
    }
}

/// The changes that take `have` to `want`, sorted by attribute name.
pub fn diff(have: Option<&Attributes>, want: &Attributes) -> Vec<AttributeChange> {
    let empty = Attributes::new();
    let have = have.unwrap_or(&empty);
    let mut out = Vec::new();
    for (name, value) in want {
        if have.get(name) != Some(value) {
            out.push(AttributeChange {
                name: name.clone(),
                from: have.get(name).cloned(),
                to: Some(value.clone()),
            });
        }
    }
    for (name, value) in have {
        if !want.contains_key(name) {
            out.push(AttributeChange {
                name: name.clone(),
                from: Some(value.clone()),
                to: None,
            });
        }
    }
    out.sort();
    out
}

/// The parts of an Identity templates read, held once per identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// `metadata.name`.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `Human` or `NonHuman`.
    pub identity_type: String,
    /// `spec.displayName`.
    pub display_name: Option<String>,
    /// `spec.email`.
    pub email: Option<String>,
    /// `spec.owner`.
    pub owner: Option<String>,
    /// `spec.proofing.level`.
    pub proofing: Option<String>,
    /// `spec.employment`.
    pub employment: Option<ProfileEmployment>,
    /// `spec.attributes`.
    pub attributes: BTreeMap<String, String>,
    /// `spec.accounts`: account names per target.
    pub accounts: BTreeMap<String, String>,
}

/// `spec.employment` as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileEmployment {
    /// Status.
    pub status: String,
    /// Employment type (`Employee` when unset).
    pub employment_type: String,
    /// Department.
    pub department: Option<String>,
    /// Location.
    pub location: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Manager's identity name.
    pub manager: Option<String>,
    /// Start date.
    pub start_date: Option<String>,
    /// End date.
    pub end_date: Option<String>,
}

impl Profile {
    /// Reads the profile of an Identity.
    pub fn of(identity: &Identity) -> Self {
        let spec = &identity.spec;
        Self {
            name: identity.metadata.name.clone().unwrap_or_default(),
            namespace: identity.metadata.namespace.clone().unwrap_or_default(),
            identity_type: match spec.type_ {
                IdentityType::Human => "Human",
                IdentityType::NonHuman => "NonHuman",
            }
            .into(),
            display_name: spec.display_name.clone(),
            email: spec.email.clone(),
            owner: spec.owner.clone(),
            proofing: spec.proofing.as_ref().map(|p| format!("{:?}", p.level)),
            employment: spec.employment.as_ref().map(|e| ProfileEmployment {
                status: format!("{:?}", e.status),
                employment_type: format!(
                    "{:?}",
                    e.type_.unwrap_or(crate::api::EmploymentType::Employee)
                ),
                department: e.department.clone(),
                location: e.location.clone(),
                title: e.title.clone(),
                manager: e.manager.clone(),
                start_date: e.start_date.clone(),
                end_date: e.end_date.clone(),
            }),
            attributes: spec.attributes.clone(),
            accounts: spec.accounts.clone(),
        }
    }

    /// The account name on `target`: `spec.accounts[target]`, else the identity's name.
    pub fn account(&self, target: &str) -> &str {
        self.accounts.get(target).unwrap_or(&self.name)
    }

    /// The manager's identity name, when the record names one other than itself.
    pub fn manager(&self) -> Option<&str> {
        self.employment
            .as_ref()
            .and_then(|e| e.manager.as_deref())
            .filter(|m| *m != self.name)
    }
}

/// A TargetSystem's compiled attribute mapping: the attributes gatehouse owns on its
/// accounts, each with its template, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    entries: Vec<(String, Template)>,
}

/// A problem with one entry of `spec.attributes`: the field and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingError {
    /// `spec.attributes.<name>`.
    pub field: String,
    /// What is wrong and the fix.
    pub message: String,
}

impl Mapping {
    /// Compiles the mapping of a TargetSystem: the type's defaults (unless
    /// `spec.defaultAttributes: false`) overlaid with `spec.attributes`. Entries that do
    /// not compile are left out and returned as errors: a broken template never stops
    /// access (or a leaver's cut-off) on the target.
    pub fn compile(spec: &TargetSystemSpec) -> (Self, Vec<MappingError>) {
        let mut errors = Vec::new();
        let mut templates: BTreeMap<String, String> = if spec.default_attributes.unwrap_or(true) {
            defaults::for_target(spec)
        } else {
            BTreeMap::new()
        };
        // Attributes set only at creation (`spec.ldap.attributes`) are not owned.
        if let Some(ldap) = &spec.ldap {
            for name in ldap.attributes.keys() {
                if spec.attributes.contains_key(name) {
                    errors.push(MappingError {
                        field: format!("spec.attributes.{name}"),
                        message: format!(
                            "{name} is also in spec.ldap.attributes (set once, at creation); keep it in one place: spec.attributes to own it, spec.ldap.attributes to set it only when the account is created"
                        ),
                    });
                }
                templates.retain(|k, _| !k.eq_ignore_ascii_case(name));
            }
        }
        let creation_only = |name: &str| {
            spec.ldap
                .as_ref()
                .is_some_and(|l| l.attributes.keys().any(|k| k.eq_ignore_ascii_case(name)))
        };
        for (name, text) in &spec.attributes {
            if !creation_only(name) {
                templates.insert(name.clone(), text.clone());
            }
        }
        let mut entries = Vec::new();
        for (name, text) in templates {
            let field = format!("spec.attributes.{name}");
            if let Err(message) = defaults::check_name(spec, &name) {
                if spec.attributes.contains_key(&name) {
                    errors.push(MappingError { field, message });
                }
                continue;
            }
            match Template::parse(&text) {
                Ok(t) => {
                    if t.uses_manager() && !t.is_manager_reference() && reference_only(spec, &name)
                    {
                        errors.push(MappingError {
                            field,
                            message: format!("{name} holds a reference to the manager's account: write exactly {{{{ manager.account }}}}"),
                        });
                        continue;
                    }
                    entries.push((name, t));
                }
                Err(why) => errors.push(MappingError {
                    field,
                    message: format!("template {text:?}: {why}"),
                }),
            }
        }
        (Self { entries }, errors)
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The owned attribute names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// Whether any entry reads the manager's account.
    pub fn uses_manager(&self) -> bool {
        self.entries.iter().any(|(_, t)| t.uses_manager())
    }

    /// The attributes an account of `profile` on `target` should carry.
    /// `manager_account` is the manager's account there, if the manager has one; a
    /// reference to a manager without one is left unset (the engine reports it).
    pub fn render(
        &self,
        profile: &Profile,
        target: &str,
        manager_account: Option<&str>,
    ) -> Attributes {
        let mut out = Attributes::new();
        for (name, template) in &self.entries {
            if template.is_manager_reference() {
                if let Some(account) = manager_account {
                    out.insert(
                        name.clone(),
                        AttrValue::Account {
                            account: account.to_string(),
                        },
                    );
                }
                continue;
            }
            let value = template.render(profile, target, manager_account);
            if !value.is_empty() {
                out.insert(name.clone(), AttrValue::Text(value));
            }
        }
        out
    }
}

/// The manager's account on `target`, when the manager has (or is to get) one there.
pub fn manager_account<'a>(
    desired: &'a crate::engine::DesiredState,
    key: &crate::engine::IdentityKey,
    target: &str,
) -> Option<&'a str> {
    let access = desired.identities.get(key)?;
    let manager = access.profile.manager()?;
    let boss = desired
        .identities
        .get(&crate::engine::IdentityKey::new(&key.namespace, manager))?;
    boss.account_targets()
        .contains(&target)
        .then(|| boss.profile.account(target))
}

/// The attributes `key`'s account on `target` should carry, per the target's mapping;
/// `None` when the identity should have no account there.
pub fn desired_for(
    desired: &crate::engine::DesiredState,
    key: &crate::engine::IdentityKey,
    target: &str,
) -> Option<Attributes> {
    let access = desired.identities.get(key)?;
    if !access.account_targets().contains(&target) {
        return None;
    }
    let mapping = &desired
        .targets
        .get(&(key.namespace.clone(), target.to_string()))?
        .attributes;
    Some(mapping.render(
        &access.profile,
        target,
        manager_account(desired, key, target),
    ))
}

/// Attributes whose value is a reference (LDAP `manager`, SCIM enterprise `manager`).
fn reference_only(spec: &TargetSystemSpec, name: &str) -> bool {
    match spec.type_ {
        TargetType::LDAP => name.eq_ignore_ascii_case("manager"),
        TargetType::SCIM => name == defaults::SCIM_MANAGER,
        _ => false,
    }
}

/// The directory flavour of an LDAP target.
fn flavor(spec: &TargetSystemSpec) -> LdapFlavor {
    spec.ldap.as_ref().map(|l| l.flavor).unwrap_or_default()
}

#[cfg(test)]
mod tests;
