//! The check every connector's targeted re-read must pass: on the identities asked about,
//! it says exactly what a full observation says, and nothing about anyone else.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use gatehouse::engine::IdentityKey;
use gatehouse::targets::{Connector, Reread, Subject};

/// Re-reads `only` and compares with a full observation made right after. `true` when the
/// connector read just those accounts, `false` when it listed the whole target instead
/// (then the listing must equal the full observation).
pub async fn agrees<C: Connector + Sync>(
    connector: &C,
    subjects: &BTreeMap<IdentityKey, Subject>,
    only: &BTreeSet<IdentityKey>,
) -> bool {
    let reread = connector
        .observe_accounts(subjects, only)
        .await
        .expect("targeted re-read");
    let full = connector.observe(subjects).await.expect("observe").held;
    match reread {
        Reread::Accounts(part) => {
            let mut expected = full;
            expected.identities.retain(|k, _| only.contains(k));
            assert_eq!(part, expected, "a re-read of {only:?}");
            true
        }
        Reread::Full(listed) => {
            assert_eq!(listed.held, full, "a re-read that listed everything");
            false
        }
    }
}

/// The keys of `names` in `namespace`.
pub fn keys(namespace: &str, names: &[&str]) -> BTreeSet<IdentityKey> {
    names
        .iter()
        .map(|n| IdentityKey::new(namespace, *n))
        .collect()
}
