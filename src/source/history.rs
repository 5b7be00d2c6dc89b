//! Which commits changed which files under a folder: the input to signature checks and to
//! per-file provenance.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use git2::{Commit, Oid, Repository, Sort, Tree};

/// The files under the source folder that one commit changed (paths relative to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The commit.
    pub commit: Oid,
    /// Changed paths, sorted. For a merge: only paths that differ from every parent, i.e.
    /// what the merge itself introduced; the merged commits are listed on their own.
    pub paths: Vec<String>,
}

/// The folder `subdir` of a commit's tree (`None` when it does not exist there).
pub fn subtree<'r>(
    repo: &'r Repository,
    commit: &Commit<'r>,
    subdir: Option<&str>,
) -> Result<Option<Tree<'r>>, String> {
    let tree = commit.tree().map_err(|e| e.message().to_string())?;
    match subdir
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty())
    {
        None => Ok(Some(tree)),
        Some(prefix) => match tree.get_path(Path::new(prefix)) {
            Ok(entry) => Ok(repo.find_tree(entry.id()).ok()),
            Err(_) => Ok(None),
        },
    }
}

fn changed_between(
    repo: &Repository,
    old: Option<&Tree<'_>>,
    new: Option<&Tree<'_>>,
) -> Result<BTreeSet<String>, String> {
    if old.map(|t| t.id()) == new.map(|t| t.id()) {
        return Ok(BTreeSet::new());
    }
    let diff = repo
        .diff_tree_to_tree(old, new, None)
        .map_err(|e| e.message().to_string())?;
    let mut paths = BTreeSet::new();
    for delta in diff.deltas() {
        for file in [delta.old_file().path(), delta.new_file().path()]
            .into_iter()
            .flatten()
        {
            paths.insert(file.to_string_lossy().into_owned());
        }
    }
    Ok(paths)
}

/// The paths under `subdir` that `commit` changed.
pub fn changed_paths_of(
    repo: &Repository,
    commit: &Commit<'_>,
    subdir: Option<&str>,
) -> Result<Vec<String>, String> {
    let tree = subtree(repo, commit, subdir)?;
    let mut common: Option<BTreeSet<String>> = None;
    let parents: Vec<Commit<'_>> = commit.parents().collect();
    if parents.is_empty() {
        return Ok(changed_between(repo, None, tree.as_ref())?
            .into_iter()
            .collect());
    }
    for parent in &parents {
        let before = subtree(repo, parent, subdir)?;
        let changed = changed_between(repo, before.as_ref(), tree.as_ref())?;
        common = Some(match common {
            None => changed,
            Some(so_far) => so_far.intersection(&changed).cloned().collect(),
        });
        if common.as_ref().is_some_and(BTreeSet::is_empty) {
            break;
        }
    }
    Ok(common.unwrap_or_default().into_iter().collect())
}

/// The commits reachable from `head` but not from `base` that changed something under
/// `subdir`, newest first. `base = None` walks the whole history, up to `limit` commits.
pub fn changes(
    repo: &Repository,
    base: Option<Oid>,
    head: Oid,
    subdir: Option<&str>,
    limit: usize,
) -> Result<Vec<Change>, String> {
    let mut walk = repo.revwalk().map_err(|e| e.message().to_string())?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
        .map_err(|e| e.message().to_string())?;
    walk.push(head).map_err(|e| e.message().to_string())?;
    if let Some(base) = base {
        walk.hide(base).map_err(|e| e.message().to_string())?;
    }
    let mut out = Vec::new();
    for oid in walk.take(limit) {
        let oid = oid.map_err(|e| e.message().to_string())?;
        let commit = repo.find_commit(oid).map_err(|e| e.message().to_string())?;
        let paths = changed_paths_of(repo, &commit, subdir)?;
        if !paths.is_empty() {
            out.push(Change { commit: oid, paths });
        }
    }
    Ok(out)
}

/// Where `head` stands relative to the last applied commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Movement {
    /// Nothing applied yet (or the old commit is gone from the repository).
    First,
    /// The same commit.
    Same,
    /// `head` descends from the applied commit.
    FastForward,
    /// `head` is an ancestor of the applied commit: history was reset to an older commit.
    Rollback,
    /// History was rewritten: the two share `base` (or nothing) as their newest common commit.
    Diverged(Option<Oid>),
}

/// Classifies the move from `applied` to `head`.
pub fn movement(repo: &Repository, applied: Option<Oid>, head: Oid) -> Movement {
    let Some(applied) = applied.filter(|a| repo.find_commit(*a).is_ok()) else {
        return Movement::First;
    };
    if applied == head {
        return Movement::Same;
    }
    match repo.merge_base(applied, head) {
        Ok(base) if base == applied => Movement::FastForward,
        Ok(base) if base == head => Movement::Rollback,
        Ok(base) => Movement::Diverged(Some(base)),
        Err(_) => Movement::Diverged(None),
    }
}

/// For each path currently under `subdir` at `head`, the newest commit (among the first
/// `limit` walked) that changed it. Paths older than the walk are missing from the map.
pub fn last_changes(
    repo: &Repository,
    head: Oid,
    subdir: Option<&str>,
    wanted: &BTreeSet<String>,
    limit: usize,
) -> Result<HashMap<String, Oid>, String> {
    let mut found = HashMap::with_capacity(wanted.len());
    let mut walk = repo.revwalk().map_err(|e| e.message().to_string())?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
        .map_err(|e| e.message().to_string())?;
    walk.push(head).map_err(|e| e.message().to_string())?;
    walk.simplify_first_parent()
        .map_err(|e| e.message().to_string())?;
    for oid in walk.take(limit) {
        let oid = oid.map_err(|e| e.message().to_string())?;
        let commit = repo.find_commit(oid).map_err(|e| e.message().to_string())?;
        let tree = subtree(repo, &commit, subdir)?;
        let parent = match commit.parent(0) {
            Ok(p) => subtree(repo, &p, subdir)?,
            Err(_) => None,
        };
        for path in changed_between(repo, parent.as_ref(), tree.as_ref())? {
            if wanted.contains(&path) {
                found.entry(path).or_insert(oid);
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    Ok(found)
}
