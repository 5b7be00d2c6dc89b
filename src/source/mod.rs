//! Reading manifests: from a directory or straight from Git objects, into a checked
//! [`Snapshot`](crate::engine::Snapshot) plus every problem found on the way.

mod diagnostics;
mod git_tree;
mod manifest;

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
    collect(dir, &mut files, &mut loader.diagnostics);
    files.sort();
    for path in files {
        let label = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_FILE_BYTES as u64 => {
                loader.diagnostics.error(
                    &label,
                    None,
                    None,
                    format!(
                        "file is {} bytes, over the {MAX_FILE_BYTES}-byte limit: split it",
                        meta.len()
                    ),
                );
            }
            Ok(_) => match std::fs::read(&path) {
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
    loader.finish()
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>, diagnostics: &mut Diagnostics) {
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
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect(&path, out, diagnostics),
            Ok(t) if t.is_file() && is_manifest(&path) => out.push(path),
            Ok(t) if t.is_symlink() && is_manifest(&path) => diagnostics.error(
                &path.display().to_string(),
                None,
                None,
                "symbolic links are not followed: commit the file itself".into(),
            ),
            _ => {}
        }
    }
}

/// Whether a path names a manifest file.
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}
