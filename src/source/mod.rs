//! Reading manifests: from a directory or straight from Git objects, into a checked
//! [`Snapshot`](crate::engine::Snapshot) plus every problem found on the way.

pub mod approvals;
mod definitions;
mod diagnostics;
pub mod fetch;
pub mod files;
mod git_tree;
pub mod history;
mod manifest;
pub mod openpgp;
pub mod replay;
pub mod sync;
pub mod verify;

pub use definitions::Definitions;
pub use diagnostics::{Diagnostic, Diagnostics};
pub use git_tree::{CommitInfo, GitTree, changed_paths, read_tree};
pub use manifest::{Loaded, Loader, MAX_FILE_BYTES, Mark, Read};

use std::collections::HashMap;
use std::path::Path;

/// Reads every `*.yaml` / `*.yml` file under `dir` (recursively, sorted).
pub fn load_dir(dir: &Path, default_namespace: &str) -> Loaded {
    load_tree(dir, default_namespace, None, false).0.finish()
}

/// Reads two directories, as [`load_dir`] each, but parses a head file once only when the
/// base has the same path with the same bytes: its objects and problems are copied from the
/// base's (the same input, so the same result). A `plan --base` at 100,000 files mostly
/// reads the same files twice.
pub fn load_dirs(base: &Path, head: &Path, default_namespace: &str) -> (Loaded, Loaded) {
    let (mut base_loader, parsed) = load_tree(base, default_namespace, None, true);
    let read = base_loader.take_read();
    let earlier = Earlier {
        read: &read,
        files: parsed
            .iter()
            .map(|p| (p.label.as_str(), (p.bytes.as_slice(), p.from, p.to)))
            .collect(),
    };
    let (head_loader, _) = load_tree(head, default_namespace, Some(&earlier), false);
    drop(earlier);
    drop(parsed);
    base_loader.put_read(read);
    (base_loader.finish(), head_loader.finish())
}

/// One file parsed by [`read_files`]: its bytes, and where what it produced sits in the loader.
struct Parsed {
    label: String,
    bytes: Vec<u8>,
    from: Mark,
    to: Mark,
}

/// The files of a base already parsed, by path, to copy instead of parsing again.
struct Earlier<'a> {
    read: &'a Read,
    files: HashMap<&'a str, (&'a [u8], Mark, Mark)>,
}

/// Reads the manifests under `dir` into a loader (not finished); with `keep`, also each
/// parsed file's bytes and marks, for [`Earlier`].
fn load_tree(
    dir: &Path,
    default_namespace: &str,
    earlier: Option<&Earlier<'_>>,
    keep: bool,
) -> (Loader, Vec<Parsed>) {
    let mut loader = Loader::new(default_namespace);
    let mut parsed = Vec::new();
    if !dir.is_dir() {
        loader.diagnostics.error(
            &dir.display().to_string(),
            None,
            None,
            "not a directory: pass the folder holding identities/, policies/, ...".into(),
        );
        return (loader, parsed);
    }
    let mut files = Vec::new();
    collect(dir, dir, &mut files, &mut loader.diagnostics);
    files.sort();
    let parts = files::parallel(&files, |paths| {
        read_files(dir, paths, default_namespace, earlier, keep)
    });
    for (part, files) in parts {
        let offset = loader.mark();
        loader.merge(part);
        parsed.extend(files.into_iter().map(|p| Parsed {
            from: p.from.after(offset),
            to: p.to.after(offset),
            ..p
        }));
    }
    (loader, parsed)
}

fn read_files(
    dir: &Path,
    paths: &[std::path::PathBuf],
    default_namespace: &str,
    earlier: Option<&Earlier<'_>>,
    keep: bool,
) -> (Loader, Vec<Parsed>) {
    let mut loader = Loader::new(default_namespace);
    let mut parsed = Vec::new();
    for path in paths {
        let label = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        let bytes = match read_manifest(path) {
            Ok(bytes) => bytes,
            Err(message) => {
                loader.diagnostics.error(&label, None, None, message);
                continue;
            }
        };
        let same = earlier.and_then(|e| {
            let (old, from, to) = e.files.get(label.as_str())?;
            (*old == bytes.as_slice()).then_some((e.read, *from, *to))
        });
        if let Some((read, from, to)) = same {
            loader.copy_file(read, from, to);
            continue;
        }
        let from = loader.mark();
        loader.add_file(&label, &bytes, &Default::default());
        if keep {
            let to = loader.mark();
            parsed.push(Parsed {
                label,
                bytes,
                from,
                to,
            });
        }
    }
    (loader, parsed)
}

/// A file's bytes (opened once: its size is checked on the open file), or why not: over
/// [`MAX_FILE_BYTES`], or unreadable.
fn read_manifest(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| format!("cannot read: {e}");
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let size = file.metadata().map_err(cannot)?.len();
    if let Some(message) = files::oversized(size) {
        return Err(message);
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.read_to_end(&mut bytes).map_err(cannot)?;
    Ok(bytes)
}

fn collect(
    root: &Path,
    dir: &Path,
    out: &mut Vec<std::path::PathBuf>,
    diagnostics: &mut Diagnostics,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            diagnostics.error(
                &dir.display().to_string(),
                None,
                None,
                format!("cannot list directory: {e}"),
            );
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy();
        let kind = match entry.file_type() {
            Ok(t) if t.is_dir() => {
                if !entry.file_name().to_string_lossy().starts_with('.') {
                    collect(root, &path, out, diagnostics);
                }
                continue;
            }
            Ok(t) if t.is_file() => files::EntryKind::File,
            Ok(t) if t.is_symlink() => files::EntryKind::Symlink,
            _ => files::EntryKind::Other,
        };
        match files::classify(&relative, kind) {
            files::Entry::Manifest => out.push(path),
            files::Entry::Refused(why) => {
                diagnostics.error(&path.display().to_string(), None, None, why.into())
            }
            files::Entry::Ignored => {}
        }
    }
}

/// Whether a file name is a manifest's (`.yaml`, `.yml`).
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Whether a path relative to the source folder is read as a manifest: a `.yaml`/`.yml`
/// file with no hidden (dot) component, so `.github/workflows/*.yaml` is never an object.
/// The one rule for the controller's sync, `plan`/`validate --repo`, `audit` and the
/// directory walk, so they all read the same files.
pub fn is_manifest_path(relative: &str) -> bool {
    !relative
        .split('/')
        .any(|part| part.starts_with('.') && part != "." && part != "..")
        && is_manifest(Path::new(relative))
}

#[cfg(test)]
mod tests {
    use super::{is_manifest_path, load_dir, load_dirs};

    #[test]
    fn two_directories_read_as_each_alone() {
        let (base, head) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let identity = |name: &str, status: &str| {
            format!(
                "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: {name}\n\
                 spec:\n  type: Human\n  employment:\n    status: {status}\n"
            )
        };
        let write = |dir: &std::path::Path, path: &str, body: &str| {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        };
        for dir in [base.path(), head.path()] {
            write(dir, "identities/ann.yaml", &identity("ann", "Active"));
            write(dir, "identities/bad.yaml", "kind: [unclosed");
            write(
                dir,
                "identities/typo.yaml",
                &format!("{}  tpye: x\n", identity("typo", "Active")),
            );
            write(dir, "dup/ann.yaml", &identity("ann", "Active"));
        }
        write(
            base.path(),
            "identities/bob.yaml",
            &identity("bob", "Active"),
        );
        write(
            head.path(),
            "identities/bob.yaml",
            &identity("bob", "Terminated"),
        );
        write(head.path(), "identities/cy.yaml", &identity("cy", "Active"));
        let (b, h) = load_dirs(base.path(), head.path(), "default");
        let (b_alone, h_alone) = (
            load_dir(base.path(), "default"),
            load_dir(head.path(), "default"),
        );
        assert_eq!(format!("{b:?}"), format!("{b_alone:?}"));
        assert_eq!(format!("{h:?}"), format!("{h_alone:?}"));
        assert_eq!(h.snapshot.identities.len(), 3, "{h:?}");
        assert!(h.diagnostics.0.len() >= 3, "{:?}", h.diagnostics);
    }

    #[test]
    fn one_rule_says_which_paths_are_manifests() {
        for (path, manifest) in [
            ("identities/ann.yaml", true),
            ("policies/p.yml", true),
            ("a.yaml", true),
            ("./a.yaml", true),
            ("README.md", false),
            ("identities/ann.yaml.bak", false),
            (".github/workflows/ci.yaml", false),
            ("tenant/.hidden/x.yaml", false),
            (".x.yaml", false),
            ("identities", false),
        ] {
            assert_eq!(is_manifest_path(path), manifest, "{path}");
        }
    }
}
