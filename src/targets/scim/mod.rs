//! SCIM 2.0 (RFC 7643, RFC 7644): accounts are Users, entitlements are memberships of the
//! Group whose `displayName` is the entitlement name.
//!
//! **Managed scope.** Gatehouse writes `externalId = <namespace>/<identity>` on the users it
//! creates, and manages exactly the users whose `externalId` starts with `<namespace>/`.
//! Such a user whose identity the tenant does not have is an orphan: reported, never
//! changed. Users without that prefix are never read into the state nor written. Every
//! group membership of a managed user counts as held (so a membership added by hand is
//! revoked), and groups are created on the first grant that needs them.
//!
//! **Adapting to the server.** `/ServiceProviderConfig` is read at connect time: ETags are
//! sent as `If-Match` when supported (a `412` re-reads the resource, and the change is
//! retried once if it is still needed), Bulk is used within `maxOperations` and
//! `maxPayloadSize` by [`Connector::apply_batch`], filters find single resources (else the
//! connector lists and searches), and lists are paged with `startIndex`/`count`. Filters
//! announced as unsupported are never sent. Without PATCH, changes are read-modify-write
//! PUTs. PATCH may answer `200` with a body or `204` without.
//!
//! **Learning from answers.** Servers announce more than they do. A `501`/`405` to a PATCH,
//! or a `400` about its path, filter or syntax, moves the connector to the next shape for
//! its life (logged once): members are removed by the filter path `members[value eq "id"]`,
//! then by value, then by a PUT of the group's member list; a refused filter query lists
//! instead. A successful answer that shows the resource must show the change: a server
//! that answers `200` and ignores `members` or `active` gets a permanent error, never
//! `Done`. Members that name no user (deleted users some servers leave behind) are ignored.

pub mod http;
mod learned;
pub mod types;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use self::http::{Http, Reply};
use self::learned::{Learned, MemberRemoval, Resource, refuses_shape};
use self::types::*;
use super::{Applied, Capabilities, Connector, Observed, Subject, TargetConfig, TargetError};
use crate::api::EntitlementRef;
use crate::engine::IdentityKey;
use crate::plan::{AccessState, AccountState, Action, Operation};

/// Default page size when listing.
const PAGE_SIZE: u32 = 200;
/// Requests in flight at once for independent account steps without Bulk.
const CONCURRENCY: usize = 4;
/// Members added or removed by one PATCH.
const MEMBERS_PER_PATCH: usize = 200;

/// What the server supports, from `/ServiceProviderConfig` and the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// PATCH is supported (else read-modify-write PUT).
    pub patch: bool,
    /// Bulk limits (maxOperations, maxPayloadSize) when Bulk is supported and enabled.
    pub bulk: Option<(usize, usize)>,
    /// Filtering is supported.
    pub filter: bool,
    /// ETags are supported.
    pub etag: bool,
    /// `count` per page.
    pub page_size: u32,
}

/// A resource known by id, with its entity tag.
#[derive(Clone, Debug)]
struct Known {
    id: String,
    etag: Option<String>,
}

/// What the last observation and the writes since taught about ids and tags.
#[derive(Default)]
struct Cache {
    users: HashMap<IdentityKey, Known>,
    groups: HashMap<String, Known>,
    /// userNames (lowercased) of the users gatehouse does not manage that the last
    /// observation listed, with their externalId: a server whose uniqueness is
    /// case-sensitive (django-scim2) would take `alice` next to `Alice`, where RFC 7643's
    /// `caseExact: false` makes them one name.
    unmanaged: HashMap<String, Option<String>>,
}

/// The SCIM connector for one TargetSystem of one tenant.
pub struct Scim {
    http: Http,
    tenant: String,
    target: String,
    features: Features,
    cache: Mutex<Cache>,
    /// What the server's answers taught beyond its announced features.
    learned: Learned,
}

impl Scim {
    /// Connects: builds the client and reads `/ServiceProviderConfig`.
    pub async fn connect(config: &TargetConfig) -> Result<Self, TargetError> {
        let http = Http::new(config)?;
        let scim = config.block(&config.spec.scim, "scim")?;
        let reply = http
            .send(Method::GET, "ServiceProviderConfig", &[], None, None)
            .await?;
        if reply.status.as_u16() == 404 {
            return Err(TargetError::Config(format!(
                "TargetSystem {}/{}: spec.scim.url has no /ServiceProviderConfig (HTTP 404); it must be the SCIM root, e.g. https://app.example/scim/v2",
                config.namespace, config.name
            )));
        }
        if !reply.ok() {
            return Err(reply.error());
        }
        let spc: ServiceProviderConfig = reply.json()?;
        // The configuration is public (RFC 7644 §4): prove the credentials with one read.
        http.expect(
            Method::GET,
            "Users",
            &[("startIndex", "1".into()), ("count", "1".into())],
            None,
            None,
        )
        .await?;
        let bulk = (spc.bulk.supported == Some(true) && scim.bulk != Some(false))
            .then(|| {
                let ops = spc.bulk.max_operations.unwrap_or(0) as usize;
                let size = spc.bulk.max_payload_size.unwrap_or(1 << 20) as usize;
                (ops >= 2).then_some((ops, size.max(4096)))
            })
            .flatten();
        let mut page_size = scim.page_size.unwrap_or(PAGE_SIZE).max(1);
        if let Some(max) = spc.filter.max_results.filter(|m| *m > 0) {
            page_size = page_size.min(u32::try_from(max).unwrap_or(u32::MAX));
        }
        let features = Features {
            patch: spc.patch.yes(),
            bulk,
            filter: spc.filter.supported == Some(true),
            etag: spc.etag.yes(),
            page_size,
        };
        tracing::debug!(namespace = %config.namespace, target = %config.name, ?features, "SCIM service provider config");
        Ok(Self {
            http,
            tenant: config.namespace.clone(),
            target: config.name.clone(),
            features,
            cache: Mutex::default(),
            learned: Learned::new(&config.name, features.patch, features.filter),
        })
    }

    /// What the server supports, as this connector uses it.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Bulk limits while Bulk is announced and not refused.
    fn bulk_limits(&self) -> Option<(usize, usize)> {
        self.features.bulk.filter(|_| self.learned.bulk())
    }

    /// The `externalId` gatehouse writes for an identity.
    pub fn external_id(key: &IdentityKey) -> String {
        format!("{}/{}", key.namespace, key.name)
    }

    fn prefix(&self) -> String {
        format!("{}/", self.tenant)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn if_match<'a>(&self, known: &'a Known) -> Option<&'a str> {
        known.etag.as_deref().filter(|_| self.features.etag)
    }

    fn entitlement(&self, group: &str) -> EntitlementRef {
        EntitlementRef {
            target: self.target.clone(),
            kind: None,
            namespace: None,
            name: group.to_string(),
        }
    }

    /// Every resource of `resource` (optionally filtered), page by page.
    async fn list<T: DeserializeOwned>(
        &self,
        resource: &str,
        filter: Option<&str>,
    ) -> Result<Result<Vec<T>, Reply>, TargetError> {
        let mut out = Vec::new();
        let mut start: u64 = 1;
        loop {
            let mut query = vec![
                ("startIndex", start.to_string()),
                ("count", self.features.page_size.to_string()),
            ];
            if let Some(f) = filter {
                query.push(("filter", f.to_string()));
            }
            let reply = self
                .http
                .send(Method::GET, resource, &query, None, None)
                .await?;
            if !reply.ok() {
                return Ok(Err(reply));
            }
            let page: ListResponse<T> = reply.json()?;
            let n = page.resources.len() as u64;
            out.extend(page.resources);
            match page.total_results {
                Some(total) if (out.len() as u64) < total => {
                    if n == 0 {
                        // Stopping here would pass a partial state off as the whole.
                        return Err(TargetError::Permanent(format!(
                            "GET {resource}: the server counts {total} results but returned none from startIndex {start}; it does not page as RFC 7644 says"
                        )));
                    }
                    start += n;
                }
                _ => break,
            }
        }
        Ok(Ok(out))
    }

    /// Every user with gatehouse's externalId prefix (filtered by the server when it can,
    /// always checked here), and apart the other users listed with them (none when the
    /// server did the filtering).
    async fn managed_users(&self) -> Result<(Vec<User>, Vec<User>), TargetError> {
        let prefix = self.prefix();
        let mut users = None;
        if self.learned.filter_sw() {
            let filter = format!("externalId sw {}", quote(&prefix));
            match self.list::<User>("Users", Some(&filter)).await? {
                Ok(found) => users = Some(found),
                Err(reply) if filter_refused(&reply) => {
                    self.learned.no_filter_sw(&reply.error().to_string());
                }
                Err(reply) => return Err(reply.error()),
            }
        }
        let users = match users {
            Some(u) => u,
            None => self
                .list::<User>("Users", None)
                .await?
                .map_err(|r| r.error())?,
        };
        let mut seen = HashSet::new();
        Ok(users
            .into_iter()
            .filter(|u| u.id.as_ref().is_some_and(|id| seen.insert(id.clone())))
            .partition(|u| {
                u.external_id
                    .as_deref()
                    .is_some_and(|e| e.starts_with(&prefix))
            }))
    }

    /// Finds one resource by an attribute, with a filter when the server has them, else by
    /// listing everything.
    async fn find<T: DeserializeOwned>(
        &self,
        resource: &str,
        attribute: &str,
        value: &str,
        matches: impl Fn(&T) -> bool,
    ) -> Result<Option<T>, TargetError> {
        if self.learned.filter() {
            let filter = format!("{attribute} eq {}", quote(value));
            match self.list::<T>(resource, Some(&filter)).await? {
                Ok(found) => return Ok(found.into_iter().find(matches)),
                Err(reply) if filter_refused(&reply) => {
                    self.learned.no_filter(&reply.error().to_string());
                }
                Err(reply) => return Err(reply.error()),
            }
        }
        let found = self
            .list::<T>(resource, None)
            .await?
            .map_err(|r| r.error())?;
        Ok(found.into_iter().find(matches))
    }

    /// The managed user of `key`, from the cache or the server.
    async fn user(&self, key: &IdentityKey) -> Result<Option<Known>, TargetError> {
        if let Some(known) = self.cache().users.get(key).cloned() {
            return Ok(Some(known));
        }
        let external = Self::external_id(key);
        let user = self
            .find::<User>("Users", "externalId", &external, |u| {
                u.external_id.as_deref() == Some(external.as_str())
            })
            .await?;
        Ok(user.and_then(|u| {
            let known = Known {
                id: u.id?,
                etag: u.meta.version,
            };
            self.cache().users.insert(key.clone(), known.clone());
            Some(known)
        }))
    }

    /// The group named `name`, from the cache or the server.
    async fn group(&self, name: &str) -> Result<Option<Known>, TargetError> {
        if let Some(known) = self.cache().groups.get(name).cloned() {
            return Ok(Some(known));
        }
        let group = self
            .find::<Group>("Groups", "displayName", name, |g| {
                g.display_name.as_deref() == Some(name)
            })
            .await?;
        Ok(group.and_then(|g| {
            let known = Known {
                id: g.id?,
                etag: g.meta.version,
            };
            self.cache().groups.insert(name.to_string(), known.clone());
            Some(known)
        }))
    }

    /// The group named `name`, created when missing.
    async fn ensure_group(&self, name: &str) -> Result<Known, TargetError> {
        if let Some(known) = self.group(name).await? {
            return Ok(known);
        }
        let body = serde_json::to_value(NewGroup {
            schemas: [GROUP_SCHEMA],
            display_name: name,
        })
        .unwrap_or_default();
        let reply = self
            .http
            .send(Method::POST, "Groups", &[], Some(&body), None)
            .await?;
        if reply.status.as_u16() == 409 {
            // Created meanwhile (or a case variant exists): use what is there.
            return self.group(name).await?.ok_or_else(|| reply.error());
        }
        if !reply.ok() {
            return Err(reply.error());
        }
        let group: Group = reply.json()?;
        let known = Known {
            id: group.id.ok_or_else(|| {
                TargetError::Permanent(format!("POST Groups for {name:?}: the answer has no id"))
            })?,
            etag: reply.etag.or(group.meta.version),
        };
        self.cache().groups.insert(name.to_string(), known.clone());
        Ok(known)
    }

    /// Re-reads a resource (after a 412) and remembers its new tag.
    async fn reread<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<(T, Option<String>)>, TargetError> {
        let reply = self.http.send(Method::GET, path, &[], None, None).await?;
        if reply.status.as_u16() == 404 {
            return Ok(None);
        }
        if !reply.ok() {
            return Err(reply.error());
        }
        let etag = reply.etag.clone();
        Ok(Some((reply.json()?, etag)))
    }

    /// Creates the account, or brings an existing managed one (a crash after the create, a
    /// renamed account) to the subject's name and state.
    async fn create(&self, subject: &Subject, enabled: bool) -> Result<(), TargetError> {
        let key = &subject.identity;
        if subject.account.trim().is_empty() {
            return Err(TargetError::Permanent(format!(
                "{key}: the account name for this target is empty; set spec.accounts of the Identity"
            )));
        }
        if self.user(key).await?.is_some() {
            return self.update_user(subject, Some(enabled)).await;
        }
        self.not_taken(subject)?;
        let external = Self::external_id(key);
        let body = serde_json::to_value(NewUser {
            schemas: [USER_SCHEMA],
            user_name: &subject.account,
            external_id: &external,
            active: enabled,
        })
        .unwrap_or_default();
        let reply = self
            .http
            .send(Method::POST, "Users", &[], Some(&body), None)
            .await?;
        if reply.status.as_u16() == 409 {
            return self.create_conflict(subject, enabled, &reply).await;
        }
        if !reply.ok() {
            return Err(reply.error());
        }
        let user: User = reply.json()?;
        let id = user.id.ok_or_else(|| {
            TargetError::Permanent(format!(
                "POST Users for {}: the answer has no id",
                subject.account
            ))
        })?;
        self.cache().users.insert(
            key.clone(),
            Known {
                id,
                etag: reply.etag.or(user.meta.version),
            },
        );
        Ok(())
    }

    /// Refuses to create an account whose userName the last observation saw on a user
    /// gatehouse does not manage, in any letter case: one name per RFC 7643, whatever the
    /// server's own uniqueness check lets through.
    fn not_taken(&self, subject: &Subject) -> Result<(), TargetError> {
        let account = &subject.account;
        match self.cache().unmanaged.get(&account.to_lowercase()) {
            Some(external) => Err(TargetError::Permanent(format!(
                "userName {account:?} is taken (letter case aside, as RFC 7643 compares userName) by a user gatehouse does not manage (externalId {:?}); set its externalId to {:?} to hand it to gatehouse, or choose another account name in the Identity's spec.accounts",
                external.clone().unwrap_or_default(),
                Self::external_id(&subject.identity)
            ))),
            None => Ok(()),
        }
    }

    /// A create answered 409: the user exists. Ours → update it; someone else's → a person
    /// must decide.
    async fn create_conflict(
        &self,
        subject: &Subject,
        enabled: bool,
        reply: &Reply,
    ) -> Result<(), TargetError> {
        self.cache().users.remove(&subject.identity);
        if self.user(&subject.identity).await?.is_some() {
            return self.update_user(subject, Some(enabled)).await;
        }
        let account = subject.account.clone();
        let other = self
            .find::<User>("Users", "userName", &account, |u| {
                u.user_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&account))
            })
            .await?;
        match other {
            Some(user) => Err(TargetError::Permanent(format!(
                "userName {account:?} is taken by a user gatehouse does not manage (externalId {:?}); set its externalId to {:?} to hand it to gatehouse, or choose another account name in the Identity's spec.accounts",
                user.external_id.unwrap_or_default(),
                Self::external_id(&subject.identity)
            ))),
            None => Err(reply.error()),
        }
    }

    /// Sets `userName` to the subject's account and, when given, `active`.
    async fn update_user(
        &self,
        subject: &Subject,
        active: Option<bool>,
    ) -> Result<(), TargetError> {
        let key = &subject.identity;
        let Some(mut known) = self.user(key).await? else {
            return Err(TargetError::Transient(format!(
                "the account of {key} is gone from the server; the next sync creates it"
            )));
        };
        let path = http::resource_path("Users", &known.id)?;
        for attempt in 0..2 {
            let mut ops = vec![PatchOperation {
                op: "replace",
                path: "userName".into(),
                value: Some(Value::String(subject.account.clone())),
            }];
            if let Some(active) = active {
                ops.push(PatchOperation {
                    op: "replace",
                    path: "active".into(),
                    value: Some(Value::Bool(active)),
                });
            }
            let reply = self
                .change_user(&path, &known, ops, |u| {
                    u.user_name = Some(subject.account.clone());
                    if let Some(active) = active {
                        u.active = Some(active);
                    }
                })
                .await?;
            match reply.status.as_u16() {
                200..=299 => {
                    if let Some(active) = active {
                        confirm_active(&reply, active)?;
                    }
                    self.remember_user(key, &known.id, &reply);
                    return Ok(());
                }
                412 if attempt == 0 => match self.reread::<User>(&path).await? {
                    Some((user, etag)) => known.etag = etag.or(user.meta.version),
                    None => break,
                },
                404 => break,
                _ => return Err(reply.error()),
            }
        }
        self.cache().users.remove(key);
        Err(TargetError::Transient(format!(
            "the account of {key} changed or vanished while being updated; the next sync retries"
        )))
    }

    /// Sets `active`; a missing account counts as disabled.
    async fn set_active(&self, subject: &Subject, active: bool) -> Result<Applied, TargetError> {
        let key = &subject.identity;
        let Some(mut known) = self.user(key).await? else {
            return if active {
                Err(TargetError::Transient(format!(
                    "the account of {key} is gone from the server; the next sync creates it"
                )))
            } else {
                Ok(Applied::Done)
            };
        };
        let path = http::resource_path("Users", &known.id)?;
        for attempt in 0..2 {
            let ops = vec![PatchOperation {
                op: "replace",
                path: "active".into(),
                value: Some(Value::Bool(active)),
            }];
            let reply = self
                .change_user(&path, &known, ops, |u| u.active = Some(active))
                .await?;
            match reply.status.as_u16() {
                200..=299 => {
                    confirm_active(&reply, active)?;
                    self.remember_user(key, &known.id, &reply);
                    return Ok(Applied::Done);
                }
                412 if attempt == 0 => match self.reread::<User>(&path).await? {
                    Some((user, _)) if user.active.unwrap_or(true) == active => {
                        self.remember_user_tag(key, &known.id, user.meta.version.clone());
                        return Ok(Applied::Done);
                    }
                    Some((user, etag)) => known.etag = etag.or(user.meta.version),
                    None => {
                        self.cache().users.remove(key);
                        return if active {
                            Err(reply.error())
                        } else {
                            Ok(Applied::Done)
                        };
                    }
                },
                404 if !active => {
                    self.cache().users.remove(key);
                    return Ok(Applied::Done);
                }
                _ => {
                    if reply.status.as_u16() == 404 {
                        self.cache().users.remove(key);
                    }
                    return Err(reply.error());
                }
            }
        }
        Err(TargetError::Transient(format!(
            "the account of {key} kept changing on the server (412 twice); the next sync retries"
        )))
    }

    fn remember_user(&self, key: &IdentityKey, id: &str, reply: &Reply) {
        let etag = reply.etag.clone().or_else(|| {
            serde_json::from_slice::<User>(&reply.body)
                .ok()
                .and_then(|u| u.meta.version)
        });
        self.remember_user_tag(key, id, etag);
    }

    fn remember_user_tag(&self, key: &IdentityKey, id: &str, etag: Option<String>) {
        self.cache().users.insert(
            key.clone(),
            Known {
                id: id.to_string(),
                etag,
            },
        );
    }

    fn remember_group(&self, name: &str, id: &str, reply: &Reply) {
        let etag = reply.etag.clone().or_else(|| {
            serde_json::from_slice::<Group>(&reply.body)
                .ok()
                .and_then(|g| g.meta.version)
        });
        self.cache().groups.insert(
            name.to_string(),
            Known {
                id: id.to_string(),
                etag,
            },
        );
    }

    /// Changes a user: PATCH with `ops` while the server takes PATCH; else, and from the
    /// first answer saying it does not (`501`, `405`), a read-modify-write PUT of `change`.
    async fn change_user(
        &self,
        path: &str,
        known: &Known,
        ops: Vec<PatchOperation>,
        change: impl FnOnce(&mut User),
    ) -> Result<Reply, TargetError> {
        if self.learned.patch(Resource::Users) {
            let body = serde_json::to_value(PatchOp::new(ops)).unwrap_or_default();
            let reply = self
                .http
                .send(Method::PATCH, path, &[], Some(&body), self.if_match(known))
                .await?;
            if !matches!(reply.status.as_u16(), 405 | 501) {
                return Ok(reply);
            }
            self.learned
                .no_patch(Resource::Users, &reply.error().to_string());
        }
        self.put_modified::<User>(path, change).await
    }

    /// Read-modify-write for servers without PATCH: GET, change, PUT with the tag read.
    async fn put_modified<T>(
        &self,
        path: &str,
        change: impl FnOnce(&mut T),
    ) -> Result<Reply, TargetError>
    where
        T: DeserializeOwned + serde::Serialize,
    {
        let current = self.http.send(Method::GET, path, &[], None, None).await?;
        if !current.ok() {
            return Ok(current);
        }
        let mut resource: T = current.json()?;
        change(&mut resource);
        let mut body = serde_json::to_value(&resource).unwrap_or_default();
        let etag = current.etag.clone().or_else(|| {
            body.get("meta")
                .and_then(|m| m.get("version"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        if let Some(object) = body.as_object_mut() {
            object.remove("meta");
        }
        let if_match = etag.as_deref().filter(|_| self.features.etag);
        self.http
            .send(Method::PUT, path, &[], Some(&body), if_match)
            .await
    }

    /// Adds or removes `users` (ids) as members of group `name`. Idempotent: adding a
    /// member or removing an absent one succeeds.
    async fn change_members(
        &self,
        name: &str,
        add: bool,
        users: &[String],
    ) -> Result<(), TargetError> {
        if users.is_empty() {
            return Ok(());
        }
        let mut known = if add {
            self.ensure_group(name).await?
        } else {
            match self.group(name).await? {
                Some(k) => k,
                None => return Ok(()),
            }
        };
        let mut users: Vec<String> = users.to_vec();
        let mut recreated = false;
        let mut attempt = 0;
        while attempt < 2 {
            attempt += 1;
            let path = http::resource_path("Groups", &known.id)?;
            // Adds go by PATCH while the server takes it; removals by the learned shape.
            let shape = if add {
                self.learned.patch(Resource::Groups).then_some(None)
            } else {
                match self.learned.removal() {
                    MemberRemoval::Put => None,
                    shape => Some(Some(shape)),
                }
            };
            let reply = if let Some(shape) = shape {
                let reply = self
                    .http
                    .send(
                        Method::PATCH,
                        &path,
                        &[],
                        Some(&member_patch(shape, &users)),
                        self.if_match(&known),
                    )
                    .await?;
                let status = reply.status.as_u16();
                let scim_type = reply.scim_type();
                if let Some(shape) = shape {
                    if status == 400 && scim_type.as_deref() == Some("noTarget") {
                        // Already gone. PATCH is atomic: with several members, the others
                        // were not removed either, so one at a time.
                        if users.len() == 1 {
                            return Ok(());
                        }
                        for user in &users {
                            Box::pin(self.change_members(name, false, std::slice::from_ref(user)))
                                .await?;
                        }
                        return Ok(());
                    }
                    if refuses_shape(
                        status,
                        scim_type.as_deref(),
                        shape == MemberRemoval::ByValue,
                    ) {
                        // The next shape, not counted as an attempt: learning only narrows,
                        // so this ends at PUT.
                        self.learned
                            .removal_refused(shape, &reply.error().to_string());
                        attempt -= 1;
                        continue;
                    }
                } else if matches!(status, 405 | 501) {
                    self.learned
                        .no_patch(Resource::Groups, &reply.error().to_string());
                    attempt -= 1;
                    continue;
                }
                reply
            } else {
                let wanted: HashSet<&String> = users.iter().collect();
                self.put_modified::<Group>(&path, |g| {
                    let members = g.members.get_or_insert_with(Vec::new);
                    if add {
                        let present: HashSet<String> =
                            members.iter().filter_map(|m| m.value.clone()).collect();
                        for id in &users {
                            if !present.contains(id) {
                                members.push(Member {
                                    value: Some(id.clone()),
                                    extra: Default::default(),
                                });
                            }
                        }
                    } else {
                        members.retain(|m| m.value.as_ref().is_none_or(|v| !wanted.contains(v)));
                    }
                })
                .await?
            };
            match reply.status.as_u16() {
                200..=299 => {
                    self.confirm_members(&path, &reply, add, &users, shape.is_none())
                        .await?;
                    self.remember_group(name, &known.id, &reply);
                    return Ok(());
                }
                412 if attempt == 1 => {
                    // Someone else changed the group: read it again and do what is left.
                    match self.reread::<Group>(&path).await? {
                        Some((group, etag)) => {
                            let present: HashSet<String> = group
                                .members
                                .iter()
                                .flatten()
                                .filter_map(|m| m.value.clone())
                                .collect();
                            users.retain(|u| present.contains(u) != add);
                            known.etag = etag.or(group.meta.version);
                            self.cache().groups.insert(name.to_string(), known.clone());
                            if users.is_empty() {
                                return Ok(());
                            }
                        }
                        None => {
                            self.group_vanished(
                                name,
                                add,
                                &mut known,
                                &mut recreated,
                                &mut attempt,
                            )
                            .await?;
                            if !add {
                                return Ok(());
                            }
                        }
                    }
                }
                404 => {
                    self.group_vanished(name, add, &mut known, &mut recreated, &mut attempt)
                        .await?;
                    if !add {
                        return Ok(());
                    }
                }
                _ => return Err(reply.error()),
            }
        }
        Err(TargetError::Transient(format!(
            "group {name:?} kept changing on the server (412 twice); the next sync retries"
        )))
    }

    /// A successful answer must show the change wherever it shows the members: a server
    /// that answers `200` to a PUT and ignores `members` (some do) must not pass for a
    /// revoked membership. After a PUT whose answer lists no members, the group is read.
    async fn confirm_members(
        &self,
        path: &str,
        reply: &Reply,
        add: bool,
        users: &[String],
        put: bool,
    ) -> Result<(), TargetError> {
        let shown = serde_json::from_slice::<Group>(&reply.body)
            .ok()
            .and_then(|g| g.members);
        let shown = match shown {
            Some(members) => members,
            None if put => match self.reread::<Group>(path).await? {
                Some((group, _)) => group.members.unwrap_or_default(),
                None => return Ok(()), // gone: the next sync sees it
            },
            None => return Ok(()),
        };
        let wrong = unconfirmed_members(&shown, add, users);
        if wrong.is_empty() {
            return Ok(());
        }
        Err(TargetError::Permanent(format!(
            "{} {path}: HTTP {} but the group {} {wrong:?}; the server accepted the change and ignored it, so gatehouse cannot {} this membership through SCIM (every shape it supports was tried): change it in the application, and fix its SCIM support",
            reply.method,
            reply.status.as_u16(),
            if add { "still lacks" } else { "still lists" },
            if add { "grant" } else { "revoke" },
        )))
    }

    /// The group was deleted behind our back: removing is done; adding recreates it once.
    async fn group_vanished(
        &self,
        name: &str,
        add: bool,
        known: &mut Known,
        recreated: &mut bool,
        attempt: &mut i32,
    ) -> Result<(), TargetError> {
        self.cache().groups.remove(name);
        if !add {
            return Ok(());
        }
        if *recreated {
            return Err(TargetError::Transient(format!(
                "group {name:?} vanished twice while being changed; the next sync retries"
            )));
        }
        *recreated = true;
        *known = self.ensure_group(name).await?;
        *attempt = 0;
        Ok(())
    }

    async fn delete(&self, subject: &Subject) -> Result<(), TargetError> {
        let key = &subject.identity;
        let Some(mut known) = self.user(key).await? else {
            return Ok(());
        };
        let path = http::resource_path("Users", &known.id)?;
        for attempt in 0..2 {
            let reply = self
                .http
                .send(Method::DELETE, &path, &[], None, self.if_match(&known))
                .await?;
            match reply.status.as_u16() {
                200..=299 | 404 => {
                    self.cache().users.remove(key);
                    return Ok(());
                }
                412 if attempt == 0 => match self.reread::<User>(&path).await? {
                    Some((user, etag)) => known.etag = etag.or(user.meta.version),
                    None => {
                        self.cache().users.remove(key);
                        return Ok(());
                    }
                },
                _ => {
                    self.cache().users.remove(key);
                    return Err(reply.error());
                }
            }
        }
        Err(TargetError::Transient(format!(
            "the account of {key} kept changing while being deleted (412 twice); the next sync retries"
        )))
    }

    async fn membership(
        &self,
        subject: &Subject,
        entitlement: &EntitlementRef,
        add: bool,
    ) -> Result<(), TargetError> {
        let key = &subject.identity;
        let Some(user) = self.user(key).await? else {
            return if add {
                Err(TargetError::Transient(format!(
                    "the account of {key} does not exist yet; the next sync creates it first"
                )))
            } else {
                Ok(())
            };
        };
        self.change_members(&entitlement.name, add, &[user.id])
            .await
    }

    // ---- batches ----

    /// One run of operations of the same kind, carried out together.
    async fn run(&self, ops: &[(&Operation, &Subject)]) -> Vec<Result<Applied, TargetError>> {
        match ops.first().map(|(op, _)| &op.action) {
            Some(Action::Grant { .. } | Action::Revoke { .. }) => self.memberships(ops).await,
            Some(
                Action::CreateAccount { .. }
                | Action::EnableAccount
                | Action::DisableAccount
                | Action::DeleteAccount,
            ) if self.bulk_limits().is_some() => self.accounts_in_bulk(ops).await,
            _ => {
                // Different identities' account steps are independent: a few in flight at
                // once hide the round trips (results stay in plan order).
                let mut out = Vec::with_capacity(ops.len());
                for chunk in ops.chunks(CONCURRENCY) {
                    let mut pending = Vec::with_capacity(chunk.len());
                    for (op, subject) in chunk {
                        pending.push(self.apply(op, subject));
                    }
                    out.extend(futures::future::join_all(pending).await);
                }
                out
            }
        }
    }

    /// Grants or revokes in plan order: the operations of accounts the cache knows are
    /// grouped; one of an account it does not know goes the careful way, after every
    /// operation before it and before every one after it.
    async fn memberships(
        &self,
        ops: &[(&Operation, &Subject)],
    ) -> Vec<Result<Applied, TargetError>> {
        let mut out = Vec::with_capacity(ops.len());
        let mut start = 0;
        for (i, (op, subject)) in ops.iter().enumerate() {
            if self.cache().users.contains_key(&subject.identity) {
                continue;
            }
            out.extend(self.grouped_memberships(&ops[start..i]).await);
            out.push(self.apply(op, subject).await);
            start = i + 1;
        }
        out.extend(self.grouped_memberships(&ops[start..]).await);
        out
    }

    /// Grants or revokes: one PATCH per group carries many members (in Bulk when the
    /// server has it); a failed group falls back to one operation at a time.
    async fn grouped_memberships(
        &self,
        ops: &[(&Operation, &Subject)],
    ) -> Vec<Result<Applied, TargetError>> {
        let mut results: Vec<Option<Result<Applied, TargetError>>> =
            ops.iter().map(|_| None).collect();
        // group name → (add?, [(op index, user id)])
        let mut by_group: BTreeMap<(String, bool), Vec<(usize, String)>> = BTreeMap::new();
        for (i, (op, subject)) in ops.iter().enumerate() {
            let (entitlement, add) = match &op.action {
                Action::Grant { entitlement } => (entitlement, true),
                Action::Revoke { entitlement } => (entitlement, false),
                _ => continue,
            };
            let known = self.cache().users.get(&subject.identity).cloned();
            match known {
                Some(user) => by_group
                    .entry((entitlement.name.clone(), add))
                    .or_default()
                    .push((i, user.id)),
                None => results[i] = Some(self.apply(op, subject).await),
            }
        }
        // Resolve (or create) the groups first.
        let mut requests: Vec<MemberRequest> = Vec::new();
        for ((name, add), members) in by_group {
            let group = if add {
                self.ensure_group(&name).await.map(Some)
            } else {
                self.group(&name).await
            };
            let indices: Vec<usize> = members.iter().map(|(i, _)| *i).collect();
            match group {
                Err(e) => {
                    let text = e.to_string();
                    for i in indices {
                        results[i] = Some(Err(same_kind(&e, text.clone())));
                    }
                }
                Ok(None) => {
                    for i in indices {
                        results[i] = Some(Ok(Applied::Done));
                    }
                }
                Ok(Some(known)) => {
                    for chunk in members.chunks(MEMBERS_PER_PATCH) {
                        requests.push(MemberRequest {
                            indices: chunk.iter().map(|(i, _)| *i).collect(),
                            name: name.clone(),
                            known: known.clone(),
                            add,
                            users: chunk.iter().map(|(_, id)| id.clone()).collect(),
                        });
                    }
                }
            }
        }
        // A group whose id cannot be a path segment fails its operations.
        requests.retain(|r| match http::resource_path("Groups", &r.known.id) {
            Ok(_) => true,
            Err(e) => {
                let text = e.to_string();
                for &i in &r.indices {
                    results[i] = Some(Err(same_kind(&e, text.clone())));
                }
                false
            }
        });
        let mut fallback: Vec<usize> = Vec::new();
        match self.bulk_limits() {
            // Bulk carries PATCHes only; once removals go by PUT, every request goes the
            // careful way below.
            Some(limits)
                if self.learned.patch(Resource::Groups)
                    && self.learned.removal() != MemberRemoval::Put
                    && requests.len() > 1 =>
            {
                let removal = self.learned.removal();
                // One group may appear in several chunks: its tag changes with each, so only
                // the first carries `version`.
                let mut tagged: HashSet<String> = HashSet::new();
                let bulk_ops: Vec<BulkOperation> = requests
                    .iter()
                    .map(|r| BulkOperation {
                        method: "PATCH",
                        bulk_id: None,
                        version: self
                            .if_match(&r.known)
                            .filter(|_| tagged.insert(r.known.id.clone()))
                            .map(str::to_string),
                        path: format!(
                            "/{}",
                            http::resource_path("Groups", &r.known.id).unwrap_or_default()
                        ),
                        data: Some(member_patch((!r.add).then_some(removal), &r.users)),
                    })
                    .collect();
                let outcomes = self.bulk(bulk_ops, limits).await;
                for (
                    MemberRequest {
                        indices,
                        name,
                        known,
                        ..
                    },
                    outcome,
                ) in requests.iter().zip(outcomes)
                {
                    match outcome {
                        Ok(result)
                            if (200..300).contains(&result.status.unwrap_or(0))
                                && result
                                    .location
                                    .as_deref()
                                    .and_then(Reply::id_from_location)
                                    .is_none_or(|id| id == known.id) =>
                        {
                            self.cache().groups.insert(
                                name.clone(),
                                Known {
                                    id: known.id.clone(),
                                    etag: result.version.clone(),
                                },
                            );
                            for &i in indices {
                                results[i] = Some(Ok(Applied::Done));
                            }
                        }
                        Ok(_) => {
                            // 412, 404, a refused filter path…: the careful way, one by one.
                            self.cache().groups.remove(name);
                            fallback.extend(indices);
                        }
                        Err(e) => {
                            let text = e.to_string();
                            for &i in indices {
                                results[i] = Some(Err(same_kind(&e, text.clone())));
                            }
                        }
                    }
                }
            }
            _ => {
                for MemberRequest {
                    indices,
                    name,
                    add,
                    users,
                    ..
                } in &requests
                {
                    match self.change_members(name, *add, users).await {
                        Ok(()) => {
                            for &i in indices {
                                results[i] = Some(Ok(Applied::Done));
                            }
                        }
                        Err(e) if indices.len() == 1 => results[indices[0]] = Some(Err(e)),
                        Err(_) => fallback.extend(indices),
                    }
                }
            }
        }
        for i in fallback {
            let (op, subject) = ops[i];
            results[i] = Some(self.apply(op, subject).await);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Ok(Applied::Done)))
            .collect()
    }

    /// Account operations in Bulk, in plan order: an operation Bulk cannot carry (an
    /// account the cache does not know) goes the careful way after every operation before
    /// it (the Bulk requests collected so far are sent first) and before every one after it.
    async fn accounts_in_bulk(
        &self,
        ops: &[(&Operation, &Subject)],
    ) -> Vec<Result<Applied, TargetError>> {
        let mut out = Vec::with_capacity(ops.len());
        let mut start = 0;
        for (i, (op, subject)) in ops.iter().enumerate() {
            if self.bulk_request(i, op, subject).is_some() {
                continue;
            }
            out.extend(self.accounts_bulk_segment(&ops[start..i]).await);
            out.push(self.apply(op, subject).await);
            start = i + 1;
        }
        out.extend(self.accounts_bulk_segment(&ops[start..]).await);
        out
    }

    /// The Bulk operation that carries out `op`, when Bulk can (`i`: its index, for bulkId).
    fn bulk_request(&self, i: usize, op: &Operation, subject: &Subject) -> Option<BulkOperation> {
        self.bulk_limits()?;
        let known = self.cache().users.get(&subject.identity).cloned();
        match (&op.action, known) {
            (Action::CreateAccount { enabled, .. }, None)
                if !subject.account.trim().is_empty() && self.not_taken(subject).is_ok() =>
            {
                let external = Self::external_id(&subject.identity);
                Some(BulkOperation {
                    method: "POST",
                    bulk_id: Some(format!("u{i}")),
                    version: None,
                    path: "/Users".into(),
                    data: serde_json::to_value(NewUser {
                        schemas: [USER_SCHEMA],
                        user_name: &subject.account,
                        external_id: &external,
                        active: *enabled,
                    })
                    .ok(),
                })
            }
            (Action::EnableAccount | Action::DisableAccount, Some(known))
                if self.learned.patch(Resource::Users) =>
            {
                let active = op.action == Action::EnableAccount;
                Some(BulkOperation {
                    method: "PATCH",
                    bulk_id: None,
                    version: self.if_match(&known).map(str::to_string),
                    path: format!("/{}", http::resource_path("Users", &known.id).ok()?),
                    data: serde_json::to_value(PatchOp::new(vec![PatchOperation {
                        op: "replace",
                        path: "active".into(),
                        value: Some(Value::Bool(active)),
                    }]))
                    .ok(),
                })
            }
            (Action::DeleteAccount, Some(known)) => Some(BulkOperation {
                method: "DELETE",
                bulk_id: None,
                version: self.if_match(&known).map(str::to_string),
                path: format!("/{}", http::resource_path("Users", &known.id).ok()?),
                data: None,
            }),
            _ => None,
        }
    }

    /// Account operations in one Bulk segment (every one of them has a Bulk request).
    /// Whatever the bulk answer does not settle plainly (a 409 on create, a 412) goes the
    /// careful way.
    async fn accounts_bulk_segment(
        &self,
        ops: &[(&Operation, &Subject)],
    ) -> Vec<Result<Applied, TargetError>> {
        let Some(limits) = self.bulk_limits() else {
            return Vec::new();
        };
        let mut results: Vec<Option<Result<Applied, TargetError>>> =
            ops.iter().map(|_| None).collect();
        let mut batch: Vec<(usize, BulkOperation)> = Vec::new();
        for (i, (op, subject)) in ops.iter().enumerate() {
            match self.bulk_request(i, op, subject) {
                Some(r) => batch.push((i, r)),
                None => results[i] = Some(self.apply(op, subject).await),
            }
        }
        let (indices, bulk_ops): (Vec<usize>, Vec<BulkOperation>) = batch.into_iter().unzip();
        let sent: Vec<(&'static str, Option<String>)> = bulk_ops
            .iter()
            .map(|b| (b.method, b.bulk_id.clone()))
            .collect();
        let outcomes = self.bulk(bulk_ops, limits).await;
        let mut fallback = Vec::new();
        for ((i, outcome), (method, bulk_id)) in indices.into_iter().zip(outcomes).zip(sent) {
            let (op, subject) = ops[i];
            let key = &subject.identity;
            match outcome {
                Err(e) => results[i] = Some(Err(e)),
                // A result that is not this operation's (a server answering out of order):
                // the careful way, which is idempotent.
                Ok(result)
                    if result
                        .method
                        .as_deref()
                        .is_some_and(|m| !m.eq_ignore_ascii_case(method))
                        || (bulk_id.is_some() && result.bulk_id != bulk_id) =>
                {
                    self.cache().users.remove(key);
                    fallback.push(i);
                }
                Ok(result) => {
                    let status = result.status.unwrap_or(0);
                    match (&op.action, status) {
                        (Action::CreateAccount { .. }, 200..=299) => {
                            let id = result
                                .location
                                .as_deref()
                                .and_then(Reply::id_from_location)
                                .or_else(|| {
                                    result
                                        .response
                                        .as_ref()
                                        .and_then(|r| r.get("id"))
                                        .and_then(Value::as_str)
                                        .map(str::to_string)
                                });
                            match id {
                                Some(id) => {
                                    self.remember_user_tag(key, &id, result.version.clone());
                                    results[i] = Some(Ok(Applied::Done));
                                }
                                None => fallback.push(i),
                            }
                        }
                        (Action::DeleteAccount, 200..=299 | 404) => {
                            self.cache().users.remove(key);
                            results[i] = Some(Ok(Applied::Done));
                        }
                        (_, 200..=299) => {
                            if let Some(known) = self.cache().users.get_mut(key) {
                                known.etag = result.version.clone();
                            }
                            results[i] = Some(Ok(Applied::Done));
                        }
                        (_, 400 | 401 | 403) => {
                            let detail = result
                                .response
                                .as_ref()
                                .and_then(|r| serde_json::from_value::<ErrorBody>(r.clone()).ok())
                                .and_then(|e| e.detail)
                                .unwrap_or_default();
                            results[i] = Some(Err(TargetError::Permanent(format!(
                                "Bulk {} for {key}: HTTP {status}: {detail}",
                                op.action.name()
                            ))));
                        }
                        _ => {
                            self.cache().users.remove(key);
                            fallback.push(i);
                        }
                    }
                }
            }
        }
        for i in fallback {
            let (op, subject) = ops[i];
            results[i] = Some(self.apply(op, subject).await);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Ok(Applied::Done)))
            .collect()
    }

    /// Sends operations through `/Bulk` in requests within the server's limits; one result
    /// per operation, in order.
    async fn bulk(
        &self,
        operations: Vec<BulkOperation>,
        (max_operations, max_payload): (usize, usize),
    ) -> Vec<Result<BulkResult, TargetError>> {
        let mut out = Vec::with_capacity(operations.len());
        let budget = max_payload.saturating_sub(512).max(1024);
        let mut chunk: Vec<BulkOperation> = Vec::new();
        let mut size = 0;
        let mut chunks = Vec::new();
        for op in operations {
            let len = serde_json::to_vec(&op).map(|v| v.len()).unwrap_or(0) + 1;
            if !chunk.is_empty() && (chunk.len() >= max_operations || size + len > budget) {
                chunks.push(std::mem::take(&mut chunk));
                size = 0;
            }
            size += len;
            chunk.push(op);
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        for chunk in chunks {
            let n = chunk.len();
            if !self.learned.bulk() {
                // Refused by an earlier chunk: unsettled, so done the careful way.
                out.extend((0..n).map(|_| Ok(BulkResult::default())));
                continue;
            }
            let body = serde_json::to_value(BulkRequest {
                schemas: [BULK_REQUEST_SCHEMA],
                operations: chunk,
            })
            .unwrap_or_default();
            let answer = match self
                .http
                .send(Method::POST, "Bulk", &[], Some(&body), None)
                .await
            {
                Ok(reply) if reply.ok() => reply.json::<BulkResponse>(),
                // Bulk itself refused (announced, yet not there, or this payload too big):
                // the operations stay unsettled and go one by one, now and from now on.
                Ok(reply) if matches!(reply.status.as_u16(), 400 | 404 | 405 | 413 | 501) => {
                    self.learned.no_bulk(&reply.error().to_string());
                    Ok(BulkResponse::default())
                }
                Ok(reply) => Err(reply.error()),
                Err(e) => Err(e),
            };
            match answer {
                Ok(response) => {
                    // Results come in request order; a server that stopped early leaves the
                    // rest unsettled (status 0: done the careful way).
                    let mut results = response.operations.into_iter();
                    for _ in 0..n {
                        out.push(Ok(results.next().unwrap_or_default()));
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    for _ in 0..n {
                        out.push(Err(same_kind(&e, text.clone())));
                    }
                }
            }
        }
        out
    }
}

/// One PATCH of a group's members on behalf of several operations.
struct MemberRequest {
    /// Indices of the operations it carries out.
    indices: Vec<usize>,
    /// The group's displayName.
    name: String,
    known: Known,
    add: bool,
    /// User ids.
    users: Vec<String>,
}

/// A PATCH adding members (`None`) or removing them in the given shape.
fn member_patch(removal: Option<MemberRemoval>, users: &[String]) -> Value {
    let ops = if removal.is_none() {
        vec![PatchOperation {
            op: "add",
            path: "members".into(),
            value: Some(Value::Array(
                users
                    .iter()
                    .map(|u| json!(MemberRef { value: u }))
                    .collect(),
            )),
        }]
    } else if removal == Some(MemberRemoval::FilterPath) {
        users
            .iter()
            .map(|u| PatchOperation {
                op: "remove",
                path: format!("members[value eq {}]", quote(u)),
                value: None,
            })
            .collect()
    } else {
        vec![PatchOperation {
            op: "remove",
            path: "members".into(),
            value: Some(Value::Array(
                users
                    .iter()
                    .map(|u| json!(MemberRef { value: u }))
                    .collect(),
            )),
        }]
    };
    serde_json::to_value(PatchOp::new(ops)).unwrap_or_default()
}

/// Of `users`, those whose membership `shown` contradicts: still listed after a removal,
/// missing after an add.
fn unconfirmed_members<'a>(shown: &[Member], add: bool, users: &'a [String]) -> Vec<&'a str> {
    let present: HashSet<&str> = shown.iter().filter_map(|m| m.value.as_deref()).collect();
    users
        .iter()
        .filter(|u| present.contains(u.as_str()) != add)
        .map(String::as_str)
        .collect()
}

/// Whether a listing's answer refuses the filter itself (so listing without one can help).
fn filter_refused(reply: &Reply) -> bool {
    matches!(reply.status.as_u16(), 400 | 501)
}

/// A successful answer that carries the user must show `active` as asked: a server that
/// accepts the request and ignores the attribute must not pass for a disabled account.
fn confirm_active(reply: &Reply, active: bool) -> Result<(), TargetError> {
    let Ok(user) = serde_json::from_slice::<User>(&reply.body) else {
        return Ok(()); // 204, or a body without the resource: the status is the answer
    };
    match user.active {
        Some(shown) if shown != active => Err(TargetError::Permanent(format!(
            "{} {}: HTTP {} but the user still shows active={shown}; the server ignores `active`, so the account cannot be {} through SCIM; do it in the application and fix its SCIM support",
            reply.method,
            reply.path,
            reply.status.as_u16(),
            if active { "enabled" } else { "disabled" }
        ))),
        _ => Ok(()),
    }
}

/// A SCIM filter string literal (JSON string syntax).
fn quote(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A copy of an error for several operations.
fn same_kind(error: &TargetError, text: String) -> TargetError {
    let text = text
        .split_once(": ")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or(text);
    match error {
        TargetError::Transient(_) => TargetError::Transient(text),
        TargetError::RetryAfter(_, after) => TargetError::RetryAfter(text, *after),
        TargetError::Permanent(_) => TargetError::Permanent(text),
        TargetError::Config(_) => TargetError::Config(text),
    }
}

impl Connector for Scim {
    fn capabilities(&self) -> Capabilities {
        // `active: false` is the only lever SCIM defines; what it does to live sessions is
        // up to the application.
        Capabilities {
            disable: true,
            delete: true,
            revoke_sessions: false,
            case_insensitive_names: false,
        }
    }

    async fn observe(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
    ) -> Result<Observed, TargetError> {
        let (users, others) = self.managed_users().await?;
        let groups = self
            .list::<Group>("Groups", None)
            .await?
            .map_err(|r| r.error())?;
        let prefix = self.prefix();
        let mut state = AccessState::default();
        let mut orphans = Vec::new();
        let mut held_ids: HashMap<String, IdentityKey> = HashMap::new();
        let mut cache = Cache::default();
        for user in others {
            if let Some(name) = user.user_name.filter(|n| !n.is_empty()) {
                cache
                    .unmanaged
                    .insert(name.to_lowercase(), user.external_id);
            }
        }
        for user in users {
            let (Some(id), Some(external)) = (user.id, user.external_id) else {
                continue;
            };
            let name = external.strip_prefix(&prefix).unwrap_or_default();
            let key = IdentityKey::new(&self.tenant, name);
            let user_name = user.user_name.unwrap_or_default();
            match expected.get(&key) {
                Some(subject) if !name.is_empty() && !name.contains('/') => {
                    if cache.users.contains_key(&key) {
                        continue; // a second user with the same externalId: never ours to judge
                    }
                    cache.users.insert(
                        key.clone(),
                        Known {
                            id: id.clone(),
                            etag: user.meta.version,
                        },
                    );
                    // A renamed account is not held: the plan creates it, which renames it.
                    if user_name.eq_ignore_ascii_case(&subject.account) {
                        let account = if user.active == Some(false) {
                            AccountState::Disabled
                        } else {
                            AccountState::Enabled
                        };
                        state
                            .identities
                            .entry(key.clone())
                            .or_default()
                            .accounts
                            .insert(self.target.clone(), account);
                        held_ids.insert(id, key);
                    }
                }
                _ => orphans.push(if user_name.is_empty() {
                    external
                } else {
                    user_name
                }),
            }
        }
        for mut group in groups {
            let (Some(id), Some(name)) = (group.id.clone(), group.display_name.clone()) else {
                continue;
            };
            if group.members.is_none() {
                // Left out of the list: read the group itself (an empty group may simply
                // have no attribute; then this finds none either).
                // (A group whose id cannot be a path is not read: its changes fail alone.)
                if let Ok(path) = http::resource_path("Groups", &id)
                    && let Some((full, _)) = self.reread::<Group>(&path).await?
                {
                    group.members = full.members;
                }
            }
            let entitlement = Arc::new(self.entitlement(&name));
            for member in group.members.iter().flatten() {
                // Members naming no managed user (other users, nested groups, users deleted
                // on servers that leave them listed) are not ours.
                if let Some(key) = member.value.as_ref().and_then(|v| held_ids.get(v)) {
                    state
                        .identities
                        .entry(key.clone())
                        .or_default()
                        .entitlements
                        .insert(entitlement.clone(), Default::default());
                }
            }
            cache.groups.insert(
                name,
                Known {
                    id,
                    etag: group.meta.version,
                },
            );
        }
        orphans.sort();
        orphans.dedup();
        *self.cache() = cache;
        Ok(Observed {
            held: state,
            orphans,

            findings: Vec::new(),
        })
    }

    async fn apply(
        &self,
        operation: &Operation,
        subject: &Subject,
    ) -> Result<Applied, TargetError> {
        match &operation.action {
            Action::CreateAccount { enabled, .. } => self.create(subject, *enabled).await?,
            // WIP(attributes): replaced by the connector's attribute writes.
            Action::UpdateAttributes { .. } => {
                return Err(TargetError::Permanent(
                    "updateAttributes is not built yet".into(),
                ));
            }
            Action::EnableAccount => return self.set_active(subject, true).await,
            Action::DisableAccount => return self.set_active(subject, false).await,
            Action::RevokeSessions => return Ok(Applied::Unsupported),
            Action::DeleteAccount => self.delete(subject).await?,
            Action::Grant { entitlement } => self.membership(subject, entitlement, true).await?,
            Action::Revoke { entitlement } => self.membership(subject, entitlement, false).await?,
        }
        Ok(Applied::Done)
    }

    async fn apply_batch(
        &self,
        operations: &[(&Operation, &Subject)],
    ) -> Vec<Result<Applied, TargetError>> {
        // Runs of one kind of step, in plan order: a run never depends on a later one, and
        // the planner already put every revocation before every grant.
        let mut out = Vec::with_capacity(operations.len());
        let mut start = 0;
        while start < operations.len() {
            let rank = operations[start].0.action.rank();
            let end = operations[start..]
                .iter()
                .position(|(op, _)| op.action.rank() != rank)
                .map_or(operations.len(), |n| start + n);
            out.extend(self.run(&operations[start..end]).await);
            start = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<Member> {
        ids.iter()
            .map(|id| Member {
                value: Some(id.to_string()),
                extra: Default::default(),
            })
            .collect()
    }

    #[test]
    fn only_what_the_answer_shows_is_confirmed() {
        let users = vec!["1".to_string(), "2".to_string()];
        // (shown, add, contradicted)
        let table: [(&[&str], bool, &[&str]); 6] = [
            (&["1", "2", "3"], true, &[]),
            (&["1", "3"], true, &["2"]),
            (&[], true, &["1", "2"]),
            (&["3"], false, &[]),
            (&["2", "3"], false, &["2"]),
            (&["1", "2"], false, &["1", "2"]),
        ];
        for (shown, add, wrong) in table {
            assert_eq!(
                unconfirmed_members(&members(shown), add, &users),
                wrong.to_vec(),
                "shown {shown:?} add={add}"
            );
        }
    }

    #[test]
    fn member_patches_take_the_learned_shape() {
        let users = vec!["u1".to_string()];
        let add = member_patch(None, &users);
        assert_eq!(add["Operations"][0]["op"], "add");
        assert_eq!(add["Operations"][0]["value"][0]["value"], "u1");
        let filter = member_patch(Some(MemberRemoval::FilterPath), &users);
        assert_eq!(filter["Operations"][0]["path"], r#"members[value eq "u1"]"#);
        assert!(filter["Operations"][0].get("value").is_none());
        let by_value = member_patch(Some(MemberRemoval::ByValue), &users);
        assert_eq!(by_value["Operations"][0]["op"], "remove");
        assert_eq!(by_value["Operations"][0]["path"], "members");
        assert_eq!(by_value["Operations"][0]["value"][0]["value"], "u1");
    }
}
