//! `gatehouse review open`: the I/O around [`Engine::open_review`]. Reads a revision of
//! the policy repository, evaluates it, and commits one AccessReviewResponse file per
//! reviewer (every item `decision: pending`) on a branch for a pull request, signed like
//! `hr import`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::commit::{self, Change, Target};
use super::inputs::{CommonArgs, from_git, open_repo};
use crate::api::{AccessReview, Kind, ObjectKey};
use crate::engine::lifecycle::{parse_duration, start_of};
use crate::engine::review::OpenItem;
use crate::engine::{Engine, NothingHeld, Source, SourceKind};

/// Most commits walked to find when each source was first and last changed.
const HISTORY_LIMIT: usize = 10_000;

/// `gatehouse review ...`.
#[derive(Args, Debug)]
pub struct ReviewArgs {
    #[command(subcommand)]
    command: ReviewCommand,
}

#[derive(Subcommand, Debug)]
enum ReviewCommand {
    /// Open a cycle of an AccessReview: one file of pending items per reviewer, committed
    /// on a branch.
    Open(Box<OpenArgs>),
}

/// Arguments of `gatehouse review open`.
#[derive(Args, Debug)]
pub struct OpenArgs {
    /// The AccessReview's name.
    name: String,
    /// The Git repository holding the manifests.
    #[arg(long, value_name = "PATH")]
    repo: PathBuf,
    /// The folder inside the repository holding the manifests (default: its root).
    #[arg(long, value_name = "SUBDIR", default_value = "")]
    path: String,
    /// The branch to commit on (default `review/NAME-CYCLE`); created from --base.
    #[arg(long, value_name = "NAME")]
    branch: Option<String>,
    /// The revision reviewed, and the one a new branch starts from.
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    base: String,
    /// The cycle's start date (default: the day of --now, UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    cycle: Option<String>,
    /// Sign the commit with this OpenSSH private key (unencrypted), in git's SSH format.
    #[arg(long, value_name = "KEY")]
    sign_with: Option<PathBuf>,
    /// The commit's author, `Name <mail>`.
    #[arg(
        long,
        default_value = "gatehouse review open <review-open@gatehouse.invalid>"
    )]
    author: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs `gatehouse review`.
pub fn run(args: ReviewArgs) -> Result<ExitCode, String> {
    match args.command {
        ReviewCommand::Open(args) => open(*args),
    }
}

fn open(args: OpenArgs) -> Result<ExitCode, String> {
    let now = args.common.now()?;
    let cycle: Date = match &args.cycle {
        Some(text) => text
            .parse()
            .map_err(|_| format!("--cycle {text:?} is not a date like 2026-12-01"))?,
        None => now.to_zoned(TimeZone::UTC).date(),
    };
    let branch = args
        .branch
        .clone()
        .unwrap_or_else(|| format!("review/{}-{cycle}", args.name));
    let target = Target {
        branch: &branch,
        base: &args.base,
    };
    let repo = open_repo(&args.repo)?;
    let parent = target.parent(&repo)?;
    let sub = Some(args.path.trim_matches('/')).filter(|s| !s.is_empty());
    let started = std::time::Instant::now();
    let revision = from_git(&repo, &parent.id().to_string(), sub, &args.common.namespace)?;
    tracing::debug!(elapsed = ?started.elapsed(), "tree read");
    if revision.loaded.diagnostics.has_errors() {
        eprintln!(
            "warning: manifest errors at {} (run `gatehouse validate`); objects with errors are left out of the review",
            revision.label
        );
    }
    let snapshot = &revision.loaded.snapshot;
    let candidates: Vec<&AccessReview> = snapshot
        .reviews
        .iter()
        .filter(|r| r.metadata.name.as_deref() == Some(args.name.as_str()))
        .collect();
    let review = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Err(format!(
                "AccessReview {:?} is not defined at {}: add it (kind AccessReview) or check the name",
                args.name, revision.label
            ));
        }
        many => many
            .iter()
            .find(|r| r.metadata.namespace.as_deref() == Some(&args.common.namespace))
            .copied()
            .ok_or_else(|| {
                format!(
                    "AccessReview {:?} is defined in several namespaces: pick one with --namespace",
                    args.name
                )
            })?,
    };
    let namespace = review.metadata.namespace.clone().unwrap_or_default();
    let due = parse_duration(&review.spec.due_period)
        .ok()
        .and_then(|d| start_of(cycle).checked_add(d).ok());
    let review = review.clone();
    let history = source_history(&repo, &parent, sub, &revision.loaded.files, &namespace)?;
    tracing::debug!(elapsed = ?started.elapsed(), "history read");
    let engine = Engine::new(&revision.loaded.snapshot, args.common.settings());
    // The engine keeps what it needs: the parsed objects go before the evaluation's peak.
    drop(revision);
    let desired = engine.evaluate_namespace(&namespace, now, &NothingHeld);
    tracing::debug!(elapsed = ?started.elapsed(), "evaluated");
    let opened = engine.open_review(&desired, &review);
    tracing::debug!(elapsed = ?started.elapsed(), "opened");
    let source_info = |source: &Source| {
        let kind = match source.kind {
            SourceKind::AccessPolicy => Kind::AccessPolicy,
            SourceKind::Exception => Kind::Exception,
        };
        let (since, last) = history
            .get(&ObjectKey::new(kind, &namespace, &source.name))
            .map(|(s, l)| (s.as_deref(), l.as_deref()))
            .unwrap_or_default();
        SourceInfo {
            digest: engine.source_digest(&namespace, source.kind, &source.name),
            granted_since: since,
            last_change: last,
        }
    };

    let base_tree = parent.tree().map_err(|e| e.message().to_string())?;
    let mut files = Vec::with_capacity(opened.by_reviewer.len());
    let mut kept_existing = Vec::new();
    let mut items = 0usize;
    let mut bytes = 0usize;
    let mut text = String::new();
    for (reviewer, list) in &opened.by_reviewer {
        let path = format!("reviews/{}/{cycle}/{reviewer}.yaml", args.name);
        let full = match sub {
            Some(s) => format!("{s}/{path}"),
            None => path.clone(),
        };
        if base_tree.get_path(std::path::Path::new(&full)).is_ok() {
            // Never overwrite a reviewer's answers.
            kept_existing.push(path);
            continue;
        }
        text.clear();
        render(
            &mut text,
            &review,
            &namespace,
            reviewer,
            cycle,
            due,
            list,
            &source_info,
        );
        files.push((path, commit::blob(&repo, &text)?));
        items += list.len();
        bytes += text.len();
    }
    tracing::debug!(elapsed = ?started.elapsed(), "files written");
    let mut stdout = std::io::stdout().lock();
    let summary = format!(
        "AccessReview/{} cycle {cycle}: {items} item(s) for {} reviewer(s), due {}",
        args.name,
        files.len(),
        due.map(|d| d.to_string())
            .unwrap_or_else(|| "(no valid duePeriod)".into())
    );
    writeln!(stdout, "Opened {summary}.").ok();
    for path in &kept_existing {
        writeln!(stdout, "  kept {path}: it already exists on the branch").ok();
    }
    const SHOWN: usize = 20;
    for (identity, entitlement, why) in opened.unassigned.iter().take(SHOWN) {
        writeln!(stdout, "  unassigned: {identity} {entitlement}: {why}").ok();
    }
    if opened.unassigned.len() > SHOWN {
        writeln!(
            stdout,
            "  ... and {} more unassigned item(s)",
            opened.unassigned.len() - SHOWN
        )
        .ok();
    }
    if files.is_empty() {
        writeln!(stdout, "Nothing to commit.").ok();
        return Ok(ExitCode::SUCCESS);
    }
    let mut message = format!("review open: {summary}\n\n");
    for (reviewer, list) in opened.by_reviewer.iter().take(200) {
        let _ = writeln!(message, "{reviewer}: {} item(s)", list.len());
    }
    if opened.by_reviewer.len() > 200 {
        let _ = writeln!(message, "... and {} more", opened.by_reviewer.len() - 200);
    }
    let count = files.len();
    let change = Change {
        subdir: sub,
        files,
        author: &args.author,
        message,
        sign_with: args.sign_with.as_deref(),
        reflog: "gatehouse review open",
    };
    match commit::commit(&repo, &parent, &target, &change)? {
        None => writeln!(
            stdout,
            "Nothing to change: the branch already holds these files."
        )
        .ok(),
        Some(id) => writeln!(
            stdout,
            "Committed {} on {branch}{}: {count} file(s), {bytes} bytes.",
            &id.to_string()[..12],
            if args.sign_with.is_some() {
                " (signed)"
            } else {
                ""
            },
        )
        .ok(),
    };
    tracing::debug!(elapsed = ?started.elapsed(), "committed");
    Ok(ExitCode::SUCCESS)
}

/// A source's (granted since, last change commit).
type History = (Option<String>, Option<String>);

/// For every policy and exception of `namespace`: (granted since, last change), from the
/// first-parent history of its file (the oldest and newest commit that changed it).
fn source_history(
    repo: &git2::Repository,
    head: &git2::Commit<'_>,
    subdir: Option<&str>,
    files: &super::inputs::Files,
    namespace: &str,
) -> Result<HashMap<ObjectKey, History>, String> {
    let mut by_path: HashMap<&str, Vec<&ObjectKey>> = HashMap::new();
    for (key, file) in files {
        if matches!(key.kind, Kind::AccessPolicy | Kind::Exception) && key.namespace == namespace {
            by_path.entry(file.as_str()).or_default().push(key);
        }
    }
    let mut out: HashMap<ObjectKey, History> = HashMap::new();
    if by_path.is_empty() {
        return Ok(out);
    }
    let changes = crate::source::history::changes(repo, None, head.id(), subdir, HISTORY_LIMIT)?;
    let mut dates: HashMap<git2::Oid, String> = HashMap::new();
    for change in &changes {
        let date = dates
            .entry(change.commit)
            .or_insert_with(|| {
                repo.find_commit(change.commit)
                    .ok()
                    .and_then(|c| jiff::Timestamp::from_second(c.time().seconds()).ok())
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            })
            .clone();
        for path in &change.paths {
            for key in by_path.get(path.as_str()).into_iter().flatten() {
                let slot = out.entry((*key).clone()).or_default();
                // Newest first: the first commit seen is the last change, the last the first.
                if slot.1.is_none() {
                    slot.1 = Some(change.commit.to_string());
                }
                slot.0 = Some(date.clone());
            }
        }
    }
    Ok(out)
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quoted(out: &mut String, text: &str) {
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && !text.is_empty()
        && text.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
    {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// What a file says about an item's source.
struct SourceInfo<'a> {
    digest: Option<&'a str>,
    granted_since: Option<&'a str>,
    last_change: Option<&'a str>,
}

/// One reviewer's file: an AccessReviewResponse, one block per item, `decision: pending`
/// on a line of its own so that a review is a one-word edit per item.
#[allow(clippy::too_many_arguments)]
fn render<'a>(
    out: &mut String,
    review: &AccessReview,
    namespace: &str,
    reviewer: &str,
    cycle: Date,
    due: Option<jiff::Timestamp>,
    items: &[OpenItem<'_>],
    source_info: &dyn Fn(&Source) -> SourceInfo<'a>,
) {
    let name = review.metadata.name.as_deref().unwrap_or_default();
    let _ = writeln!(
        out,
        "# Access review {name}, cycle {cycle}, reviewer {reviewer}: answers due {}.",
        due.map(|d| d.to_string())
            .unwrap_or_else(|| "(no valid duePeriod)".into())
    );
    let _ = writeln!(
        out,
        "# For each item set decision to keep or revoke and write a justification, then commit\n# signed with your own key. Items left pending after the due date are {}.",
        match review.spec.on_no_response {
            crate::api::NoResponse::Revoke => "revoked (onNoResponse: Revoke)",
            crate::api::NoResponse::Keep => "kept, and reported overdue (onNoResponse: Keep)",
        }
    );
    let _ = write!(
        out,
        "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessReviewResponse\nmetadata:\n  name: {name}-{cycle}-{reviewer}\n  namespace: {namespace}\nspec:\n  review: {name}\n  reviewer: {reviewer}\n  cycle: \"{cycle}\"\n  items:\n"
    );
    for item in items {
        let info = source_info(item.source);
        out.push_str("  - identity: ");
        quoted(out, item.identity);
        out.push_str("\n    entitlement: {target: ");
        quoted(out, &item.entitlement.target);
        if let Some(kind) = &item.entitlement.kind {
            out.push_str(", kind: ");
            quoted(out, kind);
        }
        if let Some(ns) = &item.entitlement.namespace {
            out.push_str(", namespace: ");
            quoted(out, ns);
        }
        out.push_str(", name: ");
        quoted(out, &item.entitlement.name);
        out.push_str("}\n    source: {kind: ");
        out.push_str(match item.source.kind {
            SourceKind::AccessPolicy => "AccessPolicy",
            SourceKind::Exception => "Exception",
        });
        out.push_str(", name: ");
        quoted(out, &item.source.name);
        if let Some(digest) = info.digest {
            out.push_str(", digest: \"");
            out.push_str(digest);
            out.push('"');
        }
        out.push_str("}\n");
        if let Some(since) = info.granted_since {
            out.push_str("    grantedSince: \"");
            out.push_str(since);
            out.push_str("\"\n");
        }
        if let Some(commit) = info.last_change {
            out.push_str("    lastChange: \"");
            out.push_str(commit);
            out.push_str("\"\n");
        }
        out.push_str("    decision: pending\n    justification: \"\"\n");
    }
}
