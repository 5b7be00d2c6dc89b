//! A TargetSystem's `spec.ldap` and its Secret, checked into the settings the connector
//! runs with; TLS from the Secret's CA bundle.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::dn::{join_normalized, normalize_dn, parse_dn};
use super::{BIND_DN_KEY, CA_KEY, PASSWORD_KEY};
use crate::api::LdapFlavor;
use crate::engine::attributes::{AttrValue, Mapping, Profile};
use crate::targets::{Credentials, TargetConfig, TargetError};

/// Everything a TargetSystem and its Secret say, checked.
pub(super) struct Settings {
    /// Scheme, host and port only: never userinfo, so it is safe in messages.
    pub(super) url: String,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    pub(super) start_tls: bool,
    /// The Secret has a `ca.crt`.
    pub(super) custom_ca: bool,
    pub(super) secret: String,
    pub(super) bind_dn: String,
    pub(super) password: String,
    pub(super) ad: bool,
    pub(super) users_dn: String,
    pub(super) groups_dn: String,
    pub(super) groups_norm: String,
    pub(super) rdn_attribute: String,
    pub(super) account_attribute: String,
    pub(super) object_classes: Vec<String>,
    /// Creation-only templates (`spec.ldap.attributes` and the connector's defaults), less
    /// the names the mapping owns.
    pub(super) attributes: BTreeMap<String, String>,
    /// The attribute names gatehouse owns (`spec.attributes` over the type's defaults), as
    /// the mapping spells them.
    pub(super) owned: Vec<String>,
    /// The owned attributes that hold a reference to another account (a DN), lowercased.
    pub(super) references: HashSet<String>,
    pub(super) placeholder: String,
    pub(super) placeholder_norm: String,
    pub(super) page_size: i32,
    pub(super) timeout: Duration,
}

/// `url` fit for a message: any userinfo (`user:password@`) replaced by `***`. Works on
/// text that does not parse as a URL too.
pub(super) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => url.to_string(),
    }
}

pub(super) fn config_error(
    config: &TargetConfig,
    field: &str,
    message: impl std::fmt::Display,
) -> TargetError {
    TargetError::Config(format!(
        "TargetSystem {}/{}: spec.ldap.{field}: {message}",
        config.namespace, config.name
    ))
}

/// `ou` below `base`, unless it already ends with `base`.
pub(super) fn under(
    config: &TargetConfig,
    field: &str,
    ou: &str,
    base: &str,
) -> Result<String, TargetError> {
    let ou = ou.trim();
    let rdns = parse_dn(ou).filter(|r| !r.is_empty()).ok_or_else(|| {
        config_error(
            config,
            field,
            format!("{ou:?} is not a DN (for example ou=people)"),
        )
    })?;
    let base_norm = normalize_dn(base);
    let norm = join_normalized(&rdns);
    if norm == base_norm {
        return Err(config_error(
            config,
            field,
            "must name an OU below baseDN, not baseDN itself",
        ));
    }
    if norm.ends_with(&format!(",{base_norm}")) {
        Ok(ou.to_string())
    } else {
        Ok(format!("{ou},{base}"))
    }
}

pub(super) fn settings(config: &TargetConfig) -> Result<Settings, TargetError> {
    let spec = config.block(&config.spec.ldap, "ldap")?;
    let ad = spec.flavor == LdapFlavor::ActiveDirectory;
    let url = url::Url::parse(spec.url.trim()).map_err(|e| {
        config_error(
            config,
            "url",
            format!(
                "{:?} is not a URL ({e}); expected ldaps://host:port or ldap://host:port",
                redact_url(&spec.url)
            ),
        )
    })?;
    let ldaps = match url.scheme() {
        "ldaps" => true,
        "ldap" => false,
        other => {
            return Err(config_error(
                config,
                "url",
                format!(
                    "scheme {other:?} is not supported; use ldaps:// or ldap:// (with StartTLS)"
                ),
            ));
        }
    };
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err(config_error(
            config,
            "url",
            format!("{:?} names no host", redact_url(&spec.url)),
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(config_error(
            config,
            "url",
            "must name only the server (scheme, host, port); the DNs go in baseDN, usersOU and groupsOU",
        ));
    }
    if ad && !ldaps {
        return Err(config_error(
            config,
            "url",
            "an ActiveDirectory target requires an ldaps:// URL",
        ));
    }
    let start_tls = !ldaps && spec.start_tls.unwrap_or(true);
    let url_text = match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    };

    let base = spec.base_dn.trim();
    if parse_dn(base).is_none_or(|r| r.is_empty()) {
        return Err(config_error(
            config,
            "baseDN",
            format!("{base:?} is not a DN (for example dc=acme,dc=example)"),
        ));
    }
    fn required<'a>(
        config: &TargetConfig,
        value: &'a Option<String>,
        field: &str,
        example: &str,
    ) -> Result<&'a str, TargetError> {
        value
            .as_deref()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                config_error(
                    config,
                    field,
                    format!("is required: gatehouse writes only below it (for example {example})"),
                )
            })
    }
    let users_dn = under(
        config,
        "usersOU",
        required(
            config,
            &spec.users_ou,
            "usersOU",
            if ad { "OU=Staff" } else { "ou=people" },
        )?,
        base,
    )?;
    let groups_dn = under(
        config,
        "groupsOU",
        required(
            config,
            &spec.groups_ou,
            "groupsOU",
            if ad { "OU=Groups" } else { "ou=groups" },
        )?,
        base,
    )?;

    let account_attribute = spec
        .account_attribute
        .clone()
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| if ad { "sAMAccountName" } else { "uid" }.to_string());
    if !account_attribute
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';')
    {
        return Err(config_error(
            config,
            "accountAttribute",
            format!("{account_attribute:?} is not an attribute name"),
        ));
    }
    let rdn_attribute = if ad {
        "cn".to_string()
    } else {
        account_attribute.clone()
    };
    let object_classes = if spec.user_object_classes.is_empty() {
        if ad {
            vec![
                "top".into(),
                "person".into(),
                "organizationalPerson".into(),
                "user".into(),
            ]
        } else {
            vec!["inetOrgPerson".into()]
        }
    } else {
        spec.user_object_classes.clone()
    };
    let mut attributes: BTreeMap<String, String> = BTreeMap::new();
    attributes.insert("cn".into(), "{account}".into());
    if ad {
        let domain: Vec<String> = parse_dn(base)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .filter(|(a, _)| a.eq_ignore_ascii_case("dc"))
            .map(|(_, v)| v)
            .collect();
        attributes.insert(
            "userPrincipalName".into(),
            format!("{{account}}@{}", domain.join(".")),
        );
    } else {
        attributes.insert("sn".into(), "{account}".into());
    }
    for (name, template) in &spec.attributes {
        attributes.retain(|k, _| !k.eq_ignore_ascii_case(name));
        attributes.insert(name.clone(), template.clone());
    }
    attributes.retain(|k, _| {
        !k.eq_ignore_ascii_case(&account_attribute) && !k.eq_ignore_ascii_case(&rdn_attribute)
    });
    // The mapping's problems are the engine's findings; its valid entries are owned here.
    let (mapping, _) = Mapping::compile(&config.spec);
    let owned: Vec<String> = mapping.names().map(str::to_string).collect();
    attributes.retain(|k, _| !owned.iter().any(|o| o.eq_ignore_ascii_case(k)));
    // The entries that render to a reference when there is a manager.
    let references = mapping
        .render(&Profile::default(), &config.name, Some("manager"))
        .into_iter()
        .filter(|(_, v)| matches!(v, AttrValue::Account { .. }))
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    let placeholder = spec.placeholder_member.clone().unwrap_or_default();
    if !placeholder.is_empty() && parse_dn(&placeholder).is_none() {
        return Err(config_error(
            config,
            "placeholderMember",
            format!("{placeholder:?} is not a DN"),
        ));
    }

    let credentials = &config.credentials;
    let bind_dn = credentials.required(BIND_DN_KEY)?.trim().to_string();
    // Active Directory also takes `user@domain` or `DOMAIN\user` for a simple bind.
    if bind_dn.is_empty() || (!ad && parse_dn(&bind_dn).is_none_or(|r| r.is_empty())) {
        return Err(TargetError::Config(format!(
            "Secret {}: key {BIND_DN_KEY:?} is not a DN",
            credentials.secret
        )));
    }
    let password = credentials.required(PASSWORD_KEY)?.to_string();
    if password.is_empty() {
        // An empty password makes a simple bind anonymous (RFC 4513 5.1.2).
        return Err(TargetError::Config(format!(
            "Secret {}: key {PASSWORD_KEY:?} is empty",
            credentials.secret
        )));
    }
    let tls = if ldaps || start_tls {
        Some(tls_config(credentials)?)
    } else {
        None
    };
    Ok(Settings {
        url: url_text,
        tls,
        start_tls,
        custom_ca: credentials.bytes(CA_KEY).is_some(),
        secret: credentials.secret.clone(),
        bind_dn,
        password,
        ad,
        groups_norm: normalize_dn(&groups_dn),
        users_dn,
        groups_dn,
        rdn_attribute,
        account_attribute,
        object_classes,
        attributes,
        owned,
        references,
        placeholder_norm: normalize_dn(&placeholder),
        placeholder,
        page_size: spec.page_size.unwrap_or(500).clamp(1, 10_000),
        timeout: Duration::from_secs(u64::from(spec.timeout_seconds.unwrap_or(30).clamp(1, 600))),
    })
}

/// rustls (ring) trusting the Secret's `ca.crt`, or the system roots without one.
pub(super) fn tls_config(
    credentials: &Credentials,
) -> Result<Arc<rustls::ClientConfig>, TargetError> {
    let mut roots = rustls::RootCertStore::empty();
    let bad = |why: String| {
        TargetError::Config(format!(
            "Secret {}: key {CA_KEY:?} {why}",
            credentials.secret
        ))
    };
    match credentials.bytes(CA_KEY) {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| bad(format!("is not a PEM certificate bundle: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("holds an unusable certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad("holds no PEM certificate".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(bad(
                    "is missing and the system has no CA certificates; add the directory's CA (PEM)".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TargetError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_never_reaches_a_message() {
        assert_eq!(
            redact_url("ldaps://admin:s3cret@dc1.acme.example:636"),
            "ldaps://***@dc1.acme.example:636"
        );
        assert_eq!(redact_url("ldap://u:p@w@host/x@y"), "ldap://***@host/x@y");
        assert_eq!(redact_url("admin:s3cret@host"), "***@host");
        assert_eq!(redact_url("ldap://host:389/a@b"), "ldap://host:389/a@b");
        assert_eq!(redact_url("ldap://host"), "ldap://host");
        let bad = error(
            "{url: 'ldap://admin:s3cret@', baseDN: 'dc=a', usersOU: ou=p, groupsOU: ou=g}",
            GOOD,
        );
        assert!(!bad.contains("s3cret") && bad.contains("***@"), "{bad}");
        let bad = error(
            "{url: 'ldap://admin:s3cret@host:99999', baseDN: 'dc=a', usersOU: ou=p, groupsOU: ou=g}",
            GOOD,
        );
        assert!(
            !bad.contains("s3cret") && bad.contains("spec.ldap.url"),
            "{bad}"
        );
    }

    fn config(ldap: &str, secret: &[(&str, &str)]) -> TargetConfig {
        let spec = serde_yaml::from_str(&format!("{{type: LDAP, ldap: {ldap}}}")).unwrap();
        TargetConfig {
            namespace: "acme".into(),
            name: "corp".into(),
            spec,
            credentials: Credentials::new(
                "corp-ldap",
                secret
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect(),
            ),
        }
    }

    fn error(ldap: &str, secret: &[(&str, &str)]) -> String {
        match settings(&config(ldap, secret)) {
            Ok(_) => panic!("{ldap} was accepted"),
            Err(e) => {
                assert!(matches!(e, TargetError::Config(_)), "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn settings_check_the_spec_and_the_secret() {
        let ok = "{url: 'ldap://127.0.0.1:389', baseDN: 'dc=acme,dc=example', usersOU: ou=people, groupsOU: 'ou=groups,dc=acme,dc=example', startTLS: false}";
        let s = settings(&config(ok, GOOD)).unwrap();
        assert_eq!(s.users_dn, "ou=people,dc=acme,dc=example");
        assert_eq!(s.groups_dn, "ou=groups,dc=acme,dc=example");
        assert!(s.tls.is_none() && !s.start_tls);
        // The default mapping owns cn and sn: no creation-only templates are left.
        assert!(s.attributes.is_empty(), "{:?}", s.attributes);
        assert_eq!(
            s.owned,
            [
                "cn",
                "departmentNumber",
                "displayName",
                "givenName",
                "mail",
                "manager",
                "sn",
                "title"
            ]
        );
        assert_eq!(s.references, HashSet::from(["manager".to_string()]));
        // Without the default mapping, the connector's creation defaults remain.
        let mut bare = config(ok, GOOD);
        bare.spec.default_attributes = Some(false);
        let s = settings(&bare).unwrap();
        assert_eq!(s.attributes.keys().collect::<Vec<_>>(), ["cn", "sn"]);
        assert!(s.owned.is_empty() && s.references.is_empty());

        assert!(
            error(
                "{url: 'http://x', baseDN: 'dc=a', usersOU: ou=p, groupsOU: ou=g}",
                GOOD
            )
            .contains("spec.ldap.url")
        );
        assert!(
            error(
                "{url: 'ldap://x/dc=a?uid', baseDN: 'dc=a', usersOU: ou=p, groupsOU: ou=g}",
                GOOD
            )
            .contains("spec.ldap.url")
        );
        assert!(
            error("{url: 'ldap://x', baseDN: 'dc=a', groupsOU: ou=g}", GOOD)
                .contains("spec.ldap.usersOU")
        );
        assert!(
            error(
                "{url: 'ldap://x', baseDN: 'dc=a', usersOU: 'dc=a', groupsOU: ou=g}",
                GOOD
            )
            .contains("usersOU")
        );
        assert!(
            error(
                "{url: 'ldap://x', baseDN: 'nonsense', usersOU: ou=p, groupsOU: ou=g}",
                GOOD
            )
            .contains("baseDN")
        );
        assert!(
            error("{url: 'ldap://x', baseDN: 'dc=a', usersOU: ou=p, groupsOU: ou=g, flavor: ActiveDirectory}", GOOD)
                .contains("ldaps://")
        );
        let missing = error(
            "{url: 'ldap://x', baseDN: 'dc=a', usersOU: ou=p, groupsOU: ou=g, startTLS: false}",
            &[("bindDN", "cn=x")],
        );
        assert!(
            missing.contains("\"password\"") && missing.contains("corp-ldap"),
            "{missing}"
        );
        let empty = error(
            "{url: 'ldap://x', baseDN: 'dc=a', usersOU: ou=p, groupsOU: ou=g, startTLS: false}",
            &[("bindDN", "cn=x"), ("password", "")],
        );
        assert!(empty.contains("empty"), "{empty}");
        let ca = error(
            "{url: 'ldaps://x', baseDN: 'dc=a', usersOU: ou=p, groupsOU: ou=g}",
            &[
                ("bindDN", "cn=x"),
                ("password", "pw"),
                ("ca.crt", "not a certificate"),
            ],
        );
        assert!(ca.contains("ca.crt"), "{ca}");
    }

    #[test]
    fn active_directory_defaults() {
        let ad = "{url: 'ldaps://dc1.acme.example', baseDN: 'DC=acme,DC=example', usersOU: 'OU=Staff', groupsOU: 'OU=Groups', flavor: ActiveDirectory, attributes: {displayName: '{identity}'}}";
        let s = settings(&config(ad, GOOD)).unwrap();
        assert!(s.ad && s.tls.is_some());
        assert_eq!(s.account_attribute, "sAMAccountName");
        assert_eq!(s.rdn_attribute, "cn");
        // userPrincipalName is owned (the default mapping); displayName, set by
        // spec.ldap.attributes, is creation-only and so not owned.
        assert!(s.owned.iter().any(|n| n == "userPrincipalName"));
        assert!(!s.owned.iter().any(|n| n == "displayName"));
        assert_eq!(
            s.attributes.keys().collect::<Vec<_>>(),
            ["displayName"],
            "{:?}",
            s.attributes
        );
        assert_eq!(s.attributes["displayName"], "{identity}");
        let mut bare = config(ad, GOOD);
        bare.spec.default_attributes = Some(false);
        let s = settings(&bare).unwrap();
        assert_eq!(s.attributes["userPrincipalName"], "{account}@acme.example");
        assert!(
            !s.attributes.contains_key("cn"),
            "the RDN is set from the account"
        );
        assert_eq!(s.object_classes.last().unwrap(), "user");
        // A domain controller also takes a user principal name as the bind name.
        let upn = settings(&config(
            ad,
            &[("bindDN", "svc-gatehouse@acme.example"), ("password", "pw")],
        ));
        assert!(upn.is_ok());
    }

    const GOOD: &[(&str, &str)] = &[
        ("bindDN", "cn=gatehouse,dc=acme,dc=example"),
        ("password", "pw"),
    ];
}
