//! `gatehouse validate`: every problem at once; exit 1 on errors, 0 on warnings only.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::Output;
use super::inputs::{CommonArgs, RevisionArgs};
use super::report::violation_line;
use crate::api::PolicySource;
use crate::engine::{Engine, NothingHeld, Severity, Violation};
use crate::source::verify::{self, PathRules, TrustedKeys};
use crate::source::{Diagnostic, approvals, history};

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
    /// With --repo: a PolicySource manifest whose `spec.verify.keys`, `spec.pathOwners`
    /// (with `requireApprovals`) and `spec.path` (unless --path is given) are applied to the
    /// newest commit that changed the folder, exactly as the PolicySource's first sync
    /// checks it.
    #[arg(long, value_name = "FILE", requires = "repo")]
    policy_source: Option<std::path::PathBuf>,
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
    /// Access reviews' progress (absent when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reviews: Vec<ReviewJson<'a>>,
}

/// One access review's progress in `validate -o json`.
#[derive(Serialize)]
struct ReviewJson<'a> {
    namespace: &'a str,
    name: &'a str,
    #[serde(flatten)]
    progress: &'a crate::engine::review::ReviewProgress,
}

/// Why the newest commit that changed `subdir` up to `head` is refused: not signed by a
/// trusted key, a path its key may not change, or approvals missing (as a first sync).
fn unverified(
    repo: &git2::Repository,
    head: &str,
    subdir: Option<&str>,
    keys: &TrustedKeys,
    rules: &PathRules,
) -> Result<Option<String>, String> {
    let head = git2::Oid::from_str(head).map_err(|e| e.message().to_string())?;
    let newest = history::changes(repo, None, head, subdir, 20_000)?;
    let newest = &newest[..newest.len().min(1)];
    let signers = match verify::verify_changes(repo, newest, keys, rules) {
        Ok(signers) => signers,
        Err(rejection) => return Ok(Some(rejection.to_string())),
    };
    if rules.wants_approvals()
        && let Err(rejection) =
            approvals::verify_approvals(repo, None, head, newest, &signers, keys, rules)?
    {
        return Ok(Some(rejection.to_string()));
    }
    Ok(None)
}

/// The keys and path rules of a PolicySource manifest, and its `spec.path`.
fn policy_source(
    path: &std::path::Path,
    keys: &mut TrustedKeys,
) -> Result<(PathRules, Option<String>), String> {
    let label = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--policy-source: cannot read {label}: {e}"))?;
    let source: PolicySource = serde_yaml::from_str(&text)
        .map_err(|e| format!("--policy-source {label} is not a PolicySource manifest: {e}"))?;
    let spec = source.spec;
    if let Some(verify) = &spec.verify {
        let own = TrustedKeys::new(
            verify
                .keys
                .iter()
                .map(|k| (k.name.clone(), k.public_key.clone())),
        )
        .map_err(|e| format!("--policy-source {label}: spec.verify.keys: {e}"))?;
        keys.extend(own)
            .map_err(|e| format!("--policy-source {label}: spec.verify.keys: {e}"))?;
    }
    let rules = PathRules::new(&spec.path_owners, keys)
        .map_err(|e| format!("--policy-source {label}: {e}"))?;
    Ok((rules, spec.path))
}

/// Runs `gatehouse validate`.
pub fn run(mut args: ValidateArgs) -> Result<ExitCode, String> {
    let now = args.common.now()?;
    let ns = &args.common.namespace;
    let checks_signatures =
        args.allowed_signers.is_some() || args.keyring.is_some() || args.policy_source.is_some();
    let mut keys = TrustedKeys::default();
    let mut rules = PathRules::default();
    if checks_signatures {
        keys =
            super::audit::signing_keys(args.allowed_signers.as_deref(), args.keyring.as_deref())?;
        if let Some(file) = &args.policy_source {
            let (owners, path) = policy_source(file, &mut keys)?;
            rules = owners;
            if args.source.path.is_none() {
                args.source.path = path;
            }
        }
        if args.policy_source.is_some() && keys.is_empty() {
            return Err("--policy-source: its spec.verify lists no key, and neither --allowed-signers nor --keyring gives one: nothing could sign".into());
        }
    }
    let mut revision = args.source.read(ns)?;
    if checks_signatures && let (Some(repo), Some(commit)) = (&args.source.repo, &revision.commit) {
        let repo = super::inputs::open_repo(repo)?;
        let subdir = args.source.path.as_deref();
        if let Some(message) = unverified(&repo, &commit.id, subdir, &keys, &rules)? {
            revision
                .loaded
                .diagnostics
                .error(subdir.unwrap_or("/"), None, None, message);
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
                reviews: desired
                    .reviews
                    .iter()
                    .map(|((namespace, name), progress)| ReviewJson {
                        namespace,
                        name,
                        progress,
                    })
                    .collect(),
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
            for ((ns, name), p) in &desired.reviews {
                println!("{}", review_line(ns, name, p));
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

/// One line of an access review's progress.
fn review_line(ns: &str, name: &str, p: &crate::engine::review::ReviewProgress) -> String {
    let mut line = format!("review AccessReview/{name} in {ns}: ");
    match &p.cycle {
        None => line.push_str("no cycle opened yet (gatehouse review open)"),
        Some(cycle) => {
            line.push_str(&format!(
                "cycle {cycle}, due {}: {} pending, {} kept, {} revoked",
                p.due.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
                p.pending,
                p.kept,
                p.revoked
            ));
            if !p.overdue_reviewers.is_empty() {
                line.push_str(&format!("; overdue: {}", p.overdue_reviewers.join(", ")));
            }
            if let Some(next) = p.next_cycle {
                line.push_str(&format!("; next cycle due {next}"));
            }
        }
    }
    line
}
