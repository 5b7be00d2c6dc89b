//! `gatehouse hr import`: the I/O around [`crate::hr::import`]. Reads the feed, the
//! mapping and the Identity files (from the working tree, or with `--commit` from Git
//! objects), then writes the changed files, or commits them on a branch, signed, and prints
//! the plan of that branch against its base.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use git2::{ObjectType, Repository, TreeWalkMode, TreeWalkResult};

use super::Output;
use super::inputs::{CommonArgs, open_repo};
use crate::hr::{ExistingFile, Format, Kind, Limit, Mapping, Missing, Options, Outcome};
use crate::source::{MAX_FILE_BYTES, is_manifest_path};

/// Exit code when the mass-change brake stops an import.
pub const EXIT_MASS_CHANGE: u8 = 3;

/// `gatehouse hr ...`.
#[derive(Args, Debug)]
pub struct HrArgs {
    #[command(subcommand)]
    command: HrCommand,
}

#[derive(Subcommand, Debug)]
enum HrCommand {
    /// Import an HR feed into Identity files (and optionally a signed commit on a branch).
    Import(Box<ImportArgs>),
}

/// Report formats of `hr import`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// For people at a terminal.
    Text,
    /// A pull-request body.
    Markdown,
}

/// Arguments of `gatehouse hr import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The feed file, or `-` for standard input.
    #[arg(long, value_name = "FILE|-")]
    from: String,
    /// The feed's format.
    #[arg(long, value_enum)]
    format: Format,
    /// The mapping from feed columns to Identity fields.
    #[arg(long, value_name = "MAPPING.yaml")]
    mapping: PathBuf,
    /// The Git repository holding the manifests.
    #[arg(long, value_name = "PATH")]
    repo: PathBuf,
    /// The folder inside the repository holding the manifests (default: its root).
    #[arg(long, value_name = "SUBDIR", default_value = "")]
    path: String,
    /// With --commit: the branch to commit on; created from --base when missing.
    #[arg(long, value_name = "NAME", default_value = "hr-import")]
    branch: String,
    /// With --commit: the revision a new branch starts from, and the plan's base.
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    base: String,
    /// Commit on --branch (Git objects only; the working tree and index are not touched)
    /// instead of writing files into the working tree.
    #[arg(long)]
    commit: bool,
    /// With --commit: sign with this OpenSSH private key (unencrypted), in git's SSH format.
    #[arg(long, value_name = "KEY", requires = "commit")]
    sign_with: Option<PathBuf>,
    /// With --commit: the author, `Name <mail>`.
    #[arg(
        long,
        default_value = "gatehouse hr import <hr-import@gatehouse.invalid>"
    )]
    author: String,
    /// Most terminations (and new end dates) allowed: a number, or a percentage of the
    /// existing human identities.
    #[arg(long, value_name = "N|P%", default_value = "10%")]
    max_changes: Limit,
    /// Go ahead past --max-changes; the report and commit say so on their first line.
    #[arg(long)]
    allow_mass_change: bool,
    /// What to do with identities a full feed no longer carries.
    #[arg(long, value_enum, default_value = "keep")]
    missing: Missing,
    /// The feed carries only changed records: nobody is missing from it.
    #[arg(long, conflicts_with = "missing")]
    delta: bool,
    /// Import the valid records and list the invalid ones, instead of writing nothing.
    #[arg(long)]
    skip_invalid: bool,
    /// With --commit: do not print the plan after committing.
    #[arg(long)]
    no_plan: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: ReportFormat,
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs `gatehouse hr`.
pub fn run(args: HrArgs) -> Result<ExitCode, String> {
    match args.command {
        HrCommand::Import(args) => import(*args),
    }
}

fn read_source(from: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    if from == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read the feed from standard input: {e}"))?;
    } else {
        bytes = std::fs::read(from).map_err(|e| format!("cannot read the feed {from}: {e}"))?;
    }
    Ok(bytes)
}

fn subdir(path: &str) -> Option<&str> {
    Some(path.trim_matches('/')).filter(|s| !s.is_empty())
}

/// Reads every manifest under `subdir` of a commit's tree.
fn files_from_git(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    subdir: Option<&str>,
) -> Result<Vec<ExistingFile>, String> {
    let tree = match crate::source::history::subtree(repo, commit, subdir)? {
        Some(t) => t,
        None => return Ok(Vec::new()),
    };
    let mut blobs = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let path = format!("{dir}{}", entry.name().unwrap_or("?"));
        if entry.kind() == Some(ObjectType::Blob)
            && entry.filemode() != 0o120000
            && is_manifest_path(&path)
        {
            blobs.push((path, entry.id()));
        }
        TreeWalkResult::Ok
    })
    .map_err(|e| e.message().to_string())?;
    let odb = repo.odb().map_err(|e| e.message().to_string())?;
    let mut files = Vec::with_capacity(blobs.len());
    for (path, oid) in blobs {
        let object = odb.read(oid).map_err(|e| e.message().to_string())?;
        if object.len() > MAX_FILE_BYTES {
            continue;
        }
        if let Ok(text) = std::str::from_utf8(object.data()) {
            files.push(ExistingFile {
                path,
                text: text.to_string(),
            });
        }
    }
    Ok(files)
}

/// Reads every manifest under a directory of the working tree.
fn files_from_dir(root: &Path) -> Result<Vec<ExistingFile>, String> {
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            if relative.split('/').any(|p| p.starts_with('.')) {
                continue;
            }
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && is_manifest_path(&relative) {
                let bytes = std::fs::read(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if bytes.len() <= MAX_FILE_BYTES
                    && let Ok(text) = String::from_utf8(bytes)
                {
                    out.push(ExistingFile {
                        path: relative,
                        text,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The commit message: a summary line, then the changes.
pub fn commit_message(outcome: &Outcome, allowed_mass_change: bool, feed: &str) -> String {
    let mut m = format!("hr import: {}\n\n", outcome.summary());
    if allowed_mass_change && outcome.brake_tripped() {
        m.push_str(&format!(
            "{} (allowed with --allow-mass-change)\n\n",
            outcome.brake_line()
        ));
    }
    m.push_str(&format!(
        "Feed {feed}: {} records, {} unchanged.\n\n",
        outcome.records, outcome.unchanged
    ));
    const MAX: usize = 200;
    for c in outcome.changes.iter().take(MAX) {
        m.push_str(&format!("{}\n", change_line(c)));
    }
    if outcome.changes.len() > MAX {
        m.push_str(&format!("... and {} more\n", outcome.changes.len() - MAX));
    }
    if !outcome.invalid_records.is_empty() {
        m.push_str(&format!(
            "\nSkipped (invalid): {}\n",
            outcome
                .invalid_records
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    m
}

fn kinds(c: &crate::hr::Change) -> String {
    c.kinds
        .iter()
        .map(|k| k.label())
        .collect::<Vec<_>>()
        .join(", ")
}

fn change_line(c: &crate::hr::Change) -> String {
    let fields: Vec<String> = c
        .fields
        .iter()
        .filter(|(f, _, _)| {
            !c.kinds.contains(&Kind::Joiner) || matches!(f, crate::hr::Field::Status)
        })
        .map(|(f, old, new)| {
            format!(
                "{f}: {} -> {}",
                old.as_deref().unwrap_or("(none)"),
                new.as_deref().unwrap_or("(none)")
            )
        })
        .collect();
    if c.kinds.contains(&Kind::Reowned)
        && let Some((_, Some(old), Some(new))) = c.fields.first()
    {
        return format!(
            "{} {}: owner: {old} -> {new} ({old}'s manager, proposed as interim owner; annotated {}: {old}, so its credentials are still rotated once)",
            kinds(c),
            c.name,
            crate::api::annotations::PREVIOUS_OWNER
        );
    }
    format!(
        "{} {} (employee {}): {}",
        kinds(c),
        c.name,
        c.employee_id,
        fields.join("; ")
    )
}

fn write_report(
    out: &mut impl Write,
    format: ReportFormat,
    outcome: &Outcome,
    allowed_mass_change: bool,
) -> std::io::Result<()> {
    let md = format == ReportFormat::Markdown;
    if allowed_mass_change && outcome.brake_tripped() {
        if md {
            writeln!(
                out,
                "> **⚠ {} (allowed with --allow-mass-change)**\n",
                outcome.brake_line()
            )?;
        } else {
            writeln!(
                out,
                "⚠ {} (allowed with --allow-mass-change)",
                outcome.brake_line()
            )?;
        }
    }
    if md {
        writeln!(out, "### HR import\n")?;
        writeln!(
            out,
            "{}; {} records, {} unchanged.\n",
            outcome.summary(),
            outcome.records,
            outcome.unchanged
        )?;
        if !outcome.changes.is_empty() {
            writeln!(
                out,
                "| change | identity | employee | fields |\n|---|---|---|---|"
            )?;
            for c in &outcome.changes {
                let fields: Vec<String> = c
                    .fields
                    .iter()
                    .map(|(f, old, new)| {
                        format!(
                            "`{f}`: {} → {}",
                            old.as_deref().unwrap_or("—"),
                            new.as_deref().unwrap_or("—")
                        )
                    })
                    .collect();
                writeln!(
                    out,
                    "| {} | `{}` | {} | {} |",
                    kinds(c),
                    c.name,
                    c.employee_id,
                    fields.join("<br>")
                )?;
            }
            writeln!(out)?;
        }
    } else {
        writeln!(
            out,
            "HR import: {} ({} records, {} unchanged)",
            outcome.summary(),
            outcome.records,
            outcome.unchanged
        )?;
        for c in &outcome.changes {
            writeln!(
                out,
                "  {} {}",
                if c.created { "+" } else { "~" },
                change_line(c)
            )?;
        }
    }
    let rewritten: Vec<&str> = outcome
        .changes
        .iter()
        .filter(|c| c.rewritten)
        .map(|c| c.path.as_str())
        .collect();
    let attention = !outcome.notices.is_empty() || !rewritten.is_empty();
    if attention {
        writeln!(
            out,
            "{}",
            if md {
                "#### Needs attention\n"
            } else {
                "Needs attention:"
            }
        )?;
        for n in &outcome.notices {
            writeln!(
                out,
                "{}{}: {}",
                if md { "- " } else { "  " },
                n.subject,
                n.message
            )?;
        }
        for p in rewritten {
            writeln!(
                out,
                "{}{p}: rewritten from its parsed form (its layout could not be edited in place): comments in it were dropped",
                if md { "- " } else { "  " }
            )?;
        }
        if md {
            writeln!(out)?;
        }
    }
    if !outcome.errors.is_empty() {
        writeln!(
            out,
            "{}",
            if md {
                "#### Skipped records (invalid)\n"
            } else {
                "Skipped (invalid, --skip-invalid):"
            }
        )?;
        for e in &outcome.errors {
            writeln!(out, "{}{e}", if md { "- " } else { "  " })?;
        }
        if md {
            writeln!(out)?;
        }
    }
    Ok(())
}

fn import(args: ImportArgs) -> Result<ExitCode, String> {
    let now = args.common.now()?;
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let mapping_text = std::fs::read_to_string(&args.mapping)
        .map_err(|e| format!("cannot read {}: {e}", args.mapping.display()))?;
    let mapping = match Mapping::parse(&mapping_text) {
        Ok(m) => m,
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", args.mapping.display());
            }
            eprintln!("hr import refused: fix the mapping above; nothing was written");
            return Ok(ExitCode::FAILURE);
        }
    };
    let feed = match crate::hr::feed::parse(args.format, &read_source(&args.from)?) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", args.from);
            eprintln!("hr import refused: nothing was written");
            return Ok(ExitCode::FAILURE);
        }
    };
    let repo = open_repo(&args.repo)?;
    let sub = subdir(&args.path);
    let target = super::commit::Target {
        branch: &args.branch,
        base: &args.base,
    };
    let started = std::time::Instant::now();
    let (files, parent) = if args.commit {
        let parent = target.parent(&repo)?;
        (files_from_git(&repo, &parent, sub)?, Some(parent))
    } else {
        let workdir = repo
            .workdir()
            .ok_or("the repository is bare: use --commit")?
            .to_path_buf();
        let root = match sub {
            Some(s) => workdir.join(s),
            None => workdir,
        };
        (files_from_dir(&root)?, None)
    };
    tracing::debug!(elapsed = ?started.elapsed(), files = files.len(), "tree read");
    let options = Options {
        today,
        delta: args.delta,
        missing: args.missing,
        max_changes: args.max_changes,
    };
    let outcome = crate::hr::import(&mapping, &feed, &files, &options);
    drop(files);
    tracing::debug!(elapsed = ?started.elapsed(), changes = outcome.changes.len(), "imported");

    if !outcome.errors.is_empty() && !args.skip_invalid {
        for e in &outcome.errors {
            eprintln!("{}: {e}", args.from);
        }
        eprintln!(
            "hr import refused: {} invalid record(s) above; nothing was written (fix them, or pass --skip-invalid to import the rest)",
            outcome.invalid_records.len().max(1)
        );
        return Ok(ExitCode::FAILURE);
    }
    if outcome.brake_tripped() && !args.allow_mass_change {
        eprintln!(
            "hr import stopped: {}; nothing was written. Check the feed; if it is right, run again with --allow-mass-change (or raise --max-changes)",
            outcome.brake_line()
        );
        return Ok(ExitCode::from(EXIT_MASS_CHANGE));
    }
    let mut stdout = std::io::stdout().lock();
    let print = |stdout: &mut std::io::StdoutLock<'_>| {
        write_report(stdout, args.output, &outcome, args.allow_mass_change)
            .and_then(|_| stdout.flush())
            .map_err(|e| format!("cannot write the report: {e}"))
    };
    if outcome.changes.is_empty() {
        print(&mut stdout)?;
        writeln!(stdout, "Nothing to change: no file written, no commit.").ok();
        return Ok(ExitCode::SUCCESS);
    }
    match parent {
        None => {
            let workdir = repo.workdir().ok_or("the repository is bare")?;
            let root = match sub {
                Some(s) => workdir.join(s),
                None => workdir.to_path_buf(),
            };
            for c in &outcome.changes {
                let path = root.join(&c.path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                std::fs::write(&path, &c.text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            print(&mut stdout)?;
            writeln!(
                stdout,
                "Wrote {} file(s) under {}.",
                outcome.changes.len(),
                root.display()
            )
            .ok();
            Ok(ExitCode::SUCCESS)
        }
        Some(parent) => {
            let mut files = Vec::with_capacity(outcome.changes.len());
            let mut bytes = 0usize;
            for c in &outcome.changes {
                files.push((c.path.clone(), super::commit::blob(&repo, &c.text)?));
                bytes += c.text.len();
            }
            let change = super::commit::Change {
                subdir: sub,
                files,
                author: &args.author,
                message: commit_message(&outcome, args.allow_mass_change, &args.from),
                sign_with: args.sign_with.as_deref(),
                reflog: "gatehouse hr import",
            };
            let Some(commit) = super::commit::commit(&repo, &parent, &target, &change)? else {
                print(&mut stdout)?;
                writeln!(
                    stdout,
                    "Nothing to change: the branch already holds these files."
                )
                .ok();
                return Ok(ExitCode::SUCCESS);
            };
            print(&mut stdout)?;
            writeln!(
                stdout,
                "Committed {} on {}{}: {} file(s), {} bytes.\n",
                &commit.to_string()[..12],
                args.branch,
                if args.sign_with.is_some() {
                    " (signed)"
                } else {
                    ""
                },
                outcome.changes.len(),
                bytes
            )
            .ok();
            stdout.flush().ok();
            drop(stdout);
            if args.no_plan {
                return Ok(ExitCode::SUCCESS);
            }
            super::plan::run_repo(
                args.repo.clone(),
                args.base.clone(),
                target.reference(),
                sub.map(str::to_string),
                match args.output {
                    ReportFormat::Text => Output::Text,
                    ReportFormat::Markdown => Output::Markdown,
                },
                args.common.clone(),
            )
        }
    }
}
