//! A real OpenLDAP slapd for the LDAP connector's tests and benchmark: Debian's slapd
//! (`scripts/install-ldap.sh`) started by `scripts/start-slapd.sh` on free loopback ports
//! from a temporary cn=config (memberof, refint and ppolicy overlays) built offline with
//! slapadd. One shared server per test binary, each test in its own OU; a test that stops
//! the server gets a private one. A watcher stops every server by PID once the test binary
//! has exited.

#![allow(dead_code)] // the tests and the benchmark use different parts

#[path = "../peer_script.rs"]
mod peer_script;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use gatehouse::targets::{Credentials, TargetConfig};
use ldap3::{LdapConnAsync, Mod, Scope, SearchEntry};

/// One running (or stopped) slapd.
pub struct Slapd {
    pub dir: PathBuf,
    pub ldap_url: String,
    pub ldaps_url: String,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub base_dn: String,
    pub admin_dn: String,
    pub admin_password: String,
    pub bind_dn: String,
    pub bind_password: String,
}

const SCRIPT: &str = "start-slapd.sh";

fn run_script(dir: &Path) -> BTreeMap<String, String> {
    peer_script::run(SCRIPT, dir, &[], "run scripts/install-ldap.sh first")
}

impl Slapd {
    /// Starts a fresh server in a new temporary directory.
    pub fn start(name: &str) -> Slapd {
        let dir =
            std::env::temp_dir().join(format!("gatehouse-slapd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let env = run_script(&dir);
        peer_script::stop_at_exit(SCRIPT, &dir);
        let get = |k: &str| peer_script::var(&env, SCRIPT, k);
        Slapd {
            dir,
            ldap_url: get("LDAP_URL"),
            ldaps_url: get("LDAPS_URL"),
            ca: get("CA").into(),
            other_ca: get("OTHER_CA").into(),
            base_dn: get("BASE_DN"),
            admin_dn: get("ADMIN_DN"),
            admin_password: get("ADMIN_PASSWORD"),
            bind_dn: get("BIND_DN"),
            bind_password: get("BIND_PASSWORD"),
        }
    }

    /// The server shared by the tests of this binary.
    pub fn shared() -> &'static Slapd {
        static SHARED: OnceLock<Slapd> = OnceLock::new();
        SHARED.get_or_init(|| Slapd::start("shared"))
    }

    /// Stops the server by PID; its data stays for [`Slapd::restart`].
    pub fn stop(&self) {
        let status = Command::new("bash")
            .arg(peer_script::script(SCRIPT))
            .arg("--stop")
            .arg(&self.dir)
            .status()
            .expect("bash runs start-slapd.sh --stop");
        assert!(status.success());
    }

    /// Starts the stopped server again on the same ports with the same data.
    pub fn restart(&self) {
        run_script(&self.dir);
    }

    /// Restarts the server with the paged-results control refused to the service account
    /// (`size.prtotal=disabled`: slapd then answers a paged search 11, "pagedResults control
    /// not allowed"), by editing its cn=config offline with slapmodify.
    pub fn refuse_paging(&self) {
        self.stop();
        let ldif = self.dir.join("no-paging.ldif");
        std::fs::write(
            &ldif,
            format!(
                "dn: olcDatabase={{1}}mdb,cn=config\nchangetype: modify\nreplace: olcLimits\nolcLimits: dn.exact=\"{}\" size=unlimited time=unlimited size.prtotal=disabled\n",
                self.bind_dn
            ),
        )
        .expect("write the LDIF");
        let status = Command::new("/usr/sbin/slapmodify")
            .args(["-n0", "-F"])
            .arg(self.dir.join("config"))
            .arg("-l")
            .arg(&ldif)
            .status()
            .expect("slapmodify runs (Debian's slapd package)");
        assert!(status.success(), "slapmodify");
        self.restart();
    }

    /// A connection bound as the directory manager (the tests' own hands).
    pub async fn admin(&self) -> ldap3::Ldap {
        let (conn, mut ldap) = LdapConnAsync::new(&self.ldap_url).await.expect("connect");
        ldap3::drive!(conn);
        ldap.simple_bind(&self.admin_dn, &self.admin_password)
            .await
            .and_then(|r| r.success())
            .expect("admin bind");
        ldap
    }

    /// A fresh `ou=tN` with `ou=people` and `ou=groups` below it, and the named groups
    /// (each holding only the empty-DN placeholder member).
    pub async fn scope(&self, groups: &[&str]) -> TestScope {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let ou = format!("t{}", NEXT.fetch_add(1, Ordering::SeqCst));
        let mut ldap = self.admin().await;
        let top = format!("ou={ou},{}", self.base_dn);
        for dn in [
            top.clone(),
            format!("ou=people,{top}"),
            format!("ou=groups,{top}"),
        ] {
            let name = dn[3..dn.find(',').unwrap()].to_string();
            add(
                &mut ldap,
                &dn,
                &[("objectClass", &["organizationalUnit"]), ("ou", &[&name])],
            )
            .await;
        }
        let scope = TestScope {
            users_ou: format!("ou=people,ou={ou}"),
            groups_ou: format!("ou=groups,ou={ou}"),
            users_dn: format!("ou=people,{top}"),
            groups_dn: format!("ou=groups,{top}"),
        };
        for group in groups {
            scope.create_group(&mut ldap, group).await;
        }
        scope
    }

    /// A TargetConfig for `corp-ldap` in tenant `acme` over plain LDAP (no StartTLS), with
    /// `extra` appended inside `spec.ldap` (YAML flow-mapping entries).
    pub fn config(&self, scope: &TestScope, extra: &str, on_leave: &str) -> TargetConfig {
        self.config_with(
            &self.ldap_url,
            scope,
            &format!("startTLS: false, {extra}"),
            on_leave,
            self.credentials(None),
        )
    }

    /// A TargetConfig for any URL, `spec.ldap` extras and credentials.
    pub fn config_with(
        &self,
        url: &str,
        scope: &TestScope,
        extra: &str,
        on_leave: &str,
        credentials: Credentials,
    ) -> TargetConfig {
        let spec = serde_yaml::from_str(&self.spec_yaml(url, scope, extra, on_leave))
            .expect("the TargetSystem spec parses");
        TargetConfig {
            namespace: "acme".into(),
            name: "corp-ldap".into(),
            spec,
            credentials,
        }
    }

    /// The TargetSystem spec as YAML (one flow mapping).
    pub fn spec_yaml(&self, url: &str, scope: &TestScope, extra: &str, on_leave: &str) -> String {
        format!(
            "{{type: LDAP, onLeave: {on_leave}, credentialsSecretRef: {{name: corp-ldap}}, ldap: {{url: '{url}', baseDN: '{}', usersOU: '{}', groupsOU: '{}', {extra}}}}}",
            self.base_dn, scope.users_ou, scope.groups_ou
        )
    }

    /// The Secret data: the service account's DN and password, and optionally a CA.
    pub fn credentials(&self, ca: Option<&Path>) -> Credentials {
        let mut data = BTreeMap::from([
            ("bindDN".to_string(), self.bind_dn.clone().into_bytes()),
            (
                "password".to_string(),
                self.bind_password.clone().into_bytes(),
            ),
        ]);
        if let Some(ca) = ca {
            data.insert("ca.crt".into(), std::fs::read(ca).expect("CA file"));
        }
        Credentials::new("corp-ldap", data)
    }

    /// The result code of a simple bind as `dn` (0 = success, 49 = invalidCredentials).
    pub async fn bind_rc(&self, dn: &str, password: &str) -> u32 {
        let (conn, mut ldap) = LdapConnAsync::new(&self.ldap_url).await.expect("connect");
        ldap3::drive!(conn);
        let rc = ldap
            .simple_bind(dn, password)
            .await
            .expect("bind answer")
            .rc;
        let _ = ldap.unbind().await;
        rc
    }
}

/// One test's OUs.
#[derive(Clone, Debug)]
pub struct TestScope {
    /// Relative to the base DN, as the TargetSystem names them.
    pub users_ou: String,
    pub groups_ou: String,
    /// Full DNs.
    pub users_dn: String,
    pub groups_dn: String,
}

impl TestScope {
    pub fn user(&self, uid: &str) -> String {
        format!("uid={uid},{}", self.users_dn)
    }

    pub fn group(&self, cn: &str) -> String {
        format!("cn={cn},{}", self.groups_dn)
    }

    pub async fn create_group(&self, ldap: &mut ldap3::Ldap, cn: &str) {
        add(
            ldap,
            &self.group(cn),
            &[
                ("objectClass", &["groupOfNames"]),
                ("cn", &[cn]),
                ("member", &[""]),
            ],
        )
        .await;
    }

    /// The members of a group, lowercased, sorted; `None` when it does not exist.
    pub async fn members(&self, ldap: &mut ldap3::Ldap, cn: &str) -> Option<Vec<String>> {
        let mut members: Vec<String> = attribute(ldap, &self.group(cn), "member")
            .await?
            .into_iter()
            .map(|m| m.to_lowercase())
            .collect();
        members.sort();
        Some(members)
    }

    /// Adds a person by hand (`uid`, inetOrgPerson, with a password).
    pub async fn add_person(&self, ldap: &mut ldap3::Ldap, uid: &str, password: &str) {
        add(
            ldap,
            &self.user(uid),
            &[
                ("objectClass", &["inetOrgPerson"]),
                ("uid", &[uid]),
                ("cn", &[uid]),
                ("sn", &[uid]),
                ("userPassword", &[password]),
            ],
        )
        .await;
    }
}

/// Adds an entry, failing the test if the server refuses.
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

/// Modifies an entry, failing the test if the server refuses.
pub async fn modify(ldap: &mut ldap3::Ldap, dn: &str, mods: Vec<Mod<&str>>) {
    ldap.modify(dn, mods)
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("modify {dn}: {e}"));
}

/// The values of one attribute of an entry; `None` when the entry does not exist.
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

/// The DNs of the direct children of `base`.
pub async fn children(ldap: &mut ldap3::Ldap, base: &str) -> Vec<String> {
    let (entries, _) = ldap
        .search(base, Scope::OneLevel, "(objectClass=*)", vec!["1.1"])
        .await
        .and_then(|r| r.success())
        .expect("search");
    let mut dns: Vec<String> = entries
        .into_iter()
        .map(|e| SearchEntry::construct(e).dn.to_lowercase())
        .collect();
    dns.sort();
    dns
}
