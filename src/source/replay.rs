//! The manifests in force along a Git history, commit by commit, as the controller would
//! have applied them: the loader behind `gatehouse audit`.
//!
//! Each step re-reads and re-parses only the files its commit changed under the folder.
//! A commit is applicable only when the whole tree is valid (every file clean, every
//! object defined once); until then the objects of the last applicable commit stay in
//! force. Applying updates the snapshot in force object by object, never rebuilding it,
//! and says what changed so that the caller can re-evaluate only that.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use git2::{Commit, Delta, FileMode, Oid, Repository};
use jiff::Timestamp;

use super::history::subtree;
use super::{Definitions, Diagnostic, Loaded, Loader, files};
use crate::api::{
    AccessPolicy, AccessReview, AccessReviewResponse, Exception, Identity, Kind, Kinded, ObjectKey,
    TargetSystem,
};
use crate::engine::{IdentityKey, Provenance, Snapshot};

/// One position of the history to replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The commit.
    pub commit: Oid,
    /// When the ref moved there (reflog steps); otherwise the committer time counts.
    pub moved_at: Option<Timestamp>,
    /// A reflog step to a commit that does not descend from the one before (a force-push
    /// or a reset to older history).
    pub rewind: bool,
}

/// The first-parent history of `head`, oldest first.
pub fn first_parent(repo: &Repository, head: Oid) -> Result<Vec<Step>, String> {
    let mut walk = repo.revwalk().map_err(|e| e.message().to_string())?;
    walk.simplify_first_parent()
        .map_err(|e| e.message().to_string())?;
    walk.push(head).map_err(|e| e.message().to_string())?;
    let mut oids: Vec<Oid> = walk
        .collect::<Result<_, _>>()
        .map_err(|e| e.message().to_string())?;
    oids.reverse();
    Ok(oids
        .into_iter()
        .map(|commit| Step {
            commit,
            moved_at: None,
            rewind: false,
        })
        .collect())
}

/// The positions `reference` had, from its reflog, oldest first.
pub fn reflog(repo: &Repository, reference: &str) -> Result<Vec<Step>, String> {
    let name = if reference == "HEAD" {
        "HEAD".to_string()
    } else {
        repo.resolve_reference_from_short_name(reference)
            .ok()
            .and_then(|r| r.name().ok().map(str::to_string))
            .ok_or_else(|| {
                format!("--reflog needs --ref to name a branch; {reference:?} is not one")
            })?
    };
    let log = repo
        .reflog(&name)
        .map_err(|e| format!("cannot read the reflog of {name}: {}", e.message()))?;
    if log.is_empty() {
        return Err(format!(
            "{name} has no reflog (core.logAllRefUpdates, or a bare clone): replay its history without --reflog"
        ));
    }
    let mut steps = Vec::new();
    let mut previous: Option<Oid> = None;
    for entry in log.iter().collect::<Vec<_>>().into_iter().rev() {
        let oid = entry.id_new();
        if oid.is_zero() || previous == Some(oid) {
            continue;
        }
        let when = Timestamp::from_second(entry.committer().when().seconds())
            .map_err(|e| format!("reflog of {name}: impossible time: {e}"))?;
        let forward = match previous {
            None => true,
            Some(before) => repo.graph_descendant_of(oid, before).unwrap_or(false),
        };
        steps.push(Step {
            commit: oid,
            moved_at: Some(when),
            rewind: !forward,
        });
        previous = Some(oid);
    }
    Ok(steps)
}

/// What a commit did to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileChange {
    /// Deleted (or no longer a manifest).
    Gone,
    /// New content.
    Content(Vec<u8>),
    /// Present but unreadable, with the reason.
    Problem(String),
}

/// What loading one commit's changes found.
#[derive(Clone, Debug, Default)]
pub struct Loading {
    /// Problems this commit brought: errors of the files it changed, and duplicates that
    /// are new or involve a file it changed.
    pub problems: Vec<Diagnostic>,
    /// Files with errors that this commit did not change.
    pub still_invalid: Vec<String>,
    /// Whether the whole tree is valid, so the commit can be applied.
    pub applicable: bool,
}

/// What applying changed in the snapshot in force.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Identities whose own record changed since the last apply.
    pub edited: BTreeSet<IdentityKey>,
    /// Whether a policy, exception or target changed since the last apply.
    pub rules_changed: bool,
}

/// The parsed tree along a history, and the objects in force.
pub struct Replay {
    namespace: String,
    subdir: Option<String>,
    /// The folder's tree at the last step read.
    previous_tree: Option<Oid>,
    /// Every manifest file under the folder, parsed on its own, by path.
    files: BTreeMap<String, Loaded>,
    /// The files defining each object: the first one counts.
    owners: Definitions,
    /// Files with errors, and objects defined more than once: while any, commits are
    /// not applicable.
    broken_files: BTreeSet<String>,
    duplicates: BTreeSet<ObjectKey>,
    /// Objects changed since the last apply.
    pending: BTreeSet<ObjectKey>,
    /// Whether a policy, exception or target changed since the last apply.
    rules_pending: bool,
    /// The objects in force (kept up to date object by object, never rebuilt), and the
    /// position of each in its kind's list.
    applied: Snapshot,
    slots: HashMap<ObjectKey, usize>,
}

impl Replay {
    /// Replays the folder `subdir` (the root when `None`); objects without a namespace
    /// go into `namespace`.
    pub fn new(namespace: &str, subdir: Option<&str>) -> Self {
        Self {
            namespace: namespace.to_string(),
            subdir: subdir
                .map(|s| s.trim_matches('/'))
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            previous_tree: None,
            files: BTreeMap::new(),
            owners: Definitions::default(),
            broken_files: BTreeSet::new(),
            duplicates: BTreeSet::new(),
            pending: BTreeSet::new(),
            rules_pending: false,
            applied: Snapshot::default(),
            slots: HashMap::new(),
        }
    }

    /// The manifest files `commit` changed under the folder since the last step read
    /// (none when the folder is the same), with what happened to each.
    pub fn changes(
        &mut self,
        repo: &Repository,
        commit: &Commit<'_>,
    ) -> Result<Vec<(String, FileChange)>, String> {
        let oid = commit.id();
        let tree = subtree(repo, commit, self.subdir.as_deref())?;
        let tree_id = tree.as_ref().map(|t| t.id());
        if tree_id == self.previous_tree {
            return Ok(Vec::new());
        }
        let old = self
            .previous_tree
            .map(|id| repo.find_tree(id))
            .transpose()
            .map_err(|e| e.message().to_string())?;
        self.previous_tree = tree_id;
        let diff = repo
            .diff_tree_to_tree(old.as_ref(), tree.as_ref(), None)
            .map_err(|e| e.message().to_string())?;
        let mut changes = Vec::new();
        for delta in diff.deltas() {
            let path = delta
                .new_file()
                .path()
                .or(delta.old_file().path())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let file = delta.new_file();
            let kind = match file.mode() {
                FileMode::Commit => files::EntryKind::Submodule,
                FileMode::Link => files::EntryKind::Symlink,
                FileMode::Blob | FileMode::BlobExecutable => files::EntryKind::File,
                _ => files::EntryKind::Other,
            };
            let change = match (delta.status(), files::classify(&path, kind)) {
                (Delta::Deleted, _) => FileChange::Gone,
                (_, files::Entry::Refused(why)) => FileChange::Problem(why.into()),
                // A file that stopped being a manifest (renamed away) is gone.
                (_, files::Entry::Ignored) => FileChange::Gone,
                (_, files::Entry::Manifest) => {
                    let blob = repo
                        .find_blob(file.id())
                        .map_err(|e| format!("commit {oid}: {path}: {}", e.message()))?;
                    match files::oversized(blob.size() as u64) {
                        Some(message) => FileChange::Problem(message),
                        None => FileChange::Content(blob.content().to_vec()),
                    }
                }
            };
            // What was never read and is not read now is no change.
            if matches!(change, FileChange::Gone) && !self.files.contains_key(&path) {
                continue;
            }
            changes.push((path, change));
        }
        Ok(changes)
    }

    /// Parses one commit's changes (`provenance` is stamped on the objects read) and
    /// checks the whole tree.
    pub fn load(&mut self, changes: Vec<(String, FileChange)>, provenance: &Provenance) -> Loading {
        let mut contents = Vec::new();
        let mut updates: Vec<(String, Option<Loaded>)> = Vec::new();
        for (path, change) in changes {
            match change {
                FileChange::Gone => updates.push((path, None)),
                FileChange::Content(bytes) => contents.push((path, bytes)),
                FileChange::Problem(message) => {
                    let mut loader = Loader::new(&self.namespace);
                    loader.diagnostics.error(&path, None, None, message);
                    updates.push((path, Some(loader.finish())));
                }
            }
        }
        updates.extend(
            parse_files(&self.namespace, provenance, contents)
                .into_iter()
                .map(|(p, l)| (p, Some(l))),
        );
        let mut touched: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut problems: Vec<Diagnostic> = Vec::new();
        let changed_files: BTreeSet<String> = updates.iter().map(|(p, _)| p.clone()).collect();
        for (path, loaded) in updates {
            if let Some(old) = self.files.remove(&path) {
                for key in old.files.keys() {
                    touched.insert(key.clone());
                    self.owners.forget(key, &path);
                }
            }
            self.broken_files.remove(&path);
            if let Some(loaded) = loaded {
                for key in loaded.files.keys() {
                    touched.insert(key.clone());
                    self.owners.define(key.clone(), &path);
                }
                if loaded.diagnostics.has_errors() {
                    self.broken_files.insert(path.clone());
                    problems.extend(loaded.diagnostics.0.iter().cloned());
                }
                self.files.insert(path, loaded);
            }
        }
        for key in &touched {
            if self.owners.is_duplicate(key) {
                if self.duplicates.insert(key.clone())
                    || self
                        .owners
                        .defined_in(key)
                        .iter()
                        .any(|f| changed_files.contains(f))
                {
                    problems.extend(self.owners.errors_of(key));
                }
            } else {
                self.duplicates.remove(key);
            }
            if key.kind != Kind::Identity {
                self.rules_pending = true;
            }
            self.pending.insert(key.clone());
        }
        Loading {
            problems,
            still_invalid: self
                .broken_files
                .iter()
                .filter(|f| !changed_files.contains(*f))
                .cloned()
                .collect(),
            applicable: self.broken_files.is_empty() && self.duplicates.is_empty(),
        }
    }

    /// Makes the parsed tree the state in force, and says what changed since the last
    /// apply.
    pub fn apply(&mut self) -> Applied {
        let pending = std::mem::take(&mut self.pending);
        let edited = pending
            .iter()
            .filter(|key| key.kind == Kind::Identity)
            .map(|key| IdentityKey::new(&key.namespace, &key.name))
            .collect();
        for key in &pending {
            match key.kind {
                Kind::Identity => self.put::<Identity>(key),
                Kind::AccessPolicy => self.put::<AccessPolicy>(key),
                Kind::Exception => self.put::<Exception>(key),
                Kind::TargetSystem => self.put::<TargetSystem>(key),
                Kind::AccessReview => self.put::<AccessReview>(key),
                Kind::AccessReviewResponse => self.put::<AccessReviewResponse>(key),
                Kind::PolicySource => {}
            }
        }
        Applied {
            edited,
            rules_changed: std::mem::take(&mut self.rules_pending),
        }
    }

    /// The objects in force.
    pub fn snapshot(&self) -> &Snapshot {
        &self.applied
    }

    /// The identity `key` in force, if any.
    pub fn identity(&self, key: &IdentityKey) -> Option<&Identity> {
        let slot = self
            .slots
            .get(&ObjectKey::new(Kind::Identity, &key.namespace, &key.name))?;
        self.applied.identities.get(*slot)
    }

    /// The definition of `key` that counts in the tree as last loaded (applied or not),
    /// if it is valid.
    pub fn defined<K: SnapshotKind>(&self, key: &ObjectKey) -> Option<&K> {
        let loaded = self.files.get(self.owners.first(key)?)?;
        K::all(&loaded.snapshot)
            .iter()
            .find(|o| ObjectKey::of(*o) == *key)
    }

    /// Puts the object of `key` now in force (the valid one from the first file defining
    /// it, if any) into the applied snapshot, in place.
    fn put<K: SnapshotKind>(&mut self, key: &ObjectKey) {
        let object: Option<K> = self.defined::<K>(key).cloned();
        let objects = K::all_mut(&mut self.applied);
        match (self.slots.get(key).copied(), object) {
            (Some(i), Some(o)) => objects[i] = o,
            (None, Some(o)) => {
                self.slots.insert(key.clone(), objects.len());
                objects.push(o);
            }
            (Some(i), None) => {
                self.slots.remove(key);
                objects.swap_remove(i);
                if let Some(moved) = objects.get(i) {
                    self.slots.insert(ObjectKey::of(moved), i);
                }
            }
            (None, None) => {}
        }
    }
}

/// The kinds a [`Snapshot`] holds, for looking objects up by key.
pub trait SnapshotKind: Kinded + Clone + Sized {
    /// The objects of this kind.
    fn all(snapshot: &Snapshot) -> &Vec<Self>;
    /// The objects of this kind, to change.
    fn all_mut(snapshot: &mut Snapshot) -> &mut Vec<Self>;
}

macro_rules! snapshot_kind {
    ($type:ty, $field:ident) => {
        impl SnapshotKind for $type {
            fn all(snapshot: &Snapshot) -> &Vec<Self> {
                &snapshot.$field
            }
            fn all_mut(snapshot: &mut Snapshot) -> &mut Vec<Self> {
                &mut snapshot.$field
            }
        }
    };
}
snapshot_kind!(Identity, identities);
snapshot_kind!(AccessPolicy, policies);
snapshot_kind!(Exception, exceptions);
snapshot_kind!(AccessReview, reviews);
snapshot_kind!(AccessReviewResponse, responses);
snapshot_kind!(TargetSystem, targets);

/// Parses each file on its own (on every core when there are many).
fn parse_files(
    namespace: &str,
    provenance: &Provenance,
    files: Vec<(String, Vec<u8>)>,
) -> Vec<(String, Loaded)> {
    let parse = |(path, bytes): &(String, Vec<u8>)| {
        let mut loader = Loader::new(namespace);
        loader.add_file(path, bytes, provenance);
        (path.clone(), loader.finish())
    };
    if files.len() < 64 {
        return files.iter().map(parse).collect();
    }
    files::parallel(&files, |part| part.iter().map(parse).collect::<Vec<_>>())
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits `files` (path, content) as the whole tree, on top of `parent`.
    fn commit(repo: &Repository, parent: Option<Oid>, files: &[(&str, &str)]) -> Oid {
        let mut index = git2::Index::new().unwrap();
        for (path, content) in files {
            let blob = repo.blob(content.as_bytes()).unwrap();
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: content.len() as u32,
                id: blob,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).unwrap();
        }
        let tree = repo.find_tree(index.write_tree_to(repo).unwrap()).unwrap();
        let who = git2::Signature::now("t", "t@example.com").unwrap();
        let parents: Vec<git2::Commit<'_>> = parent
            .map(|p| repo.find_commit(p).unwrap())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
        repo.commit(None, &who, &who, "c", &tree, &parents).unwrap()
    }

    fn identity(name: &str) -> String {
        format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}}}\nspec: {{type: Human, employment: {{status: Active, department: d, manager: {name}}}}}\n"
        )
    }

    #[test]
    fn a_commit_applies_only_when_every_object_is_defined_once() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let (ann, bob) = (identity("ann"), identity("bob"));
        let first = commit(&repo, None, &[("ids/a.yaml", &ann), ("README.md", "x")]);
        let second = commit(
            &repo,
            Some(first),
            &[
                ("ids/a.yaml", &ann),
                ("ids/b.yaml", &ann),
                ("README.md", "y"),
            ],
        );
        let third = commit(&repo, Some(second), &[("ids/b.yaml", &bob)]);
        let steps = first_parent(&repo, third).unwrap();
        assert_eq!(
            steps.iter().map(|s| s.commit).collect::<Vec<_>>(),
            [first, second, third]
        );
        let mut replay = Replay::new("t", Some("/ids/"));
        let load = |replay: &mut Replay, oid| {
            let changes = replay
                .changes(&repo, &repo.find_commit(oid).unwrap())
                .unwrap();
            replay.load(changes, &Provenance::default())
        };

        let loading = load(&mut replay, first);
        assert!(loading.applicable && loading.problems.is_empty());
        let applied = replay.apply();
        assert_eq!(
            applied.edited,
            BTreeSet::from([IdentityKey::new("t", "ann")])
        );
        assert!(!applied.rules_changed);
        assert!(replay.identity(&IdentityKey::new("t", "ann")).is_some());

        let loading = load(&mut replay, second);
        assert!(!loading.applicable);
        let problems: Vec<String> = loading.problems.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            problems,
            [
                "error: b.yaml: Identity/t/ann: metadata.name: duplicate: Identity/t/ann is also defined in a.yaml; names are unique per kind and namespace"
            ]
        );

        // a.yaml gone, b.yaml now defines bob: valid again; both identities changed.
        let loading = load(&mut replay, third);
        assert!(loading.applicable, "{:?}", loading.problems);
        let applied = replay.apply();
        assert_eq!(
            applied.edited,
            BTreeSet::from([IdentityKey::new("t", "ann"), IdentityKey::new("t", "bob")])
        );
        assert!(replay.identity(&IdentityKey::new("t", "ann")).is_none());
        assert_eq!(replay.snapshot().identities.len(), 1);
        assert!(
            replay
                .defined::<Identity>(&ObjectKey::new(Kind::Identity, "t", "bob"))
                .is_some()
        );
        // The same folder again: no change.
        assert!(
            replay
                .changes(&repo, &repo.find_commit(third).unwrap())
                .unwrap()
                .is_empty()
        );
    }
}
