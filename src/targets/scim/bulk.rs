//! Batches: runs of one kind of step carried out together, memberships grouped into one
//! PATCH per group, and SCIM Bulk (RFC 7644 §3.7) within the server's limits, falling back
//! to one operation at a time for whatever a batch does not settle.

use std::collections::{BTreeMap, HashSet};

use reqwest::Method;
use serde_json::Value;

use super::accounts::new_user_body;
use super::http::{self, Reply};
use super::learned::{MemberRemoval, Resource};
use super::members::member_patch;
use super::types::*;
use super::{
    Applied, CONCURRENCY, Connector, Known, MEMBERS_PER_PATCH, Scim, Subject, TargetError,
};
use crate::engine::attributes::AttrValue;
use crate::plan::{Action, Operation};

impl Scim {
    /// One run of operations of the same kind, carried out together.
    pub(super) async fn run(
        &self,
        ops: &[(&Operation, &Subject)],
    ) -> Vec<Result<Applied, TargetError>> {
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
            (
                Action::CreateAccount {
                    enabled,
                    attributes,
                    ..
                },
                None,
            ) if !subject.account.trim().is_empty() && self.not_taken(subject).is_ok() => {
                // Values in the target's form; a reference the cache cannot resolve goes
                // the careful way (which looks the account up).
                let raw = attributes
                    .iter()
                    .map(|(name, value)| {
                        let raw = match value {
                            AttrValue::Text(text) => text.clone(),
                            AttrValue::Account { account } => {
                                self.cache().accounts.get(account)?.clone()
                            }
                        };
                        Some((name.clone(), raw))
                    })
                    .collect::<Option<BTreeMap<String, String>>>()?;
                Some(BulkOperation {
                    method: "POST",
                    bulk_id: Some(format!("u{i}")),
                    version: None,
                    path: "/Users".into(),
                    data: Some(new_user_body(subject, *enabled, &raw)),
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
                                    self.cache()
                                        .accounts
                                        .insert(subject.account.clone(), id.clone());
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
