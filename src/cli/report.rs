//! The documented JSON report of `gatehouse plan` (format version 1), and its text and
//! Markdown renderings. See README.md, "JSON output".
//!
//! The report borrows from the plan and the desired state rather than copying them: a plan
//! from nothing at 100,000 identities holds millions of changes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use serde::Serialize;

use super::inputs::{Attribution, Files};
use crate::api::{EntitlementRef, Kind, ObjectKey};
use crate::engine::attributes::AttributeChange;
use crate::engine::{
    DesiredState, IdentityAccess, IdentityKey, Phase, Severity, Source, SourceKind, Violation,
    ViolationKind,
};
use crate::plan::{Action, Plan};
use crate::source::CommitInfo;

/// The whole report.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport<'a> {
    pub format_version: u32,
    pub now: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<RevisionRef>,
    pub head: RevisionRef,
    pub summary: Summary,
    pub identities: Vec<IdentityEntry<'a>>,
    pub changes: Vec<Change<'a>>,
    pub account_changes: Vec<AccountChange<'a>>,
    pub violations: &'a [Violation],
    #[serde(skip)]
    desired: &'a DesiredState,
}

/// Where one side of the plan came from.
#[derive(Serialize)]
pub struct RevisionRef {
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitInfo>,
}

/// Counts for the summary line.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub grants: usize,
    pub revokes: usize,
    /// Accounts whose owned attributes change (creations not counted).
    pub attribute_updates: usize,
    pub identities_affected: usize,
    pub violations: usize,
    pub errors: usize,
    pub sod_violations: usize,
}

/// One identity's verdict.
#[derive(Serialize)]
pub struct IdentityEntry<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    #[serde(rename = "type")]
    pub identity_type: crate::api::IdentityType,
    pub phase: Phase,
    pub entitlements: Vec<EntitlementEntry<'a>>,
}

/// One effective entitlement with its sources.
#[derive(Serialize)]
pub struct EntitlementEntry<'a> {
    #[serde(flatten)]
    pub entitlement: &'a EntitlementRef,
    pub source: SourceRef<'a>,
    #[serde(rename = "otherSources", skip_serializing_if = "Vec::is_empty")]
    pub other_sources: Vec<SourceRef<'a>>,
    pub mode: &'static str,
}

/// A policy or exception, with its Git provenance.
#[derive(Serialize, Clone, Copy)]
pub struct SourceRef<'a> {
    pub kind: SourceKind,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<&'a str>,
}

impl<'a> From<&'a Source> for SourceRef<'a> {
    fn from(s: &'a Source) -> Self {
        Self {
            kind: s.kind,
            name: &s.name,
            path: s.provenance.path.as_deref(),
            commit: s.provenance.commit.as_deref(),
            author: s.provenance.author.as_deref(),
        }
    }
}

/// One entitlement grant or revocation.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change<'a> {
    /// Position in the plan.
    #[serde(skip)]
    pub seq: usize,
    pub namespace: &'a str,
    pub identity: &'a str,
    pub target: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlement_namespace: Option<&'a str>,
    pub name: &'a str,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef<'a>>,
    pub leaver: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'a CommitInfo>,
}

/// One account step.
#[derive(Serialize)]
pub struct AccountChange<'a> {
    /// Position in the plan.
    #[serde(skip)]
    pub seq: usize,
    pub namespace: &'a str,
    pub identity: &'a str,
    pub target: &'a str,
    pub action: &'static str,
    pub leaver: bool,
    /// Attribute values written (account creation, attribute update), old to new.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeChange>,
}

impl AccountChange<'_> {
    /// `title: "Clerk" → "Accountant"; mail: (unset) → "a@x"`, or empty.
    fn attribute_summary(&self) -> String {
        self.attributes
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One step of one person's plan, for rendering in plan order.
enum Step<'r, 'a> {
    Entitlement(&'r Change<'a>),
    Account(&'r AccountChange<'a>),
}

impl Step<'_, '_> {
    fn seq(&self) -> usize {
        match self {
            Self::Entitlement(c) => c.seq,
            Self::Account(a) => a.seq,
        }
    }
}

impl<'a> PlanReport<'a> {
    /// Builds the report. `attribution` maps changed paths to the newest commit touching them.
    pub fn new(
        base: Option<RevisionRef>,
        head: RevisionRef,
        desired: &'a DesiredState,
        plan: &'a Plan,
        files: &Files,
        attribution: Option<&'a Attribution>,
        all_identities: bool,
    ) -> Self {
        let mut changes = Vec::new();
        let mut account_changes = Vec::new();
        let mut affected: BTreeSet<&IdentityKey> = BTreeSet::new();
        for (seq, op) in plan.operations.iter().enumerate() {
            affected.insert(&op.identity);
            let (entitlement, action) = match &op.action {
                Action::Grant { entitlement } => (entitlement, "grant"),
                Action::Revoke { entitlement } => (entitlement, "revoke"),
                other => {
                    account_changes.push(AccountChange {
                        seq,
                        namespace: &op.identity.namespace,
                        identity: &op.identity.name,
                        target: &op.target,
                        action: account_action(other),
                        leaver: op.leaver,
                        attributes: match other {
                            Action::UpdateAttributes { changes } => changes.clone(),
                            Action::CreateAccount { attributes, .. } => {
                                crate::engine::attributes::diff(None, attributes)
                            }
                            _ => Vec::new(),
                        },
                    });
                    continue;
                }
            };
            let cause = attribution.and_then(|paths| {
                let identity_file = files.get(&ObjectKey::new(
                    Kind::Identity,
                    &op.identity.namespace,
                    &op.identity.name,
                ));
                identity_file
                    .into_iter()
                    .chain(op.sources.iter().filter_map(|s| s.provenance.path.as_ref()))
                    .filter_map(|p| paths.get(p))
                    .max_by(|a, b| a.time.cmp(&b.time))
            });
            changes.push(Change {
                seq,
                namespace: &op.identity.namespace,
                identity: &op.identity.name,
                target: &entitlement.target,
                kind: entitlement.kind.as_deref(),
                entitlement_namespace: entitlement.namespace.as_deref(),
                name: &entitlement.name,
                action,
                source: op.sources.first().map(|s| SourceRef::from(&**s)),
                leaver: op.leaver,
                cause,
            });
        }
        let violations = desired.violations.as_slice();
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
            attribute_updates: account_changes
                .iter()
                .filter(|a| a.action == "updateAttributes")
                .count(),
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
            desired,
        }
    }

    /// One line: "grants 12, revokes 3, affects 9 people, 1 SoD violation, 4 findings".
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let attributes = if s.attribute_updates > 0 {
            format!(", attribute updates {}", s.attribute_updates)
        } else {
            String::new()
        };
        format!(
            "grants {}, revokes {}{attributes}, affects {}, {}, {}",
            s.grants,
            s.revokes,
            plural(s.identities_affected, "person", "people"),
            plural(s.sod_violations, "SoD violation", "SoD violations"),
            plural(s.violations, "finding", "findings"),
        )
    }

    /// Steps grouped per identity, in plan order within each.
    fn per_identity(&self) -> BTreeMap<(&'a str, &'a str), Vec<Step<'_, 'a>>> {
        let mut out: BTreeMap<(&str, &str), Vec<Step>> = BTreeMap::new();
        for c in &self.changes {
            out.entry((c.namespace, c.identity))
                .or_default()
                .push(Step::Entitlement(c));
        }
        for c in &self.account_changes {
            out.entry((c.namespace, c.identity))
                .or_default()
                .push(Step::Account(c));
        }
        for steps in out.values_mut() {
            steps.sort_by_key(|s| s.seq());
        }
        out
    }

    fn phase_of(&self, namespace: &str, name: &str) -> String {
        self.desired
            .identities
            .get(&IdentityKey::new(namespace, name))
            .map(|a| a.phase.to_string())
            .unwrap_or_else(|| "Deleted".into())
    }

    /// Text for a terminal.
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let base = self
            .base
            .as_ref()
            .map(|b| b.source.as_str())
            .unwrap_or("nothing");
        writeln!(
            out,
            "gatehouse plan: {base} -> {} at {}",
            self.head.source, self.now
        )?;
        let mut label = String::new();
        for ((ns, name), steps) in self.per_identity() {
            writeln!(out, "\n{ns}/{name} ({})", self.phase_of(ns, name))?;
            for step in steps {
                match step {
                    Step::Account(a) => {
                        writeln!(out, "  ~ {:<14} account on {}", a.action, a.target)?;
                        for c in &a.attributes {
                            writeln!(out, "      {c}")?;
                        }
                    }
                    Step::Entitlement(c) => {
                        // One buffer for every line's label: millions of lines from nothing.
                        label.clear();
                        push_entitlement_label(&mut label, c);
                        let sign = if c.action == "grant" { "+" } else { "-" };
                        write!(out, "  {sign} {:<6} {label:<40} ", c.action)?;
                        match &c.source {
                            Some(s) => write!(out, "{:?}/{}", s.kind, s.name)?,
                            None => out.write_all(b"(observed)")?,
                        }
                        if let Some(k) = c.cause {
                            write!(out, "  [{} {}]", &k.id[..8.min(k.id.len())], k.author)?;
                        }
                        writeln!(out)?;
                    }
                }
            }
        }
        if !self.violations.is_empty() {
            writeln!(out, "\nFindings:")?;
            for v in self.violations {
                writeln!(out, "  {}", violation_line(v))?;
            }
        }
        writeln!(out, "\nPlan: {}", self.summary_line())
    }

    /// Markdown for a pull-request comment.
    pub fn write_markdown(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "### gatehouse plan: {}\n", self.summary_line())?;
        let base = self
            .base
            .as_ref()
            .map(|b| format!("`{}`", b.source))
            .unwrap_or_else(|| "nothing".into());
        writeln!(
            out,
            "Base {base} → head `{}`, evaluated at `{}`.\n",
            self.head.source, self.now
        )?;
        for ((ns, name), steps) in self.per_identity() {
            writeln!(out, "#### `{ns}/{name}` ({})\n", self.phase_of(ns, name))?;
            writeln!(
                out,
                "| Change | Target | Entitlement | Because of | Commit |"
            )?;
            writeln!(out, "|---|---|---|---|---|")?;
            for step in steps {
                let c = match step {
                    Step::Account(a) => {
                        let attrs = a.attribute_summary().replace('|', "\\|");
                        writeln!(out, "| {} | {} | account | {attrs} | |", a.action, a.target)?;
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
                    .map(|k| format!("`{}` {}", &k.id[..8.min(k.id.len())], escape(&k.author)))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "| {icon} | {} | `{}` | {} | {commit} |",
                    c.target,
                    entitlement_label(c),
                    source_label(c.source.as_ref())
                )?;
            }
            writeln!(out)?;
        }
        if !self.violations.is_empty() {
            writeln!(
                out,
                "#### Findings\n\n| Severity | Kind | Object | Identity | Message |\n|---|---|---|---|---|"
            )?;
            for v in self.violations {
                writeln!(
                    out,
                    "| {:?} | {:?} | `{}/{}` | {} | {} |",
                    v.severity,
                    v.kind,
                    v.namespace,
                    v.object,
                    v.identity.as_deref().unwrap_or(""),
                    escape(&v.message)
                )?;
            }
        }
        Ok(())
    }
}

fn identity_entry(access: &IdentityAccess) -> IdentityEntry<'_> {
    IdentityEntry {
        namespace: &access.key.namespace,
        name: &access.key.name,
        identity_type: access.identity_type,
        phase: access.phase,
        entitlements: access
            .entitlements
            .iter()
            .map(|g| EntitlementEntry {
                entitlement: &g.entitlement,
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
        Action::RotateCredentials { .. } => "rotateCredentials",
        Action::RevokeSessions => "revokeSessions",
        Action::DeleteAccount => "deleteAccount",
        Action::CreateAccount { enabled: true, .. } => "createAccount",
        Action::CreateAccount { enabled: false, .. } => "createDisabledAccount",
        Action::UpdateAttributes { .. } => "updateAttributes",
        Action::EnableAccount => "enableAccount",
        Action::Grant { .. } => "grant",
        Action::Revoke { .. } => "revoke",
    }
}

fn entitlement_label(c: &Change) -> String {
    let mut label = String::new();
    push_entitlement_label(&mut label, c);
    label
}

/// `target:kind/namespace/name` appended to `label`.
fn push_entitlement_label(label: &mut String, c: &Change) {
    label.push_str(c.target);
    label.push(':');
    for part in [c.kind, c.entitlement_namespace].into_iter().flatten() {
        label.push_str(part);
        label.push('/');
    }
    label.push_str(c.name);
}

fn source_label(source: Option<&SourceRef>) -> String {
    source
        .map(|s| format!("{:?}/{}", s.kind, s.name))
        .unwrap_or_else(|| "(observed)".into())
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
