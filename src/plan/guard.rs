//! The blast-radius guard: a sync that would take away more access than a target's
//! `limits.maxRevocationsPerSync` allows stops before its first operation, so a bad commit
//! or a broken HR feed cannot strip a directory in one pass.

use super::{Action, Operation};

/// A plan for one target that takes away more than its limit allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{count} revocations planned, over the limit of {limit} (spec.limits.maxRevocationsPerSync); \
     only leavers' account disables and session revocations were applied: check the change, \
     then raise the limit to let it through"
)]
pub struct BlastRadiusExceeded {
    /// Revocations and account deletions in the plan.
    pub count: usize,
    /// The limit.
    pub limit: usize,
}

/// Whether an operation takes access away for good (a disable keeps it for the return).
pub fn is_revocation(action: &Action) -> bool {
    matches!(action, Action::Revoke { .. } | Action::DeleteAccount)
}

/// Checks one target's operations against its limit (`None`: no limit; a negative limit
/// counts as zero).
pub fn check<'a>(
    operations: impl IntoIterator<Item = &'a Operation>,
    limit: Option<i64>,
) -> Result<(), BlastRadiusExceeded> {
    let Some(limit) = limit else { return Ok(()) };
    let limit = usize::try_from(limit).unwrap_or(0);
    let count = operations
        .into_iter()
        .filter(|op| is_revocation(&op.action))
        .count();
    if count > limit {
        Err(BlastRadiusExceeded { count, limit })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::EntitlementRef;
    use crate::engine::IdentityKey;

    fn op(action: Action) -> Operation {
        Operation {
            identity: Arc::new(IdentityKey::new("acme", "alice")),
            target: "corp-ldap".into(),
            action,
            leaver: true,
            sources: Default::default(),
        }
    }

    fn revoke(name: &str) -> Action {
        Action::Revoke {
            entitlement: Arc::new(EntitlementRef {
                target: "corp-ldap".into(),
                kind: None,
                namespace: None,
                name: name.into(),
            }),
        }
    }

    #[test]
    fn counts_revocations_and_deletions_only() {
        let ops = [
            op(Action::DisableAccount),
            op(Action::RevokeSessions),
            op(revoke("a")),
            op(revoke("b")),
            op(Action::DeleteAccount),
            op(Action::EnableAccount),
        ];
        let cases: [(Option<i64>, Result<(), BlastRadiusExceeded>); 6] = [
            (None, Ok(())),
            (Some(3), Ok(())),
            (Some(100), Ok(())),
            (Some(2), Err(BlastRadiusExceeded { count: 3, limit: 2 })),
            (Some(0), Err(BlastRadiusExceeded { count: 3, limit: 0 })),
            (Some(-5), Err(BlastRadiusExceeded { count: 3, limit: 0 })),
        ];
        for (limit, want) in cases {
            assert_eq!(check(&ops, limit), want, "limit {limit:?}");
        }
        assert_eq!(check(&[op(Action::DisableAccount)], Some(0)), Ok(()));
    }

    #[test]
    fn message_names_the_count_the_field_and_the_fix() {
        let text = BlastRadiusExceeded {
            count: 120,
            limit: 100,
        }
        .to_string();
        for needle in ["120", "100", "maxRevocationsPerSync", "raise the limit"] {
            assert!(text.contains(needle), "{text}");
        }
    }
}
