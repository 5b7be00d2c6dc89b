//! Reading manifests straight from Git objects (no checkout) and attributing changes to
//! the commits that made them.

use std::collections::HashMap;
use std::path::Path;

use git2::{Repository, Sort};
use serde::Serialize;

use super::{Loaded, Loader};
use crate::engine::Provenance;

/// A commit as shown to people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    /// Full commit id.
    pub id: String,
    /// Author as `Name <email>`.
    pub author: String,
    /// Author time, RFC 3339.
    pub time: String,
    /// First line of the message.
    pub summary: String,
}

impl CommitInfo {
    fn of(commit: &git2::Commit<'_>) -> Self {
        let author = commit.author();
        let time = jiff::Timestamp::from_second(author.when().seconds())
            .map(|t| t.to_string())
            .unwrap_or_default();
        Self {
            id: commit.id().to_string(),
            author: format!(
                "{} <{}>",
                author.name().unwrap_or("?"),
                author.email().unwrap_or("?")
            ),
            time,
            summary: commit
                .summary()
                .ok()
                .flatten()
                .unwrap_or_default()
                .to_string(),
        }
    }
}

/// The manifests of one commit.
pub struct GitTree {
    /// The commit read.
    pub commit: CommitInfo,
    /// Parsed objects and diagnostics.
    pub loaded: Loaded,
}

/// Reads the manifests under `subdir` at `rev`, stamping each object with the commit and author.
pub fn read_tree(
    repo: &Repository,
    rev: &str,
    subdir: Option<&str>,
    default_namespace: &str,
) -> Result<GitTree, String> {
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| format!("cannot resolve {rev:?} to a commit: {}", e.message()))?;
    let info = CommitInfo::of(&commit);
    let mut tree = commit.tree().map_err(|e| e.message().to_string())?;
    let prefix = subdir
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty());
    if let Some(prefix) = prefix {
        let entry = tree
            .get_path(Path::new(prefix))
            .map_err(|_| format!("{prefix:?} does not exist at {rev}"))?;
        tree = repo
            .find_tree(entry.id())
            .map_err(|_| format!("{prefix:?} is not a directory at {rev}"))?;
    }
    let provenance = Provenance {
        commit: Some(info.id.clone()),
        author: Some(info.author.clone()),
        ..Provenance::default()
    };
    let mut loader = Loader::new(default_namespace);
    let listing = super::files::list_tree(&tree).map_err(|e| e.message().to_string())?;
    for (path, why) in listing.refused {
        loader.diagnostics.error(&path, None, None, why.into());
    }
    for (path, oid) in listing.manifests {
        let blob = repo.find_blob(oid).map_err(|e| e.message().to_string())?;
        if let Some(message) = super::files::oversized(blob.size() as u64) {
            loader.diagnostics.error(&path, None, None, message);
            continue;
        }
        loader.add_file(&path, blob.content(), &provenance);
    }
    Ok(GitTree {
        commit: info,
        loaded: loader.finish(),
    })
}

/// For each path changed between `base` and `head` (relative to `subdir`), the newest
/// commit in `base..head` that changed it.
pub fn changed_paths(
    repo: &Repository,
    base: &str,
    head: &str,
    subdir: Option<&str>,
) -> Result<HashMap<String, CommitInfo>, String> {
    let resolve = |rev: &str| {
        repo.revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
            .map_err(|e| format!("cannot resolve {rev:?}: {}", e.message()))
    };
    let (base, head) = (resolve(base)?, resolve(head)?);
    let mut walk = repo.revwalk().map_err(|e| e.message().to_string())?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
        .map_err(|e| e.message().to_string())?;
    walk.push(head).map_err(|e| e.message().to_string())?;
    walk.hide(base).map_err(|e| e.message().to_string())?;
    let prefix = subdir
        .map(|s| format!("{}/", s.trim_matches('/')))
        .filter(|s| s != "/");
    let mut newest: HashMap<String, CommitInfo> = HashMap::new();
    for oid in walk {
        let commit = repo
            .find_commit(oid.map_err(|e| e.message().to_string())?)
            .map_err(|e| e.message().to_string())?;
        let tree = commit.tree().map_err(|e| e.message().to_string())?;
        let parent = commit.parent(0).ok().and_then(|p| p.tree().ok());
        let diff = repo
            .diff_tree_to_tree(parent.as_ref(), Some(&tree), None)
            .map_err(|e| e.message().to_string())?;
        let info = CommitInfo::of(&commit);
        for delta in diff.deltas() {
            for file in [delta.old_file().path(), delta.new_file().path()]
                .into_iter()
                .flatten()
            {
                let path = file.to_string_lossy();
                let relative = match &prefix {
                    Some(p) => match path.strip_prefix(p.as_str()) {
                        Some(rest) => rest.to_string(),
                        None => continue,
                    },
                    None => path.to_string(),
                };
                newest.entry(relative).or_insert_with(|| info.clone());
            }
        }
    }
    Ok(newest)
}
