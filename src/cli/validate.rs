//! `gatehouse validate`: every problem at once; exit 1 on errors, 0 on warnings only.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::Output;
use super::inputs::{CommonArgs, RevisionArgs};
use super::report::violation_line;
use crate::engine::{Engine, NothingHeld, Severity, Violation};
use crate::source::Diagnostic;

/// Arguments of `gatehouse validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[command(flatten)]
    source: RevisionArgs,
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
    let revision = args.source.read(ns)?;
    let desired =
        Engine::new(&revision.loaded.snapshot, args.common.settings()).evaluate(now, &NothingHeld);
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
