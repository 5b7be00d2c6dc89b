//! Reading: paged lists, look-ups by filter (or by listing when the server has no usable
//! filter), re-reads after a `412`, and the observation of every managed user and group.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use reqwest::Method;
use serde::de::DeserializeOwned;

use super::attrs::{self, Attr};
use super::http::{self, Reply};
use super::types::*;
use super::{Cache, Known, Observed, Scim, Subject, TargetError, filter_refused, quote};
use crate::engine::IdentityKey;
use crate::engine::attributes::{AttrValue, Attributes};
use crate::plan::{AccessState, AccountState};
use crate::targets::Reread;

impl Scim {
    /// Every resource of `resource` (optionally filtered), page by page.
    async fn list<T: DeserializeOwned>(
        &self,
        resource: &str,
        filter: Option<&str>,
    ) -> Result<Result<Vec<T>, Reply>, TargetError> {
        self.list_attributes(resource, filter, None).await
    }

    /// [`Scim::list`], asking for only the named attributes (`attributes=`, RFC 7644
    /// §3.4.2.5; a server may send more).
    async fn list_attributes<T: DeserializeOwned>(
        &self,
        resource: &str,
        filter: Option<&str>,
        attributes: Option<&str>,
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
            if let Some(a) = attributes {
                query.push(("attributes", a.to_string()));
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
    pub(super) async fn find<T: DeserializeOwned>(
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
    pub(super) async fn user(&self, key: &IdentityKey) -> Result<Option<Known>, TargetError> {
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
    pub(super) async fn group(&self, name: &str) -> Result<Option<Known>, TargetError> {
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

    /// Re-reads a resource (after a 412) and remembers its new tag.
    pub(super) async fn reread<T: DeserializeOwned>(
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

    /// Reads every managed user and every group into the observed state, and refills
    /// the cache from what was read.
    pub(super) async fn observe_managed(
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
        // The owned attributes of each held user, as the server holds them.
        let mut raw: Vec<(IdentityKey, BTreeMap<String, String>)> = Vec::new();
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
                        let values =
                            attrs::read_all(&user.extra, self.owned.iter().map(String::as_str));
                        if !values.is_empty() {
                            raw.push((key.clone(), values));
                        }
                        cache.accounts.insert(subject.account.clone(), id.clone());
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
        // A reference to a held account is that account; any other id stays as read.
        for (key, values) in raw {
            let attributes: Attributes = values
                .into_iter()
                .map(|(name, value)| {
                    let value = match (Attr::of(&name), held_ids.get(&value)) {
                        (Attr::Manager, Some(boss)) => AttrValue::Account {
                            account: expected[boss].account.clone(),
                        },
                        _ => AttrValue::Text(value),
                    };
                    (name, value)
                })
                .collect();
            if let Some(holding) = state.identities.get_mut(&key) {
                holding.attributes.insert(self.target.clone(), attributes);
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
                    if cache.member_probe.is_none()
                        && let Some(value) = &member.value
                    {
                        cache.member_probe = Some(Box::new((value.clone(), name.clone())));
                    }
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
        // Learnt here, with the listing, rather than on the first re-read: until it is
        // known, re-reads of this target are listings.
        if self.learned.member_filter().is_none()
            && let Err(error) = self.member_filter().await
        {
            tracing::debug!(target = %self.target, %error, "the member filter probe failed; tried again after the next listing");
        }
        Ok(Observed {
            held: state,
            orphans,
            findings: Vec::new(),
        })
    }

    /// Whether the server filters Groups by member, probed once per connector with two
    /// look-ups: a member the last listing saw must find its group, and a value no member
    /// has must find none (a server that ignores the filter, or matches nothing, fails
    /// one of them). Unknown (no membership seen yet) counts as no for now.
    async fn member_filter(&self) -> Result<bool, TargetError> {
        if let Some(known) = self.learned.member_filter() {
            return Ok(known);
        }
        let Some((member, group)) = self.cache().member_probe.as_deref().cloned() else {
            return Ok(false);
        };
        let names = |found: Vec<Group>| -> Vec<String> {
            found.into_iter().filter_map(|g| g.display_name).collect()
        };
        let filter = format!("members.value eq {}", quote(&member));
        let seen = match self
            .list_attributes::<Group>("Groups", Some(&filter), Some("displayName"))
            .await?
        {
            Ok(found) => names(found),
            Err(reply) if filter_refused(&reply) => {
                self.learned
                    .member_filter_is(false, &reply.error().to_string());
                return Ok(false);
            }
            Err(reply) => return Err(reply.error()),
        };
        if !seen.contains(&group) {
            self.learned.member_filter_is(
                false,
                &format!("filter {filter} did not find group {group:?}, of which the listing showed it a member"),
            );
            return Ok(false);
        }
        let filter = format!("members.value eq {}", quote(NO_SUCH_MEMBER));
        match self
            .list_attributes::<Group>("Groups", Some(&filter), Some("displayName"))
            .await?
        {
            Ok(found) if found.is_empty() => {
                self.learned.member_filter_is(true, "probed");
                Ok(true)
            }
            Ok(found) => {
                self.learned.member_filter_is(
                    false,
                    &format!(
                        "filter {filter} found {} groups: the filter is ignored",
                        found.len()
                    ),
                );
                Ok(false)
            }
            Err(reply) => Err(reply.error()),
        }
    }

    /// What the identities in `only` hold: per identity, the user found by `externalId`
    /// and the groups found by member (two requests); the whole target, listed, when the
    /// server cannot filter so ([`Scim::member_filter`]).
    pub(super) async fn observe_some(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
        only: &BTreeSet<IdentityKey>,
    ) -> Result<Reread, TargetError> {
        if !self.member_filter().await? {
            return self.observe_managed(expected).await.map(Reread::Full);
        }
        let mut state = AccessState::default();
        for key in only {
            let Some(subject) = expected.get(key) else {
                continue;
            };
            let external = Self::external_id(key);
            let filter = format!("externalId eq {}", quote(&external));
            let users = match self.list::<User>("Users", Some(&filter)).await? {
                Ok(users) => users,
                Err(reply) if filter_refused(&reply) => {
                    self.learned.no_filter(&reply.error().to_string());
                    return self.observe_managed(expected).await.map(Reread::Full);
                }
                Err(reply) => return Err(reply.error()),
            };
            // As the listing judges: the first user with this externalId is the account.
            let user = users
                .into_iter()
                .find(|u| u.external_id.as_deref() == Some(external.as_str()) && u.id.is_some());
            let Some(user) = user else {
                let mut cache = self.cache();
                cache.users.remove(key);
                cache.accounts.remove(&subject.account);
                continue;
            };
            let id = user.id.clone().unwrap_or_default();
            self.cache().users.insert(
                key.clone(),
                Known {
                    id: id.clone(),
                    etag: user.meta.version.clone(),
                },
            );
            // A renamed account is not held: the plan creates it, which renames it.
            if !user
                .user_name
                .as_deref()
                .unwrap_or_default()
                .eq_ignore_ascii_case(&subject.account)
            {
                self.cache().accounts.remove(&subject.account);
                continue;
            }
            self.cache()
                .accounts
                .insert(subject.account.clone(), id.clone());
            let holding = state.identities.entry(key.clone()).or_default();
            let account = if user.active == Some(false) {
                AccountState::Disabled
            } else {
                AccountState::Enabled
            };
            holding.accounts.insert(self.target.clone(), account);
            let values = attrs::read_all(&user.extra, self.owned.iter().map(String::as_str));
            if !values.is_empty() {
                let cache = self.cache();
                let attributes: Attributes = values
                    .into_iter()
                    .map(|(name, value)| {
                        // A reference to a held account is that account; any other id
                        // stays as read.
                        let boss = (Attr::of(&name) == Attr::Manager)
                            .then(|| cache.accounts.iter().find(|(_, v)| **v == value))
                            .flatten();
                        let value = match boss {
                            Some((account, _)) => AttrValue::Account {
                                account: account.clone(),
                            },
                            None => AttrValue::Text(value),
                        };
                        (name, value)
                    })
                    .collect();
                holding.attributes.insert(self.target.clone(), attributes);
            }
            let filter = format!("members.value eq {}", quote(&id));
            let groups = self
                .list_attributes::<Group>("Groups", Some(&filter), Some("displayName"))
                .await?
                .map_err(|reply| reply.error())?;
            for group in groups {
                let (Some(group_id), Some(name)) = (group.id, group.display_name) else {
                    continue;
                };
                holding
                    .entitlements
                    .insert(Arc::new(self.entitlement(&name)), Default::default());
                self.cache().groups.entry(name).or_insert(Known {
                    id: group_id,
                    etag: group.meta.version,
                });
            }
        }
        Ok(Reread::Accounts(state))
    }
}

/// A member id no user has: the probe that tells a server that filters Groups by member
/// from one that ignores the filter.
const NO_SUCH_MEMBER: &str = "gatehouse-probe-no-such-member";
