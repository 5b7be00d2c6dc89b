//! Approvals proven from Git, with per-path thresholds as in gittuf: a change to a file
//! whose `pathOwners` entry sets `requireApprovals: N` counts only when it reached the
//! branch through merge commits signed by N distinct keys of that entry's owners, none of
//! them the key that signed the change itself.
//!
//! A *change* is a commit that introduced something under the source folder by itself (a
//! merge only for what it resolved itself; see [`history::changes`]); its *author* is the
//! trusted key that signed it. A merge commit *brings in* every commit reachable from one
//! of its other parents and not from its first parent: the pull request's commits, for
//! the merge a forge makes on the branch. Nested merges count too, so a change merged into
//! a review branch by one owner and that branch into `main` by another has two approvals.
//! A commit pushed straight to the branch (on its first-parent line) has none.
//!
//! [`check`] and [`summarize`] decide from plain data; [`bringing_merges`] and [`step`]
//! read the commit graph.

use std::collections::{BTreeSet, HashMap, HashSet};

use git2::{Oid, Repository, Sort};

use super::history::{self, Change};
use super::verify::{self, ApprovalRule, PathRules, Rejection, Signer, TrustedKeys, short};

/// Most commits walked to find the merges above a change (as many as a first sync reads).
const WALK_LIMIT: usize = 20_000;

/// A merge commit that brought a change into the branch, and who signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// The merge commit.
    pub merge: Oid,
    /// Its signature, as checked against the trusted keys.
    pub signer: Signer,
}

/// The trusted keys that approved a change signed by `author`: the signers of the merges
/// that brought it in, without the author's own key.
pub fn approvers(author: &str, approvals: &[Approval]) -> BTreeSet<String> {
    approvals
        .iter()
        .filter_map(|a| match &a.signer {
            Signer::Trusted(name) if name != author => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// Checks that `change`, signed by the trusted key `author` and brought in by
/// `approvals`, has the approvals every rule of every path it changed asks for. Returns
/// the keys that approved it (possibly none, when no rule asks).
pub fn check(
    rules: &PathRules,
    change: &Change,
    author: &str,
    approvals: &[Approval],
) -> Result<BTreeSet<String>, Rejection> {
    let approved = approvers(author, approvals);
    for path in &change.paths {
        for rule in rules.approvals_for(path) {
            let counted: Vec<&String> = approved.intersection(rule.owners).collect();
            if counted.len() < rule.approvals as usize {
                return Err(Rejection {
                    commit: change.commit.to_string(),
                    key: Some(author.to_string()),
                    path: Some(path.clone()),
                    reason: missing(rule, author, &counted, approvals),
                });
            }
        }
    }
    Ok(approved)
}

/// The reason of a refusal: the author, the rule, what approvals there are and why the
/// others do not count, and the fix.
fn missing(
    rule: ApprovalRule<'_>,
    author: &str,
    counted: &[&String],
    approvals: &[Approval],
) -> String {
    let n = rule.approvals;
    let others: Vec<&str> = rule
        .owners
        .iter()
        .map(String::as_str)
        .filter(|k| *k != author)
        .collect();
    let has = match counted {
        [] => "none".to_string(),
        some => format!(
            "{} ({})",
            some.len(),
            some.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let how = if approvals.is_empty() {
        "it was pushed to the branch directly, not merged".to_string()
    } else {
        let merges: Vec<String> = approvals
            .iter()
            .map(|a| {
                let id = short_oid(a.merge);
                match &a.signer {
                    Signer::Trusted(name) if name == author => {
                        format!("{id} signed by {name}, the author, whose approval does not count")
                    }
                    Signer::Trusted(name) if !rule.owners.contains(name) => {
                        format!("{id} signed by {name}, which does not own {:?}", rule.glob)
                    }
                    Signer::Trusted(name) => format!("{id} signed by {name}"),
                    Signer::Unsigned => format!("{id} unsigned"),
                    other => format!("{id} with {other}"),
                }
            })
            .collect();
        format!("the merges that brought it in: {}", merges.join("; "))
    };
    format!(
        "signed by {author} (its author) without the approval it needs: files matching {:?} need {n} approval{} by other owners ({}), given by signing the merge commit that brings the change into the branch, and it has {has}; {how}. Merge it through a pull request signed by {}",
        rule.glob,
        if n == 1 { "" } else { "s" },
        others.join(", "),
        if n == 1 {
            "one of them".to_string()
        } else {
            format!("{n} of them")
        }
    )
}

fn short_oid(oid: Oid) -> String {
    short(&oid.to_string()).to_string()
}

/// For each commit of `targets`, the merge commits of `head`'s history that brought it
/// in, outermost (newest) first. Only merges not reachable from `base` are looked at when
/// it is given; targets not found above `base` are looked up in the whole history.
pub fn bringing_merges(
    repo: &Repository,
    base: Option<Oid>,
    head: Oid,
    targets: &[Oid],
    limit: usize,
) -> Result<HashMap<Oid, Vec<Oid>>, String> {
    let git = |e: git2::Error| e.message().to_string();
    let mut found: HashMap<Oid, Vec<Oid>> = targets.iter().map(|t| (*t, Vec::new())).collect();
    let mut missing: HashSet<Oid> = targets.iter().copied().collect();
    for hidden in [base, None] {
        if missing.is_empty() {
            break;
        }
        // Merges newer than every remaining target, in topological order: only those can
        // bring one in.
        let mut walk = repo.revwalk().map_err(git)?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
            .map_err(git)?;
        walk.push(head).map_err(git)?;
        if let Some(base) = hidden {
            walk.hide(base).map_err(git)?;
        }
        let mut merges = Vec::new();
        let mut looking: HashSet<Oid> = missing.clone();
        for oid in walk.take(limit) {
            let oid = oid.map_err(git)?;
            looking.remove(&oid);
            if looking.is_empty() {
                break;
            }
            let commit = repo.find_commit(oid).map_err(git)?;
            if commit.parent_count() > 1 {
                merges.push(commit);
            }
        }
        let seen: HashSet<Oid> = missing.difference(&looking).copied().collect();
        for merge in &merges {
            let mut inside = repo.revwalk().map_err(git)?;
            for parent in merge.parent_ids().skip(1) {
                inside.push(parent).map_err(git)?;
            }
            inside.hide(merge.parent_id(0).map_err(git)?).map_err(git)?;
            if let Some(base) = hidden {
                inside.hide(base).map_err(git)?;
            }
            for oid in inside {
                let oid = oid.map_err(git)?;
                if seen.contains(&oid) {
                    found.entry(oid).or_default().push(merge.id());
                }
            }
        }
        for oid in seen {
            missing.remove(&oid);
        }
        if hidden.is_none() {
            break;
        }
    }
    Ok(found)
}

/// Checks the approvals of verified changes: `signers` pairs each change's commit with
/// the trusted key that signed it (from [`verify::verify_changes`]). Returns the keys that
/// approved each change that needed approvals.
pub fn verify_approvals(
    repo: &Repository,
    base: Option<Oid>,
    head: Oid,
    changes: &[Change],
    signers: &[(Oid, String)],
    keys: &TrustedKeys,
    rules: &PathRules,
) -> Result<Result<HashMap<Oid, BTreeSet<String>>, Rejection>, String> {
    let needing: Vec<&Change> = changes
        .iter()
        .filter(|c| {
            c.paths
                .iter()
                .any(|p| rules.approvals_for(p).next().is_some())
        })
        .collect();
    if needing.is_empty() {
        return Ok(Ok(HashMap::new()));
    }
    let targets: Vec<Oid> = needing.iter().map(|c| c.commit).collect();
    let merges = bringing_merges(repo, base, head, &targets, WALK_LIMIT)?;
    let mut signed: HashMap<Oid, Signer> = HashMap::new();
    let mut out = HashMap::new();
    for change in needing {
        let Some((_, author)) = signers.iter().find(|(oid, _)| *oid == change.commit) else {
            continue;
        };
        let approvals: Vec<Approval> = merges
            .get(&change.commit)
            .into_iter()
            .flatten()
            .map(|merge| Approval {
                merge: *merge,
                signer: signed
                    .entry(*merge)
                    .or_insert_with(|| verify::commit_signer(repo, *merge, keys))
                    .clone(),
            })
            .collect();
        match check(rules, change, author, &approvals) {
            Ok(approved) => {
                out.insert(change.commit, approved);
            }
            Err(rejection) => return Ok(Err(rejection)),
        }
    }
    Ok(Ok(out))
}

/// Who wrote and who approved what one first-parent step of a branch brought in, as
/// `gatehouse audit` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Review {
    /// The signers of the changes (a trusted key's name, `untrusted …`, `unsigned`, …),
    /// sorted.
    pub authors: Vec<String>,
    /// The keys whose signed merges brought in every change of the step, the change's own
    /// signer excepted, sorted. Empty for a commit pushed straight to the branch.
    pub approvers: Vec<String>,
}

/// Combines the changes of one step: each change's signer and the signers of the merges
/// that brought it in. An approver counts for the step when it approved every change;
/// invalid, unusable and missing merge signatures approve nothing.
pub fn summarize(changes: &[(Signer, Vec<Signer>)]) -> Review {
    let mut authors = BTreeSet::new();
    let mut common: Option<BTreeSet<String>> = None;
    for (author, merges) in changes {
        let author = author.to_string();
        let approved: BTreeSet<String> = merges
            .iter()
            .filter(|s| matches!(s, Signer::Trusted(_) | Signer::Untrusted { .. }))
            .map(Signer::to_string)
            .filter(|s| *s != author)
            .collect();
        authors.insert(author);
        common = Some(match common {
            None => approved,
            Some(so_far) => so_far.intersection(&approved).cloned().collect(),
        });
    }
    Review {
        authors: authors.into_iter().collect(),
        approvers: common.unwrap_or_default().into_iter().collect(),
    }
}

/// The review of a first-parent step to `commit`: for a merge, the changes under `subdir`
/// that it brought in (and what it resolved itself); otherwise the commit itself.
pub fn step(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    subdir: Option<&str>,
    keys: &TrustedKeys,
    signer: &Signer,
) -> Result<Review, String> {
    if commit.parent_count() < 2 {
        return Ok(summarize(&[(signer.clone(), Vec::new())]));
    }
    let git = |e: git2::Error| e.message().to_string();
    let first = commit.parent_id(0).map_err(git)?;
    let mut targets = Vec::new();
    let mut inside = repo.revwalk().map_err(git)?;
    for parent in commit.parent_ids().skip(1) {
        inside.push(parent).map_err(git)?;
    }
    inside.hide(first).map_err(git)?;
    for oid in inside {
        let oid = oid.map_err(git)?;
        let c = repo.find_commit(oid).map_err(git)?;
        if !history::changed_paths_of(repo, &c, subdir)?.is_empty() {
            targets.push(oid);
        }
    }
    let own = !history::changed_paths_of(repo, commit, subdir)?.is_empty();
    let merges = bringing_merges(repo, Some(first), commit.id(), &targets, usize::MAX)?;
    let mut signed: HashMap<Oid, Signer> = HashMap::from([(commit.id(), signer.clone())]);
    let mut signer_of = |oid: Oid| {
        signed
            .entry(oid)
            .or_insert_with(|| verify::commit_signer(repo, oid, keys))
            .clone()
    };
    let mut changes = Vec::new();
    for target in targets {
        let brought: Vec<Signer> = merges
            .get(&target)
            .into_iter()
            .flatten()
            .map(|m| signer_of(*m))
            .collect();
        changes.push((signer_of(target), brought));
    }
    if own {
        changes.push((signer.clone(), Vec::new()));
    }
    Ok(summarize(&changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PathOwner;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    fn trusted(name: &str) -> Signer {
        Signer::Trusted(name.into())
    }

    fn rules(json: &str, names: &[&str]) -> PathRules {
        let owners: Vec<PathOwner> = serde_json::from_str(json).unwrap();
        // Keys are only checked by name here: any valid key will do.
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let keys =
            TrustedKeys::new(names.iter().map(|n| (n.to_string(), key.to_string()))).unwrap();
        PathRules::new(&owners, &keys).unwrap()
    }

    fn change(paths: &[&str]) -> Change {
        Change {
            commit: oid(1),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn merged_by(signers: &[Signer]) -> Vec<Approval> {
        signers
            .iter()
            .enumerate()
            .map(|(i, s)| Approval {
                merge: oid(10 + i as u8),
                signer: s.clone(),
            })
            .collect()
    }

    const OWNERS: &str = r#"[{"path": "policies/**", "keys": ["iam-lead", "iam-2", "github"], "requireApprovals": 1},
        {"path": "identities/**", "keys": ["hr-bot", "github"]}]"#;
    const NAMES: &[&str] = &["iam-lead", "iam-2", "github", "hr-bot"];

    #[test]
    fn a_merge_signed_by_another_owner_approves() {
        let r = rules(OWNERS, NAMES);
        let approved = check(
            &r,
            &change(&["policies/p.yaml"]),
            "iam-lead",
            &merged_by(&[trusted("github")]),
        )
        .unwrap();
        assert_eq!(approved, BTreeSet::from(["github".to_string()]));
        // Paths without a threshold need nothing, merged or not.
        assert!(check(&r, &change(&["identities/a.yaml"]), "hr-bot", &[]).is_ok());
    }

    #[test]
    fn direct_push_self_approval_wrong_owner_and_unsigned_merges_are_refused() {
        let r = rules(OWNERS, NAMES);
        let c = change(&["identities/a.yaml", "policies/p.yaml"]);
        for (approvals, expect) in [
            (vec![], "pushed to the branch directly"),
            (
                vec![trusted("iam-lead")],
                "signed by iam-lead, the author, whose approval does not count",
            ),
            (
                vec![trusted("hr-bot")],
                "signed by hr-bot, which does not own \"policies/**\"",
            ),
            (vec![Signer::Unsigned], "unsigned"),
            (
                vec![Signer::Untrusted {
                    fingerprint: "SHA256:x".into(),
                }],
                "with untrusted SHA256:x",
            ),
        ] {
            let rejection = check(&r, &c, "iam-lead", &merged_by(&approvals)).unwrap_err();
            assert_eq!(rejection.path.as_deref(), Some("policies/p.yaml"));
            assert_eq!(rejection.key.as_deref(), Some("iam-lead"));
            let text = rejection.to_string();
            assert!(text.contains(expect), "{text}");
            assert!(
                text.contains("signed by iam-lead (its author)")
                    && text.contains("need 1 approval by other owners (github, iam-2)")
                    && text.contains("it has none"),
                "{text}"
            );
        }
    }

    #[test]
    fn thresholds_count_distinct_owner_keys_over_nested_merges() {
        let two = r#"[{"path": "policies/**", "keys": ["iam-lead", "iam-2", "iam-3"], "requireApprovals": 2}]"#;
        let r = rules(two, &["iam-lead", "iam-2", "iam-3", "github"]);
        let c = change(&["policies/p.yaml"]);
        let one = check(
            &r,
            &c,
            "iam-lead",
            &merged_by(&[trusted("iam-2"), trusted("iam-2"), trusted("github")]),
        )
        .unwrap_err();
        assert!(one.reason.contains("need 2 approvals"), "{one}");
        assert!(one.reason.contains("it has 1 (iam-2)"), "{one}");
        assert!(one.reason.contains("2 of them"), "{one}");
        let approved = check(
            &r,
            &c,
            "iam-lead",
            &merged_by(&[trusted("iam-3"), trusted("iam-2")]),
        )
        .unwrap();
        assert_eq!(approved.len(), 2);
    }

    #[test]
    fn every_rule_of_a_path_counts_on_its_own() {
        let both = r#"[{"path": "policies/**", "keys": ["iam-lead", "iam-2"], "requireApprovals": 1},
            {"path": "policies/finance/**", "keys": ["iam-lead", "fin-lead"], "requireApprovals": 1}]"#;
        let r = rules(both, &["iam-lead", "iam-2", "fin-lead"]);
        let c = change(&["policies/finance/p.yaml"]);
        let rejection = check(&r, &c, "iam-lead", &merged_by(&[trusted("iam-2")])).unwrap_err();
        assert!(
            rejection.reason.contains("policies/finance/**"),
            "{rejection}"
        );
        assert!(
            check(
                &r,
                &c,
                "iam-lead",
                &merged_by(&[trusted("iam-2"), trusted("fin-lead")])
            )
            .is_ok()
        );
    }

    #[test]
    fn impossible_thresholds_are_spec_errors() {
        let owners: Vec<PathOwner> = serde_json::from_str(
            r#"[{"path": "policies/**", "keys": ["iam-lead", "iam-2"], "requireApprovals": 2}]"#,
        )
        .unwrap();
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let keys =
            TrustedKeys::new(["iam-lead", "iam-2"].map(|n| (n.to_string(), key.to_string())))
                .unwrap();
        let error = PathRules::new(&owners, &keys).unwrap_err();
        assert!(
            error.contains("spec.pathOwners[0].requireApprovals is 2")
                && error.contains("list at least 3 keys"),
            "{error}"
        );
    }

    #[test]
    fn a_step_is_approved_by_who_approved_all_of_it() {
        let review = summarize(&[
            (
                trusted("iam-lead"),
                vec![trusted("iam-2"), trusted("github")],
            ),
            (trusted("iam-2"), vec![trusted("github")]),
        ]);
        assert_eq!(review.authors, ["iam-2", "iam-lead"]);
        assert_eq!(review.approvers, ["github"]);
        // A direct push: its signer wrote it, nobody approved it.
        let direct = summarize(&[(Signer::Unsigned, vec![])]);
        assert_eq!(direct.authors, ["unsigned"]);
        assert!(direct.approvers.is_empty());
        // Unsigned or broken merge signatures approve nothing; untrusted ones are shown.
        let shown = summarize(&[(
            trusted("a"),
            vec![
                Signer::Unsigned,
                Signer::Invalid("x".into()),
                Signer::Untrusted {
                    fingerprint: "SHA256:f".into(),
                },
            ],
        )]);
        assert_eq!(shown.approvers, ["untrusted SHA256:f"]);
    }
}
