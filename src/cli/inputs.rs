//! Where the CLI reads manifests from: a directory, or a revision of a Git repository.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use clap::Args;
use git2::Repository;
use jiff::Timestamp;

use crate::api::ObjectKey;
use crate::engine::Settings;
use crate::source::{CommitInfo, Loaded, load_dir, load_dirs, read_tree};

/// Options shared by every command that reads manifests.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Namespace for objects that do not set one.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Evaluate at this instant (RFC 3339) instead of the current time, for reproducible runs.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The engine's tunables, the same flags for `run` and the offline commands; defaults
/// from [`Settings::default`](crate::engine::Settings).
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Longest a non-human identity keeps access after its owner's end date (Go duration).
    #[arg(long, value_name = "DURATION", default_value_t = GoDuration(Settings::default().owner_grace))]
    pub owner_grace: GoDuration,
    /// Longest exception window when no policy granting the entitlement sets maxDuration.
    #[arg(long, value_name = "DURATION", default_value_t = GoDuration(Settings::default().default_max_exception))]
    pub max_exception_duration: GoDuration,
    /// Longest a break-glass Exception is in force (Go duration, at most 24h); one value
    /// for the whole controller, every tenant alike.
    #[arg(long, value_name = "DURATION", value_parser = break_glass_max, default_value_t = GoDuration(Settings::default().break_glass_max))]
    pub break_glass_max: GoDuration,
    /// How long a break-glass Exception created outside Git may wait for the Git commit
    /// of the same Exception before it is revoked early (Go duration).
    #[arg(long, value_name = "DURATION", default_value_t = GoDuration(Settings::default().break_glass_ratify))]
    pub break_glass_ratify: GoDuration,
}

/// `--break-glass-max`: a duration no longer than the hard maximum.
fn break_glass_max(text: &str) -> Result<GoDuration, String> {
    let d: GoDuration = text.parse()?;
    let hard = jiff::SignedDuration::from_hours(crate::api::BREAK_GLASS_HARD_MAX_HOURS);
    if d.0 > hard || d.0 <= jiff::SignedDuration::ZERO {
        return Err(format!(
            "{text} is outside the allowed range: a break-glass exception lasts more than 0 and at most {}h",
            crate::api::BREAK_GLASS_HARD_MAX_HOURS
        ));
    }
    Ok(d)
}

impl EngineArgs {
    /// Engine settings from the flags.
    pub fn settings(&self) -> Settings {
        Settings {
            owner_grace: self.owner_grace.0,
            default_max_exception: self.max_exception_duration.0,
            break_glass_max: self.break_glass_max.0,
            break_glass_ratify: self.break_glass_ratify.0,
        }
    }
}

/// A duration flag written the Go way (`168h`, `90m`, `1h30m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoDuration(pub jiff::SignedDuration);

impl std::str::FromStr for GoDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        crate::engine::lifecycle::parse_duration(text).map(Self)
    }
}

impl std::fmt::Display for GoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.0.as_secs();
        match seconds {
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
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
    pub fn settings(&self) -> Settings {
        self.engine.settings()
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

/// Reads a base and a head directory, parsing the files they share once.
pub fn from_dirs(base: &Path, head: &Path, namespace: &str) -> (Revision, Revision) {
    let (base_loaded, head_loaded) = load_dirs(base, head, namespace);
    let revision = |dir: &Path, loaded| Revision {
        label: dir.display().to_string(),
        commit: None,
        loaded,
    };
    (revision(base, base_loaded), revision(head, head_loaded))
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

/// The file of each object.
pub type Files = BTreeMap<ObjectKey, String>;

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{EngineArgs, GoDuration, Settings};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        engine: EngineArgs,
    }

    #[test]
    fn flag_defaults_are_the_engines_defaults() {
        let settings = Cli::parse_from(["x"]).engine.settings();
        let defaults = Settings::default();
        assert_eq!(settings.owner_grace, defaults.owner_grace);
        assert_eq!(
            settings.default_max_exception,
            defaults.default_max_exception
        );
        let set = Cli::parse_from(["x", "--owner-grace", "1h30m"])
            .engine
            .settings();
        assert_eq!(set.owner_grace, jiff::SignedDuration::from_mins(90));
        assert_eq!(settings.break_glass_max, defaults.break_glass_max);
        assert_eq!(settings.break_glass_ratify, defaults.break_glass_ratify);
        let set = Cli::parse_from(["x", "--break-glass-max", "24h"])
            .engine
            .settings();
        assert_eq!(set.break_glass_max, jiff::SignedDuration::from_hours(24));
        assert!(Cli::try_parse_from(["x", "--break-glass-max", "25h"]).is_err());
    }

    #[test]
    fn durations_print_as_they_parse() {
        for text in ["168h", "90m", "45s", "2160h"] {
            let parsed: GoDuration = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!("1h30m".parse::<GoDuration>().unwrap().to_string(), "90m");
        assert!("a week".parse::<GoDuration>().is_err());
    }
}
