//! The NHI owner-exit playbook's decisions: when the owner of a non-human identity left,
//! who is proposed as interim owner, and which of its targets cannot rotate credentials.

use jiff::Timestamp;

use super::index::Namespace;
use super::lifecycle::{end_of, human_phase};
use super::model::{OwnerExit, Phase};
use crate::api::TargetType;

/// How far up the manager chain an interim owner is looked for.
pub const MAX_CHAIN: usize = 16;

/// The owner-exit facts of a non-human identity whose owner `owner` is a leaver at `now`.
pub fn owner_exit(ns: &Namespace, owner: &str, now: Timestamp) -> OwnerExit {
    let human = ns.identities.get(owner).and_then(|r| r.human.as_ref());
    let left_at = human
        .and_then(|h| h.end_date)
        .map(end_of)
        .filter(|end| *end <= now)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    OwnerExit {
        owner: owner.to_string(),
        left_at,
        proposed_owner: proposed_owner(ns, owner, now),
    }
}

/// The first active human up `owner`'s manager chain (their manager, else that one's, …),
/// never the owner themself.
fn proposed_owner(ns: &Namespace, owner: &str, now: Timestamp) -> Option<String> {
    let mut current = owner;
    for _ in 0..MAX_CHAIN {
        let manager = ns
            .identities
            .get(current)?
            .human
            .as_ref()?
            .manager
            .as_deref()?;
        if manager == current || manager == owner {
            return None; // the head of the organisation, or a loop
        }
        let human = ns.identities.get(manager)?.human.as_ref()?;
        if human_phase(human, now).0 == Phase::Active {
            return Some(manager.to_string());
        }
        current = manager;
    }
    None
}

/// Whether gatehouse can rotate a non-human identity's credentials on a target of this
/// type: PostgreSQL (password) and Kubernetes (ServiceAccount tokens) can; SCIM and LDAP
/// connectors hold no credentials of the identity's to rotate.
pub fn rotates_credentials(target_type: TargetType) -> bool {
    matches!(target_type, TargetType::PostgreSQL | TargetType::Kubernetes)
}
