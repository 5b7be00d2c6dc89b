//! Group memberships: groups found or created by name, members added and removed in the
//! shape the server takes (learned from its answers), and every answer checked for the
//! change it claims.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use super::http::{self, Reply};
use super::learned::{MemberRemoval, Resource, refuses_shape};
use super::types::*;
use super::{Known, Scim, Subject, TargetError, quote};
use crate::api::EntitlementRef;

impl Scim {
    /// The group named `name`, created when missing.
    pub(super) async fn ensure_group(&self, name: &str) -> Result<Known, TargetError> {
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

    /// Adds or removes `users` (ids) as members of group `name`. Idempotent: adding a
    /// member or removing an absent one succeeds.
    pub(super) async fn change_members(
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

    pub(super) async fn membership(
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
}

/// A PATCH adding members (`None`) or removing them in the given shape.
pub(super) fn member_patch(removal: Option<MemberRemoval>, users: &[String]) -> Value {
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
