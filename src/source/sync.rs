//! What a PolicySource wants in its namespace at one commit: verified, parsed and checked
//! as a whole. Reads Git objects only; applying to the cluster is the controller's job.
//!
//! All or nothing: one bad file, one unverified commit, and the commit yields no objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use git2::{Oid, Repository};
use kube::Resource;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::approvals;
use super::history::{self, Change, Movement};
use super::verify::{self, PathRules, Rejection, Signer, TrustedKeys};
use super::{Definitions, Diagnostic, Diagnostics, Loader};
use crate::api::{Kind, ObjectKey, PolicySourceSpec, annotations, labels};
use crate::engine::Provenance;

/// Most commits walked to attribute files on a first sync.
const HISTORY_LIMIT: usize = 20_000;

/// One object to keep in the namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObject {
    /// `Identity`, `AccessPolicy`, `Exception` or `TargetSystem`.
    pub kind: Kind,
    /// `metadata.name`.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// The object as applied: apiVersion, kind, metadata (name, namespace, labels,
    /// annotations) and spec. Shared: a commit's objects are kept between polls.
    pub body: Arc<Value>,
    /// Digest of `body` without the digest annotation itself.
    pub digest: String,
}

impl DesiredObject {
    /// Its key in `namespace` (the source's).
    pub fn key(&self, namespace: &str) -> ObjectKey {
        ObjectKey::new(self.kind, namespace, &self.name)
    }
}

/// Everything a source wants at a commit, sorted by kind and name.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// The objects.
    pub objects: Vec<DesiredObject>,
    /// Signers of the commits verified for this move, oldest first, deduplicated.
    pub signers: Vec<String>,
    /// Commits checked (signatures and path owners) for this move.
    pub verified_commits: usize,
}

/// Why a commit yields nothing.
#[derive(Clone, Debug)]
pub enum Refusal {
    /// A commit in the range is not properly signed.
    Unverified(Rejection),
    /// Files that fail parsing or checks.
    Invalid(Vec<Diagnostic>),
    /// The PolicySource itself is unusable (bad keys, bad globs).
    BadSpec(String),
}

#[derive(Clone, Debug)]
struct FileEntry {
    blob: Oid,
    objects: Vec<DesiredObject>,
    errors: Vec<Diagnostic>,
}

/// What a source remembers between syncs: parsed files by content, so that a new commit
/// re-reads only the files it changed.
#[derive(Debug, Default)]
pub struct SourceMemory {
    files: HashMap<String, FileEntry>,
}

/// Commit metadata for provenance, looked up once per commit.
struct Commits<'r> {
    repo: &'r Repository,
    keys: Option<&'r TrustedKeys>,
    known: HashMap<Oid, Provenance>,
}

impl<'r> Commits<'r> {
    fn provenance(&mut self, oid: Oid, signer: Option<&str>) -> Provenance {
        if let Some(p) = self.known.get(&oid) {
            return p.clone();
        }
        let (repo, keys) = (self.repo, self.keys);
        let mut provenance = Provenance {
            commit: Some(oid.to_string()),
            ..Provenance::default()
        };
        if let Ok(commit) = repo.find_commit(oid) {
            let author = commit.author();
            provenance.author = Some(format!(
                "{} <{}>",
                author.name().unwrap_or("?"),
                author.email().unwrap_or("?")
            ));
        }
        provenance.signer = match signer {
            Some(s) => Some(s.to_string()),
            None => keys.and_then(|k| match verify::commit_signer(repo, oid, k) {
                Signer::Trusted(name) => Some(name),
                _ => None,
            }),
        };
        self.known.insert(oid, provenance.clone());
        provenance
    }
}

/// Prepares the objects of `head`, moving from the commit applied before (`applied`).
/// `spec_changed` also checks the newest commit that shaped the folder, as a first sync does.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    repo: &Repository,
    memory: &mut SourceMemory,
    spec: &PolicySourceSpec,
    namespace: &str,
    source: &str,
    applied: Option<Oid>,
    head: Oid,
    spec_changed: bool,
) -> Result<Result<Desired, Refusal>, String> {
    let subdir = spec.path.as_deref();
    let movement = history::movement(repo, applied, head);
    // The commits that brought new content, newest first.
    let range: Vec<Change> = match movement {
        Movement::FastForward => history::changes(repo, applied, head, subdir, HISTORY_LIMIT)?,
        Movement::Diverged(Some(base)) => {
            history::changes(repo, Some(base), head, subdir, HISTORY_LIMIT)?
        }
        Movement::First | Movement::Rollback | Movement::Diverged(None) | Movement::Same => {
            Vec::new()
        }
    };
    // Files that are new to memory need a last-changing commit too (a first sync reads the
    // whole history once).
    let full_history = memory.files.is_empty()
        || spec_changed
        || matches!(
            movement,
            Movement::First | Movement::Rollback | Movement::Diverged(None)
        );
    let history_changes = if full_history {
        history::changes(repo, None, head, subdir, HISTORY_LIMIT)?
    } else {
        Vec::new()
    };

    // Verification.
    let keys = spec.verify.as_ref().map(|v| {
        TrustedKeys::new(
            v.keys
                .iter()
                .map(|k| (k.name.clone(), k.public_key.clone())),
        )
        .map_err(|e| format!("spec.verify.keys: {e}"))
        .map(Some)
    });
    let keys = match keys {
        Some(Ok(k)) => k,
        Some(Err(e)) => return Ok(Err(Refusal::BadSpec(e))),
        None => None,
    };
    let mut verified: HashMap<Oid, String> = HashMap::new();
    let mut desired_signers = Vec::new();
    let mut verified_commits = 0;
    if let Some(keys) = &keys {
        let rules = match PathRules::new(&spec.path_owners, keys) {
            Ok(r) => r,
            Err(e) => return Ok(Err(Refusal::BadSpec(e))),
        };
        // A fast-forward or rewritten branch: every new commit. A first sync or a reset to
        // an older commit: the newest commit that shaped the folder (trust on first use of
        // what came before it, as Flux verifies HEAD).
        let newest = &history_changes[..history_changes.len().min(1)];
        let mut to_check: Vec<Change> = match movement {
            Movement::FastForward | Movement::Diverged(Some(_)) => range.clone(),
            Movement::First | Movement::Rollback | Movement::Diverged(None) => newest.to_vec(),
            Movement::Same => Vec::new(),
        };
        if spec_changed {
            for change in newest {
                if !to_check.iter().any(|c| c.commit == change.commit) {
                    to_check.push(change.clone());
                }
            }
        }
        let signers = match verify::verify_changes(repo, &to_check, keys, &rules) {
            Ok(signers) => signers,
            Err(rejection) => return Ok(Err(Refusal::Unverified(rejection))),
        };
        if rules.wants_approvals() {
            let base = match movement {
                Movement::FastForward => applied,
                Movement::Diverged(base) => base,
                _ => None,
            };
            if let Err(rejection) =
                approvals::verify_approvals(repo, base, head, &to_check, &signers, keys, &rules)?
            {
                return Ok(Err(Refusal::Unverified(rejection)));
            }
        }
        verified_commits = signers.len();
        for (oid, name) in signers.into_iter().rev() {
            if !desired_signers.contains(&name) {
                desired_signers.push(name.clone());
            }
            verified.insert(oid, name);
        }
    }

    // Newest commit per path: the range first, then the whole history.
    let mut last_change: HashMap<&str, Oid> = HashMap::new();
    for change in range.iter().chain(history_changes.iter()) {
        for path in &change.paths {
            last_change.entry(path.as_str()).or_insert(change.commit);
        }
    }

    let commit = repo
        .find_commit(head)
        .map_err(|e| e.message().to_string())?;
    let Some(tree) = history::subtree(repo, &commit, subdir)? else {
        return Ok(Err(Refusal::Invalid(vec![Diagnostic {
            severity: crate::engine::Severity::Error,
            file: subdir.unwrap_or("/").to_string(),
            object: None,
            field: Some("spec.path".into()),
            message: format!(
                "folder {:?} does not exist at commit {}: fix spec.path",
                subdir.unwrap_or(""),
                verify::short(&head.to_string())
            ),
        }])));
    };
    // Files are named by their path in the repository (what `git show COMMIT:PATH` takes);
    // history and path owners use paths relative to the source folder.
    let prefix = subdir
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty())
        .map(|s| format!("{s}/"))
        .unwrap_or_default();
    let listing = super::files::list_tree(&tree).map_err(|e| e.message().to_string())?;
    let mut tree_errors = Diagnostics::default();
    for (relative, why) in listing.refused {
        tree_errors.error(&format!("{prefix}{relative}"), None, None, why.into());
    }
    let blobs: Vec<(String, String, Oid)> = listing
        .manifests
        .into_iter()
        .map(|(relative, oid)| (format!("{prefix}{relative}"), relative, oid))
        .collect();

    // Parse what changed, in parallel; keep the rest.
    let mut commits = Commits {
        repo,
        keys: keys.as_ref(),
        known: HashMap::new(),
    };
    let mut to_parse: Vec<(String, Vec<u8>, Provenance)> = Vec::new();
    let mut files: HashMap<String, FileEntry> = HashMap::with_capacity(blobs.len());
    for (path, relative, blob) in &blobs {
        if let Some(entry) = memory.files.remove(path).filter(|e| e.blob == *blob) {
            files.insert(path.clone(), entry);
            continue;
        }
        let object = repo.find_blob(*blob).map_err(|e| e.message().to_string())?;
        if let Some(message) = super::files::oversized(object.size() as u64) {
            files.insert(
                path.clone(),
                FileEntry {
                    blob: *blob,
                    objects: Vec::new(),
                    errors: vec![Diagnostic {
                        severity: crate::engine::Severity::Error,
                        file: path.clone(),
                        object: None,
                        field: None,
                        message,
                    }],
                },
            );
            continue;
        }
        let changed_in = last_change.get(relative.as_str()).copied().unwrap_or(head);
        let signer = verified.get(&changed_in).cloned();
        let provenance = commits.provenance(changed_in, signer.as_deref());
        to_parse.push((path.clone(), object.content().to_vec(), provenance));
    }
    let blob_of: HashMap<&str, Oid> = blobs.iter().map(|(p, _, b)| (p.as_str(), *b)).collect();
    for (path, entry) in parse(to_parse, namespace, source) {
        let blob = blob_of[path.as_str()];
        files.insert(path, FileEntry { blob, ..entry });
    }
    memory.files = files;

    // Whole-commit checks: every file clean, every object defined once.
    let mut errors: Vec<Diagnostic> = tree_errors.0;
    let mut definitions = Definitions::default();
    for (path, entry) in &memory.files {
        errors.extend(entry.errors.iter().cloned());
        for object in &entry.objects {
            definitions.define(object.key(namespace), path);
        }
    }
    errors.extend(definitions.errors());
    let mut objects = Vec::new();
    for (path, entry) in &memory.files {
        for object in &entry.objects {
            if definitions.first(&object.key(namespace)) == Some(path.as_str()) {
                objects.push(object.clone());
            }
        }
    }
    if !errors.is_empty() {
        errors.sort();
        errors.dedup();
        return Ok(Err(Refusal::Invalid(errors)));
    }
    objects.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Ok(Ok(Desired {
        objects,
        signers: desired_signers,
        verified_commits,
    }))
}

/// Parses files on every core, each into its objects (ready to apply) and its errors.
fn parse(
    files: Vec<(String, Vec<u8>, Provenance)>,
    namespace: &str,
    source: &str,
) -> Vec<(String, FileEntry)> {
    super::files::parallel(&files, |part| parse_part(part, namespace, source))
        .into_iter()
        .flatten()
        .collect()
}

fn parse_part(
    files: &[(String, Vec<u8>, Provenance)],
    namespace: &str,
    source: &str,
) -> Vec<(String, FileEntry)> {
    let mut loader = Loader::new(namespace);
    for (path, bytes, provenance) in files {
        loader.add_file(path, bytes, provenance);
    }
    let loaded = loader.finish();
    let mut out: BTreeMap<String, FileEntry> = files
        .iter()
        .map(|(path, _, _)| {
            (
                path.clone(),
                FileEntry {
                    blob: Oid::ZERO_SHA1,
                    objects: Vec::new(),
                    errors: Vec::new(),
                },
            )
        })
        .collect();
    for d in loaded.diagnostics.0 {
        if let Some(entry) = out.get_mut(&d.file) {
            entry.errors.push(d);
        }
    }
    let snapshot = loaded.snapshot;
    let mut add = |meta: &kube::api::ObjectMeta, kind: Kind, body: Value| {
        let file = super::manifest::file_of(meta);
        let name = meta.name.clone().unwrap_or_default();
        let Some(entry) = out.get_mut(&file) else {
            return;
        };
        if meta.namespace.as_deref() != Some(namespace) {
            entry.errors.push(Diagnostic {
                severity: crate::engine::Severity::Error,
                file: file.clone(),
                object: Some(
                    ObjectKey::new(kind, meta.namespace.as_deref().unwrap_or_default(), &name)
                        .to_string(),
                ),
                field: Some("metadata.namespace".into()),
                message: format!(
                    "this source applies into namespace {namespace:?} only: remove metadata.namespace"
                ),
            });
            return;
        }
        entry
            .objects
            .push(desired(kind, &name, &file, namespace, source, body));
    };
    for o in &snapshot.identities {
        add(
            o.meta(),
            Kind::Identity,
            serde_json::to_value(o).unwrap_or_default(),
        );
    }
    for o in &snapshot.policies {
        add(
            o.meta(),
            Kind::AccessPolicy,
            serde_json::to_value(o).unwrap_or_default(),
        );
    }
    for o in &snapshot.exceptions {
        add(
            o.meta(),
            Kind::Exception,
            serde_json::to_value(o).unwrap_or_default(),
        );
    }
    for o in &snapshot.targets {
        add(
            o.meta(),
            Kind::TargetSystem,
            serde_json::to_value(o).unwrap_or_default(),
        );
    }
    out.into_iter().collect()
}

/// The object to apply: only name, namespace, labels and annotations of the metadata in
/// Git are kept (never a uid, resourceVersion, finalizers or owners), plus the source label
/// and the digest annotation.
fn desired(
    kind: Kind,
    name: &str,
    file: &str,
    namespace: &str,
    source: &str,
    parsed: Value,
) -> DesiredObject {
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), Value::String(name.to_string()));
    metadata.insert("namespace".into(), Value::String(namespace.to_string()));
    let mut label_map = parsed
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    label_map.insert(labels::SOURCE.into(), Value::String(source.to_string()));
    metadata.insert("labels".into(), Value::Object(label_map));
    let annotation_map = parsed
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut body = serde_json::Map::new();
    body.insert(
        "apiVersion".into(),
        Value::String(crate::api::API_VERSION.into()),
    );
    body.insert("kind".into(), Value::String(kind.to_string()));
    body.insert(
        "spec".into(),
        parsed.get("spec").cloned().unwrap_or_default(),
    );
    metadata.insert("annotations".into(), Value::Object(annotation_map));
    body.insert("metadata".into(), Value::Object(metadata));
    let mut body = Value::Object(body);
    let digest = hex::encode(Sha256::digest(
        serde_json::to_vec(&body).expect("JSON values serialize"),
    ));
    if let Some(map) = body
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        map.insert(annotations::DIGEST.into(), Value::String(digest.clone()));
    }
    DesiredObject {
        kind,
        name: name.to_string(),
        file: file.to_string(),
        body: Arc::new(body),
        digest,
    }
}
