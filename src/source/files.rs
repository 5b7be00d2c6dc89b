//! Which files of a source are read, and how they are spread over the cores: the one set of
//! rules for the directory walk, a Git tree (the controller's sync, `plan`/`validate
//! --repo`) and a Git diff (`audit`), so every reader sees the same files with the same
//! problems.

use git2::{ObjectType, Oid, Tree, TreeWalkMode, TreeWalkResult};

use super::{MAX_FILE_BYTES, is_manifest_path};

/// What an entry of a source is to the readers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A manifest to parse.
    Manifest,
    /// Not read, and reported: the message says why and what to do.
    Refused(&'static str),
    /// Not a manifest: ignored.
    Ignored,
}

const SUBMODULE: &str = "submodules are not read: commit the manifests into this repository";
const SYMLINK: &str = "symbolic links are not followed: commit the file itself";

/// Classifies an entry by its path relative to the source folder and its kind.
pub fn classify(relative: &str, kind: EntryKind) -> Entry {
    match kind {
        // Reported whatever their name: a submodule may hold the manifests.
        EntryKind::Submodule => Entry::Refused(SUBMODULE),
        _ if !is_manifest_path(relative) => Entry::Ignored,
        EntryKind::Symlink => Entry::Refused(SYMLINK),
        EntryKind::File => Entry::Manifest,
        EntryKind::Other => Entry::Ignored,
    }
}

/// The kinds of entry a directory or a Git tree holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Symlink,
    Submodule,
    /// A directory, or anything else that is not content.
    Other,
}

impl EntryKind {
    /// The kind of a Git tree entry from its object type and file mode.
    pub fn of_git(kind: Option<ObjectType>, mode: i32) -> Self {
        match (kind, mode) {
            (Some(ObjectType::Commit), _) => Self::Submodule,
            (Some(ObjectType::Blob), 0o120000) => Self::Symlink,
            (Some(ObjectType::Blob), _) => Self::File,
            _ => Self::Other,
        }
    }
}

/// The error for a file over [`MAX_FILE_BYTES`], if it is.
pub fn oversized(size: u64) -> Option<String> {
    (size > MAX_FILE_BYTES as u64)
        .then(|| format!("file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit: split it"))
}

/// The manifests of a Git tree (paths relative to it, in walk order) and the entries it
/// refuses, with why.
#[derive(Debug, Default)]
pub struct TreeListing {
    pub manifests: Vec<(String, Oid)>,
    pub refused: Vec<(String, &'static str)>,
}

/// Walks a Git tree once.
pub fn list_tree(tree: &Tree<'_>) -> Result<TreeListing, git2::Error> {
    let mut listing = TreeListing::default();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let relative = format!("{dir}{}", entry.name().unwrap_or("?"));
        match classify(&relative, EntryKind::of_git(entry.kind(), entry.filemode())) {
            Entry::Manifest => listing.manifests.push((relative, entry.id())),
            Entry::Refused(why) => listing.refused.push((relative, why)),
            Entry::Ignored => {}
        }
        TreeWalkResult::Ok
    })?;
    Ok(listing)
}

/// `f` over `items` in order-keeping chunks, one per core: parsing and schema checks
/// dominate on large repositories, and "first definition wins" stays deterministic.
pub fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    if items.is_empty() {
        return Vec::new();
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    let chunk = items.len().div_ceil(workers);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || f(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("parser threads do not panic"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reader_classifies_entries_alike() {
        use EntryKind::*;
        let table = [
            ("identities/a.yaml", File, Entry::Manifest),
            ("identities/a.yml", File, Entry::Manifest),
            ("identities/a.json", File, Entry::Ignored),
            (".github/workflows/ci.yaml", File, Entry::Ignored),
            ("identities/.hidden.yaml", File, Entry::Ignored),
            ("identities/a.yaml", Symlink, Entry::Refused(SYMLINK)),
            ("README.md", Symlink, Entry::Ignored),
            ("vendor", Submodule, Entry::Refused(SUBMODULE)),
            ("identities", Other, Entry::Ignored),
        ];
        for (path, kind, expected) in table {
            assert_eq!(classify(path, kind), expected, "{path} {kind:?}");
        }
    }

    #[test]
    fn parallel_keeps_order_and_covers_every_item() {
        let items: Vec<u32> = (0..1001).collect();
        let sums = parallel(&items, |part| part.to_vec());
        assert_eq!(sums.concat(), items);
        assert!(parallel(&[] as &[u32], |p| p.len()).is_empty());
    }

    #[test]
    fn size_limit() {
        assert_eq!(oversized(MAX_FILE_BYTES as u64), None);
        assert!(oversized(MAX_FILE_BYTES as u64 + 1).is_some_and(|m| m.contains("split it")));
    }
}
