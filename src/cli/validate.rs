//! `gatehouse validate`: every problem at once; exit 1 on errors, 0 on warnings only.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::Output;
use super::inputs::{CommonArgs, RevisionArgs};
use super::report::violation_line;
use crate::engine::{Engine, NothingHeld, Severity, Violation};
use crate::source::verify::{self, TrustedKeys};
use crate::source::{Diagnostic, history};

/// Arguments of `gatehouse validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[command(flatten)]
    source: RevisionArgs,
    /// With --repo: git allowed-signers file (SSH keys); the newest commit that changed the
    /// folder must be signed by one of these or the --keyring keys, as a PolicySource's
    /// first sync requires.
    #[arg(long, value_name = "FILE", requires = "repo")]
    allowed_signers: Option<std::path::PathBuf>,
    /// With --repo: armored OpenPGP public keys (`gpg --armor --export`) trusted to sign.
    #[arg(long, value_name = "FILE", requires = "repo")]
    keyring: Option<std::path::PathBuf>,
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

/// Why the newest commit that changed `subdir` up to `head` is not signed by a trusted
/// key, if it is not.
fn unverified(
    repo: &git2::Repository,
    head: &str,
    subdir: Option<&str>,
    keys: &TrustedKeys,
) -> Result<Option<String>, String> {
    let head = git2::Oid::from_str(head).map_err(|e| e.message().to_string())?;
    let newest = history::changes(repo, None, head, subdir, 20_000)?;
    let newest = &newest[..newest.len().min(1)];
    Ok(
        verify::verify_changes(repo, newest, keys, &verify::PathRules::default())
            .err()
            .map(|r| r.to_string()),
    )
}

/// Runs `gatehouse validate`.
pub fn run(args: ValidateArgs) -> Result<ExitCode, String> {
    let now = args.common.now()?;
    let ns = &args.common.namespace;
    let mut revision = args.source.read(ns)?;
    if args.allowed_signers.is_some() || args.keyring.is_some() {
        let keys =
            super::audit::signing_keys(args.allowed_signers.as_deref(), args.keyring.as_deref())?;
        if let (Some(repo), Some(commit)) = (&args.source.repo, &revision.commit) {
            let repo = super::inputs::open_repo(repo)?;
            let subdir = args.source.path.as_deref();
            if let Some(message) = unverified(&repo, &commit.id, subdir, &keys)? {
                revision
                    .loaded
                    .diagnostics
                    .error(subdir.unwrap_or("/"), None, None, message);
            }
        }
    }
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
