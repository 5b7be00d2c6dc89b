//! `gatehouse validate`: every problem at once; exit 1 on errors, 0 on warnings only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::Output;
use super::inputs::{CommonArgs, from_dir, from_git, open_repo};
use super::report::violation_line;
use crate::engine::{Engine, NothingHeld, Severity, Violation};
use crate::source::Diagnostic;

/// Arguments of `gatehouse validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Directory of manifests. Not used with --repo.
    #[arg(required_unless_present = "repo", conflicts_with = "repo")]
    dir: Option<PathBuf>,
    /// Read from this Git repository's objects.
    #[arg(long, value_name = "PATH")]
    repo: Option<PathBuf>,
    /// With --repo: the revision to check.
    #[arg(long, default_value = "HEAD", requires = "repo")]
    rev: String,
    /// With --repo: the folder inside the repository holding the manifests.
    #[arg(long, value_name = "SUBDIR", requires = "repo")]
    path: Option<String>,
    /// Output format (text or json).
    #[arg(short, long, value_enum, default_value = "text")]
    output: Output,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Serialize)]
struct ValidateReport<'a> {
    #[serde(rename = "formatVersion")]
    format_version: u32,
    errors: usize,
    warnings: usize,
    diagnostics: &'a [Diagnostic],
    violations: &'a [Violation],
}

/// Runs `gatehouse validate`.
pub fn run(args: ValidateArgs) -> Result<ExitCode, String> {
    let now = args.common.now()?;
    let ns = &args.common.namespace;
    let revision = match (&args.repo, &args.dir) {
        (Some(repo), _) => from_git(&open_repo(repo)?, &args.rev, args.path.as_deref(), ns)?,
        (None, Some(dir)) => from_dir(dir, ns),
        (None, None) => return Err("give a directory or --repo".into()),
    };
    let desired =
        Engine::new(&revision.loaded.snapshot, args.common.settings()?).evaluate(now, &NothingHeld);
    let diagnostics = &revision.loaded.diagnostics.0;
    let count = |s: Severity| {
        diagnostics.iter().filter(|d| d.severity == s).count()
            + desired
                .violations
                .iter()
                .filter(|v| v.severity == s)
                .count()
    };
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    match args.output {
        Output::Json => {
            let report = ValidateReport {
                format_version: 1,
                errors,
                warnings,
                diagnostics,
                violations: &desired.violations,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
            );
        }
        _ => {
            for d in diagnostics {
                println!("{d}");
            }
            for v in &desired.violations {
                println!("{}", violation_line(v));
            }
            let objects = revision.loaded.files.len();
            println!(
                "{}: {objects} objects, {errors} errors, {warnings} warnings",
                revision.label
            );
        }
    }
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
