//! `gatehouse hr import`: the I/O around [`crate::hr::import`]. Reads the feed, the
//! mapping and the Identity files (from the working tree, or with `--commit` from Git
//! objects), then writes the changed files, or commits them on a branch, signed, and prints
//! the plan of that branch against its base.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

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

fn split_person(person: &str) -> Result<(String, String), String> {
    match (person.find('<'), person.rfind('>')) {
        (Some(open), Some(close)) if open < close => Ok((
            person[..open].trim().to_string(),
            person[open + 1..close].trim().to_string(),
        )),
        _ => Err(format!("--author {person:?}: write it as \"Name <mail>\"")),
    }
}

/// Writes a tree equal to `base` with `blobs` (paths split in components) set.
fn write_tree(
    repo: &Repository,
    base: Option<&git2::Tree<'_>>,
    blobs: &[(Vec<String>, Oid)],
) -> Result<Oid, git2::Error> {
    let mut builder = repo.treebuilder(base)?;
    let mut i = 0;
    while i < blobs.len() {
        let head = &blobs[i].0[0];
        let mut j = i;
        while j < blobs.len() && &blobs[j].0[0] == head {
            j += 1;
        }
        let group = &blobs[i..j];
        if group.len() == 1 && group[0].0.len() == 1 {
            builder.insert(head, group[0].1, 0o100644)?;
        } else {
            let sub: Vec<(Vec<String>, Oid)> = group
                .iter()
                .filter(|(p, _)| p.len() > 1)
                .map(|(p, o)| (p[1..].to_vec(), *o))
                .collect();
            let existing = base
                .and_then(|t| t.get_name(head))
                .filter(|e| e.kind() == Some(ObjectType::Tree))
                .and_then(|e| repo.find_tree(e.id()).ok());
            let oid = write_tree(repo, existing.as_ref(), &sub)?;
            builder.insert(head, oid, 0o040000)?;
        }
        i = j;
    }
    builder.write()
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
    let branch_ref = format!("refs/heads/{}", args.branch);
    let started = std::time::Instant::now();
    let (files, parent) = if args.commit {
        if !git2::Reference::is_valid_name(&branch_ref) {
            return Err(format!(
                "--branch {:?} is not a valid branch name",
                args.branch
            ));
        }
        if let Ok(head) = repo.head()
            && head.name().ok() == Some(branch_ref.as_str())
            && !repo.is_bare()
        {
            return Err(format!(
                "--branch {} is checked out here; committing on it would leave the working tree behind: check out another branch or pick another --branch",
                args.branch
            ));
        }
        let parent = match repo.find_reference(&branch_ref) {
            Ok(r) => r.peel_to_commit(),
            Err(_) => repo
                .revparse_single(&args.base)
                .and_then(|o| o.peel_to_commit()),
        }
        .map_err(|e| {
            format!(
                "cannot resolve --branch {} or --base {}: {}",
                args.branch,
                args.base,
                e.message()
            )
        })?;
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
            let prefix: Vec<String> = sub
                .map(|s| s.split('/').map(str::to_string).collect())
                .unwrap_or_default();
            let mut blobs = Vec::with_capacity(outcome.changes.len());
            let mut bytes = 0usize;
            for c in &outcome.changes {
                let oid = repo
                    .blob(c.text.as_bytes())
                    .map_err(|e| e.message().to_string())?;
                bytes += c.text.len();
                let mut path = prefix.clone();
                path.extend(c.path.split('/').map(str::to_string));
                blobs.push((path, oid));
            }
            blobs.sort();
            let base_tree = parent.tree().map_err(|e| e.message().to_string())?;
            let tree_id =
                write_tree(&repo, Some(&base_tree), &blobs).map_err(|e| e.message().to_string())?;
            if tree_id == base_tree.id() {
                print(&mut stdout)?;
                writeln!(
                    stdout,
                    "Nothing to change: the branch already holds these files."
                )
                .ok();
                return Ok(ExitCode::SUCCESS);
            }
            let tree = repo
                .find_tree(tree_id)
                .map_err(|e| e.message().to_string())?;
            let (name, mail) = split_person(&args.author)?;
            let who = git2::Signature::now(&name, &mail).map_err(|e| e.message().to_string())?;
            let message = commit_message(&outcome, args.allow_mass_change, &args.from);
            let commit = match &args.sign_with {
                None => repo
                    .commit(None, &who, &who, &message, &tree, &[&parent])
                    .map_err(|e| e.message().to_string())?,
                Some(key_path) => {
                    let content = repo
                        .commit_create_buffer(&who, &who, &message, &tree, &[&parent])
                        .map_err(|e| e.message().to_string())?;
                    let content = content
                        .as_str()
                        .map_err(|_| "the commit is not UTF-8".to_string())?
                        .to_string();
                    let signature = sign(key_path, &content)?;
                    repo.commit_signed(&content, &signature, None)
                        .map_err(|e| e.message().to_string())?
                }
            };
            repo.reference(&branch_ref, commit, true, "gatehouse hr import")
                .map_err(|e| format!("cannot move {branch_ref}: {}", e.message()))?;
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
                branch_ref,
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

/// Signs a commit buffer with an OpenSSH private key, as `git -c gpg.format=ssh` does.
fn sign(key_path: &Path, content: &str) -> Result<String, String> {
    let key = ssh_key::PrivateKey::read_openssh_file(key_path).map_err(|e| {
        format!(
            "--sign-with {}: not an OpenSSH private key ({e})",
            key_path.display()
        )
    })?;
    if key.is_encrypted() {
        return Err(format!(
            "--sign-with {}: the key is passphrase-protected; use an unencrypted deploy key kept in the CI secret store",
            key_path.display()
        ));
    }
    let signature = key
        .sign("git", ssh_key::HashAlg::Sha512, content.as_bytes())
        .map_err(|e| format!("cannot sign with {}: {e}", key_path.display()))?;
    signature
        .to_pem(ssh_key::LineEnding::LF)
        .map_err(|e| format!("cannot encode the signature: {e}"))
}
