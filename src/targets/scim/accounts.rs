//! Account steps one at a time: create (or adopt a managed user left behind), rename,
//! enable and disable, delete; PATCH while the server takes it, else read-modify-write PUT.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::attrs::{self, Attr};
use super::http::{self, Reply};
use super::learned::Resource;
use super::types::*;
use super::{Applied, Known, Scim, Subject, TargetError};
use crate::engine::IdentityKey;
use crate::engine::attributes::{AttrValue, AttributeChange, Attributes};

/// One attribute change in the target's own terms: name, raw value before and after (a
/// reference as the referenced account's id).
pub(super) type RawChange = (String, Option<String>, Option<String>);

/// The body of `POST /Users` (also in Bulk): the account, its state, and its owned
/// attributes (`raw`: values in the target's form).
pub(super) fn new_user_body(
    subject: &Subject,
    enabled: bool,
    raw: &BTreeMap<String, String>,
) -> Value {
    let external = Scim::external_id(&subject.identity);
    let mut body = serde_json::to_value(NewUser {
        schemas: [USER_SCHEMA],
        user_name: &subject.account,
        external_id: &external,
        active: enabled,
    })
    .unwrap_or_default();
    if let Some(user) = body.as_object_mut() {
        for (name, value) in raw {
            attrs::set(user, name, Some(value));
        }
    }
    body
}

impl Scim {
    /// Creates the account, or brings an existing managed one (a crash after the create, a
    /// renamed account) to the subject's name and state.
    pub(super) async fn create(
        &self,
        subject: &Subject,
        enabled: bool,
        attributes: &Attributes,
    ) -> Result<(), TargetError> {
        let key = &subject.identity;
        if subject.account.trim().is_empty() {
            return Err(TargetError::Permanent(format!(
                "{key}: the account name for this target is empty; set spec.accounts of the Identity"
            )));
        }
        let mut raw = BTreeMap::new();
        for (name, value) in attributes {
            raw.insert(name.clone(), self.raw_value(name, value).await?);
        }
        if self.user(key).await?.is_some() {
            self.update_user(subject, Some(enabled)).await?;
            return self.adopt_attributes(subject, &raw).await;
        }
        self.not_taken(subject)?;
        let body = new_user_body(subject, enabled, &raw);
        let reply = self
            .http
            .send(Method::POST, "Users", &[], Some(&body), None)
            .await?;
        if reply.status.as_u16() == 409 {
            self.create_conflict(subject, enabled, &reply).await?;
            return self.adopt_attributes(subject, &raw).await;
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
        self.cache()
            .accounts
            .insert(subject.account.clone(), id.clone());
        self.cache().users.insert(
            key.clone(),
            Known {
                id,
                etag: reply.etag.or(user.meta.version),
            },
        );
        Ok(())
    }

    /// The value of an attribute as this target holds it: text as is, a reference to
    /// another account as that account's id.
    pub(super) async fn raw_value(
        &self,
        name: &str,
        value: &AttrValue,
    ) -> Result<String, TargetError> {
        let account = match value {
            AttrValue::Text(text) => return Ok(text.clone()),
            AttrValue::Account { account } => account,
        };
        if let Some(id) = self.cache().accounts.get(account).cloned() {
            return Ok(id);
        }
        let prefix = self.prefix();
        let user = self
            .find::<User>("Users", "userName", account, |u| {
                u.user_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(account))
                    && u.external_id
                        .as_deref()
                        .is_some_and(|e| e.starts_with(&prefix))
            })
            .await?;
        match user.and_then(|u| u.id) {
            Some(id) => {
                self.cache().accounts.insert(account.clone(), id.clone());
                Ok(id)
            }
            None => Err(TargetError::Transient(format!(
                "the account {account} that attribute {name} refers to does not exist on {} yet",
                self.target
            ))),
        }
    }

    /// An existing managed user taken over by a create (a crash after the create, a
    /// renamed account): its attributes set to what the create carries, from what the
    /// server holds now.
    async fn adopt_attributes(
        &self,
        subject: &Subject,
        raw: &BTreeMap<String, String>,
    ) -> Result<(), TargetError> {
        if raw.is_empty() {
            return Ok(());
        }
        let Some(known) = self.user(&subject.identity).await? else {
            return Ok(());
        };
        let path = http::resource_path("Users", &known.id)?;
        let Some((user, _)) = self.reread::<Map<String, Value>>(&path).await? else {
            return Ok(());
        };
        let changes: Vec<RawChange> = raw
            .iter()
            .filter_map(|(name, want)| {
                let have = attrs::read(&user, name);
                (have.as_deref() != Some(want.as_str()))
                    .then(|| (name.clone(), have, Some(want.clone())))
            })
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        self.write_attributes(subject, &changes).await
    }

    /// Brings owned attributes to the values the plan wants.
    pub(super) async fn update_attributes(
        &self,
        subject: &Subject,
        changes: &[AttributeChange],
    ) -> Result<(), TargetError> {
        let mut raw = Vec::with_capacity(changes.len());
        for change in changes {
            let to = match &change.to {
                Some(value) => Some(self.raw_value(&change.name, value).await?),
                None => None,
            };
            // The old value only shapes the work e-mail's PATCH (none, one or several).
            let from = change.from.as_ref().map(|v| v.to_string());
            raw.push((change.name.clone(), from, to));
        }
        self.write_attributes(subject, &raw).await
    }

    /// Writes attribute changes: one PATCH while the server takes PATCH on Users (and the
    /// work e-mail's filtered path, when it is among them); else, and from the first
    /// answer saying it does not, a read-modify-write PUT of the resource as the server has
    /// it, under If-Match. The answer (or a read after a `204`) must show every value.
    pub(super) async fn write_attributes(
        &self,
        subject: &Subject,
        changes: &[RawChange],
    ) -> Result<(), TargetError> {
        let key = &subject.identity;
        let gone = || {
            TargetError::Transient(format!(
                "the account of {key} is gone from the server; the next sync creates it"
            ))
        };
        let Some(mut known) = self.user(key).await? else {
            return Err(gone());
        };
        let path = http::resource_path("Users", &known.id)?;
        let filtered = changes.iter().any(|(name, _, _)| Attr::of(name).filtered());
        let mut patch =
            self.learned.patch(Resource::Users) && (!filtered || self.learned.user_filter_path());
        // At most: a PATCH refused for its shape, then PUT; one retry after a 412 each.
        for _ in 0..4 {
            let reply = if patch {
                let ops: Vec<PatchOperation> = changes
                    .iter()
                    .flat_map(|(name, from, to)| {
                        attrs::patch_ops(name, from.as_deref(), to.as_deref())
                    })
                    .collect();
                let body = serde_json::to_value(PatchOp::new(ops)).unwrap_or_default();
                let reply = self
                    .http
                    .send(
                        Method::PATCH,
                        &path,
                        &[],
                        Some(&body),
                        self.if_match(&known),
                    )
                    .await?;
                let status = reply.status.as_u16();
                let scim_type = reply.scim_type();
                let refused = match (status, scim_type.as_deref()) {
                    (405, _) => {
                        self.learned
                            .no_patch(Resource::Users, &reply.error().to_string());
                        true
                    }
                    (501, _) if !filtered => {
                        self.learned
                            .no_user_attribute_patch(&reply.error().to_string());
                        true
                    }
                    (501, _) | (400, Some("invalidPath" | "invalidFilter" | "invalidSyntax"))
                        if filtered =>
                    {
                        self.learned.no_user_filter_path(&reply.error().to_string());
                        true
                    }
                    // The e-mail read as the work e-mail is the primary one of another
                    // type, so the filtered path finds nothing: this once, a PUT.
                    (400, Some("noTarget")) if filtered => true,
                    _ => false,
                };
                if refused {
                    patch = false;
                    continue;
                }
                reply
            } else {
                self.put_modified::<Map<String, Value>>(&path, |user| {
                    attrs::drop_empty_values(user);
                    for (name, _, to) in changes {
                        attrs::set(user, name, to.as_deref());
                    }
                })
                .await?
            };
            match reply.status.as_u16() {
                200..=299 => {
                    let etag = self.confirm_attributes(&path, &reply, changes).await?;
                    self.remember_user_tag(key, &known.id, etag);
                    return Ok(());
                }
                412 => match self.reread::<User>(&path).await? {
                    Some((user, etag)) => known.etag = etag.or(user.meta.version),
                    None => break,
                },
                404 => break,
                _ => return Err(reply.error()),
            }
        }
        self.cache().users.remove(key);
        Err(TargetError::Transient(format!(
            "the account of {key} changed or vanished while its attributes were written; the next sync retries"
        )))
    }

    /// The user as the answer shows it (or, after a `204`, as a read shows it) must hold
    /// every value written: a server that answers `2xx` and drops an attribute gets a
    /// permanent error that names it, never `Done`. Returns the user's new tag.
    async fn confirm_attributes(
        &self,
        path: &str,
        reply: &Reply,
        changes: &[RawChange],
    ) -> Result<Option<String>, TargetError> {
        let shown = serde_json::from_slice::<Map<String, Value>>(&reply.body)
            .ok()
            .filter(|u| u.contains_key("id") || u.contains_key("userName"));
        let (user, etag) = match shown {
            Some(user) => {
                let etag = reply.etag.clone();
                (user, etag)
            }
            None => match self.reread::<Map<String, Value>>(path).await? {
                Some(found) => found,
                None => {
                    return Err(TargetError::Transient(format!(
                        "{path} vanished right after its attributes were written; the next sync retries"
                    )));
                }
            },
        };
        let etag = etag.or_else(|| {
            user.get("meta")
                .and_then(|m| m.get("version"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        for (name, _, to) in changes {
            let held = attrs::read(&user, name);
            if held != *to {
                let shown = |v: &Option<String>| match v {
                    Some(v) => format!("{v:?}"),
                    None => "unset".to_string(),
                };
                return Err(TargetError::Permanent(format!(
                    "{} {}: HTTP {} but the user shows {name} {} where {} was written; the server does not keep this attribute as sent, so remove it from the TargetSystem's spec.attributes (or set spec.defaultAttributes: false and map only what the application keeps)",
                    reply.method,
                    reply.path,
                    reply.status.as_u16(),
                    shown(&held),
                    shown(to)
                )));
            }
        }
        Ok(etag)
    }

    /// Refuses to create an account whose userName the last observation saw on a user
    /// gatehouse does not manage, in any letter case: one name per RFC 7643, whatever the
    /// server's own uniqueness check lets through.
    pub(super) fn not_taken(&self, subject: &Subject) -> Result<(), TargetError> {
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
    pub(super) async fn set_active(
        &self,
        subject: &Subject,
        active: bool,
    ) -> Result<Applied, TargetError> {
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

    pub(super) fn remember_user_tag(&self, key: &IdentityKey, id: &str, etag: Option<String>) {
        self.cache().users.insert(
            key.clone(),
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
        self.put_modified::<User>(path, |user| {
            attrs::drop_empty_values(&mut user.extra);
            change(user)
        })
        .await
    }

    /// Read-modify-write for servers without PATCH: GET, change, PUT with the tag read.
    pub(super) async fn put_modified<T>(
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

    pub(super) async fn delete(&self, subject: &Subject) -> Result<(), TargetError> {
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
