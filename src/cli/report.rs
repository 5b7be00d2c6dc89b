//! The documented JSON report of `gatehouse plan` (format version 1), and its text and
//! Markdown renderings. See README.md, "JSON output".

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Serialize;

use super::inputs::{Attribution, Files};
use crate::api::EntitlementRef;
use crate::engine::{DesiredState, IdentityAccess, Severity, Source, Violation, ViolationKind};
use crate::plan::{Action, Plan};
use crate::source::CommitInfo;

/// The whole report.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub format_version: u32,
    pub now: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<RevisionRef>,
    pub head: RevisionRef,
    pub summary: Summary,
    pub identities: Vec<IdentityEntry>,
    pub changes: Vec<Change>,
    pub account_changes: Vec<AccountChange>,
    pub violations: Vec<Violation>,
}

#[derive(Serialize)]
pub struct RevisionRef {
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitInfo>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub grants: usize,
    pub revokes: usize,
    pub identities_affected: usize,
    pub violations: usize,
    pub errors: usize,
    pub sod_violations: usize,
}

#[derive(Serialize)]
pub struct IdentityEntry {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub identity_type: String,
    pub phase: String,
    pub entitlements: Vec<EntitlementEntry>,
}

#[derive(Serialize)]
pub struct EntitlementEntry {
    #[serde(flatten)]
    pub entitlement: EntitlementRef,
    pub source: SourceRef,
    #[serde(rename = "otherSources", skip_serializing_if = "Vec::is_empty")]
    pub other_sources: Vec<SourceRef>,
    pub mode: &'static str,
}

#[derive(Serialize, Clone)]
pub struct SourceRef {
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

impl From<&Source> for SourceRef {
    fn from(s: &Source) -> Self {
        Self {
            kind: format!("{:?}", s.kind),
            name: s.name.clone(),
            path: s.provenance.path.clone(),
            commit: s.provenance.commit.clone(),
            author: s.provenance.author.clone(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Position in the plan.
    #[serde(skip)]
    pub seq: usize,
    pub namespace: String,
    pub identity: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlement_namespace: Option<String>,
    pub name: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    pub leaver: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<CommitInfo>,
}

/// One step of one person's plan, for rendering in plan order.
enum Step<'a> {
    Entitlement(&'a Change),
    Account(&'a AccountChange),
}

impl Step<'_> {
    fn seq(&self) -> usize {
        match self {
            Self::Entitlement(c) => c.seq,
            Self::Account(a) => a.seq,
        }
    }
}

#[derive(Serialize)]
pub struct AccountChange {
    /// Position in the plan.
    #[serde(skip)]
    pub seq: usize,
    pub namespace: String,
    pub identity: String,
    pub target: String,
    pub action: &'static str,
    pub leaver: bool,
}

fn phase_of(desired: &DesiredState, namespace: &str, name: &str) -> String {
    desired
        .identities
        .get(&crate::engine::IdentityKey::new(namespace, name))
        .map(|a| a.phase.to_string())
        .unwrap_or_else(|| "Deleted".into())
}

impl PlanReport {
    /// Builds the report. `attribution` maps changed paths to the newest commit touching them.
    pub fn new(
        base: Option<RevisionRef>,
        head: RevisionRef,
        desired: &DesiredState,
        plan: &Plan,
        files: &Files,
        attribution: Option<&Attribution>,
        all_identities: bool,
    ) -> Self {
        let mut changes = Vec::new();
        let mut account_changes = Vec::new();
        let mut affected = BTreeSet::new();
        for (seq, op) in plan.operations.iter().enumerate() {
            affected.insert(op.identity.clone());
            let (entitlement, action) = match &op.action {
                Action::Grant { entitlement } => (entitlement, "grant"),
                Action::Revoke { entitlement } => (entitlement, "revoke"),
                other => {
                    account_changes.push(AccountChange {
                        seq,
                        namespace: op.identity.namespace.clone(),
                        identity: op.identity.name.clone(),
                        target: op.target.clone(),
                        action: account_action(other),
                        leaver: op.leaver,
                    });
                    continue;
                }
            };
            let cause = attribution.and_then(|paths| {
                let identity_file = files.get(&format!(
                    "Identity/{}/{}",
                    op.identity.namespace, op.identity.name
                ));
                identity_file
                    .into_iter()
                    .chain(op.sources.iter().filter_map(|s| s.provenance.path.as_ref()))
                    .filter_map(|p| paths.get(p))
                    .max_by(|a, b| a.time.cmp(&b.time))
                    .cloned()
            });
            changes.push(Change {
                seq,
                namespace: op.identity.namespace.clone(),
                identity: op.identity.name.clone(),
                target: entitlement.target.clone(),
                kind: entitlement.kind.clone(),
                entitlement_namespace: entitlement.namespace.clone(),
                name: entitlement.name.clone(),
                action,
                source: op.sources.first().map(|s| SourceRef::from(&**s)),
                leaver: op.leaver,
                cause,
            });
        }
        let violations = desired.violations.clone();
        let named: BTreeSet<(&str, &str)> = violations
            .iter()
            .filter_map(|v| v.identity.as_deref().map(|i| (v.namespace.as_str(), i)))
            .collect();
        let identities = desired
            .identities
            .values()
            .filter(|a| {
                all_identities
                    || affected.contains(&a.key)
                    || named.contains(&(a.key.namespace.as_str(), a.key.name.as_str()))
            })
            .map(identity_entry)
            .collect();
        let summary = Summary {
            grants: changes.iter().filter(|c| c.action == "grant").count(),
            revokes: changes.iter().filter(|c| c.action == "revoke").count(),
            identities_affected: affected.len(),
            violations: violations.len(),
            errors: violations
                .iter()
                .filter(|v| v.severity == Severity::Error)
                .count(),
            sod_violations: violations
                .iter()
                .filter(|v| v.kind == ViolationKind::SeparationOfDuties)
                .count(),
        };
        Self {
            format_version: 1,
            now: desired.now.to_string(),
            base,
            head,
            summary,
            identities,
            changes,
            account_changes,
            violations,
        }
    }

    /// One line: "grants 12, revokes 3, affects 9 people, 1 SoD violation".
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "grants {}, revokes {}, affects {}, {}, {}",
            s.grants,
            s.revokes,
            plural(s.identities_affected, "person", "people"),
            plural(s.sod_violations, "SoD violation", "SoD violations"),
            plural(s.violations, "finding", "findings"),
        )
    }

    /// Steps grouped per identity, in plan order within each.
    fn per_identity(&self) -> BTreeMap<(String, String), Vec<Step<'_>>> {
        let mut out: BTreeMap<(String, String), Vec<Step<'_>>> = BTreeMap::new();
        for c in &self.changes {
            out.entry((c.namespace.clone(), c.identity.clone()))
                .or_default()
                .push(Step::Entitlement(c));
        }
        for c in &self.account_changes {
            out.entry((c.namespace.clone(), c.identity.clone()))
                .or_default()
                .push(Step::Account(c));
        }
        for steps in out.values_mut() {
            steps.sort_by_key(|s| s.seq());
        }
        out
    }

    /// Text for a terminal.
    pub fn to_text(&self, desired: &DesiredState) -> String {
        let mut out = String::new();
        let base = self
            .base
            .as_ref()
            .map(|b| b.source.as_str())
            .unwrap_or("nothing");
        let _ = writeln!(
            out,
            "gatehouse plan: {base} -> {} at {}",
            self.head.source, self.now
        );
        for ((ns, name), steps) in self.per_identity() {
            let _ = writeln!(out, "\n{ns}/{name} ({})", phase_of(desired, &ns, &name));
            for step in steps {
                let _ = match step {
                    Step::Account(a) => {
                        writeln!(out, "  ~ {:<14} account on {}", a.action, a.target)
                    }
                    Step::Entitlement(c) => writeln!(
                        out,
                        "  {} {:<6} {:<40} {}{}",
                        if c.action == "grant" { "+" } else { "-" },
                        c.action,
                        entitlement_label(c),
                        source_label(c.source.as_ref()),
                        cause_label(c.cause.as_ref())
                    ),
                };
            }
        }
        if !self.violations.is_empty() {
            let _ = writeln!(out, "\nFindings:");
            for v in &self.violations {
                let _ = writeln!(out, "  {}", violation_line(v));
            }
        }
        let _ = writeln!(out, "\nPlan: {}", self.summary_line());
        out
    }

    /// Markdown for a pull-request comment.
    pub fn to_markdown(&self, desired: &DesiredState) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### gatehouse plan: {}\n", self.summary_line());
        let base = self
            .base
            .as_ref()
            .map(|b| format!("`{}`", b.source))
            .unwrap_or_else(|| "nothing".into());
        let _ = writeln!(
            out,
            "Base {base} → head `{}`, evaluated at `{}`.\n",
            self.head.source, self.now
        );
        for ((ns, name), steps) in self.per_identity() {
            let _ = writeln!(
                out,
                "#### `{ns}/{name}` ({})\n",
                phase_of(desired, &ns, &name)
            );
            let _ = writeln!(
                out,
                "| Change | Target | Entitlement | Because of | Commit |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|");
            for step in steps {
                let c = match step {
                    Step::Account(a) => {
                        let _ = writeln!(out, "| {} | {} | account | | |", a.action, a.target);
                        continue;
                    }
                    Step::Entitlement(c) => c,
                };
                let icon = if c.action == "grant" {
                    "➕ grant"
                } else {
                    "➖ revoke"
                };
                let commit = c
                    .cause
                    .as_ref()
                    .map(|k| format!("`{}` {}", &k.id[..8.min(k.id.len())], escape(&k.author)))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {icon} | {} | `{}` | {} | {commit} |",
                    c.target,
                    entitlement_label(c),
                    source_label(c.source.as_ref())
                );
            }
            out.push('\n');
        }
        if !self.violations.is_empty() {
            let _ = writeln!(
                out,
                "#### Findings\n\n| Severity | Kind | Object | Identity | Message |\n|---|---|---|---|---|"
            );
            for v in &self.violations {
                let _ = writeln!(
                    out,
                    "| {:?} | {:?} | `{}/{}` | {} | {} |",
                    v.severity,
                    v.kind,
                    v.namespace,
                    v.object,
                    v.identity.as_deref().unwrap_or(""),
                    escape(&v.message)
                );
            }
        }
        out
    }
}

fn identity_entry(access: &IdentityAccess) -> IdentityEntry {
    IdentityEntry {
        namespace: access.key.namespace.clone(),
        name: access.key.name.clone(),
        identity_type: format!("{:?}", access.identity_type),
        phase: access.phase.to_string(),
        entitlements: access
            .entitlements
            .iter()
            .map(|g| EntitlementEntry {
                entitlement: (*g.entitlement).clone(),
                source: SourceRef::from(&*g.sources[0]),
                other_sources: g.sources[1..]
                    .iter()
                    .map(|s| SourceRef::from(&**s))
                    .collect(),
                mode: if g.enforced { "Enforce" } else { "Observe" },
            })
            .collect(),
    }
}

fn account_action(action: &Action) -> &'static str {
    match action {
        Action::DisableAccount => "disableAccount",
        Action::RevokeSessions => "revokeSessions",
        Action::DeleteAccount => "deleteAccount",
        Action::CreateAccount { enabled: true } => "createAccount",
        Action::CreateAccount { enabled: false } => "createDisabledAccount",
        Action::EnableAccount => "enableAccount",
        Action::Grant { .. } => "grant",
        Action::Revoke { .. } => "revoke",
    }
}

fn entitlement_label(c: &Change) -> String {
    let mut label = String::new();
    if let Some(kind) = &c.kind {
        let _ = write!(label, "{kind}/");
    }
    if let Some(ns) = &c.entitlement_namespace {
        let _ = write!(label, "{ns}/");
    }
    format!("{}:{label}{}", c.target, c.name)
}

fn source_label(source: Option<&SourceRef>) -> String {
    source
        .map(|s| format!("{}/{}", s.kind, s.name))
        .unwrap_or_else(|| "(observed)".into())
}

fn cause_label(cause: Option<&CommitInfo>) -> String {
    cause
        .map(|c| format!("  [{} {}]", &c.id[..8.min(c.id.len())], c.author))
        .unwrap_or_default()
}

/// One finding on one line.
pub fn violation_line(v: &Violation) -> String {
    let level = if v.severity == Severity::Error {
        "error"
    } else {
        "warning"
    };
    let field = v
        .field
        .as_deref()
        .map(|f| format!(" {f}:"))
        .unwrap_or_default();
    format!(
        "{level} {:?} {} in {}:{field} {}",
        v.kind, v.object, v.namespace, v.message
    )
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
