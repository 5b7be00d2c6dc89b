//! Access reviews (certification campaigns): reviewers' answers become withheld access,
//! findings and progress; and the items of a new cycle, for `gatehouse review open`.
//!
//! The rule for how long a revocation lasts: a `revoke` (or a `pending` past the due date
//! under `onNoResponse: Revoke`) withholds that (identity, entitlement, source) for as
//! long as the source's spec has the digest recorded in the item. Any edit to the
//! AccessPolicy or Exception spec, or its deletion, ends the withholding; a later cycle's
//! answer about the same item replaces an earlier one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::{SignedDuration, Timestamp, civil::Date};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::index::{IdentityRecord, Namespace, Selector};
use super::lifecycle::{parse_duration, start_of};
use super::model::{DesiredState, IdentityKey, Source, SourceKind, Violation, ViolationKind};
use super::{Engine, Snapshot};
use crate::api::{
    AccessReview, AccessReviewResponse, EntitlementRef, IdentityType, NoResponse, ReviewDecision,
    ReviewItem, ReviewScope, ReviewSourceKind, ReviewerRule,
};

/// The digest of a policy's or exception's spec recorded in review items: the first 16
/// hex digits of the SHA-256 of its JSON.
pub fn source_digest<T: Serialize>(spec: &T) -> String {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..8])
}

/// A withholding in force (or from the due date on) for one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewHold {
    /// The entitlement.
    pub entitlement: EntitlementRef,
    /// The granting object's kind.
    pub kind: SourceKind,
    /// The granting object's name.
    pub source: String,
    /// The AccessReview.
    pub review: String,
    /// `None`: decided `revoke`; `Some(due)`: pending, withheld from the due date on.
    pub from: Option<Timestamp>,
}

/// The hold on `entitlement` from `kind`/`source`, if any.
pub fn hold_for<'a>(
    holds: &'a [ReviewHold],
    entitlement: &EntitlementRef,
    kind: SourceKind,
    source: &str,
) -> Option<&'a ReviewHold> {
    holds
        .iter()
        .find(|h| h.kind == kind && h.source == source && h.entitlement == *entitlement)
}

/// One item of the latest cycle of a review, as counted for progress.
#[derive(Clone, Debug)]
struct Counted {
    reviewer: String,
    decision: ReviewDecision,
    due: Option<Timestamp>,
    response: String,
}

/// A review as the engine uses it.
#[derive(Clone, Debug)]
struct Campaign {
    name: String,
    every: Option<SignedDuration>,
    due_period: Option<SignedDuration>,
    on_no_response: NoResponse,
    /// Start of the latest cycle with response files.
    cycle: Option<Date>,
    latest: Vec<Counted>,
}

/// One response file of a cycle: (cycle start, the file, the decisions that count, due).
type Cycle<'a> = (
    Date,
    &'a AccessReviewResponse,
    Vec<ReviewDecision>,
    Option<Timestamp>,
);

/// The reviews of one namespace, compiled.
#[derive(Clone, Debug, Default)]
pub struct Reviews {
    /// Holds by identity name.
    pub holds: HashMap<String, Vec<ReviewHold>>,
    /// Findings that do not depend on the instant.
    findings: Vec<Violation>,
    campaigns: Vec<Campaign>,
    /// Spec digests of the namespace's policies and exceptions (only when it has reviews).
    digests: HashMap<(SourceKind, String), String>,
}

/// Progress of a review's latest cycle at an instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewProgress {
    /// Start date of the latest cycle with response files.
    pub cycle: Option<String>,
    /// When its answers are due.
    pub due: Option<Timestamp>,
    /// When the next cycle is due to open (`cycle + every`).
    pub next_cycle: Option<Timestamp>,
    /// Items not decided (before the due date, or past it under `onNoResponse: Keep`).
    pub pending: usize,
    /// Items kept.
    pub kept: usize,
    /// Items revoked, by decision or by no response.
    pub revoked: usize,
    /// Reviewers with undecided items past the due date.
    pub overdue_reviewers: Vec<String>,
}

fn source_kind(kind: ReviewSourceKind) -> SourceKind {
    match kind {
        ReviewSourceKind::AccessPolicy => SourceKind::AccessPolicy,
        ReviewSourceKind::Exception => SourceKind::Exception,
    }
}

/// Who reviews `subject` under `rule`: never the subject itself.
fn reviewer_of(rule: &ReviewerRule, named: &[String], subject: &IdentityRecord) -> Option<String> {
    let manager = || subject.human.as_ref().and_then(|h| h.manager.clone());
    let chosen = match rule {
        ReviewerRule::Manager => manager(),
        ReviewerRule::Owner => match subject.identity_type {
            IdentityType::NonHuman => subject.owner.clone(),
            IdentityType::Human => manager(),
        },
        ReviewerRule::Identities => named.iter().find(|n| **n != subject.name).cloned(),
    };
    chosen.filter(|r| *r != subject.name)
}

impl Reviews {
    /// Compiles the reviews and responses of one namespace (indexes already built).
    pub fn build(
        ns: &Namespace,
        snapshot: &Snapshot,
        reviews: &[&AccessReview],
        responses: &[&AccessReviewResponse],
    ) -> Self {
        let mut out = Reviews::default();
        if reviews.is_empty() && responses.is_empty() {
            return out;
        }
        let in_ns = |meta: &kube::api::ObjectMeta| meta.namespace.as_deref() == Some(&ns.name);
        for p in snapshot.policies.iter().filter(|p| in_ns(&p.metadata)) {
            out.digests.insert(
                (
                    SourceKind::AccessPolicy,
                    p.metadata.name.clone().unwrap_or_default(),
                ),
                source_digest(&p.spec),
            );
        }
        for e in snapshot.exceptions.iter().filter(|e| in_ns(&e.metadata)) {
            out.digests.insert(
                (
                    SourceKind::Exception,
                    e.metadata.name.clone().unwrap_or_default(),
                ),
                source_digest(&e.spec),
            );
        }
        let mut flag = |kind, identity: Option<&str>, object: String, field: String, msg| {
            out.findings.push(Engine::violation(
                kind,
                &ns.name,
                identity,
                &object,
                Some(&field),
                msg,
            ))
        };
        let mut by_name: BTreeMap<&str, (&AccessReview, Option<SignedDuration>)> = BTreeMap::new();
        let mut campaigns = Vec::new();
        for review in reviews {
            let name = review.metadata.name.as_deref().unwrap_or_default();
            let object = format!("AccessReview/{name}");
            let mut duration = |field: &str, value: &str| {
                parse_duration(value)
                    .inspect_err(|msg| {
                        flag(
                            ViolationKind::InvalidValue,
                            None,
                            object.clone(),
                            format!("spec.{field}"),
                            format!("{msg}: write it like 90d or 2160h"),
                        )
                    })
                    .ok()
            };
            let every = duration("every", &review.spec.every);
            let due_period = duration("duePeriod", &review.spec.due_period);
            for (field, names) in [
                ("spec.scope.policies", &review.spec.scope.policies),
                (
                    "spec.reviewers.identities",
                    &review.spec.reviewers.identities,
                ),
            ] {
                for n in names {
                    let known = if field.ends_with("policies") {
                        ns.policies.iter().any(|p| p.name == *n)
                    } else {
                        ns.identities.contains_key(n)
                    };
                    if !known {
                        flag(
                            ViolationKind::UnknownReference,
                            None,
                            object.clone(),
                            field.into(),
                            format!(
                                "{n:?} is not an object of that kind in namespace {}",
                                ns.name
                            ),
                        );
                    }
                }
            }
            by_name.insert(name, (review, due_period));
            campaigns.push(Campaign {
                name: name.to_string(),
                every,
                due_period,
                on_no_response: review.spec.on_no_response,
                cycle: None,
                latest: Vec::new(),
            });
        }
        // The latest answer per (identity, entitlement, source, review): (cycle, decision, due, digest).
        type Key = (String, EntitlementRef, SourceKind, String, String);
        let mut answers: BTreeMap<Key, (Date, ReviewDecision, Option<Timestamp>, Option<String>)> =
            BTreeMap::new();
        let mut cycles: HashMap<&str, Vec<Cycle<'_>>> = HashMap::new();
        for response in responses {
            let spec = &response.spec;
            let rname = response.metadata.name.as_deref().unwrap_or_default();
            let object = format!("AccessReviewResponse/{rname}");
            let Some((review, due_period)) = by_name.get(spec.review.as_str()) else {
                flag(
                    ViolationKind::UnknownReference,
                    None,
                    object,
                    "spec.review".into(),
                    format!(
                        "{:?} is not an AccessReview in namespace {}: fix spec.review or add the review",
                        spec.review, ns.name
                    ),
                );
                continue;
            };
            let Ok(cycle) = spec.cycle.parse::<Date>() else {
                flag(
                    ViolationKind::InvalidValue,
                    None,
                    object,
                    "spec.cycle".into(),
                    format!("{:?} is not a date like 2026-12-01", spec.cycle),
                );
                continue;
            };
            let due = due_period.and_then(|d| start_of(cycle).checked_add(d).ok());
            let reviewer_known = ns.identities.contains_key(&spec.reviewer);
            if !reviewer_known {
                flag(
                    ViolationKind::UnknownReference,
                    None,
                    object.clone(),
                    "spec.reviewer".into(),
                    format!(
                        "{:?} is not an Identity in namespace {}: its decisions do not count",
                        spec.reviewer, ns.name
                    ),
                );
            }
            let mut decisions = Vec::with_capacity(spec.items.len());
            for (i, item) in spec.items.iter().enumerate() {
                let decision = judge_item(
                    ns,
                    review,
                    &spec.reviewer,
                    reviewer_known,
                    item,
                    &object,
                    i,
                    &mut flag,
                );
                decisions.push(decision);
                let key = (
                    item.identity.clone(),
                    item.entitlement.clone(),
                    source_kind(item.source.kind),
                    item.source.name.clone(),
                    spec.review.clone(),
                );
                let value = (cycle, decision, due, item.source.digest.clone());
                match answers.get(&key) {
                    Some(old) if old.0 > cycle => {}
                    _ => {
                        answers.insert(key, value);
                    }
                }
            }
            cycles
                .entry(spec.review.as_str())
                .or_default()
                .push((cycle, response, decisions, due));
        }
        for campaign in &mut campaigns {
            let Some(list) = cycles.get(campaign.name.as_str()) else {
                continue;
            };
            let latest = list.iter().map(|c| c.0).max();
            campaign.cycle = latest;
            for (cycle, response, decisions, due) in list {
                if Some(*cycle) != latest {
                    continue;
                }
                for decision in decisions {
                    campaign.latest.push(Counted {
                        reviewer: response.spec.reviewer.clone(),
                        decision: *decision,
                        due: *due,
                        response: response.metadata.name.clone().unwrap_or_default(),
                    });
                }
            }
        }
        for ((identity, entitlement, kind, source, review), (_, decision, due, digest)) in answers {
            let current = out.digests.get(&(kind, source.clone()));
            // The source is gone or its spec changed since the cycle opened: the answer is spent.
            if current.is_none() || digest.as_ref().is_some_and(|d| Some(d) != current) {
                continue;
            }
            let no_response = by_name
                .get(review.as_str())
                .map(|(r, _)| r.spec.on_no_response);
            let from = match decision {
                ReviewDecision::Revoke => None,
                ReviewDecision::Pending if no_response == Some(NoResponse::Revoke) => match due {
                    Some(due) => Some(due),
                    None => continue,
                },
                _ => continue,
            };
            out.holds.entry(identity).or_default().push(ReviewHold {
                entitlement,
                kind,
                source,
                review,
                from,
            });
        }
        out.campaigns = campaigns;
        out
    }

    /// Findings at `now` (the instant-free ones, and overdue answers), and progress per review.
    pub fn at(
        &self,
        namespace: &str,
        now: Timestamp,
    ) -> (Vec<Violation>, BTreeMap<String, ReviewProgress>) {
        let mut findings = self.findings.clone();
        let mut progress = BTreeMap::new();
        for c in &self.campaigns {
            let mut p = ReviewProgress {
                cycle: c.cycle.map(|d| d.to_string()),
                due: c
                    .cycle
                    .and_then(|d| c.due_period.and_then(|p| start_of(d).checked_add(p).ok())),
                next_cycle: c
                    .cycle
                    .and_then(|d| c.every.and_then(|e| start_of(d).checked_add(e).ok())),
                ..ReviewProgress::default()
            };
            let mut overdue: BTreeMap<(&str, &str), usize> = BTreeMap::new();
            for item in &c.latest {
                let late = item.due.is_some_and(|d| d <= now);
                match item.decision {
                    ReviewDecision::Keep => p.kept += 1,
                    ReviewDecision::Revoke => p.revoked += 1,
                    ReviewDecision::Pending => {
                        if late {
                            *overdue.entry((&item.reviewer, &item.response)).or_default() += 1;
                        }
                        if late && c.on_no_response == NoResponse::Revoke {
                            p.revoked += 1;
                        } else {
                            p.pending += 1;
                        }
                    }
                }
            }
            let reviewers: BTreeSet<String> = overdue.keys().map(|(r, _)| r.to_string()).collect();
            p.overdue_reviewers = reviewers.into_iter().collect();
            for ((reviewer, response), n) in overdue {
                let then = match c.on_no_response {
                    NoResponse::Revoke => "they are revoked (onNoResponse: Revoke)",
                    NoResponse::Keep => "the access is kept (onNoResponse: Keep)",
                };
                findings.push(Engine::violation(
                    ViolationKind::ReviewOverdue,
                    namespace,
                    Some(reviewer),
                    &format!("AccessReviewResponse/{response}"),
                    Some("spec.items"),
                    format!(
                        "{reviewer} left {n} item(s) of AccessReview/{} pending past the due date {}: {then}; set keep or revoke with a justification",
                        c.name,
                        p.due.map(|d| d.to_string()).unwrap_or_default()
                    ),
                ));
            }
            progress.insert(c.name.clone(), p);
        }
        (findings, progress)
    }

    /// The spec digest of a policy or exception, when the namespace has reviews.
    pub fn digest(&self, kind: SourceKind, name: &str) -> Option<&str> {
        self.digests
            .get(&(kind, name.to_string()))
            .map(String::as_str)
    }
}

/// Checks one answer; returns the decision that counts (a refused one counts as pending).
#[allow(clippy::too_many_arguments)]
fn judge_item(
    ns: &Namespace,
    review: &AccessReview,
    reviewer: &str,
    reviewer_known: bool,
    item: &ReviewItem,
    object: &str,
    i: usize,
    flag: &mut impl FnMut(ViolationKind, Option<&str>, String, String, String),
) -> ReviewDecision {
    let field = format!("spec.items[{i}].decision");
    let subject = ns.identities.get(&item.identity);
    let mut refused = !reviewer_known;
    if item.identity == reviewer {
        refused = true;
        flag(
            ViolationKind::ReviewRefused,
            Some(&item.identity),
            object.to_string(),
            field.clone(),
            format!(
                "{reviewer} may not review their own access ({}): the decision does not count; it belongs to another reviewer",
                item.entitlement
            ),
        );
    } else if let Some(subject) = subject {
        let allowed = reviewer_of(
            &review.spec.reviewers.by,
            &review.spec.reviewers.identities,
            subject,
        );
        if allowed.as_deref() != Some(reviewer) && item.decision != ReviewDecision::Pending {
            refused = true;
            flag(
                ViolationKind::ReviewRefused,
                Some(&item.identity),
                object.to_string(),
                field.clone(),
                format!(
                    "{reviewer} is not the reviewer AccessReview/{} names for {} (reviewers.by {:?} gives {}): the decision does not count",
                    review.metadata.name.as_deref().unwrap_or_default(),
                    item.identity,
                    review.spec.reviewers.by,
                    allowed.as_deref().unwrap_or("nobody")
                ),
            );
        }
    }
    if item.source.kind == ReviewSourceKind::Exception
        && let Some(exc) = ns.exceptions.iter().find(|e| e.name == item.source.name)
        && (exc.approved_by.iter().any(|a| a == reviewer) || exc.requested_by == reviewer)
    {
        flag(
            ViolationKind::ReviewerGranted,
            Some(&item.identity),
            object.to_string(),
            field.clone(),
            format!(
                "{reviewer} requested or approved Exception/{} and now reviews it: have someone else review it",
                exc.name
            ),
        );
    }
    if refused {
        ReviewDecision::Pending
    } else {
        item.decision
    }
}

/// One item of a new cycle, borrowed from the evaluation it was read from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpenItem<'a> {
    /// The identity holding the access.
    pub identity: &'a str,
    /// The entitlement.
    pub entitlement: &'a EntitlementRef,
    /// The policy or exception granting it.
    pub source: &'a Source,
}

/// The files of a new cycle: one list of pending items per reviewer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Opened<'a> {
    /// Items by reviewer.
    pub by_reviewer: BTreeMap<String, Vec<OpenItem<'a>>>,
    /// Items without a possible reviewer: (identity, entitlement, why).
    pub unassigned: Vec<(String, String, String)>,
}

impl Engine {
    /// The items of a new cycle of `review` over what `desired` grants (enforced grants
    /// only), one list per reviewer.
    pub fn open_review<'a>(&self, desired: &'a DesiredState, review: &AccessReview) -> Opened<'a> {
        let namespace = review.metadata.namespace.as_deref().unwrap_or_default();
        let mut out = Opened::default();
        let Some(ns) = self.namespaces.get(namespace) else {
            return out;
        };
        let scope: &ReviewScope = &review.spec.scope;
        let selector = scope.selector.as_ref().map(Selector::compile);
        let start = IdentityKey::new(namespace, "");
        for (key, access) in desired.identities.range(start..) {
            if key.namespace != namespace {
                break;
            }
            let Some(rec) = ns.identities.get(&key.name) else {
                continue;
            };
            if selector.as_ref().is_some_and(|s| !s.matches(rec)) {
                continue;
            }
            let reviewer = reviewer_of(
                &review.spec.reviewers.by,
                &review.spec.reviewers.identities,
                rec,
            );
            for grant in access.enforced() {
                if !scope.targets.is_empty() && !scope.targets.contains(&grant.entitlement.target) {
                    continue;
                }
                for source in &grant.sources {
                    let in_scope = if !scope.policies.is_empty() {
                        source.kind == SourceKind::AccessPolicy
                            && scope.policies.contains(&source.name)
                    } else if scope.exceptions {
                        source.kind == SourceKind::Exception
                    } else {
                        true
                    };
                    if !in_scope {
                        continue;
                    }
                    let Some(reviewer) = &reviewer else {
                        out.unassigned.push((
                            key.name.clone(),
                            grant.entitlement.to_string(),
                            format!(
                                "no reviewer: reviewers.by {:?} names nobody other than the subject",
                                review.spec.reviewers.by
                            ),
                        ));
                        continue;
                    };
                    let list = match out.by_reviewer.get_mut(reviewer) {
                        Some(list) => list,
                        None => out.by_reviewer.entry(reviewer.clone()).or_default(),
                    };
                    list.push(OpenItem {
                        identity: &key.name,
                        entitlement: &grant.entitlement,
                        source,
                    });
                }
            }
        }
        out
    }

    /// The spec digest of a policy or exception recorded in review items (`None` when its
    /// namespace has no reviews).
    pub fn source_digest(&self, namespace: &str, kind: SourceKind, name: &str) -> Option<&str> {
        self.namespaces.get(namespace)?.reviews.digest(kind, name)
    }
}
