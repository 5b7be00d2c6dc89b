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
pub use manifest::{Loaded, Loader, MAX_FILE_BYTES};

use std::path::Path;

/// Reads every `*.yaml` / `*.yml` file under `dir` (recursively, sorted).
pub fn load_dir(dir: &Path, default_namespace: &str) -> Loaded {
    let mut loader = Loader::new(default_namespace);
    let mut files = Vec::new();
    if !dir.is_dir() {
        loader.diagnostics.error(
            &dir.display().to_string(),
            None,
            None,
            "not a directory: pass the folder holding identities/, policies/, ...".into(),
        );
        return loader.finish();
    }
    collect(dir, dir, &mut files, &mut loader.diagnostics);
    files.sort();
    for part in files::parallel(&files, |paths| read_files(dir, paths, default_namespace)) {
        loader.merge(part);
    }
    loader.finish()
}

fn read_files(dir: &Path, paths: &[std::path::PathBuf], default_namespace: &str) -> Loader {
    let mut loader = Loader::new(default_namespace);
    for path in paths {
        let label = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        match std::fs::metadata(path) {
            Ok(meta) if files::oversized(meta.len()).is_some() => {
                let message = files::oversized(meta.len()).unwrap_or_default();
                loader.diagnostics.error(&label, None, None, message);
            }
            Ok(_) => match std::fs::read(path) {
                Ok(bytes) => loader.add_file(&label, &bytes, &Default::default()),
                Err(e) => loader
                    .diagnostics
                    .error(&label, None, None, format!("cannot read: {e}")),
            },
            Err(e) => loader
                .diagnostics
                .error(&label, None, None, format!("cannot read: {e}")),
        }
    }
    loader
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
    use super::is_manifest_path;

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
