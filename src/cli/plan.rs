//! `gatehouse plan`: what a change grants and revokes, per person and target.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Output;
use super::inputs::{CommonArgs, Revision, from_dir, from_dirs, from_git, open_repo};
use super::report::{PlanReport, RevisionRef};
use crate::engine::{Engine, NothingHeld};
use crate::plan::{AccessState, plan};
use crate::source::changed_paths;

/// Arguments of `gatehouse plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Directory of manifests to plan (the head). Not used with --repo.
    #[arg(required_unless_present = "repo", conflicts_with = "repo")]
    dir: Option<PathBuf>,
    /// The base: a directory, or with --repo a Git revision. Without it, the plan starts from nothing.
    #[arg(long)]
    base: Option<String>,
    /// Read both sides from this Git repository's objects (no checkout).
    #[arg(long, value_name = "PATH", requires = "base")]
    repo: Option<PathBuf>,
    /// With --repo: the head revision.
    #[arg(long, default_value = "HEAD", requires = "repo")]
    head: String,
    /// With --repo: the folder inside the repository holding the manifests.
    #[arg(long, value_name = "SUBDIR", requires = "repo")]
    path: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: Output,
    /// In JSON, list every identity; by default only those the plan changes or a finding names.
    #[arg(long)]
    all_identities: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs `gatehouse plan --repo REPO --base BASE --head HEAD [--path PATH]` (for `hr import`).
pub(super) fn run_repo(
    repo: PathBuf,
    base: String,
    head: String,
    path: Option<String>,
    output: Output,
    common: CommonArgs,
) -> Result<ExitCode, String> {
    run(PlanArgs {
        dir: None,
        base: Some(base),
        repo: Some(repo),
        head,
        path,
        output,
        all_identities: false,
        common,
    })
}

/// Runs `gatehouse plan`.
pub fn run(args: PlanArgs) -> Result<ExitCode, String> {
    let now = args.common.now()?;
    let settings = args.common.settings();
    let ns = &args.common.namespace;
    let started = std::time::Instant::now();
    let (mut base, mut head, attribution) = match &args.repo {
        Some(repo_path) => {
            let repo = open_repo(repo_path)?;
            let base_rev = args.base.as_deref().unwrap_or_default();
            let base = from_git(&repo, base_rev, args.path.as_deref(), ns)?;
            let head = from_git(&repo, &args.head, args.path.as_deref(), ns)?;
            let attribution = changed_paths(&repo, base_rev, &args.head, args.path.as_deref())?;
            (Some(base), head, Some(attribution))
        }
        None => {
            let dir = args.dir.as_ref().expect("clap requires DIR without --repo");
            match &args.base {
                Some(b) => {
                    let (base, head) = from_dirs(&PathBuf::from(b), dir, ns);
                    (Some(base), head, None)
                }
                None => (None, from_dir(dir, ns), None),
            }
        }
    };
    tracing::debug!(elapsed = ?started.elapsed(), "manifests loaded");
    let mut invalid = false;
    for revision in base.iter().chain([&head]) {
        for d in revision.loaded.diagnostics.0.iter() {
            eprintln!("{}: {d}", revision.label);
            invalid |= d.severity == crate::engine::Severity::Error;
        }
    }
    if invalid {
        eprintln!(
            "plan refused: the manifests above are invalid (nothing was evaluated); `gatehouse validate` lists every problem"
        );
        return Ok(ExitCode::FAILURE);
    }
    // Each snapshot is dropped once indexed: at 100k identities the objects are the bulk of memory.
    let base_state = match base.as_mut() {
        Some(b) => {
            let engine = Engine::new(&std::mem::take(&mut b.loaded.snapshot), settings.clone());
            AccessState::from_desired(&engine.evaluate(now, &NothingHeld))
        }
        None => AccessState::default(),
    };
    let engine = Engine::new(&std::mem::take(&mut head.loaded.snapshot), settings);
    let desired = engine.evaluate(now, &base_state);
    drop(engine);
    tracing::debug!(elapsed = ?started.elapsed(), "evaluated");
    let plan = plan(&base_state, &desired);
    tracing::debug!(elapsed = ?started.elapsed(), operations = plan.operations.len(), "planned");
    let describe = |r: &Revision| RevisionRef {
        source: r.label.clone(),
        commit: r.commit.clone(),
    };
    let report = PlanReport::new(
        base.as_ref().map(describe),
        describe(&head),
        &desired,
        &plan,
        &head.loaded.files,
        attribution.as_ref(),
        args.all_identities,
    );
    tracing::debug!(elapsed = ?started.elapsed(), "report built");
    use std::io::Write;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match args.output {
        Output::Text => report.write_text(&mut stdout),
        Output::Markdown => report.write_markdown(&mut stdout),
        Output::Json => serde_json::to_writer_pretty(&mut stdout, &report)
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(stdout)),
    };
    if let Err(e) = written.and_then(|_| stdout.flush()) {
        // A closed pipe (`| head`) is not an error worth a panic.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(format!("cannot write the plan: {e}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
