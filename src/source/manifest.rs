//! Parsing and checking manifest files: YAML documents to typed objects, with unknown
//! fields, schema (CEL) rules, names and duplicates reported per file, object and field.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use kube::CustomResourceExt;
use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{Definitions, Diagnostics};
use crate::api::{
    API_VERSION, AccessPolicy, AccessReview, AccessReviewResponse, Exception, Identity, Kind,
    Kinded, ObjectKey, TargetSystem, annotations,
};
use crate::engine::{Provenance, Snapshot};

/// Largest manifest file read; larger files are rejected, never truncated.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// The outcome of reading manifests.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Objects that passed every check.
    pub snapshot: Snapshot,
    /// Everything wrong with the input.
    pub diagnostics: Diagnostics,
    /// The file each object came from (the first definition, when several).
    pub files: BTreeMap<ObjectKey, String>,
}

/// Positions in a [`Loader`]'s lists (see [`Loader::mark`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark([usize; 6]);

impl Mark {
    /// This mark in a loader that had `base` before this one's lists were appended to it.
    pub fn after(self, base: Mark) -> Mark {
        Mark(std::array::from_fn(|i| self.0[i] + base.0[i]))
    }
}

/// What a loader read so far, apart from the loader (see [`Loader::take_read`]).
#[derive(Debug, Default)]
pub struct Read {
    snapshot: Snapshot,
    diagnostics: Diagnostics,
    seen: Vec<(ObjectKey, String)>,
}

/// Accumulates files into a snapshot.
pub struct Loader {
    default_namespace: String,
    validator: Validator,
    snapshot: Snapshot,
    /// Diagnostics so far.
    pub diagnostics: Diagnostics,
    /// Every object read, with its file, in reading order.
    seen: Vec<(ObjectKey, String)>,
}

/// The checks the API server applies to one kind: its OpenAPI schema (types, patterns,
/// lengths, enums) and its CEL rules, both compiled once from the generated CRD.
struct KindSchema {
    structure: jsonschema::Validator,
    cel: CompiledSchema,
}

fn schema_of<K: CustomResourceExt>(slot: &'static OnceLock<KindSchema>) -> &'static KindSchema {
    slot.get_or_init(|| {
        let crd = K::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref());
        let schema = serde_json::to_value(schema).expect("CRD schema serializes");
        KindSchema {
            structure: jsonschema::validator_for(&schema)
                .expect("the generated CRD schema is a valid JSON schema"),
            cel: compile_schema(&schema),
        }
    })
}

impl Loader {
    /// A loader that puts objects without a namespace into `default_namespace`.
    pub fn new(default_namespace: &str) -> Self {
        Self {
            default_namespace: default_namespace.to_string(),
            validator: Validator::new(),
            snapshot: Snapshot::default(),
            diagnostics: Diagnostics::default(),
            seen: Vec::new(),
        }
    }

    /// Parses one file; `provenance` (commit, author) is stamped on each object with its path.
    pub fn add_file(&mut self, file: &str, bytes: &[u8], provenance: &Provenance) {
        if bytes.len() > MAX_FILE_BYTES {
            self.diagnostics.error(
                file,
                None,
                None,
                format!(
                    "file is {} bytes, over the {MAX_FILE_BYTES}-byte limit: split it",
                    bytes.len()
                ),
            );
            return;
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            self.diagnostics
                .error(file, None, None, "not UTF-8 text".into());
            return;
        };
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = match serde_yaml::Value::deserialize(document) {
                Ok(value) => value,
                Err(e) => {
                    self.diagnostics.error(
                        file,
                        None,
                        None,
                        format!("invalid YAML in document {}: {e}", index + 1),
                    );
                    break;
                }
            };
            self.add_document(file, index, value, provenance);
        }
    }

    fn add_document(
        &mut self,
        file: &str,
        index: usize,
        value: serde_yaml::Value,
        provenance: &Provenance,
    ) {
        if value.is_null() {
            return;
        }
        let at = format!("document {}", index + 1);
        let Some(map) = value.as_mapping() else {
            self.diagnostics.error(
                file,
                None,
                None,
                format!("{at} is not a Kubernetes object (a mapping with apiVersion and kind)"),
            );
            return;
        };
        let text = |key: &str| map.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let (api_version, kind) = (text("apiVersion"), text("kind"));
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let namespace = map
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(|v| v.as_str())
            .map_or_else(|| self.default_namespace.clone(), str::to_string);
        let label = format!(
            "{}/{namespace}/{}",
            kind.as_deref().unwrap_or("?"),
            name.as_deref().unwrap_or("?")
        );
        if api_version.as_deref() != Some(API_VERSION) {
            self.diagnostics.error(
                file,
                Some(label),
                Some("apiVersion".into()),
                format!(
                    "apiVersion is {:?}; only {API_VERSION} objects belong in a policy repository",
                    api_version.unwrap_or_default()
                ),
            );
            return;
        }
        let key = |kind| ObjectKey::new(kind, &namespace, name.as_deref().unwrap_or("?"));
        match kind.as_deref().map(str::parse) {
            Some(Ok(Kind::Identity)) => self.add_object::<Identity>(file, value, provenance, key(Kind::Identity), &IDENTITY, |s, o| s.identities.push(o)),
            Some(Ok(Kind::AccessPolicy)) => self.add_object::<AccessPolicy>(file, value, provenance, key(Kind::AccessPolicy), &POLICY, |s, o| s.policies.push(o)),
            Some(Ok(Kind::Exception)) => self.add_object::<Exception>(file, value, provenance, key(Kind::Exception), &EXCEPTION, |s, o| s.exceptions.push(o)),
            Some(Ok(Kind::TargetSystem)) => self.add_object::<TargetSystem>(file, value, provenance, key(Kind::TargetSystem), &TARGET, |s, o| s.targets.push(o)),
            Some(Ok(Kind::AccessReview)) => self.add_object::<AccessReview>(file, value, provenance, key(Kind::AccessReview), &REVIEW, |s, o| s.reviews.push(o)),
            Some(Ok(Kind::AccessReviewResponse)) => self.add_object::<AccessReviewResponse>(file, value, provenance, key(Kind::AccessReviewResponse), &RESPONSE, |s, o| s.responses.push(o)),
            _ => self.diagnostics.error(
                file,
                Some(label),
                Some("kind".into()),
                format!("kind {:?} is not a gatehouse kind: use Identity, AccessPolicy, Exception, TargetSystem, AccessReview or AccessReviewResponse", kind.unwrap_or_default()),
            ),
        }
    }

    fn add_object<K>(
        &mut self,
        file: &str,
        value: serde_yaml::Value,
        provenance: &Provenance,
        key: ObjectKey,
        schema: &'static OnceLock<KindSchema>,
        push: fn(&mut Snapshot, K),
    ) where
        K: Kinded + CustomResourceExt + DeserializeOwned + serde::Serialize,
    {
        let mut unknown = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        let parsed: Result<K, _> = serde_ignored::deserialize(
            serde_path_to_error::Deserializer::new(value, &mut track),
            |path| unknown.push(path.to_string().replace(".?", "")), // `?` marks the inside of an Option
        );
        let mut object = match parsed {
            Ok(object) => object,
            Err(e) => {
                let path = track.path().to_string();
                let field = (path != ".").then_some(path);
                let message = e.to_string();
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_string();
                self.diagnostics.error(
                    file,
                    Some(key.to_string()),
                    field,
                    format!("{message}: see `gatehouse crds` for the schema"),
                );
                // Still defined here: a second definition elsewhere is a duplicate.
                self.seen.push((key, file.to_string()));
                return;
            }
        };
        let meta = object.meta_mut();
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta
            .namespace
            .get_or_insert_with(|| self.default_namespace.clone())
            .clone();
        let key = ObjectKey::new(K::KIND, namespace.clone(), name.clone());
        let label = key.to_string();
        let mut ok = true;
        // The generated root type reads apiVersion and kind itself; they were checked above.
        for path in unknown
            .into_iter()
            .filter(|p| p != "apiVersion" && p != "kind")
        {
            ok = false;
            self.diagnostics.error(
                file,
                Some(label.clone()),
                Some(path.clone()),
                format!("unknown field {path}: check its spelling against `gatehouse crds`"),
            );
        }
        if let Some(problem) = name_problem(&name) {
            ok = false;
            self.diagnostics.error(
                file,
                Some(label.clone()),
                Some("metadata.name".into()),
                problem,
            );
        }
        if let Some(problem) = name_problem(&namespace).filter(|_| namespace.len() <= 63) {
            ok = false;
            self.diagnostics.error(
                file,
                Some(label.clone()),
                Some("metadata.namespace".into()),
                problem,
            );
        }
        let annotations = meta.annotations.get_or_insert_with(Default::default);
        annotations.insert(annotations::PATH.into(), file.to_string());
        for (key, value) in [
            (annotations::COMMIT, &provenance.commit),
            (annotations::AUTHOR, &provenance.author),
            (annotations::SIGNER, &provenance.signer),
        ] {
            if let Some(value) = value {
                annotations.insert(key.into(), value.clone());
            }
        }
        let json = serde_json::to_value(&object).unwrap_or_default();
        let schema = schema_of::<K>(schema);
        for e in schema.structure.iter_errors(&json) {
            ok = false;
            let field = field_path(&e.instance_path().to_string());
            self.diagnostics
                .error(file, Some(label.clone()), Some(field), e.to_string());
        }
        if let Err(errors) = self.validator.validate_compiled(&schema.cel, &json, None) {
            ok = false;
            for e in errors.into_vec() {
                self.diagnostics.error(
                    file,
                    Some(label.clone()),
                    Some(e.field_path.clone()),
                    e.message.clone(),
                );
            }
        }
        self.seen.push((key, file.to_string()));
        if ok {
            push(&mut self.snapshot, object);
        }
    }

    /// How far each of the loader's lists has grown: two marks around [`add_file`](Self::add_file)
    /// delimit what one file produced.
    pub fn mark(&self) -> Mark {
        Mark([
            self.snapshot.identities.len(),
            self.snapshot.policies.len(),
            self.snapshot.exceptions.len(),
            self.snapshot.targets.len(),
            self.diagnostics.0.len(),
            self.seen.len(),
        ])
    }

    /// Takes out what was read so far, to share it with other threads ([`copy_file`](Self::copy_file)).
    pub fn take_read(&mut self) -> Read {
        Read {
            snapshot: std::mem::take(&mut self.snapshot),
            diagnostics: std::mem::take(&mut self.diagnostics),
            seen: std::mem::take(&mut self.seen),
        }
    }

    /// Puts back what [`take_read`](Self::take_read) took.
    pub fn put_read(&mut self, read: Read) {
        self.snapshot = read.snapshot;
        self.diagnostics = read.diagnostics;
        self.seen = read.seen;
    }

    /// Appends what one file produced in another loader (between `from` and `to`): the
    /// same as [`add_file`](Self::add_file) on the same path, bytes, namespace and
    /// provenance, without parsing again.
    pub fn copy_file(&mut self, read: &Read, from: Mark, to: Mark) {
        let [i, p, e, t, d, s] = from.0;
        let [i2, p2, e2, t2, d2, s2] = to.0;
        let snapshot = &mut self.snapshot;
        snapshot
            .identities
            .extend_from_slice(&read.snapshot.identities[i..i2]);
        snapshot
            .policies
            .extend_from_slice(&read.snapshot.policies[p..p2]);
        snapshot
            .exceptions
            .extend_from_slice(&read.snapshot.exceptions[e..e2]);
        snapshot
            .targets
            .extend_from_slice(&read.snapshot.targets[t..t2]);
        self.diagnostics
            .0
            .extend_from_slice(&read.diagnostics.0[d..d2]);
        self.seen.extend_from_slice(&read.seen[s..s2]);
    }

    /// Appends what another loader read (files later in the order than this one's).
    pub fn merge(&mut self, other: Loader) {
        let Snapshot {
            identities,
            policies,
            exceptions,
            targets,
            reviews,
            responses,
        } = other.snapshot;
        self.snapshot.identities.extend(identities);
        self.snapshot.policies.extend(policies);
        self.snapshot.exceptions.extend(exceptions);
        self.snapshot.targets.extend(targets);
        self.snapshot.reviews.extend(reviews);
        self.snapshot.responses.extend(responses);
        self.diagnostics.0.extend(other.diagnostics.0);
        self.seen.extend(other.seen);
    }

    /// The snapshot and diagnostics. An object defined twice is kept from its first
    /// definition in path order only ([`Definitions`]), and every other is an error.
    pub fn finish(self) -> Loaded {
        let mut diagnostics = self.diagnostics;
        let mut definitions = Definitions::default();
        for (key, file) in self.seen {
            definitions.define(key, &file);
        }
        diagnostics.0.extend(definitions.errors());
        let mut files = BTreeMap::new();
        let mut rejected = HashSet::new();
        for (key, defined_in) in definitions.iter() {
            files.insert(key.clone(), defined_in[0].clone());
            for file in &defined_in[1..] {
                rejected.insert((key.clone(), file.clone()));
            }
        }
        let mut snapshot = self.snapshot;
        if !rejected.is_empty() {
            fn keep<K: Kinded>(rejected: &HashSet<(ObjectKey, String)>, objects: &mut Vec<K>) {
                objects.retain(|o| !rejected.contains(&(ObjectKey::of(o), file_of(o.meta()))));
            }
            keep(&rejected, &mut snapshot.identities);
            keep(&rejected, &mut snapshot.policies);
            keep(&rejected, &mut snapshot.exceptions);
            keep(&rejected, &mut snapshot.targets);
            keep(&rejected, &mut snapshot.reviews);
            keep(&rejected, &mut snapshot.responses);
        }
        diagnostics.0.sort();
        Loaded {
            snapshot,
            diagnostics,
            files,
        }
    }
}

/// The file an object was read from (its `gatehouse.dev/path` annotation).
pub fn file_of(meta: &kube::api::ObjectMeta) -> String {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(annotations::PATH))
        .cloned()
        .unwrap_or_default()
}

static IDENTITY: OnceLock<KindSchema> = OnceLock::new();
static POLICY: OnceLock<KindSchema> = OnceLock::new();
static EXCEPTION: OnceLock<KindSchema> = OnceLock::new();
static TARGET: OnceLock<KindSchema> = OnceLock::new();
static REVIEW: OnceLock<KindSchema> = OnceLock::new();
static RESPONSE: OnceLock<KindSchema> = OnceLock::new();

/// A JSON pointer (`/spec/entitlements/0/target`) as a field path (`spec.entitlements[0].target`).
fn field_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').filter(|s| !s.is_empty()) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
    }
    path
}

/// Why a name is not a valid Kubernetes object name (RFC 1123 subdomain), if it is not.
fn name_problem(name: &str) -> Option<String> {
    let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() {
        Some("metadata.name is required".into())
    } else if name.len() > 253
        || !name.chars().all(valid_char)
        || !edge(name.chars().next())
        || !edge(name.chars().last())
    {
        Some(format!(
            "{name:?} is not a valid name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        ))
    } else {
        None
    }
}
