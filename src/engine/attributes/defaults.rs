//! What each target type maps by default, and which attribute names it can own.

use std::collections::BTreeMap;

use super::flavor;
use crate::api::{LdapFlavor, TargetSystemSpec, TargetType};

/// SCIM enterprise extension schema URN.
pub const SCIM_ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// The SCIM enterprise `manager` attribute (its `value` is the manager's id).
pub const SCIM_MANAGER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
/// The SCIM primary work e-mail.
pub const SCIM_WORK_EMAIL: &str = "emails[type eq \"work\"].value";

/// SCIM core User attributes gatehouse can own (single-valued, or the work e-mail).
const SCIM_CORE: &[&str] = &[
    "displayName",
    "nickName",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "profileUrl",
    "name.formatted",
    "name.givenName",
    "name.familyName",
    "name.middleName",
    "name.honorificPrefix",
    "name.honorificSuffix",
    SCIM_WORK_EMAIL,
];

/// SCIM enterprise extension attributes gatehouse can own.
const SCIM_ENTERPRISE_ATTRIBUTES: &[&str] = &[
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
    "manager",
];

/// LDAP attributes gatehouse manages itself (lifecycle, membership, credentials).
const LDAP_RESERVED: &[&str] = &[
    "objectClass",
    "userPassword",
    "unicodePwd",
    "member",
    "memberOf",
    "pwdAccountLockedTime",
    "userAccountControl",
    "distinguishedName",
    "entryDN",
];

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const GIVEN: &str = "{{ displayName | split(\" \", 0) }}";
const FAMILY: &str = "{{ displayName | split(\" \", -1) | default(account) }}";

/// The default mapping of a target type: what a new user needs no configuration for.
pub fn for_target(spec: &TargetSystemSpec) -> BTreeMap<String, String> {
    match spec.type_ {
        TargetType::Kubernetes | TargetType::PostgreSQL => BTreeMap::new(),
        TargetType::LDAP => match flavor(spec) {
            LdapFlavor::OpenLDAP => map(&[
                ("cn", "{{ displayName | default(account) }}"),
                ("sn", FAMILY),
                ("givenName", GIVEN),
                ("displayName", "{{ displayName }}"),
                ("mail", "{{ email }}"),
                ("title", "{{ employment.title }}"),
                ("departmentNumber", "{{ employment.department }}"),
                ("manager", "{{ manager.account }}"),
            ]),
            LdapFlavor::ActiveDirectory => {
                let domain = spec
                    .ldap
                    .as_ref()
                    .map(|l| domain_of(&l.base_dn))
                    .unwrap_or_default();
                let mut m = map(&[
                    ("displayName", "{{ displayName }}"),
                    ("givenName", GIVEN),
                    ("sn", FAMILY),
                    ("mail", "{{ email }}"),
                    ("title", "{{ employment.title }}"),
                    ("department", "{{ employment.department }}"),
                    ("manager", "{{ manager.account }}"),
                    ("employeeID", "{{ attributes.employeeId }}"),
                ]);
                if !domain.is_empty() {
                    m.insert(
                        "userPrincipalName".into(),
                        format!("{{{{ account }}}}@{domain}"),
                    );
                }
                m
            }
        },
        TargetType::SCIM => {
            let e = |a: &str| format!("{SCIM_ENTERPRISE}:{a}");
            let mut m = map(&[
                // Apps show (and some servers derive) a display name: never leave it empty.
                ("displayName", "{{ displayName | default(account) }}"),
                ("name.givenName", GIVEN),
                ("name.familyName", FAMILY),
                ("title", "{{ employment.title }}"),
                (SCIM_WORK_EMAIL, "{{ email }}"),
            ]);
            m.insert(e("employeeNumber"), "{{ attributes.employeeId }}".into());
            m.insert(e("department"), "{{ employment.department }}".into());
            m.insert(e("costCenter"), "{{ attributes.costCenter }}".into());
            m.insert(e("manager"), "{{ manager.account }}".into());
            m
        }
    }
}

/// `dc=acme,dc=example` → `acme.example`.
pub fn domain_of(base_dn: &str) -> String {
    base_dn
        .split(',')
        .filter_map(|rdn| {
            let (k, v) = rdn.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("dc")
                .then(|| v.trim().to_string())
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether the target type can own an attribute of this name; the error names the fix.
pub fn check_name(spec: &TargetSystemSpec, name: &str) -> Result<(), String> {
    match spec.type_ {
        TargetType::Kubernetes => Err(
            "Kubernetes RBAC subjects have no attributes; remove spec.attributes from this target"
                .into(),
        ),
        TargetType::PostgreSQL => Err(format!(
            "PostgreSQL roles carry no profile attributes, and the role comment is gatehouse's ownership marker; {name} cannot be mapped: remove spec.attributes from this target"
        )),
        TargetType::LDAP => {
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid {
                return Err(format!(
                    "{name:?} is not an LDAP attribute name (a letter, then letters, digits or hyphens)"
                ));
            }
            let account = spec
                .ldap
                .as_ref()
                .and_then(|l| l.account_attribute.clone())
                .unwrap_or_else(|| match flavor(spec) {
                    LdapFlavor::OpenLDAP => "uid".into(),
                    LdapFlavor::ActiveDirectory => "sAMAccountName".into(),
                });
            let mut reserved: Vec<&str> = LDAP_RESERVED.to_vec();
            reserved.push(&account);
            if flavor(spec) == LdapFlavor::ActiveDirectory {
                // The RDN of an AD account: changing it is a rename (modrdn), not a modify.
                reserved.extend(["cn", "name"]);
            }
            if reserved.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                return Err(format!(
                    "{name} is managed by gatehouse itself (account name, membership, lock or credentials) and cannot be mapped"
                ));
            }
            Ok(())
        }
        TargetType::SCIM => {
            if SCIM_CORE.contains(&name) {
                return Ok(());
            }
            if let Some(attr) = name
                .strip_prefix(SCIM_ENTERPRISE)
                .and_then(|r| r.strip_prefix(':'))
                && SCIM_ENTERPRISE_ATTRIBUTES.contains(&attr)
            {
                return Ok(());
            }
            Err(format!(
                "{name:?} is not a SCIM User attribute gatehouse can own; use one of {}, {SCIM_ENTERPRISE}:{{{}}} (userName, active, externalId, groups and password are managed by gatehouse itself)",
                SCIM_CORE.join(", "),
                SCIM_ENTERPRISE_ATTRIBUTES.join(",")
            ))
        }
    }
}
