//! `gatehouse audit`: who had what access, when, and why, replayed from Git history.
//!
//! The first-parent history of `--ref` is walked from the oldest commit to the newest.
//! Each commit that changed something under `--path` is applied the way the controller
//! applies a commit (all or nothing: a commit with any invalid file is not applied, and
//! the last good commit stays in force) and evaluated by the engine as of its committer
//! time. Each identity's effective entitlements are diffed against the state before, and
//! every difference is a row: granted or revoked, by which commit, author and signer,
//! under which policy or exception, and why it ended; and who signed the changes the
//! commit brought and whose signed merges approved them ([`approvals::step`]).
//!
//! Between commits time passes: exceptions expire, end dates pass, start dates arrive.
//! Those changes are rows too (trigger `time`, at the instant they happen, with the commit
//! then in force), up to `--now` after the last commit.
//!
//! Incremental: a commit re-reads and re-parses only the files it changed (the loading is
//! [`crate::source::replay`]'s; this module evaluates and reports); a commit that changed
//! only identities updates those identities in the engine and re-evaluates only the
//! identities whose verdict may change. A change to a policy, exception or target rebuilds
//! the engine from the parsed objects kept in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use git2::Repository;
use jiff::Timestamp;
use serde::Serialize;

use super::inputs::{CommonArgs, open_repo};
use crate::api::{Exception, Kind, ObjectKey, ReviewDecision};
use crate::engine::{
    Engine, Held, IdentityAccess, IdentityKey, Phase, Provenance, Settings, SourceKind,
};
use crate::source::approvals::{self, Review};
use crate::source::replay::{self, FileChange, Replay};
use crate::source::verify::{TrustedKeys, commit_signer};

/// The long help of `gatehouse audit`.
pub const LONG_ABOUT: &str = "Replay the repository's history: who had what access, when, and why.\n\n\
Walks the first-parent history of --ref from the oldest commit and, at each commit that \
changed something under --path, evaluates the engine as of that commit's committer time. \
Prints one row per entitlement granted or revoked: date, commit, author, signer, identity, \
target:entitlement, granted|revoked, the policy or exception behind it and the reason, and \
who signed the changes the commit brought (authoredBy) and whose signed merges approved \
them (approvedBy).\n\n\
A commit with any invalid file is not applied, as the controller would not apply it: its \
problems are printed on stderr naming the commit and file, and the last good commit stays \
in force. Changes caused by time alone (an exception expiring, an end date passing) are \
rows with trigger \"time\" at the instant they happen, up to --now after the last commit.\n\n\
A force-push to older history is not in the first-parent history of the branch as it is \
now: --reflog replays every position the branch had instead (rows of a step back are \
trigger \"rewind\", dated when the branch moved).";

/// Arguments of `gatehouse audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only this identity's rows: `name` or `namespace/name`.
    identity: Option<String>,
    /// The Git repository (read from its objects; no checkout needed).
    #[arg(long, value_name = "PATH")]
    repo: PathBuf,
    /// Revision whose first-parent history is replayed.
    #[arg(long = "ref", value_name = "REF", default_value = "HEAD")]
    reference: String,
    /// Replay the reflog of --ref (every position the branch had, in order, including
    /// force-pushes and resets to older commits) instead of its first-parent history.
    #[arg(long)]
    reflog: bool,
    /// The folder inside the repository holding the manifests.
    #[arg(long, value_name = "SUBDIR")]
    path: Option<String>,
    /// Only rows at or after this date (`2026-01-05` or RFC 3339); the replay still
    /// starts at the first commit so that the state is right.
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = AuditOutput::Text)]
    output: AuditOutput,
    /// Git allowed-signers file (`<principal> <keytype> <base64>` per line) naming the
    /// keys whose signatures are shown by name; other signers show as untrusted.
    #[arg(long, value_name = "FILE")]
    allowed_signers: Option<PathBuf>,
    /// Armored OpenPGP public keys (`gpg --armor --export`, e.g. a forge's
    /// `web-flow.gpg`) whose signatures are shown by the e-mail address of the key's
    /// first user ID. Combines with --allowed-signers.
    #[arg(long, value_name = "FILE")]
    keyring: Option<PathBuf>,
    /// The break-glass ledger (`kubectl get configmap gatehouse-break-glass -n NAMESPACE
    /// -o yaml`, or a List of them): adds rows with trigger `break-glass` for emergency
    /// access granted outside Git, its expiry and its early revocation.
    #[arg(long, value_name = "FILE")]
    break_glass: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Output formats of `gatehouse audit`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditOutput {
    /// A table for people at a terminal.
    Text,
    /// An array of row objects (see README, "gatehouse audit").
    Json,
    /// A header row and one line per row (RFC 4180 quoting).
    Csv,
}

/// What to replay.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Revision whose first-parent history is replayed.
    pub reference: String,
    /// Replay the reflog of `reference` instead.
    pub reflog: bool,
    /// Folder holding the manifests.
    pub subdir: Option<String>,
    /// Namespace for objects that do not set one.
    pub namespace: String,
    /// Engine settings.
    pub settings: Settings,
    /// Keys whose signatures are shown by name.
    pub keys: TrustedKeys,
    /// Only this identity: (namespace if given, name).
    pub identity: Option<(Option<String>, String)>,
    /// Only rows at or after this instant.
    pub since: Option<Timestamp>,
    /// Time-driven changes after the last commit are replayed up to this instant.
    pub until: Timestamp,
}

/// One entitlement granted or revoked. Field names are stable (README, "gatehouse audit").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// When it took effect (RFC 3339): the commit's committer time, or the instant time
    /// made the change.
    pub time: String,
    /// Full id of the commit that made the change (for `time` rows: the commit in force).
    pub commit: String,
    /// The commit's author, `Name <email>`.
    pub author: String,
    /// Who signed the commit: a trusted key's name, `untrusted SHA256:…`, `unsigned`, …
    pub signer: String,
    /// `commit`, `time`, or `rewind` (a reflog step back to older history).
    pub trigger: &'static str,
    /// The identity's namespace.
    pub namespace: String,
    /// The identity's name.
    pub identity: String,
    /// The target system.
    pub target: String,
    /// The entitlement as `target:[kind/][namespace/]name`.
    pub entitlement: String,
    /// `granted` or `revoked`.
    pub change: &'static str,
    /// The policy or exception that grants (or had granted) it, as `Kind/name`.
    pub source: String,
    /// That object's file.
    pub source_path: String,
    /// The commit that last changed that object's file.
    pub source_commit: String,
    /// Why: what matched for a grant; why it ended for a revocation.
    pub reason: String,
    /// False when only `Observe`-mode policies grant it (reported, never applied).
    pub enforced: bool,
    /// Who signed the changes the commit brought (for a merge: the merged commits), as
    /// `signer` shows a signature.
    pub authored_by: Vec<String>,
    /// The keys whose signed merges brought in every one of those changes, their own
    /// signers excepted; empty for a commit pushed straight to the branch.
    pub approved_by: Vec<String>,
    /// For a `reviewed` row: the access review decision the commit brought.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewRow>,
}

/// An access review decision, as an audit row shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewRow {
    /// The AccessReview.
    pub review: String,
    /// The cycle's start date.
    pub cycle: String,
    /// Who decided (the response's `spec.reviewer`).
    pub reviewer: String,
    /// `keep` or `revoke`.
    pub decision: &'static str,
    /// The reviewer's justification.
    pub justification: String,
}

const CSV_HEADER: [&str; 17] = [
    "time",
    "commit",
    "author",
    "signer",
    "trigger",
    "namespace",
    "identity",
    "target",
    "entitlement",
    "change",
    "source",
    "sourcePath",
    "sourceCommit",
    "reason",
    "enforced",
    "authoredBy",
    "approvedBy",
];

impl Row {
    fn csv_fields(&self) -> [String; 17] {
        [
            self.time.clone(),
            self.commit.clone(),
            self.author.clone(),
            self.signer.clone(),
            self.trigger.into(),
            self.namespace.clone(),
            self.identity.clone(),
            self.target.clone(),
            self.entitlement.clone(),
            self.change.into(),
            self.source.clone(),
            self.source_path.clone(),
            self.source_commit.clone(),
            self.reason.clone(),
            self.enforced.to_string(),
            self.authored_by.join("; "),
            self.approved_by.join("; "),
        ]
    }
}

/// The keys of `--allowed-signers` (SSH) and `--keyring` (OpenPGP), together.
pub fn signing_keys(
    allowed_signers: Option<&std::path::Path>,
    keyring: Option<&std::path::Path>,
) -> Result<TrustedKeys, String> {
    let mut keys = match allowed_signers {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--allowed-signers: cannot read {}: {e}", path.display()))?;
            TrustedKeys::from_allowed_signers(&text)
                .map_err(|e| format!("--allowed-signers {}: {e}", path.display()))?
        }
        None => TrustedKeys::default(),
    };
    if let Some(path) = keyring {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--keyring: cannot read {}: {e}", path.display()))?;
        let ring = TrustedKeys::from_keyring(&text)
            .map_err(|e| format!("--keyring {}: {e}", path.display()))?;
        keys.extend(ring)
            .map_err(|e| format!("--keyring {}: {e}", path.display()))?;
    }
    Ok(keys)
}

/// Runs `gatehouse audit`.
pub fn run(args: AuditArgs) -> Result<ExitCode, String> {
    let keys = signing_keys(args.allowed_signers.as_deref(), args.keyring.as_deref())?;
    let identity = args
        .identity
        .as_deref()
        .map(|text| match text.split_once('/') {
            Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
            None => (None, text.to_string()),
        });
    let options = AuditOptions {
        reference: args.reference.clone(),
        reflog: args.reflog,
        subdir: args.path.clone(),
        namespace: args.common.namespace.clone(),
        settings: args.common.settings(),
        keys,
        identity,
        since: args.since.as_deref().map(parse_since).transpose()?,
        until: args.common.now()?,
    };
    // Each commit reads the folder's trees again; a flat folder of 10,000 files is one tree
    // of ~400 KB. libgit2 caches trees only up to 4 KiB and re-hashes every object it reads
    // (git itself does neither: objects are checked when fetched, and by `git fsck`). Cache
    // trees and skip the re-hash: the replay reads each tree once instead of twice per commit.
    git2::opts::strict_hash_verification(false);
    // SAFETY: process-wide libgit2 settings, changed before any repository is opened and
    // while no other thread uses libgit2 (the CLI runs one command).
    unsafe {
        let _ = git2::opts::set_cache_object_limit(git2::ObjectType::Tree, 16 << 20);
        let _ = git2::opts::set_cache_max_size(64 << 20);
    }
    let repo = open_repo(&args.repo)?;
    let mut rows = audit(&repo, &options, &mut |warning| {
        eprintln!("warning: {warning}")
    })?;
    if let Some(path) = &args.break_glass {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--break-glass: cannot read {}: {e}", path.display()))?;
        let extra = super::break_glass_rows::rows(&text, &path.display().to_string())?;
        rows.extend(extra.into_iter().filter(|r| {
            options
                .since
                .is_none_or(|s| r.time.parse::<Timestamp>().is_ok_and(|t| t >= s))
                && options.identity.as_ref().is_none_or(|(ns, name)| {
                    *name == r.identity && ns.as_ref().is_none_or(|ns| *ns == r.namespace)
                })
        }));
        // Stable: Git rows keep their order among themselves.
        rows.sort_by(|a, b| a.time.cmp(&b.time));
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = match args.output {
        AuditOutput::Text => write_text(&rows, &mut out),
        AuditOutput::Json => serde_json::to_writer_pretty(&mut out, &rows)
            .map_err(io::Error::other)
            .and_then(|()| writeln!(out)),
        AuditOutput::Csv => write_csv(&rows, &mut out),
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the output: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// `2026-01-05` (midnight UTC) or an RFC 3339 timestamp.
fn parse_since(text: &str) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            format!("--since {text:?} is not a date like 2026-01-05 or 2026-01-05T09:00:00Z")
        })
}

/// Writes rows as an aligned table.
pub fn write_text(rows: &[Row], out: &mut dyn Write) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "no entitlement was granted or revoked");
    }
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let commit = match r.trigger {
                "time" => format!("({})", short(&r.commit)),
                _ => short(&r.commit).to_string(),
            };
            [
                r.time.clone(),
                commit,
                r.author.clone(),
                if r.signer.is_empty() {
                    "-".into()
                } else {
                    r.signer.clone()
                },
                if r.approved_by.is_empty() {
                    "-".into()
                } else {
                    r.approved_by.join(", ")
                },
                format!("{}/{}", r.namespace, r.identity),
                r.entitlement.clone(),
                r.change.to_string(),
                r.source.clone(),
            ]
        })
        .collect();
    let header = [
        "DATE",
        "COMMIT",
        "AUTHOR",
        "SIGNER",
        "APPROVED BY",
        "IDENTITY",
        "ENTITLEMENT",
        "CHANGE",
        "SOURCE",
    ];
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count()).min(48);
        }
    }
    let line = |out: &mut dyn Write, cells: &[&str], reason: &str| -> io::Result<()> {
        for (cell, w) in cells.iter().zip(widths) {
            write!(out, "{cell:<w$}  ")?;
        }
        writeln!(out, "{reason}")
    };
    line(out, &header, "REASON")?;
    for (row, r) in cells.iter().zip(rows) {
        let refs: Vec<&str> = row.iter().map(String::as_str).collect();
        let mut reason = r.reason.clone();
        if !r.enforced {
            reason.push_str(" [Observe: reported, not applied]");
        }
        line(out, &refs, &reason)?;
    }
    Ok(())
}

/// Writes rows as CSV: a header row, then one line per row, quoted per RFC 4180.
pub fn write_csv(rows: &[Row], out: &mut dyn Write) -> io::Result<()> {
    let line = |out: &mut dyn Write, fields: &[&str]| -> io::Result<()> {
        let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        write!(out, "{}\r\n", quoted.join(","))
    };
    line(out, &CSV_HEADER)?;
    for row in rows {
        let fields = row.csv_fields();
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        line(out, &refs)?;
    }
    Ok(())
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// A commit as the audit shows it.
#[derive(Clone, Debug)]
struct CommitRef {
    id: String,
    author: String,
    signer: String,
    /// Who signed and who approved what the commit brought.
    review: Review,
    time: Timestamp,
    /// `commit`, or `rewind` for a reflog step to a commit that does not descend from the
    /// one before (a force-push or reset to older history).
    trigger: &'static str,
}

/// Replays the first-parent history of `options.reference` and returns the rows, oldest
/// first. Problems with the input are passed to `warn` (commit, file and reason).
pub fn audit(
    repo: &Repository,
    options: &AuditOptions,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<Row>, String> {
    let head = repo
        .revparse_single(&options.reference)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| {
            format!(
                "--ref {:?} does not name a commit: {}",
                options.reference,
                e.message()
            )
        })?;
    let steps = if options.reflog {
        replay::reflog(repo, &options.reference)?
    } else {
        replay::first_parent(repo, head.id())?
    };
    let subdir = options
        .subdir
        .as_deref()
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty());
    let mut auditor = Auditor::new(options, Replay::new(&options.namespace, subdir));
    let mut touched = false;
    for step in steps {
        let oid = step.commit;
        let commit = repo.find_commit(oid).map_err(|e| {
            format!(
                "commit {oid} is no longer in the repository: {}",
                e.message()
            )
        })?;
        let changes = auditor.replay.changes(repo, &commit)?;
        if changes.is_empty() {
            continue;
        }
        let author = commit.author();
        let signer = commit_signer(repo, oid, &options.keys);
        let review = approvals::step(repo, &commit, subdir, &options.keys, &signer)
            .map_err(|e| format!("commit {oid}: {e}"))?;
        let info = CommitRef {
            id: oid.to_string(),
            author: format!(
                "{} <{}>",
                author.name().unwrap_or("?"),
                author.email().unwrap_or("?")
            ),
            signer: signer.to_string(),
            review,
            time: match step.moved_at {
                Some(t) => t,
                None => Timestamp::from_second(commit.committer().when().seconds())
                    .map_err(|e| format!("commit {oid} has an impossible committer time: {e}"))?,
            },
            trigger: if step.rewind { "rewind" } else { "commit" },
        };
        auditor.commit(info, changes, warn);
        touched = true;
    }
    if !touched {
        return Err(format!(
            "no commit in the history of {:?} has manifests under {:?}: check --path",
            options.reference,
            subdir.unwrap_or("the repository root")
        ));
    }
    auditor.advance(options.until);
    if let Some((namespace, name)) = &options.identity
        && !auditor.identity_seen
    {
        let name = match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.clone(),
        };
        warn(format!(
            "no identity {name} appears in the history of {:?}: check the name",
            options.reference
        ));
    }
    Ok(auditor.rows)
}

/// A review item: (namespace, response, identity, entitlement, source).
type DecisionKey = (String, String, String, String, String);

/// The replay state: the manifests in force, the engine, and each identity's verdict.
struct Auditor<'o> {
    options: &'o AuditOptions,
    /// The manifests along the history and the objects in force.
    replay: Replay,
    /// Whether a policy, exception or target changed since the engine was last built.
    rules_pending: bool,
    /// The engine of the commit in force.
    engine: Option<Engine>,
    /// The commit in force.
    in_force: Option<CommitRef>,
    /// Each identity's verdict as of the last evaluation.
    current: BTreeMap<IdentityKey, IdentityAccess>,
    /// When each identity's verdict next changes without an edit.
    timers: BTreeSet<(Timestamp, IdentityKey)>,
    timer_of: HashMap<IdentityKey, Timestamp>,
    /// Identities whose own record the commit being applied changed.
    edited: BTreeSet<IdentityKey>,
    /// Whether the identity filtered on was ever evaluated.
    identity_seen: bool,
    rows: Vec<Row>,
    /// Review decisions seen so far, to show only the ones a commit changed.
    decisions: HashMap<DecisionKey, (ReviewDecision, String)>,
}

/// What the identities held before an evaluation, for separation of duties.
struct Current<'a>(&'a BTreeMap<IdentityKey, IdentityAccess>);

impl Held for Current<'_> {
    fn holds(&self, identity: &IdentityKey, entitlement: &crate::api::EntitlementRef) -> bool {
        self.0.get(identity).is_some_and(|a| {
            a.entitlements
                .iter()
                .any(|g| *g.entitlement == *entitlement)
        })
    }
}

impl<'o> Auditor<'o> {
    fn new(options: &'o AuditOptions, replay: Replay) -> Self {
        Self {
            options,
            replay,
            rules_pending: false,
            engine: None,
            in_force: None,
            current: BTreeMap::new(),
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            edited: BTreeSet::new(),
            identity_seen: false,
            rows: Vec::new(),
            decisions: HashMap::new(),
        }
    }

    /// Applies one commit's file changes; evaluates when the whole tree is valid.
    fn commit(
        &mut self,
        info: CommitRef,
        changes: Vec<(String, FileChange)>,
        warn: &mut dyn FnMut(String),
    ) {
        // Time passes up to this commit under the state in force.
        self.advance(info.time);
        let provenance = Provenance {
            commit: Some(info.id.clone()),
            author: Some(info.author.clone()),
            signer: (!info.signer.is_empty()).then(|| info.signer.clone()),
            path: None,
        };
        let loading = self.replay.load(changes, &provenance);
        if !loading.applicable {
            let at = format!(
                "commit {} ({}, {})",
                short(&info.id),
                info.time,
                info.author
            );
            for d in &loading.problems {
                warn(format!("{at}: {d}"));
            }
            if !loading.still_invalid.is_empty() {
                warn(format!(
                    "{at}: still invalid: {}",
                    loading.still_invalid.join(", ")
                ));
            }
            let kept = match &self.in_force {
                Some(c) => format!("commit {} stays in force", short(&c.id)),
                None => "nothing is in force yet".into(),
            };
            warn(format!(
                "{at} is not applied: the controller applies nothing from a commit with an invalid file; {kept}"
            ));
            return;
        }
        self.apply(info);
    }

    /// Makes the parsed tree the state in force at `info`'s time, and records the changes.
    fn apply(&mut self, info: CommitRef) {
        let now = info.time;
        self.in_force = Some(info.clone());
        let applied = self.replay.apply();
        self.edited = applied.edited;
        self.rules_pending |= applied.rules_changed;
        if self.engine.is_none() || self.rules_pending {
            self.review_rows(&info);
        }
        if self.engine.is_none() || std::mem::take(&mut self.rules_pending) {
            let engine = Engine::new(self.replay.snapshot(), self.options.settings.clone());
            let desired = engine.evaluate(now, &Current(&self.current));
            self.engine = Some(engine);
            let gone: Vec<IdentityKey> = self
                .current
                .keys()
                .filter(|k| !desired.identities.contains_key(*k))
                .cloned()
                .collect();
            for key in gone {
                self.record(&key, None, now, &info, info.trigger);
            }
            for (key, access) in desired.identities {
                self.record(&key, Some(access), now, &info, info.trigger);
            }
            return;
        }
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let mut affected: BTreeSet<IdentityKey> = BTreeSet::new();
        for key in &self.edited {
            match self.replay.identity(key) {
                Some(identity) => affected.extend(engine.upsert_identity(identity)),
                None => affected.extend(engine.remove_identity(key)),
            }
            affected.insert(key.clone());
        }
        for key in affected {
            let access = self.evaluate(&key, now);
            self.record(&key, access, now, &info, info.trigger);
        }
    }

    /// One `reviewed` row per review decision (keep or revoke) the commit brought.
    fn review_rows(&mut self, info: &CommitRef) {
        let mut rows = Vec::new();
        for response in &self.replay.snapshot().responses {
            let namespace = response.metadata.namespace.clone().unwrap_or_default();
            let name = response.metadata.name.clone().unwrap_or_default();
            let path = response
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::api::annotations::PATH))
                .cloned()
                .unwrap_or_default();
            for item in &response.spec.items {
                let source = format!("{:?}/{}", item.source.kind, item.source.name);
                let key = (
                    namespace.clone(),
                    name.clone(),
                    item.identity.clone(),
                    item.entitlement.to_string(),
                    source.clone(),
                );
                let justification = item.justification.clone().unwrap_or_default();
                let value = (item.decision, justification.clone());
                if self.decisions.get(&key) == Some(&value) {
                    continue;
                }
                self.decisions.insert(key, value);
                let decision = match item.decision {
                    ReviewDecision::Pending => continue,
                    ReviewDecision::Keep => "keep",
                    ReviewDecision::Revoke => "revoke",
                };
                let wanted = match &self.options.identity {
                    Some((ns, who)) => {
                        who == &item.identity && ns.as_ref().is_none_or(|ns| *ns == namespace)
                    }
                    None => true,
                };
                if !wanted || self.options.since.is_some_and(|since| info.time < since) {
                    continue;
                }
                rows.push(Row {
                    time: info.time.to_string(),
                    commit: info.id.clone(),
                    author: info.author.clone(),
                    signer: info.signer.clone(),
                    trigger: info.trigger,
                    namespace: namespace.clone(),
                    identity: item.identity.clone(),
                    target: item.entitlement.target.clone(),
                    entitlement: item.entitlement.to_string(),
                    change: "reviewed",
                    source,
                    source_path: path.clone(),
                    source_commit: info.id.clone(),
                    reason: format!(
                        "{decision} by {} in AccessReview/{} cycle {}: {justification}",
                        response.spec.reviewer, response.spec.review, response.spec.cycle
                    ),
                    enforced: true,
                    authored_by: info.review.authors.clone(),
                    approved_by: info.review.approvers.clone(),
                    review: Some(ReviewRow {
                        review: response.spec.review.clone(),
                        cycle: response.spec.cycle.clone(),
                        reviewer: response.spec.reviewer.clone(),
                        decision,
                        justification,
                    }),
                });
            }
        }
        self.rows.extend(rows);
    }

    fn evaluate(&self, key: &IdentityKey, now: Timestamp) -> Option<IdentityAccess> {
        self.engine
            .as_ref()?
            .evaluate_identity(key, now, &Current(&self.current))
            .map(|(access, _)| access)
    }

    /// Replays the changes time makes, under the state in force, up to `until`
    /// (inclusive: a change due at a commit's instant happens before the commit).
    fn advance(&mut self, until: Timestamp) {
        let Some(info) = self.in_force.clone() else {
            return;
        };
        while let Some((at, key)) = self.timers.first().cloned() {
            if at > until {
                break;
            }
            self.timers.pop_first();
            self.timer_of.remove(&key);
            // Those whose verdict depends on this identity (reports, owned machines,
            // exception subjects) may change at the same instant: re-inserting the record
            // in force, unchanged, names them.
            let mut affected = BTreeSet::from([key.clone()]);
            if let Some(identity) = self.replay.identity(&key)
                && let Some(engine) = self.engine.as_mut()
            {
                affected.extend(engine.upsert_identity(identity));
            }
            for key in affected {
                let access = self.evaluate(&key, at);
                self.record(&key, access, at, &info, "time");
            }
        }
    }

    /// Diffs an identity's new verdict against its current one and records the rows.
    fn record(
        &mut self,
        key: &IdentityKey,
        new: Option<IdentityAccess>,
        now: Timestamp,
        info: &CommitRef,
        trigger: &'static str,
    ) {
        let next = new
            .as_ref()
            .and_then(|a| a.next_change)
            .filter(|t| *t > now);
        if let Some(old) = self.timer_of.remove(key) {
            self.timers.remove(&(old, key.clone()));
        }
        if let Some(t) = next {
            self.timers.insert((t, key.clone()));
            self.timer_of.insert(key.clone(), t);
        }
        let old = self.current.remove(key);
        let rows = self.rows_of(key, old.as_ref(), new.as_ref(), now, info, trigger);
        self.rows.extend(rows);
        if let Some(access) = new {
            self.current.insert(key.clone(), access);
        }
    }

    /// The rows of one identity's change from `old` to `new`, when the filters want them.
    fn rows_of(
        &mut self,
        key: &IdentityKey,
        old: Option<&IdentityAccess>,
        new: Option<&IdentityAccess>,
        now: Timestamp,
        info: &CommitRef,
        trigger: &'static str,
    ) -> Vec<Row> {
        let wanted = match &self.options.identity {
            Some((ns, name)) => {
                name == &key.name && ns.as_ref().is_none_or(|ns| ns == &key.namespace)
            }
            None => true,
        };
        self.identity_seen |= wanted;
        if !wanted || self.options.since.is_some_and(|since| now < since) {
            return Vec::new();
        }
        let empty = Vec::new();
        let before = old.map_or(&empty, |a| &a.entitlements);
        let after = new.map_or(&empty, |a| &a.entitlements);
        let row = |grant: &crate::engine::Grant, change: &'static str, reason: String| {
            let source = &grant.sources[0];
            Row {
                time: now.to_string(),
                commit: info.id.clone(),
                author: info.author.clone(),
                signer: info.signer.clone(),
                trigger,
                namespace: key.namespace.clone(),
                identity: key.name.clone(),
                target: grant.entitlement.target.clone(),
                entitlement: grant.entitlement.to_string(),
                change,
                source: source.to_string(),
                source_path: source.provenance.path.clone().unwrap_or_default(),
                source_commit: source.provenance.commit.clone().unwrap_or_default(),
                reason,
                enforced: grant.enforced,
                authored_by: info.review.authors.clone(),
                approved_by: info.review.approvers.clone(),
                review: None,
            }
        };
        let rewind = if trigger == "rewind" {
            format!("rewind to {} (force-push or reset): ", short(&info.id))
        } else {
            String::new()
        };
        // A change to the identity's own record that keeps its phase: a mover.
        let mover = trigger != "time"
            && self.edited.contains(key)
            && old.zip(new).is_some_and(|(o, n)| o.phase == n.phase);
        let mut rows = Vec::new();
        for grant in before {
            if !after.iter().any(|g| g.entitlement == grant.entitlement) {
                let mut reason = self.why_revoked(key, grant, old, new, now);
                if mover {
                    reason.insert_str(0, "mover: ");
                }
                reason.insert_str(0, &rewind);
                rows.push(row(grant, "revoked", reason));
            }
        }
        for grant in after {
            if !before.iter().any(|g| g.entitlement == grant.entitlement) {
                let mut reason = why_granted(grant, old, new);
                if mover {
                    reason.insert_str(0, "mover: ");
                }
                reason.insert_str(0, &rewind);
                rows.push(row(grant, "granted", reason));
            }
        }
        rows
    }

    /// Why an entitlement ended, as far as the engine and the objects tell.
    fn why_revoked(
        &self,
        key: &IdentityKey,
        grant: &crate::engine::Grant,
        old: Option<&IdentityAccess>,
        new: Option<&IdentityAccess>,
        now: Timestamp,
    ) -> String {
        let Some(new) = new else {
            return "identity removed from the repository".into();
        };
        let phase_changed = old.is_some_and(|o| o.phase != new.phase);
        match new.phase {
            Phase::Terminated => return "leaver: identity is Terminated".into(),
            Phase::OwnerTerminated | Phase::Unowned => {
                return format!("owner gone: identity is {}", new.phase);
            }
            Phase::PreHire if phase_changed => return "identity is PreHire".into(),
            _ => {}
        }
        if let Some(w) = new
            .withheld
            .iter()
            .find(|w| w.entitlement == grant.entitlement)
        {
            return format!("withheld: {} ({})", w.reason, w.source);
        }
        let reasons: Vec<String> = grant
            .sources
            .iter()
            .map(|source| match source.kind {
                SourceKind::AccessPolicy => self.policy_gone(key, &source.name),
                SourceKind::Exception => self.exception_gone(key, &source.name, grant, now),
            })
            .collect();
        reasons.join("; ")
    }

    fn policy_gone(&self, key: &IdentityKey, name: &str) -> String {
        let report = self
            .engine
            .as_ref()
            .map(|e| e.selector_report(key))
            .unwrap_or_default();
        match report.into_iter().find(|(p, _)| p == name) {
            None => format!("AccessPolicy/{name} deleted"),
            Some((_, Some(why))) => format!("no longer matched by AccessPolicy/{name}: {why}"),
            Some((_, None)) => format!("AccessPolicy/{name} no longer lists it"),
        }
    }

    fn exception_gone(
        &self,
        key: &IdentityKey,
        name: &str,
        grant: &crate::engine::Grant,
        now: Timestamp,
    ) -> String {
        let exception: Option<&Exception> =
            self.replay
                .defined(&ObjectKey::new(Kind::Exception, &key.namespace, name));
        let Some(exception) = exception else {
            return format!("Exception/{name} deleted");
        };
        let spec = &exception.spec;
        if let Ok(end) = spec.expires_at.parse::<Timestamp>()
            && end <= now
        {
            return format!("Exception/{name} expired at {end}");
        }
        if !spec.entitlements.iter().any(|e| *e == *grant.entitlement) {
            return format!("Exception/{name} no longer lists it");
        }
        if spec.identity != key.name {
            return format!("Exception/{name} now names {}", spec.identity);
        }
        format!("Exception/{name} is no longer valid (approvals or window)")
    }
}

fn why_granted(
    grant: &crate::engine::Grant,
    old: Option<&IdentityAccess>,
    new: Option<&IdentityAccess>,
) -> String {
    let sources: Vec<String> = grant
        .sources
        .iter()
        .map(|s| match s.kind {
            SourceKind::AccessPolicy => format!("matched by AccessPolicy/{}", s.name),
            SourceKind::Exception => format!("Exception/{} is active", s.name),
        })
        .collect();
    let phase = new.map(|n| n.phase);
    let lifecycle = match (old.map(|o| o.phase), phase) {
        (None | Some(Phase::PreHire), Some(Phase::Active)) => "joiner: ",
        (Some(Phase::Terminated), Some(Phase::Active)) => "rehire: ",
        _ => "",
    };
    format!("{lifecycle}{}", sources.join(", "))
}
