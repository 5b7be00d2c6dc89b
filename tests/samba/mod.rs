//! A real Active Directory domain controller for the Active Directory tests: Samba's AD DC
//! (`scripts/install-samba.sh`) provisioned and started by `scripts/start-samba.sh`. Samba
//! needs root and the fixed ports 88/389/636, so one domain controller serves a whole test
//! binary (a `OnceLock`) and each test works in its own OU. A watcher stops it by PID once
//! the test binary has exited.

#![allow(dead_code)]

#[path = "../peer_script.rs"]
mod peer_script;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use gatehouse::targets::{Credentials, TargetConfig};
use ldap3::{LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const SCRIPT: &str = "start-samba.sh";

/// The running domain controller.
pub struct Samba {
    pub dir: PathBuf,
    pub ldaps_url: String,
    pub ca: PathBuf,
    pub base_dn: String,
    pub admin_dn: String,
    pub admin_password: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Samba {
    /// The domain controller shared by the tests of this binary.
    pub fn shared() -> &'static Samba {
        static SHARED: OnceLock<Samba> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("gatehouse-samba-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let env = peer_script::run(
                SCRIPT,
                &dir,
                &[],
                "run scripts/install-samba.sh first, as root; ports 88/389/636 must be free",
            );
            peer_script::stop_at_exit(SCRIPT, &dir);
            let get = |k: &str| peer_script::var(&env, SCRIPT, k);
            let ca: PathBuf = get("CA").into();
            let pem = std::fs::read(&ca).expect("the CA file");
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.expect("PEM")).expect("CA certificate");
            }
            let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            Samba {
                dir,
                ldaps_url: get("LDAPS_URL"),
                ca,
                base_dn: get("BASE_DN"),
                admin_dn: get("ADMIN_DN"),
                admin_password: get("ADMIN_PASSWORD"),
                tls: Arc::new(tls),
            }
        })
    }

    async fn connect(&self) -> ldap3::Ldap {
        let settings = LdapConnSettings::new().set_config(self.tls.clone());
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.ldaps_url)
            .await
            .expect("connect over LDAPS");
        ldap3::drive!(conn);
        ldap
    }

    /// A connection bound as the domain administrator (the tests' own hands).
    pub async fn admin(&self) -> ldap3::Ldap {
        let mut ldap = self.connect().await;
        ldap.simple_bind(&self.admin_dn, &self.admin_password)
            .await
            .and_then(|r| r.success())
            .expect("administrator bind");
        ldap
    }

    /// The result code and diagnostic of a simple bind as `name` (a DN or a UPN).
    pub async fn bind(&self, name: &str, password: &str) -> (u32, String) {
        let mut ldap = self.connect().await;
        let result = ldap.simple_bind(name, password).await.expect("bind answer");
        let _ = ldap.unbind().await;
        (result.rc, result.text)
    }

    /// A fresh `OU=tN` with `OU=Staff` and `OU=Groups` below it, and the named global
    /// security groups (sAMAccountName `<name>-tN`, unique in the domain).
    pub async fn scope(&self, groups: &[&str]) -> TestScope {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let ou = format!("t{n}");
        let mut ldap = self.admin().await;
        let top = format!("OU={ou},{}", self.base_dn);
        for dn in [
            top.clone(),
            format!("OU=Staff,{top}"),
            format!("OU=Groups,{top}"),
        ] {
            add(&mut ldap, &dn, &[("objectClass", &["organizationalUnit"])]).await;
        }
        let scope = TestScope {
            tag: ou.clone(),
            users_ou: format!("OU=Staff,OU={ou}"),
            groups_ou: format!("OU=Groups,OU={ou}"),
            users_dn: format!("OU=Staff,{top}"),
            groups_dn: format!("OU=Groups,{top}"),
        };
        for group in groups {
            let sam = format!("{group}-{ou}");
            add(
                &mut ldap,
                &scope.group(group),
                &[("objectClass", &["group"]), ("sAMAccountName", &[&sam])],
            )
            .await;
        }
        scope
    }

    /// The TargetSystem spec (one YAML flow mapping) for `corp-ad` over LDAPS.
    pub fn spec_yaml(&self, scope: &TestScope, on_leave: &str) -> String {
        format!(
            "{{type: LDAP, onLeave: {on_leave}, credentialsSecretRef: {{name: corp-ad}}, ldap: {{flavor: ActiveDirectory, url: '{}', baseDN: '{}', usersOU: '{}', groupsOU: '{}'}}}}",
            self.ldaps_url, self.base_dn, scope.users_ou, scope.groups_ou
        )
    }

    pub fn config(&self, scope: &TestScope, on_leave: &str) -> TargetConfig {
        TargetConfig {
            namespace: "acme".into(),
            name: "corp-ad".into(),
            spec: serde_yaml::from_str(&self.spec_yaml(scope, on_leave)).expect("spec parses"),
            credentials: self.credentials(),
        }
    }

    /// The Secret: the administrator as the service account, and the test CA.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(
            "corp-ad",
            BTreeMap::from([
                ("bindDN".to_string(), self.admin_dn.clone().into_bytes()),
                (
                    "password".to_string(),
                    self.admin_password.clone().into_bytes(),
                ),
                ("ca.crt".to_string(), std::fs::read(&self.ca).expect("CA")),
            ]),
        )
    }
}

/// One test's OUs.
#[derive(Clone, Debug)]
pub struct TestScope {
    pub tag: String,
    pub users_ou: String,
    pub groups_ou: String,
    pub users_dn: String,
    pub groups_dn: String,
}

impl TestScope {
    pub fn user(&self, account: &str) -> String {
        format!("CN={account},{}", self.users_dn)
    }

    pub fn group(&self, cn: &str) -> String {
        format!("CN={cn},{}", self.groups_dn)
    }

    /// The members of a group, lowercased and sorted.
    pub async fn members(&self, ldap: &mut ldap3::Ldap, cn: &str) -> Vec<String> {
        let mut members: Vec<String> = attribute(ldap, &self.group(cn), "member")
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.to_lowercase())
            .collect();
        members.sort();
        members
    }

    /// A user added by hand (no password: Samba makes it 546, disabled).
    pub async fn add_user(&self, ldap: &mut ldap3::Ldap, account: &str) {
        add(
            ldap,
            &self.user(account),
            &[("objectClass", &["user"]), ("sAMAccountName", &[account])],
        )
        .await;
    }
}

/// `unicodePwd` for `password`: quoted, UTF-16LE.
pub fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Sets a user's password as the administrator.
pub async fn set_password(ldap: &mut ldap3::Ldap, dn: &str, password: &str) {
    let mods: Vec<Mod<Vec<u8>>> = vec![Mod::Replace(
        b"unicodePwd".to_vec(),
        HashSet::from([unicode_pwd(password)]),
    )];
    ldap.modify(dn, mods)
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("set the password of {dn}: {e}"));
}

pub async fn add(ldap: &mut ldap3::Ldap, dn: &str, attrs: &[(&str, &[&str])]) {
    let attrs: Vec<(String, HashSet<String>)> = attrs
        .iter()
        .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
        .collect();
    ldap.add(dn, attrs)
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("add {dn}: {e}"));
}

pub async fn modify(ldap: &mut ldap3::Ldap, dn: &str, mods: Vec<Mod<&str>>) {
    ldap.modify(dn, mods)
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("modify {dn}: {e}"));
}

/// The values of one attribute; `None` when the entry does not exist.
pub async fn attribute(ldap: &mut ldap3::Ldap, dn: &str, attr: &str) -> Option<Vec<String>> {
    let result = ldap
        .search(dn, Scope::Base, "(objectClass=*)", vec![attr])
        .await
        .expect("search answer");
    if result.1.rc == 32 {
        return None;
    }
    let entry = result.success().expect("search").0.pop()?;
    let entry = SearchEntry::construct(entry);
    Some(
        entry
            .attrs
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v)
            .unwrap_or_default(),
    )
}

/// userAccountControl of an entry.
pub async fn uac(ldap: &mut ldap3::Ldap, dn: &str) -> Option<u32> {
    attribute(ldap, dn, "userAccountControl")
        .await?
        .first()
        .and_then(|v| v.parse().ok())
}
