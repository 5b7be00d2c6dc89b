//! `gatehouse explain`: one identity's access with the reason for each entitlement, and
//! the reason for each entitlement it does not get.

use std::fmt::Write;
use std::process::ExitCode;

use clap::Args;

use super::inputs::{CommonArgs, RevisionArgs};
use super::report::violation_line;
use crate::api::Kind;
use crate::engine::{Engine, IdentityKey, NothingHeld};

/// Arguments of `gatehouse explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// Identity name (`metadata.name`).
    name: String,
    #[command(flatten)]
    source: RevisionArgs,
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs `gatehouse explain`.
pub fn run(args: ExplainArgs) -> Result<ExitCode, String> {
    let now = args.common.now()?;
    let ns = &args.common.namespace;
    let revision = args.source.read(ns)?;
    for d in &revision.loaded.diagnostics.0 {
        eprintln!("{d}");
    }
    let engine = Engine::new(&revision.loaded.snapshot, args.common.settings());
    let desired = engine.evaluate(now, &NothingHeld);
    let candidates: Vec<&IdentityKey> = desired
        .identities
        .keys()
        .filter(|k| k.name == args.name)
        .collect();
    let key = match candidates.as_slice() {
        [] => {
            let rejected = revision
                .loaded
                .files
                .iter()
                .find(|(key, _)| key.kind == Kind::Identity && key.name == args.name);
            return Err(match rejected {
                Some((label, file)) => {
                    format!("{label} in {file} is invalid (see the errors above): fix it first")
                }
                None => format!("no Identity named {:?} in {}", args.name, revision.label),
            });
        }
        [one] => (*one).clone(),
        many => match many.iter().find(|k| &k.namespace == ns) {
            Some(k) => (*k).clone(),
            None => {
                return Err(format!(
                    "{:?} exists in several namespaces; pick one with -n",
                    args.name
                ));
            }
        },
    };
    let access = &desired.identities[&key];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{key}: {:?}, phase {} at {now}",
        access.identity_type, access.phase
    );
    let _ = writeln!(
        out,
        "\nEffective entitlements ({}):",
        access.entitlements.len()
    );
    for grant in &access.entitlements {
        let why: Vec<String> = grant
            .sources
            .iter()
            .map(|s| match &s.provenance.path {
                Some(path) => format!("{s} ({path})"),
                None => s.to_string(),
            })
            .collect();
        let mode = if grant.enforced {
            ""
        } else {
            " [Observe: reported, not applied]"
        };
        let _ = writeln!(
            out,
            "  {:<40} because {}{mode}",
            grant.entitlement.to_string(),
            why.join(", ")
        );
    }
    if !access.withheld.is_empty() {
        let _ = writeln!(out, "\nNot granted:");
        for w in &access.withheld {
            let _ = writeln!(
                out,
                "  {:<40} from {}: {}",
                w.entitlement.to_string(),
                w.source,
                w.reason
            );
        }
    }
    let unmatched: Vec<(String, String)> = engine
        .selector_report(&key)
        .into_iter()
        .filter_map(|(p, why)| why.map(|w| (p, w)))
        .collect();
    if !unmatched.is_empty() {
        let _ = writeln!(out, "\nPolicies that do not select {}:", key.name);
        for (policy, why) in unmatched {
            let _ = writeln!(out, "  AccessPolicy/{policy:<30} {why}");
        }
    }
    let exceptions = engine.exceptions_of(&key);
    if !exceptions.is_empty() {
        let _ = writeln!(out, "\nExceptions:");
        for name in exceptions {
            if let Some(verdict) = desired
                .exceptions
                .get(&(key.namespace.clone(), name.clone()))
            {
                let problems = if verdict.problems.is_empty() {
                    String::new()
                } else {
                    format!(": {}", verdict.problems.join("; "))
                };
                let _ = writeln!(out, "  Exception/{name}: {:?}{problems}", verdict.phase);
            }
        }
    }
    let findings: Vec<_> = desired
        .violations
        .iter()
        .filter(|v| v.namespace == key.namespace && v.identity.as_deref() == Some(&key.name))
        .collect();
    if !findings.is_empty() {
        let _ = writeln!(out, "\nFindings:");
        for v in findings {
            let _ = writeln!(out, "  {}", violation_line(v));
        }
    }
    if let Some(next) = access.next_change {
        let _ = writeln!(out, "\nNext change without any edit: {next}");
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
