//! Where the CLI reads manifests from: a directory, or a revision of a Git repository.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use clap::Args;
use git2::Repository;
use jiff::Timestamp;

use crate::source::{CommitInfo, Loaded, load_dir, read_tree};

/// Options shared by every command that reads manifests.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Namespace for objects that do not set one.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Evaluate at this instant (RFC 3339) instead of the current time, for reproducible runs.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    /// Longest a non-human identity keeps access after its owner's end date (Go duration).
    #[arg(long, default_value = "168h", value_name = "DURATION")]
    pub owner_grace: String,
    /// Longest exception window when no policy granting the entitlement sets maxDuration.
    #[arg(long, default_value = "2160h", value_name = "DURATION")]
    pub max_exception_duration: String,
}

impl CommonArgs {
    /// The instant to evaluate at.
    pub fn now(&self) -> Result<Timestamp, String> {
        match &self.now {
            Some(text) => text.parse().map_err(|e| {
                format!(
                    "--now {text:?} is not an RFC 3339 timestamp like 2026-12-01T09:00:00Z: {e}"
                )
            }),
            None => Ok(Timestamp::now()),
        }
    }

    /// Engine settings from the flags.
    pub fn settings(&self) -> Result<crate::engine::Settings, String> {
        use crate::engine::lifecycle::parse_duration;
        Ok(crate::engine::Settings {
            owner_grace: parse_duration(&self.owner_grace)
                .map_err(|e| format!("--owner-grace: {e}"))?,
            default_max_exception: parse_duration(&self.max_exception_duration)
                .map_err(|e| format!("--max-exception-duration: {e}"))?,
        })
    }
}

/// Where one set of manifests is read from: a directory, or a revision of a repository.
#[derive(Args, Debug, Clone)]
pub struct RevisionArgs {
    /// Directory of manifests (default: the current directory). Not used with --repo.
    #[arg(conflicts_with = "repo")]
    pub dir: Option<PathBuf>,
    /// Read from this Git repository's objects instead (no checkout).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// With --repo: the revision.
    #[arg(long, default_value = "HEAD", requires = "repo")]
    pub rev: String,
    /// With --repo: the folder inside the repository holding the manifests.
    #[arg(long, value_name = "SUBDIR", requires = "repo")]
    pub path: Option<String>,
}

impl RevisionArgs {
    /// Reads the manifests.
    pub fn read(&self, namespace: &str) -> Result<Revision, String> {
        match &self.repo {
            Some(repo) => from_git(
                &open_repo(repo)?,
                &self.rev,
                self.path.as_deref(),
                namespace,
            ),
            None => Ok(from_dir(
                self.dir.as_deref().unwrap_or(Path::new(".")),
                namespace,
            )),
        }
    }
}

/// One set of manifests, and where it came from.
pub struct Revision {
    /// Directory path or `repo@rev`.
    pub label: String,
    /// The commit, when read from Git.
    pub commit: Option<CommitInfo>,
    /// Objects and diagnostics.
    pub loaded: Loaded,
}

/// Reads a directory.
pub fn from_dir(dir: &Path, namespace: &str) -> Revision {
    Revision {
        label: dir.display().to_string(),
        commit: None,
        loaded: load_dir(dir, namespace),
    }
}

/// Opens a repository.
pub fn open_repo(path: &Path) -> Result<Repository, String> {
    Repository::discover(path).map_err(|e| {
        format!(
            "{} is not a Git repository: {}",
            path.display(),
            e.message()
        )
    })
}

/// Reads a revision of a repository without a checkout.
pub fn from_git(
    repo: &Repository,
    rev: &str,
    subdir: Option<&str>,
    namespace: &str,
) -> Result<Revision, String> {
    let tree = read_tree(repo, rev, subdir, namespace)?;
    Ok(Revision {
        label: format!(
            "{rev} ({})",
            &tree.commit.id[..12.min(tree.commit.id.len())]
        ),
        commit: Some(tree.commit),
        loaded: tree.loaded,
    })
}

/// Paths changed per commit between two revisions, for attributing changes.
pub type Attribution = HashMap<String, CommitInfo>;

/// The file of each object, by `Kind/namespace/name`.
pub type Files = BTreeMap<String, String>;
