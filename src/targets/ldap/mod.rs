//! LDAP and Active Directory: an account is an entry under the managed users OU, an
//! entitlement `{target: <this>, name: G}` is membership of the group `cn=G` under the
//! managed groups OU. Nothing outside those two OUs is ever written.
//!
//! - **OpenLDAP** (`flavor: OpenLDAP`): accounts are `inetOrgPerson` entries named
//!   `uid=<account>`, groups are `groupOfNames` (`member` holds account DNs). Disable sets the
//!   ppolicy attribute `pwdAccountLockedTime` to `000001010000Z` (locked until an
//!   administrator unlocks: a bind fails at once with invalidCredentials); enable removes
//!   that value and no other.
//!   The password policy that applies must have `pwdLockout: TRUE`, or slapd ignores the
//!   lock. A temporary lockout that slapd set itself after failed binds (a timestamp) is
//!   the server's business: the account still counts as enabled and is not unlocked.
//!   A `groupOfNames` must keep a member: revoking the last one (which the server refuses
//!   with objectClassViolation) puts `placeholderMember` in its place (default: the empty
//!   DN), and the next grant removes it again.
//! - **Active Directory** (`flavor: ActiveDirectory`, `ldaps://` only): accounts are `user`
//!   objects named `CN=<account>` with `sAMAccountName` and `userPrincipalName`; disable sets
//!   the ACCOUNTDISABLE bit of `userAccountControl`, enable clears it; groups are read
//!   through the users' `memberOf` (so large groups need no ranged retrieval) and written
//!   through the group's `member`. Tested against Samba's AD DC.
//!
//! Existing accounts are found by the account attribute (`uid` / `sAMAccountName`) among
//! the direct children of the users OU, whatever their RDN; an entry whose account name
//! matches but which lacks the expected object class is never touched (the identity gets a
//! per-entry error naming the entry). Nor is an entry that already sits at the DN gatehouse
//! would give a new account but whose account attribute names another account (on Active
//! Directory `CN=<account>` need not be that sAMAccountName): it is not adopted, and the
//! identity gets the same kind of error. Accounts there that match no identity are orphans:
//! reported, never changed. One connection is kept and reused; a connection that broke (a
//! server restart) is rebuilt once per operation, which is safe because every operation is
//! idempotent.
//!
//! Owned attributes (the TargetSystem's mapping, docs/attributes.md) are requested in the
//! account search and read back under the mapping's spelling; a reference (`manager`) that
//! is the DN of an account entry in the users OU reads back as that account. A new account
//! is added with its text attributes; an update is one modify (replace, or delete, where a
//! delete of an absent attribute counts as done), with references written as the DN of the
//! account entry found in the users OU at that moment. Attributes outside the mapping are
//! never read into the plan nor written.
//!
//! Group names compare case-insensitively, as the directory compares them: `observe`
//! reports the directory's spelling (`cn=Finance`), and the caller respells it like the
//! policy (`finance`) before planning (`Capabilities::case_insensitive_names`,
//! [`crate::plan::AccessState::respell`]), so a difference in case is no drift.
//!
//! Secret keys: `bindDN`, `password`, and optionally `ca.crt` (PEM bundle that replaces the
//! system roots for `ldaps://` and StartTLS).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use ldap3::asn1::{StructureTag, parse_tag};
use ldap3::controls::{Control, PagedResults, RawControl};
use ldap3::{
    LdapConnAsync, LdapConnSettings, LdapError, LdapResult, Mod, ResultEntry, Scope, SearchResult,
};

mod dn;
mod errors;
mod settings;

pub use self::dn::normalize_dn;
use self::dn::{join_normalized, parse_dn};
pub use self::errors::{Class, already_removed, classify, refuses_paging};
use self::errors::{describe, lost};
use self::settings::{Settings, settings};

use super::TargetError;
use super::{Applied, Capabilities, Connector, Observed, Reread, Subject, TargetConfig};
use crate::api::EntitlementRef;
use crate::engine::IdentityKey;
use crate::engine::attributes::{AttrValue, AttributeChange, Attributes};
use crate::plan::{AccessState, AccountState, Action, Holding, Operation};

/// Secret key of the DN the connector binds as.
pub const BIND_DN_KEY: &str = "bindDN";
/// Secret key of the bind password.
pub const PASSWORD_KEY: &str = "password";
/// Secret key of the PEM CA bundle (optional; the system roots otherwise).
pub const CA_KEY: &str = "ca.crt";
/// The `pwdAccountLockedTime` value ppolicy reads as "locked until an administrator
/// unlocks".
pub const LOCKED: &str = "000001010000Z";
/// Accounts named in one filter of a targeted re-read.
const REREAD_CHUNK: usize = 50;
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
const ACCOUNTDISABLE: u32 = 0x2;
const PASSWD_NOTREQD: u32 = 0x20;
const NORMAL_ACCOUNT: u32 = 0x200;

/// A random password for a new Active Directory account: 24 random characters between a
/// fixed upper-case, lower-case, digit and symbol, so any domain complexity policy up to 28
/// characters accepts it. Never stored, never logged: nobody, gatehouse included, knows it
/// afterwards; the person sets their own through the organisation's reset process.
fn random_password() -> Result<String, TargetError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.+=!";
    let mut bytes = [0u8; 24];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TargetError::Transient("no random numbers for a password".into()))?;
    let body: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    Ok(format!("Gh{body}7#"))
}

/// The `unicodePwd` value Active Directory takes: the password in double quotes, UTF-16LE.
fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// An account entry found in the users OU.
#[derive(Clone, Debug)]
struct Found {
    dn: String,
    /// It has the expected object class.
    managed: bool,
    classes: Vec<String>,
    /// The values of the account attribute, when read.
    names: Vec<String>,
}

/// The LDAP / Active Directory connector for one TargetSystem of one tenant.
pub struct LdapDirectory {
    tenant: String,
    target: String,
    /// Boxed: keeps `AnyConnector` small.
    settings: Box<Settings>,
    conn: tokio::sync::Mutex<Option<ldap3::Ldap>>,
    /// Account entries seen by the last observe (and created since), by lowercase name.
    accounts: Mutex<HashMap<String, Found>>,
    /// Managed groups (normalized DN) known to hold the placeholder member.
    placeholders: Mutex<HashSet<String>>,
    /// The server refused the paged-results control once: searched without it for the
    /// connector's life.
    no_paging: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("target", &self.target)
            .field("url", &self.settings.url)
            .field("users", &self.settings.users_dn)
            .field("groups", &self.settings.groups_dn)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LdapDirectory {
    /// Checks the TargetSystem's `spec.ldap` and its Secret, connects and binds.
    pub async fn connect(config: &TargetConfig) -> Result<Self, TargetError> {
        let settings = Box::new(settings(config)?);
        let directory = Self {
            tenant: config.namespace.clone(),
            target: config.name.clone(),
            settings,
            conn: tokio::sync::Mutex::new(None),
            accounts: Mutex::new(HashMap::new()),
            placeholders: Mutex::new(HashSet::new()),
            no_paging: std::sync::atomic::AtomicBool::new(false),
        };
        directory.handle().await?;
        Ok(directory)
    }

    /// The DN of the managed users OU.
    pub fn users_dn(&self) -> &str {
        &self.settings.users_dn
    }

    /// The DN of the managed groups OU.
    pub fn groups_dn(&self) -> &str {
        &self.settings.groups_dn
    }

    /// The DN gatehouse gives a new account.
    pub fn new_account_dn(&self, account: &str) -> String {
        format!(
            "{}={},{}",
            self.settings.rdn_attribute,
            ldap3::dn_escape(account),
            self.settings.users_dn
        )
    }

    /// The DN of an account: the entry found by the last observe, else the one gatehouse
    /// would create.
    pub fn account_dn(&self, account: &str) -> String {
        lock(&self.accounts)
            .get(&account.to_lowercase())
            .map(|f| f.dn.clone())
            .unwrap_or_else(|| self.new_account_dn(account))
    }

    /// The DN of the group an entitlement names.
    pub fn group_dn(&self, name: &str) -> String {
        format!("cn={},{}", ldap3::dn_escape(name), self.settings.groups_dn)
    }

    fn entitlement(&self, name: &str) -> EntitlementRef {
        EntitlementRef {
            target: self.target.clone(),
            kind: None,
            namespace: None,
            name: name.to_string(),
        }
    }

    /// The live connection, opened (and bound) when there is none.
    async fn handle(&self) -> Result<ldap3::Ldap, TargetError> {
        let mut conn = self.conn.lock().await;
        if let Some(ldap) = conn.as_mut()
            && !ldap.is_closed()
        {
            return Ok(ldap.clone());
        }
        *conn = None;
        let ldap = self.open().await?;
        *conn = Some(ldap.clone());
        Ok(ldap)
    }

    async fn forget(&self) {
        *self.conn.lock().await = None;
    }

    async fn open(&self) -> Result<ldap3::Ldap, TargetError> {
        let s = &self.settings;
        let mut options = LdapConnSettings::new().set_conn_timeout(s.timeout);
        if let Some(tls) = &s.tls {
            options = options.set_config(tls.clone()).set_starttls(s.start_tls);
        }
        let (conn, mut ldap) = match LdapConnAsync::with_settings(options, &s.url).await {
            Ok(pair) => pair,
            Err(LdapError::LdapResult { result }) if s.start_tls => {
                return Err(TargetError::Config(format!(
                    "{}: the server refused StartTLS ({}); enable TLS on the server, use an ldaps:// URL, or set spec.ldap.startTLS: false (clear text)",
                    s.url,
                    describe(&result)
                )));
            }
            Err(e) => return Err(self.ldap_error("connect", e)),
        };
        let target = self.target.clone();
        tokio::spawn(async move {
            if let Err(error) = conn.drive().await {
                tracing::debug!(%target, %error, "LDAP connection ended");
            }
        });
        let bound = ldap
            .with_timeout(s.timeout)
            .simple_bind(&s.bind_dn, &s.password)
            .await
            .map_err(|e| self.ldap_error("bind", e))?;
        match bound.rc {
            0 => Ok(ldap),
            49 => Err(TargetError::Config(format!(
                "{}: the server rejected the bind as {:?} (invalidCredentials, 49); check keys {BIND_DN_KEY:?} and {PASSWORD_KEY:?} of Secret {}",
                s.url, s.bind_dn, s.secret
            ))),
            _ => Err(self.rc_error(&format!("bind as {:?}", s.bind_dn), &bound)),
        }
    }

    /// Runs `op` on the shared connection; a connection found broken is rebuilt and the
    /// operation retried once (every operation here is idempotent).
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, TargetError>
    where
        F: Fn(ldap3::Ldap) -> Fut,
        Fut: Future<Output = Result<T, LdapError>>,
    {
        let mut retried = false;
        loop {
            let ldap = self.handle().await?;
            match op(ldap).await {
                Ok(value) => return Ok(value),
                Err(error) if lost(&error) => {
                    self.forget().await;
                    if retried {
                        return Err(self.ldap_error(what, error));
                    }
                    tracing::info!(target = %self.target, %error, "LDAP connection lost; reconnecting");
                    retried = true;
                }
                Err(error) => return Err(self.ldap_error(what, error)),
            }
        }
    }

    async fn modify(&self, dn: &str, mods: Vec<Mod<String>>) -> Result<LdapResult, TargetError> {
        let timeout = self.settings.timeout;
        self.run(&format!("modify {dn}"), |mut ldap| {
            let mods = mods.clone();
            async move { ldap.with_timeout(timeout).modify(dn, mods).await }
        })
        .await
    }

    /// Every entry `scope` below `base` matching `filter`, page by page.
    async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Option<Vec<Entry>>, TargetError> {
        let what = format!("search {base}");
        self.run(&what, |ldap| self.pages(ldap, base, scope, filter, attrs))
            .await?
    }

    /// The pages of one search; `Ok(Err(_))` is an answer of the server, `Err(_)` a
    /// failure of the connection. `None` when `base` does not exist.
    async fn pages(
        &self,
        mut ldap: ldap3::Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Result<Option<Vec<Entry>>, TargetError>, LdapError> {
        use std::sync::atomic::Ordering;
        let s = &self.settings;
        let mut cookie = Vec::new();
        let mut out = Vec::new();
        let mut first = true;
        loop {
            let paged = !self.no_paging.load(Ordering::Relaxed);
            let mut request = ldap.with_timeout(s.timeout);
            if paged {
                let control: RawControl = PagedResults {
                    size: s.page_size,
                    cookie: std::mem::take(&mut cookie),
                }
                .into();
                request = request.with_controls(control);
            }
            let SearchResult(entries, result) =
                request.search(base, scope, filter, attrs.to_vec()).await?;
            match result.rc {
                0 => {}
                32 => return Ok(Ok(None)),
                rc if paged && refuses_paging(rc, first) => {
                    if !self.no_paging.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            target = %self.target,
                            url = %s.url,
                            answer = %describe(&result),
                            "the server refused the paged-results control; searching without it from now on"
                        );
                    }
                    out.clear();
                    continue;
                }
                4 if !paged => {
                    return Ok(Err(TargetError::Permanent(format!(
                        "search {base}: {}; the server does not page results and its size limit is below the number of entries there: lift the size limit for {:?}, or split the OU",
                        describe(&result),
                        s.bind_dn
                    ))));
                }
                _ => return Ok(Err(self.rc_error(&format!("search {base}"), &result))),
            }
            first = false;
            if !result.refs.is_empty() {
                return Ok(Err(TargetError::Permanent(format!(
                    "search {base}: the server answered with referrals to {}; gatehouse does not follow referrals: point spec.ldap.url at the server that holds the managed OUs",
                    result.refs.join(", ")
                ))));
            }
            for entry in entries {
                match parse_entry(entry) {
                    Some(e) => out.push(e),
                    None => {
                        return Ok(Err(TargetError::Permanent(format!(
                            "search {base}: the server sent an entry that is not valid LDAP"
                        ))));
                    }
                }
            }
            cookie = if paged {
                paged_cookie(&result.ctrls).unwrap_or_default()
            } else {
                Vec::new()
            };
            if cookie.is_empty() {
                return Ok(Ok(Some(out)));
            }
        }
    }

    /// All direct children of an OU that must exist.
    async fn list(
        &self,
        ou: &str,
        field: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<Entry>, TargetError> {
        self.search(ou, Scope::OneLevel, filter, attrs)
            .await?
            .ok_or_else(|| {
                TargetError::Config(format!(
                    "TargetSystem {}/{}: spec.ldap.{field}: {ou} does not exist on {}; create it or correct the field",
                    self.tenant, self.target, self.settings.url
                ))
            })
    }

    /// One entry, or `None` when it does not exist.
    async fn read(&self, dn: &str, attrs: &[&str]) -> Result<Option<Entry>, TargetError> {
        Ok(self
            .search(dn, Scope::Base, "(objectClass=*)", attrs)
            .await?
            .and_then(|mut entries| entries.pop()))
    }

    fn primary_class(&self) -> &str {
        self.settings
            .object_classes
            .last()
            .map(String::as_str)
            .unwrap_or("top")
    }

    fn has_primary_class(&self, classes: &[String]) -> bool {
        let primary = self.primary_class();
        classes.iter().any(|c| c.eq_ignore_ascii_case(primary))
    }

    fn not_managed(&self, account: &str, found: &Found) -> TargetError {
        if self.has_primary_class(&found.classes) {
            // The class fits, but the entry at the account's DN names another account (on
            // Active Directory `CN=<account>` need not be the sAMAccountName).
            return TargetError::Permanent(format!(
                "{} has {}: [{}], not {account}: it is another account's entry and gatehouse does not take it over; remove or rename it, or give the identity another account name (spec.accounts)",
                found.dn,
                self.settings.account_attribute,
                found.names.join(", ")
            ));
        }
        TargetError::Permanent(format!(
            "{} ({}={account}) has object classes [{}], not {}: gatehouse does not manage it; remove or rename it, or give the identity another account name (spec.accounts)",
            found.dn,
            self.settings.account_attribute,
            found.classes.join(", "),
            self.primary_class()
        ))
    }

    fn group_of(&self, entitlement: &EntitlementRef) -> Result<String, TargetError> {
        if entitlement.kind.is_some()
            || entitlement.namespace.is_some()
            || entitlement.name.is_empty()
        {
            return Err(TargetError::Permanent(format!(
                "{entitlement}: an LDAP entitlement names a group (cn) under spec.ldap.groupsOU, with no kind or namespace"
            )));
        }
        Ok(self.group_dn(&entitlement.name))
    }

    fn checked_account<'a>(&self, subject: &'a Subject) -> Result<&'a str, TargetError> {
        if subject.account.trim().is_empty() {
            return Err(TargetError::Permanent(format!(
                "identity {}: the account name on {} is empty",
                subject.identity, self.target
            )));
        }
        Ok(&subject.account)
    }

    /// The account's DN for a grant: never one of an entry gatehouse does not manage.
    fn managed_account_dn(&self, account: &str) -> Result<String, TargetError> {
        match lock(&self.accounts).get(&account.to_lowercase()) {
            Some(found) if !found.managed => Err(self.not_managed(account, found)),
            Some(found) => Ok(found.dn.clone()),
            None => Ok(self.new_account_dn(account)),
        }
    }

    async fn create(
        &self,
        subject: &Subject,
        enabled: bool,
        owned: &Attributes,
    ) -> Result<(), TargetError> {
        let s = &self.settings;
        let account = self.checked_account(subject)?;
        if let Some(found) = lock(&self.accounts).get(&account.to_lowercase())
            && !found.managed
        {
            return Err(self.not_managed(account, found));
        }
        let dn = self.new_account_dn(account);
        let mut attrs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        attrs.insert(
            "objectClass".into(),
            s.object_classes.iter().cloned().collect(),
        );
        for (name, template) in &s.attributes {
            let value = template
                .replace("{account}", account)
                .replace("{identity}", &subject.identity.name)
                .replace("{namespace}", &subject.identity.namespace);
            if !value.is_empty() {
                attrs.insert(name.clone(), BTreeSet::from([value]));
            }
        }
        // The owned attributes' text values (references to other accounts follow in an
        // updateAttributes, once those exist).
        for (name, value) in owned {
            self.check_owned(name)?;
            if let AttrValue::Text(value) = value
                && !value.is_empty()
            {
                attrs.insert(name.clone(), BTreeSet::from([value.clone()]));
            }
        }
        attrs.insert(
            s.account_attribute.clone(),
            BTreeSet::from([account.to_string()]),
        );
        attrs.insert(
            s.rdn_attribute.clone(),
            BTreeSet::from([account.to_string()]),
        );
        if s.ad {
            // Created disabled: a domain controller enables an account only once its
            // password satisfies the domain policy.
            attrs.insert(
                "userAccountControl".into(),
                BTreeSet::from([(NORMAL_ACCOUNT | ACCOUNTDISABLE).to_string()]),
            );
        } else if !enabled {
            attrs.insert(
                "pwdAccountLockedTime".into(),
                BTreeSet::from([LOCKED.to_string()]),
            );
        }
        let attrs: Vec<(String, HashSet<String>)> = attrs
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
        let timeout = s.timeout;
        let result = self
            .run(&format!("add {dn}"), |mut ldap| {
                let attrs = attrs.clone();
                let dn = dn.clone();
                async move { ldap.with_timeout(timeout).add(&dn, attrs).await }
            })
            .await?;
        match result.rc {
            0 => {
                lock(&self.accounts).insert(
                    account.to_lowercase(),
                    Found {
                        dn: dn.clone(),
                        managed: true,
                        classes: s.object_classes.clone(),
                        names: vec![account.to_string()],
                    },
                );
                if s.ad {
                    self.set_password(&dn, enabled).await?;
                }
                Ok(())
            }
            68 => {
                // Already there (a retry after a lost answer, or made by hand): adopt it only
                // if it is an account of the expected kind whose account attribute names this
                // account, then give it the wanted state. The RDN alone proves nothing: on
                // Active Directory `CN=<account>` may hold another person's sAMAccountName.
                let Some(entry) = self
                    .read(&dn, &["objectClass", s.account_attribute.as_str()])
                    .await?
                else {
                    if s.ad && result.text.contains("2071") {
                        // Nothing at our DN: the sAMAccountName (unique in the whole
                        // domain) belongs to an entry elsewhere.
                        return Err(self.rc_error(&format!("add {dn}"), &result));
                    }
                    return Err(TargetError::Transient(format!(
                        "add {dn}: entryAlreadyExists (68), but the entry is gone now; the next sync retries"
                    )));
                };
                let classes = entry.values("objectclass").to_vec();
                let names = entry
                    .values(&s.account_attribute.to_ascii_lowercase())
                    .to_vec();
                let found = Found {
                    dn: dn.clone(),
                    managed: adoptable(self.has_primary_class(&classes), &names, account),
                    classes,
                    names,
                };
                if !found.managed {
                    let error = self.not_managed(account, &found);
                    // Remembered, so that no grant writes this entry into a group either.
                    lock(&self.accounts).insert(account.to_lowercase(), found);
                    return Err(error);
                }
                lock(&self.accounts).insert(account.to_lowercase(), found);
                self.set_enabled(subject, enabled).await?;
                // The adopted entry gets the owned attributes the add would have written.
                let changes: Vec<AttributeChange> = owned
                    .iter()
                    .filter(|(_, v)| matches!(v, AttrValue::Text(t) if !t.is_empty()))
                    .map(|(name, value)| AttributeChange {
                        name: name.clone(),
                        from: None,
                        to: Some(value.clone()),
                    })
                    .collect();
                self.update_attributes(subject, &changes).await
            }
            _ => Err(self.rc_error(&format!("add {dn}"), &result)),
        }
    }

    /// The owned attributes an account entry holds, named as the mapping spells them
    /// (the directory may answer `displayname` for `displayName`). A reference that is the
    /// DN of an account entry in the users OU reads back as that account, any other value
    /// as its text; several values as their sorted text, one a line.
    /// An account entry as the connector remembers it.
    fn found(&self, user: &Entry, account_key: &str) -> Found {
        let classes = user.values("objectclass").to_vec();
        Found {
            dn: user.dn.clone(),
            managed: self.has_primary_class(&classes),
            classes,
            names: user.values(account_key).to_vec(),
        }
    }

    /// The attributes an account search asks for.
    fn account_attrs(&self) -> Vec<&str> {
        let s = &self.settings;
        let mut attrs = vec![s.account_attribute.as_str(), "objectClass"];
        if s.ad {
            attrs.extend(["userAccountControl", "memberOf"]);
        } else {
            attrs.push("pwdAccountLockedTime");
        }
        attrs.extend(s.owned.iter().map(String::as_str));
        attrs
    }

    /// The account each reference of `users` names (by normalised DN), spelled as the
    /// desired state spells it: the entries read, and a base read of each other DN that is
    /// a direct child of the users OU, as a full listing would have found it.
    async fn referenced_accounts(
        &self,
        users: &[Entry],
        expected: &BTreeMap<IdentityKey, Subject>,
    ) -> Result<HashMap<String, String>, TargetError> {
        let s = &self.settings;
        let mut by_dn = HashMap::new();
        if s.references.is_empty() {
            return Ok(by_dn);
        }
        let account_key = s.account_attribute.to_ascii_lowercase();
        let spelled = |account: &str| {
            expected
                .values()
                .find(|subject| subject.account.eq_ignore_ascii_case(account))
                .map_or(account, |subject| subject.account.as_str())
                .to_string()
        };
        for user in users {
            if let Some(account) = user.first(&account_key) {
                by_dn.insert(normalize_dn(&user.dn), spelled(account));
            }
        }
        let users_norm = normalize_dn(&s.users_dn);
        let named: BTreeSet<String> = users
            .iter()
            .flat_map(|user| s.references.iter().flat_map(|r| user.values(r)))
            .filter(|dn| {
                parse_dn(dn).is_some_and(|rdns| {
                    rdns.split_first()
                        .is_some_and(|(_, parent)| join_normalized(parent) == users_norm)
                })
            })
            .cloned()
            .collect();
        for dn in named {
            let norm = normalize_dn(&dn);
            if by_dn.contains_key(&norm) {
                continue;
            }
            let entry = self.read(&dn, &[s.account_attribute.as_str()]).await?;
            if let Some(account) = entry.as_ref().and_then(|e| e.first(&account_key)) {
                by_dn.insert(norm, spelled(account));
            }
        }
        Ok(by_dn)
    }

    /// Reads a managed account entry into `holding`: its state, its owned attributes and,
    /// on Active Directory, its memberships (`memberOf`). `by_dn` gives the account each
    /// account entry's normalised DN is, for references.
    fn read_account(&self, user: &Entry, by_dn: &HashMap<String, String>, holding: &mut Holding) {
        let s = &self.settings;
        let disabled = if s.ad {
            user.first("useraccountcontrol")
                .and_then(|v| v.trim().parse::<u32>().ok())
                .is_some_and(|uac| uac & ACCOUNTDISABLE != 0)
        } else {
            // Only the administrative lock; slapd's own temporary lockout after failed
            // binds (a timestamp) is not gatehouse's to lift.
            user.values("pwdaccountlockedtime")
                .iter()
                .any(|v| v == LOCKED)
        };
        holding.accounts.insert(
            self.target.clone(),
            if disabled {
                AccountState::Disabled
            } else {
                AccountState::Enabled
            },
        );
        let owned = self.owned_attributes(user, by_dn);
        if !owned.is_empty() {
            holding.attributes.insert(self.target.clone(), owned);
        }
        if s.ad {
            for group in user.values("memberof") {
                if let Some(name) = self.managed_group(group) {
                    holding
                        .entitlements
                        .insert(Arc::new(self.entitlement(&name)), Default::default());
                }
            }
        }
    }

    fn owned_attributes(&self, entry: &Entry, by_dn: &HashMap<String, String>) -> Attributes {
        let s = &self.settings;
        let mut out = Attributes::new();
        for name in &s.owned {
            let key = name.to_ascii_lowercase();
            let value = match entry.values(&key) {
                [] => continue,
                [one] if s.references.contains(&key) => match by_dn.get(&normalize_dn(one)) {
                    Some(account) => AttrValue::Account {
                        account: account.clone(),
                    },
                    None => AttrValue::Text(one.clone()),
                },
                [one] => AttrValue::Text(one.clone()),
                many => {
                    let mut many = many.to_vec();
                    many.sort();
                    AttrValue::Text(many.join("\n"))
                }
            };
            out.insert(name.clone(), value);
        }
        out
    }

    /// Refuses to write an attribute the mapping does not own.
    fn check_owned(&self, name: &str) -> Result<(), TargetError> {
        if self
            .settings
            .owned
            .iter()
            .any(|o| o.eq_ignore_ascii_case(name))
        {
            Ok(())
        } else {
            Err(TargetError::Permanent(format!(
                "{name} is not an attribute gatehouse owns on {} (spec.attributes and the type's defaults); it is left alone",
                self.target
            )))
        }
    }

    /// The DN of the account entry `account` names, for a reference held in `attribute`;
    /// looked up in the users OU each time, so a reference never points at a DN that is
    /// gone.
    async fn reference_dn(&self, account: &str, attribute: &str) -> Result<String, TargetError> {
        let s = &self.settings;
        let filter = format!("({}={})", s.account_attribute, ldap3::ldap_escape(account));
        let found = self
            .list(&s.users_dn, "usersOU", &filter, &["objectClass"])
            .await?;
        match found.as_slice() {
            [] => Err(TargetError::Transient(format!(
                "the account {account} that attribute {attribute} refers to does not exist on {} yet",
                self.target
            ))),
            [one] => Ok(one.dn.clone()),
            many => Err(TargetError::Permanent(format!(
                "attribute {attribute} refers to the account {account}, and several entries in spec.ldap.usersOU have {}={account}: {}; remove or rename all but one",
                s.account_attribute,
                many.iter()
                    .map(|e| e.dn.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Applies attribute changes to an account in one modify: a new value replaces every
    /// old one, an unset attribute is deleted (one already absent counts as deleted), and a
    /// reference to another account is written as that account's DN.
    async fn update_attributes(
        &self,
        subject: &Subject,
        changes: &[AttributeChange],
    ) -> Result<(), TargetError> {
        if changes.is_empty() {
            return Ok(());
        }
        let account = self.checked_account(subject)?;
        let dn = self.managed_account_dn(account)?;
        let mut mods: Vec<Mod<String>> = Vec::with_capacity(changes.len());
        for change in changes {
            self.check_owned(&change.name)?;
            let name = change.name.clone();
            mods.push(match &change.to {
                Some(AttrValue::Text(value)) if !value.is_empty() => {
                    Mod::Replace(name, HashSet::from([value.clone()]))
                }
                Some(AttrValue::Account { account: other }) => {
                    let other_dn = self.reference_dn(other, &change.name).await?;
                    Mod::Replace(name, HashSet::from([other_dn]))
                }
                Some(AttrValue::Text(_)) | None => Mod::Delete(name, HashSet::new()),
            });
        }
        let mut result = self.modify(&dn, mods.clone()).await?;
        if result.rc == 16 {
            // noSuchAttribute: an attribute to delete is absent already (the modify is
            // atomic, so nothing was done). Delete only those still there.
            let deleting: Vec<String> = mods
                .iter()
                .filter_map(|m| match m {
                    Mod::Delete(name, _) => Some(name.clone()),
                    _ => None,
                })
                .collect();
            let names: Vec<&str> = deleting.iter().map(String::as_str).collect();
            let Some(entry) = self.read(&dn, &names).await? else {
                return Err(self.vanished(&dn));
            };
            mods.retain(|m| match m {
                Mod::Delete(name, _) => !entry.values(&name.to_ascii_lowercase()).is_empty(),
                _ => true,
            });
            if mods.is_empty() {
                return Ok(());
            }
            result = self.modify(&dn, mods).await?;
        }
        match result.rc {
            0 => Ok(()),
            32 => Err(self.vanished(&dn)),
            16 => Err(TargetError::Transient(format!(
                "modify {dn}: {}; the entry changed meanwhile; the next sync retries",
                describe(&result)
            ))),
            17 | 19 | 21 | 50 | 53 | 65 | 69 => {
                let text = result.text.to_ascii_lowercase();
                let mut named: Vec<&str> = changes
                    .iter()
                    .map(|c| c.name.as_str())
                    .filter(|n| text.contains(&n.to_ascii_lowercase()))
                    .collect();
                if named.is_empty() {
                    named = changes.iter().map(|c| c.name.as_str()).collect();
                }
                let hint = match result.rc {
                    50 => format!(
                        "{:?} needs write access to these attributes of the accounts in spec.ldap.usersOU",
                        self.settings.bind_dn
                    ),
                    19 => "the value breaks a constraint of the directory (length, syntax or uniqueness); correct the Identity or the template in spec.attributes".to_string(),
                    _ => "the directory's schema does not allow it on this entry (its object classes, spec.ldap.userObjectClasses) or does not know it; remove it from spec.attributes, or (a default) set spec.defaultAttributes: false and map only what the directory has".to_string(),
                };
                Err(TargetError::Permanent(format!(
                    "set {} on {dn}: the server refused ({}); {hint}",
                    named.join(", "),
                    describe(&result)
                )))
            }
            _ => Err(self.rc_error(&format!("modify {dn}"), &result)),
        }
    }

    fn vanished(&self, dn: &str) -> TargetError {
        TargetError::Transient(format!(
            "{dn} does not exist (deleted meanwhile?); the next sync creates it again"
        ))
    }

    async fn set_enabled(&self, subject: &Subject, enabled: bool) -> Result<(), TargetError> {
        let account = self.checked_account(subject)?;
        let dn = self.account_dn(account);
        let vanished = || {
            TargetError::Transient(format!(
                "{dn} does not exist (deleted meanwhile?); the next sync creates it again"
            ))
        };
        if self.settings.ad {
            let Some(entry) = self
                .read(&dn, &["userAccountControl", "pwdLastSet"])
                .await?
            else {
                return if enabled { Err(vanished()) } else { Ok(()) };
            };
            let uac: u32 = entry
                .first("useraccountcontrol")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(NORMAL_ACCOUNT);
            // Never given a password and allowed to have none (how an LDAP add without one
            // leaves it, 546): enabling it would make a password-less login; it gets a
            // random password first. An administrator's initial password with "must
            // change at next logon" also reads pwdLastSet 0 but has no PASSWD_NOTREQD.
            let no_password =
                entry.first("pwdlastset").map(str::trim) == Some("0") && uac & PASSWD_NOTREQD != 0;
            if enabled && no_password {
                return self.set_password(&dn, true).await;
            }
            let wanted = if enabled {
                uac & !ACCOUNTDISABLE
            } else {
                uac | ACCOUNTDISABLE
            };
            if wanted == uac {
                return Ok(());
            }
            let result = self
                .modify(
                    &dn,
                    vec![Mod::Replace(
                        "userAccountControl".into(),
                        HashSet::from([wanted.to_string()]),
                    )],
                )
                .await?;
            return match result.rc {
                0 => Ok(()),
                32 if !enabled => Ok(()),
                32 => Err(vanished()),
                53 | 19 if enabled => Err(TargetError::Permanent(format!(
                    "enable {dn}: the domain controller refused ({}); an account is enabled only once its password meets the domain policy: set one, then the next sync enables it",
                    describe(&result)
                ))),
                _ => Err(self.rc_error(&format!("modify {dn}"), &result)),
            };
        }
        let mods = if enabled {
            // Only gatehouse's own lock: a temporary lockout slapd set after failed binds
            // (a timestamp) stays until it expires (noSuchAttribute, 16, when ours is absent).
            vec![Mod::Delete(
                "pwdAccountLockedTime".into(),
                HashSet::from([LOCKED.to_string()]),
            )]
        } else {
            vec![Mod::Replace(
                "pwdAccountLockedTime".into(),
                HashSet::from([LOCKED.to_string()]),
            )]
        };
        let result = self.modify(&dn, mods).await?;
        match result.rc {
            0 => Ok(()),
            16 if enabled => Ok(()),  // no lock of ours to remove
            32 if !enabled => Ok(()), // nothing left to lock
            32 => Err(vanished()),
            _ => Err(self.rc_error(&format!("modify {dn}"), &result)),
        }
    }

    async fn grant(
        &self,
        subject: &Subject,
        entitlement: &EntitlementRef,
    ) -> Result<(), TargetError> {
        let account = self.checked_account(subject)?;
        let group = self.group_of(entitlement)?;
        let member = self.managed_account_dn(account)?;
        let s = &self.settings;
        let group_key = normalize_dn(&group);
        let has_placeholder = !s.ad && lock(&self.placeholders).contains(&group_key);
        if has_placeholder {
            let result = self
                .modify(
                    &group,
                    vec![
                        Mod::Add("member".into(), HashSet::from([member.clone()])),
                        Mod::Delete("member".into(), HashSet::from([s.placeholder.clone()])),
                    ],
                )
                .await?;
            match result.rc {
                0 => {
                    lock(&self.placeholders).remove(&group_key);
                    return Ok(());
                }
                16 => {
                    // The placeholder was gone already: an ordinary add below.
                    lock(&self.placeholders).remove(&group_key);
                }
                20 => {
                    // Already a member: just drop the placeholder.
                    let result = self
                        .modify(
                            &group,
                            vec![Mod::Delete(
                                "member".into(),
                                HashSet::from([s.placeholder.clone()]),
                            )],
                        )
                        .await?;
                    lock(&self.placeholders).remove(&group_key);
                    return match result.rc {
                        0 | 16 => Ok(()),
                        _ => Err(self.rc_error(&format!("modify {group}"), &result)),
                    };
                }
                _ => return Err(self.grant_error(&group, &result)),
            }
        }
        let result = self
            .modify(
                &group,
                vec![Mod::Add("member".into(), HashSet::from([member]))],
            )
            .await?;
        match result.rc {
            0 | 20 => Ok(()),
            // Active Directory answers entryAlreadyExists for a member that is there.
            68 if s.ad => Ok(()),
            _ => Err(self.grant_error(&group, &result)),
        }
    }

    fn grant_error(&self, group: &str, result: &LdapResult) -> TargetError {
        if result.rc == 32 {
            TargetError::Permanent(format!(
                "modify {group}: noSuchObject (32){}: the group (or the account being added to it) does not exist: gatehouse grants membership of existing groups under spec.ldap.groupsOU; create the group or correct the entitlement's name",
                if result.text.is_empty() {
                    String::new()
                } else {
                    format!(": {}", result.text)
                }
            ))
        } else {
            self.rc_error(&format!("modify {group}"), result)
        }
    }

    async fn revoke(
        &self,
        subject: &Subject,
        entitlement: &EntitlementRef,
    ) -> Result<(), TargetError> {
        let account = self.checked_account(subject)?;
        let group = self.group_of(entitlement)?;
        let member = self.account_dn(account);
        self.remove_member(&group, &member).await
    }

    async fn remove_member(&self, group: &str, member: &str) -> Result<(), TargetError> {
        let s = &self.settings;
        let result = self
            .modify(
                group,
                vec![Mod::Delete(
                    "member".into(),
                    HashSet::from([member.to_string()]),
                )],
            )
            .await?;
        match result.rc {
            // Removed, not a member, or no such group: either way nothing is held.
            0 | 16 | 32 => Ok(()),
            // Active Directory refuses to remove a non-member with unwillingToPerform.
            rc if already_removed(rc, &result.text, s.ad) => Ok(()),
            65 if !s.ad => {
                // The last member of a groupOfNames: the placeholder takes its place.
                let result = self
                    .modify(
                        group,
                        vec![
                            Mod::Delete("member".into(), HashSet::from([member.to_string()])),
                            Mod::Add("member".into(), HashSet::from([s.placeholder.clone()])),
                        ],
                    )
                    .await?;
                match result.rc {
                    0 => {
                        lock(&self.placeholders).insert(normalize_dn(group));
                        Ok(())
                    }
                    16 | 32 => Ok(()),
                    _ => Err(TargetError::Permanent(format!(
                        "modify {group}: removing the last member needs a placeholder member ({:?}, spec.ldap.placeholderMember), and the server refused it: {}",
                        s.placeholder,
                        describe(&result)
                    ))),
                }
            }
            _ => Err(self.rc_error(&format!("modify {group}"), &result)),
        }
    }

    async fn delete(&self, subject: &Subject) -> Result<(), TargetError> {
        let s = &self.settings;
        let account = self.checked_account(subject)?;
        let dn = self.account_dn(account);
        let Some(entry) = self.read(&dn, &["objectClass"]).await? else {
            lock(&self.accounts).remove(&account.to_lowercase());
            return Ok(());
        };
        let found = Found {
            dn: dn.clone(),
            managed: self.has_primary_class(entry.values("objectclass")),
            classes: entry.values("objectclass").to_vec(),
            names: Vec::new(),
        };
        if !found.managed {
            return Err(self.not_managed(account, &found));
        }
        // Every membership in a managed group, planned or added by hand.
        if !s.ad {
            let filter = format!(
                "(&(objectClass=groupOfNames)(member={}))",
                ldap3::ldap_escape(dn.as_str())
            );
            for group in self
                .list(&s.groups_dn, "groupsOU", &filter, &["cn"])
                .await?
            {
                self.remove_member(&group.dn, &dn).await?;
            }
        }
        let timeout = s.timeout;
        let result = self
            .run(&format!("delete {dn}"), |mut ldap| {
                let dn = dn.clone();
                async move { ldap.with_timeout(timeout).delete(&dn).await }
            })
            .await?;
        match result.rc {
            0 | 32 => {
                lock(&self.accounts).remove(&account.to_lowercase());
                Ok(())
            }
            66 => Err(TargetError::Permanent(format!(
                "delete {dn}: the entry has children; remove them first"
            ))),
            _ => Err(self.rc_error(&format!("delete {dn}"), &result)),
        }
    }

    /// The name of a managed group from its DN: a direct child of the groups OU.
    fn managed_group(&self, dn: &str) -> Option<String> {
        let rdns = parse_dn(dn)?;
        let (first, parent) = rdns.split_first()?;
        if join_normalized(parent) != self.settings.groups_norm {
            return None;
        }
        first.first().map(|(_, value)| value.clone())
    }

    fn ldap_error(&self, what: &str, error: LdapError) -> TargetError {
        let s = &self.settings;
        let tls_hint = || {
            if s.custom_ca {
                format!(
                    "check that the server's certificate is issued by the CA in key {CA_KEY:?} of Secret {} and names the host of spec.ldap.url",
                    s.secret
                )
            } else {
                format!(
                    "add the directory's CA certificate (PEM) as key {CA_KEY:?} to Secret {}",
                    s.secret
                )
            }
        };
        match error {
            LdapError::Io { source } => {
                if let Some(tls) = source
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    return TargetError::Config(format!(
                        "{what}: TLS with {} failed: {tls}; {}",
                        s.url,
                        tls_hint()
                    ));
                }
                if what == "connect"
                    && s.tls.is_some()
                    && source.kind() == std::io::ErrorKind::UnexpectedEof
                {
                    return TargetError::Transient(format!(
                        "{what}: {}: the server closed the connection during the TLS handshake ({source}); if it persists, check that this port serves {}",
                        s.url,
                        if s.start_tls {
                            "StartTLS"
                        } else {
                            "TLS (ldaps://)"
                        }
                    ));
                }
                TargetError::Transient(format!("{what}: {}: {source}", s.url))
            }
            LdapError::Rustls { source } => TargetError::Config(format!(
                "{what}: TLS with {} failed: {source}; {}",
                s.url,
                tls_hint()
            )),
            LdapError::DNSName { source } => TargetError::Config(format!(
                "spec.ldap.url: {}: the host is not a valid TLS server name: {source}",
                s.url
            )),
            LdapError::Timeout { .. } => TargetError::Transient(format!(
                "{what}: {} did not answer within {} s",
                s.url,
                s.timeout.as_secs()
            )),
            LdapError::UrlParsing { .. } | LdapError::UnknownScheme(_) => {
                TargetError::Config(format!("spec.ldap.url: {}: {error}", s.url))
            }
            LdapError::LdapResult { result } => self.rc_error(what, &result),
            other => TargetError::Transient(format!("{what}: {}: {other}", s.url)),
        }
    }

    fn rc_error(&self, what: &str, result: &LdapResult) -> TargetError {
        let s = &self.settings;
        let text = format!("{what}: {}", describe(result));
        match result.rc {
            4 => TargetError::Permanent(format!(
                "{text}; the server's size limit cut a paged search short: lift it for {:?}",
                s.bind_dn
            )),
            8 | 13 => TargetError::Config(format!(
                "{text}; the server requires a protected connection: use ldaps:// or spec.ldap.startTLS: true"
            )),
            68 if s.ad && result.text.contains("2071") => TargetError::Permanent(format!(
                "{text}; the sAMAccountName is taken by an entry elsewhere in the domain (outside spec.ldap.usersOU): rename that account or give the identity another account name (spec.accounts)"
            )),
            10 => TargetError::Permanent(format!(
                "{text}; referred to {}; gatehouse does not follow referrals: point spec.ldap.url at the server that holds the managed OUs",
                result.refs.join(", ")
            )),
            50 => TargetError::Permanent(format!(
                "{text}; {:?} needs write access to spec.ldap.usersOU and groupsOU",
                s.bind_dn
            )),
            rc => match classify(rc, false) {
                Class::Transient => TargetError::Transient(text),
                Class::Permanent => TargetError::Permanent(text),
                Class::Config => TargetError::Config(text),
            },
        }
    }

    /// Gives a new (or never-passworded) Active Directory account a random password over
    /// the TLS connection, and the wanted state: NORMAL_ACCOUNT with ACCOUNTDISABLE as
    /// `enabled` says and PASSWD_NOTREQD cleared, in one modify.
    async fn set_password(&self, dn: &str, enabled: bool) -> Result<(), TargetError> {
        let password = unicode_pwd(&random_password()?);
        let uac = if enabled {
            NORMAL_ACCOUNT
        } else {
            NORMAL_ACCOUNT | ACCOUNTDISABLE
        };
        let timeout = self.settings.timeout;
        let result = self
            .run(&format!("modify {dn}"), |mut ldap| {
                let password = password.clone();
                async move {
                    let mods: Vec<Mod<Vec<u8>>> = vec![
                        Mod::Replace(b"unicodePwd".to_vec(), HashSet::from([password])),
                        Mod::Replace(
                            b"userAccountControl".to_vec(),
                            HashSet::from([uac.to_string().into_bytes()]),
                        ),
                    ];
                    ldap.with_timeout(timeout).modify(dn, mods).await
                }
            })
            .await?;
        match result.rc {
            0 => Ok(()),
            32 => Err(TargetError::Transient(format!(
                "{dn} does not exist (deleted meanwhile?); the next sync creates it again"
            ))),
            // The message never holds the password: only the server's diagnostic.
            19 | 53 => Err(TargetError::Permanent(format!(
                "set a password on {dn}: the domain controller refused ({}); gatehouse gives a new account a random password (unicodePwd over TLS) before enabling it: check that the domain password policy accepts 28 characters of letters, digits and symbols, and that the bind account may reset passwords in spec.ldap.usersOU",
                describe(&result)
            ))),
            _ => Err(self.rc_error(&format!("set a password on {dn}"), &result)),
        }
    }
}

impl Connector for LdapDirectory {
    fn capabilities(&self) -> Capabilities {
        // LDAP has no sessions: the lock itself stops every new bind.
        Capabilities {
            disable: true,
            delete: true,
            revoke_sessions: false,
            // `cn=Finance` is the group an entitlement `finance` names.
            case_insensitive_names: true,
        }
    }

    async fn observe(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
    ) -> Result<Observed, TargetError> {
        let s = &self.settings;
        let attrs = self.account_attrs();
        let filter = format!("({}=*)", s.account_attribute);
        let users = self.list(&s.users_dn, "usersOU", &filter, &attrs).await?;
        let groups = if s.ad {
            Vec::new()
        } else {
            self.list(
                &s.groups_dn,
                "groupsOU",
                "(objectClass=groupOfNames)",
                &["member"],
            )
            .await?
        };

        let wanted: HashMap<String, &Subject> = expected
            .values()
            .map(|subject| (subject.account.to_lowercase(), subject))
            .collect();
        let account_key = s.account_attribute.to_ascii_lowercase();
        // Account entries by normalised DN, for reading references (`manager`) back as the
        // account they name, spelled as the desired state spells it.
        let by_dn: HashMap<String, String> = if s.references.is_empty() {
            HashMap::new()
        } else {
            users
                .iter()
                .filter_map(|user| {
                    let account = user.first(&account_key)?;
                    let spelled = wanted
                        .get(&account.to_lowercase())
                        .map_or(account, |subject| subject.account.as_str());
                    Some((normalize_dn(&user.dn), spelled.to_string()))
                })
                .collect()
        };
        let mut state = AccessState::default();
        let mut orphans = BTreeSet::new();
        let mut found = HashMap::new();
        let mut member_of: HashMap<String, &IdentityKey> = HashMap::new();
        for user in &users {
            let Some(account) = user.first(&account_key) else {
                continue;
            };
            let entry = self.found(user, &account_key);
            let Some(subject) = wanted.get(&account.to_lowercase()) else {
                orphans.insert(account.to_string());
                continue;
            };
            let managed = entry.managed;
            if !managed {
                tracing::warn!(target = %self.target, dn = %user.dn, "an account entry lacks the expected object class; not managed");
            }
            found.insert(account.to_lowercase(), entry);
            if !managed {
                continue;
            }
            let holding = state
                .identities
                .entry(subject.identity.clone())
                .or_default();
            self.read_account(user, &by_dn, holding);
            if !s.ad {
                member_of.insert(normalize_dn(&user.dn), &subject.identity);
            }
        }
        let mut with_placeholder = HashSet::new();
        for group in &groups {
            let Some(name) = group_name(&group.dn) else {
                continue;
            };
            let entitlement = Arc::new(self.entitlement(&name));
            for member in group.values("member") {
                let member = normalize_dn(member);
                if member == s.placeholder_norm {
                    with_placeholder.insert(normalize_dn(&group.dn));
                } else if let Some(key) = member_of.get(&member) {
                    state
                        .identities
                        .entry((*key).clone())
                        .or_default()
                        .entitlements
                        .insert(entitlement.clone(), Default::default());
                }
            }
        }
        *lock(&self.accounts) = found;
        if !s.ad {
            *lock(&self.placeholders) = with_placeholder;
        }
        Ok(Observed {
            held: state,
            orphans: orphans.into_iter().collect(),

            findings: Vec::new(),
        })
    }

    fn reads_accounts(&self) -> bool {
        true
    }

    /// A search of the users OU for the accounts asked about ([`REREAD_CHUNK`] per
    /// filter), a base read of each other account entry their references name, and on
    /// OpenLDAP one search of the groups OU per account for the groups that list it: a
    /// handful of requests, whatever the size of the directory.
    async fn observe_accounts(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
        only: &BTreeSet<IdentityKey>,
    ) -> Result<Reread, TargetError> {
        let s = &self.settings;
        let asked: BTreeMap<String, &Subject> = only
            .iter()
            .filter_map(|k| expected.get(k))
            .map(|subject| (subject.account.to_lowercase(), subject))
            .collect();
        let attrs = self.account_attrs();
        let account_key = s.account_attribute.to_ascii_lowercase();
        let names: Vec<&String> = asked.keys().collect();
        let mut users = Vec::new();
        for chunk in names.chunks(REREAD_CHUNK) {
            let any: String = chunk
                .iter()
                .map(|name| {
                    format!(
                        "({}={})",
                        s.account_attribute,
                        ldap3::ldap_escape(name.as_str())
                    )
                })
                .collect();
            let filter = format!("(|{any})");
            users.extend(self.list(&s.users_dn, "usersOU", &filter, &attrs).await?);
        }
        let by_dn = self.referenced_accounts(&users, expected).await?;
        let mut state = AccessState::default();
        let mut read: HashMap<String, Found> = HashMap::new();
        let mut member_of: Vec<(String, &IdentityKey)> = Vec::new();
        for user in &users {
            let Some(account) = user.first(&account_key) else {
                continue;
            };
            let Some(subject) = asked.get(&account.to_lowercase()) else {
                continue; // another value of the attribute matched: not this account's entry
            };
            let entry = self.found(user, &account_key);
            let managed = entry.managed;
            read.insert(account.to_lowercase(), entry);
            if !managed {
                continue;
            }
            let holding = state
                .identities
                .entry(subject.identity.clone())
                .or_default();
            self.read_account(user, &by_dn, holding);
            if !s.ad {
                member_of.push((user.dn.clone(), &subject.identity));
            }
        }
        for (dn, key) in member_of {
            let filter = format!(
                "(&(objectClass=groupOfNames)(member={}))",
                ldap3::ldap_escape(dn.as_str())
            );
            for group in self
                .list(&s.groups_dn, "groupsOU", &filter, &["1.1"])
                .await?
            {
                let Some(name) = group_name(&group.dn) else {
                    continue;
                };
                state
                    .identities
                    .entry(key.clone())
                    .or_default()
                    .entitlements
                    .insert(Arc::new(self.entitlement(&name)), Default::default());
            }
        }
        let mut accounts = lock(&self.accounts);
        for name in asked.keys() {
            match read.remove(name) {
                Some(found) => accounts.insert(name.clone(), found),
                None => accounts.remove(name),
            };
        }
        Ok(Reread::Accounts(state))
    }

    async fn apply(
        &self,
        operation: &Operation,
        subject: &Subject,
    ) -> Result<Applied, TargetError> {
        match &operation.action {
            Action::CreateAccount {
                enabled,
                attributes,
                ..
            } => self.create(subject, *enabled, attributes).await?,
            Action::UpdateAttributes { changes } => {
                self.update_attributes(subject, changes).await?
            }
            Action::DisableAccount => self.set_enabled(subject, false).await?,
            Action::EnableAccount => self.set_enabled(subject, true).await?,
            Action::RevokeSessions => return Ok(Applied::Unsupported),
            // A directory entry's password is not a credential gatehouse issues or knows
            // about: never planned here (the engine reports CredentialsNotRotated).
            Action::RotateCredentials { .. } => return Ok(Applied::Unsupported),
            Action::Grant { entitlement } => self.grant(subject, entitlement).await?,
            Action::Revoke { entitlement } => self.revoke(subject, entitlement).await?,
            Action::DeleteAccount => self.delete(subject).await?,
        }
        Ok(Applied::Done)
    }
}

/// An entry of a search result, attribute names lowercased.
#[derive(Clone, Debug, Default)]
struct Entry {
    dn: String,
    attrs: HashMap<String, Vec<String>>,
}

impl Entry {
    fn values(&self, name: &str) -> &[String] {
        self.attrs.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.values(name).first().map(String::as_str)
    }
}

/// Decodes a SearchResultEntry without panicking on malformed input (ldap3's own
/// `SearchEntry::construct` panics).
fn parse_entry(entry: ResultEntry) -> Option<Entry> {
    let mut parts = entry.0.match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
    for attribute in parts.next()?.expect_constructed()? {
        let mut pieces = attribute.expect_constructed()?.into_iter();
        let name = String::from_utf8(pieces.next()?.expect_primitive()?).ok()?;
        let values = pieces.next()?.expect_constructed()?;
        let slot = attrs.entry(name.to_ascii_lowercase()).or_default();
        for value in values {
            slot.push(String::from_utf8_lossy(&value.expect_primitive()?).into_owned());
        }
    }
    Some(Entry { dn, attrs })
}

/// The cookie of a paged-results response control (empty when the search is done).
fn paged_cookie(controls: &[Control]) -> Option<Vec<u8>> {
    let raw = controls
        .iter()
        .find(|c| c.1.ctype == PAGED_RESULTS_OID)?
        .1
        .val
        .as_ref()?;
    let (_, tag): (_, StructureTag) = parse_tag(raw).ok()?;
    let mut parts = tag.expect_constructed()?.into_iter();
    let _size = parts.next()?;
    parts.next()?.expect_primitive()
}

/// A group's name: the value of the first RDN of its DN.
fn group_name(dn: &str) -> Option<String> {
    parse_dn(dn)
        .and_then(|rdns| rdns.into_iter().next())
        .and_then(|rdn| rdn.into_iter().next())
        .map(|(_, value)| value)
}

/// Whether an entry found at an account's DN (the add failed with entryAlreadyExists) is
/// that account's own, so gatehouse may adopt it: the expected object class, and an
/// account attribute that names the account (case-insensitively) and no other.
fn adoptable(has_class: bool, names: &[String], account: &str) -> bool {
    let account = account.to_lowercase();
    has_class && !names.is_empty() && names.iter().all(|n| n.to_lowercase() == account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_entry_is_adopted_only_when_it_names_the_account() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(adoptable(true, &names(&["alice"]), "alice"));
        assert!(adoptable(true, &names(&["Alice"]), "aLICE"));
        // Active Directory: `CN=alice` whose sAMAccountName is somebody else's.
        assert!(!adoptable(true, &names(&["bob"]), "alice"));
        assert!(!adoptable(true, &names(&["alice", "bob"]), "alice"));
        assert!(!adoptable(true, &[], "alice"));
        assert!(!adoptable(false, &names(&["alice"]), "alice"));
    }

    #[test]
    fn passwords_are_random_complex_and_encoded_as_ad_wants() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.chars().count(), 28);
        assert!(a.chars().any(|c| c.is_ascii_uppercase()));
        assert!(a.chars().any(|c| c.is_ascii_lowercase()));
        assert!(a.chars().any(|c| c.is_ascii_digit()));
        assert!(a.chars().any(|c| !c.is_ascii_alphanumeric()));
        assert_eq!(unicode_pwd("ab"), b"\"\0a\0b\0\"\0");
    }
}
