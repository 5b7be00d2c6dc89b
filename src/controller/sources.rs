//! PolicySource reconciler: polls (or is woken by the webhook), verifies and reads the new
//! commit with [`crate::source`], then server-side applies what changed, prunes what left
//! Git, and writes status. Runs on the leader only.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use git2::Oid;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

use super::Caches;
use super::status::Conditions;
use super::writer::{Writer, object_ref};
use crate::api::{
    AccessPolicy, AccessReview, AccessReviewResponse, Condition, Exception, Identity, Kind, Kinded,
    PolicySource, PolicySourceStatus, TargetSystem, annotations, condition_types, labels,
};
use crate::http::{Metrics, SourceLabels};
use crate::source::Diagnostic;
use crate::source::fetch::{self, FetchError, GitCredentials};
use crate::source::history::{self, Movement};
use crate::source::sync::{self, Desired, DesiredObject, Refusal, SourceMemory};
use crate::source::verify::short;

/// Field manager of objects applied from Git.
pub const SOURCE_MANAGER: &str = "gatehouse-source";

/// Objects applied at once.
const APPLY_CONCURRENCY: usize = 32;

/// Diagnostics quoted in a status message; the Event and logs carry the same.
const QUOTED_PROBLEMS: usize = 5;

/// What one source remembers between passes.
#[derive(Default)]
struct Memory {
    files: SourceMemory,
    /// The head last prepared, the generation it was prepared for, and what it yielded.
    prepared: Option<(Oid, Option<i64>, Option<Arc<Desired>>)>,
    /// The `metadata.generation` of each object as this controller last applied it: an
    /// object still at that generation needs no comparison of its spec.
    generations: HashMap<(Kind, String), i64>,
}

/// Shared by every source's reconcile.
pub(super) struct Context {
    client: Client,
    writer: Writer,
    cache_dir: PathBuf,
    metrics: Arc<Metrics>,
    caches: Arc<Caches>,
    memory: Mutex<HashMap<String, Memory>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct SourceError(String);

/// Runs the PolicySource controller until `stop` completes.
pub(super) async fn run(
    client: Client,
    namespace: Option<String>,
    cache_dir: PathBuf,
    metrics: Arc<Metrics>,
    caches: Arc<Caches>,
    instance: Option<String>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<PolicySource> = super::api(&client, &namespace);
    let context = Arc::new(Context {
        writer: Writer::new(client.clone(), instance),
        client,
        cache_dir,
        metrics,
        caches,
        memory: Mutex::default(),
    });
    // Every change wakes a source, its own status writes included: such a pass only asks
    // the remote for its head and finds nothing new.
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "policy source reconcile");
            }
        })
        .await;
}

fn error_policy(_: Arc<PolicySource>, error: &SourceError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "policy source sync failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// The poll interval with ±10% jitter, so that many sources do not poll in step.
fn jittered(interval: &str) -> Duration {
    let base = crate::engine::lifecycle::parse_duration(interval)
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(1));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.9 + 0.2 * (f64::from(nanos % 1000) / 1000.0);
    base.mul_f64(factor)
}

/// What the Git side of a pass found.
enum GitOutcome {
    /// The head is the one already handled; `desired` is what it yielded, if accepted.
    Unchanged(Option<Arc<Desired>>),
    /// A new head (or spec), prepared.
    Changed {
        head: Oid,
        movement: Movement,
        result: Result<Arc<Desired>, Refusal>,
    },
}

async fn reconcile(source: Arc<PolicySource>, ctx: Arc<Context>) -> Result<Action, SourceError> {
    let ns = source.namespace().unwrap_or_default();
    let name = source.name_any();
    let key = format!("{ns}/{name}");
    let interval = jittered(&source.spec.interval);
    if source.spec.suspend {
        // Counted (without a duration), so that "nothing happened" can be told from
        // "nothing ran".
        ctx.metrics
            .source_syncs
            .get_or_create(&SourceLabels {
                namespace: ns,
                source: name,
                result: "suspended".into(),
            })
            .inc();
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let credentials = match read_credentials(&ctx.client, &ns, &source).await {
        Ok(c) => c,
        Err(message) => {
            let status = failed_status(&source, "SecretNotFound", &message, false, false);
            ctx.writer
                .status(&*source, source.status.as_ref(), &status, |s| &s.conditions)
                .await;
            return Ok(Action::requeue(interval));
        }
    };
    let memory = ctx
        .memory
        .lock()
        .expect("memory lock")
        .remove(&key)
        .unwrap_or_default();
    let (outcome, memory) = {
        let source = source.clone();
        let cache_dir = ctx.cache_dir.clone();
        let (ns, name) = (ns.clone(), name.clone());
        tokio::task::spawn_blocking(move || {
            let mut memory = memory;
            let outcome = git_pass(&source, &ns, &name, &cache_dir, &credentials, &mut memory);
            (outcome, memory)
        })
        .await
        .map_err(|e| SourceError(format!("Git task failed: {e}")))?
    };
    let git_time = started.elapsed();
    ctx.memory
        .lock()
        .expect("memory lock")
        .insert(key.clone(), memory);
    let result = match outcome {
        Err(error) => {
            let (reason, stalled) = match &error {
                FetchError::Unreachable(_) => ("FetchFailed", false),
                FetchError::MissingRef(_) => ("RefNotFound", true),
                FetchError::Config(_) => ("FetchFailed", true),
            };
            let status = failed_status(&source, reason, &error.to_string(), stalled, false);
            ctx.writer
                .status(&*source, source.status.as_ref(), &status, |s| &s.conditions)
                .await;
            record(&ctx, &ns, &name, "fetch_failed", started);
            // Keep the last good state; try again sooner than a full interval.
            return Ok(Action::requeue(interval.min(Duration::from_secs(30))));
        }
        Ok(GitOutcome::Unchanged(None)) => "unchanged",
        Ok(GitOutcome::Unchanged(Some(desired))) => {
            // Nothing new in Git: repair objects edited in the cluster, if any.
            match apply_and_prune(&ctx, &source, &desired, false).await {
                Ok((0, _)) => "unchanged",
                Ok((repaired, _)) => {
                    tracing::info!(source = %key, repaired, "re-applied objects changed outside Git");
                    "repaired"
                }
                Err(message) => {
                    forget(&ctx, &key);
                    return Err(SourceError(message));
                }
            }
        }
        Ok(GitOutcome::Changed {
            head,
            result: Err(refusal),
            ..
        }) => {
            refused(&ctx, &source, head, &refusal).await;
            "refused"
        }
        Ok(GitOutcome::Changed {
            head,
            movement,
            result: Ok(desired),
        }) => {
            let problems = conflicts(&ctx, &source, &desired);
            if !problems.is_empty() {
                // Checked again at every poll: the other source may let go of the objects.
                forget(&ctx, &key);
                refused(&ctx, &source, head, &Refusal::Invalid(problems)).await;
                "refused"
            } else {
                match apply_and_prune(&ctx, &source, &desired, true).await {
                    Ok((applied, pruned)) => {
                        applied_status(&ctx, &source, head, movement, &desired, applied, pruned)
                            .await;
                        "applied"
                    }
                    Err(message) => {
                        forget(&ctx, &key);
                        let status = PolicySourceStatus {
                            last_attempted_commit: Some(head.to_string()),
                            ..failed_status(&source, "ApplyFailed", &message, false, false)
                        };
                        ctx.writer
                            .status(&*source, source.status.as_ref(), &status, |s| &s.conditions)
                            .await;
                        return Err(SourceError(message));
                    }
                }
            }
        }
    };
    tracing::debug!(source = %key, result, git = ?git_time, total = ?started.elapsed(), "policy source pass");
    record(&ctx, &ns, &name, result, started);
    Ok(Action::requeue(interval))
}

/// Makes the next pass prepare the head again (after a failed apply).
fn forget(ctx: &Context, key: &str) {
    if let Some(memory) = ctx.memory.lock().expect("memory lock").get_mut(key) {
        memory.prepared = None;
    }
}

fn record(ctx: &Context, ns: &str, name: &str, result: &str, started: Instant) {
    ctx.metrics
        .source_syncs
        .get_or_create(&SourceLabels {
            namespace: ns.to_string(),
            source: name.to_string(),
            result: result.to_string(),
        })
        .inc();
    ctx.metrics
        .source_sync_seconds
        .observe(started.elapsed().as_secs_f64());
}

/// Fetches when the remote moved, then verifies and reads the new head.
fn git_pass(
    source: &PolicySource,
    ns: &str,
    name: &str,
    cache_dir: &std::path::Path,
    credentials: &GitCredentials,
    memory: &mut Memory,
) -> Result<GitOutcome, FetchError> {
    let spec = &source.spec;
    let started = Instant::now();
    let repo = fetch::open_cache(cache_dir, ns, name).map_err(FetchError::Config)?;
    let remote = fetch::remote_head(&repo, &spec.url, &spec.git_ref, credentials)?;
    let polled = started.elapsed();
    let generation = source.metadata.generation;
    if let Some((head, prepared_for, desired)) = &memory.prepared
        && *head == remote
        && *prepared_for == generation
    {
        return Ok(GitOutcome::Unchanged(desired.clone()));
    }
    let head = fetch::fetch(&repo, &spec.url, &spec.git_ref, credentials)?;
    let applied = source
        .status
        .as_ref()
        .and_then(|s| s.last_applied_commit.as_deref())
        .and_then(|id| Oid::from_str(id).ok());
    // A changed spec (another path, other keys or owners) is also checked like a first
    // sync: what was verified under the old spec proves nothing under the new one.
    let spec_changed = source.status.as_ref().and_then(|s| s.observed_generation) != generation;
    let movement = history::movement(&repo, applied, head);
    let fetched = started.elapsed();
    let result = sync::prepare(
        &repo,
        &mut memory.files,
        spec,
        ns,
        name,
        applied,
        head,
        spec_changed,
    )
    .map_err(|e| {
        FetchError::Unreachable(format!("reading commit {}: {e}", short(&head.to_string())))
    })?
    .map(Arc::new);
    memory.prepared = Some((head, generation, result.as_ref().ok().cloned()));
    tracing::debug!(source = %format!("{ns}/{name}"), ?polled, ?fetched, prepared = ?started.elapsed(), "policy source Git work");
    Ok(GitOutcome::Changed {
        head,
        movement,
        result,
    })
}

async fn read_credentials(
    client: &Client,
    ns: &str,
    source: &PolicySource,
) -> Result<GitCredentials, String> {
    let Some(reference) = &source.spec.secret_ref else {
        return Ok(GitCredentials::default());
    };
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(&reference.name)
        .await
        .map_err(|e| format!("cannot read Secret {ns}/{}: {e}", reference.name))?
        .ok_or_else(|| {
            format!(
                "Secret {ns}/{} named in spec.secretRef does not exist: create it",
                reference.name
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    Ok(GitCredentials {
        secret: Some(format!("{ns}/{}", reference.name)),
        username: text("username"),
        password: text("password").or_else(|| text("token")),
        bearer_token: text(fetch::BEARER_KEY),
        ca: text(fetch::CA_KEY),
        identity: text("identity"),
        known_hosts: text("known_hosts"),
    })
}

/// Reads `kind` `ns/name` from its cache with `f` (the object as JSON when `f` asks for it).
fn with_cached<R>(
    caches: &Caches,
    kind: Kind,
    ns: &str,
    name: &str,
    f: impl FnOnce(&kube::api::ObjectMeta, &dyn Fn() -> Option<Value>) -> R,
) -> Option<R> {
    fn get<K, R>(
        store: &Store<DeserializeGuard<K>>,
        ns: &str,
        name: &str,
        f: impl FnOnce(&kube::api::ObjectMeta, &dyn Fn() -> Option<Value>) -> R,
    ) -> Option<R>
    where
        K: Resource<DynamicType = ()> + Clone + serde::Serialize + 'static,
    {
        let object = store.get(&ObjectRef::new(name).within(ns))?;
        let json = || match &object.0 {
            Ok(k) => serde_json::to_value(k).ok(),
            // An unreadable object is always re-applied.
            Err(_) => None,
        };
        let meta = match &object.0 {
            Ok(k) => k.meta(),
            Err(e) => &e.metadata,
        };
        Some(f(meta, &json))
    }
    match kind {
        Kind::Identity => get(&caches.identities, ns, name, f),
        Kind::AccessPolicy => get(&caches.policies, ns, name, f),
        Kind::Exception => get(&caches.exceptions, ns, name, f),
        Kind::TargetSystem => get(&caches.targets, ns, name, f),
        Kind::AccessReview => get(&caches.reviews, ns, name, f),
        Kind::AccessReviewResponse => get(&caches.responses, ns, name, f),
        Kind::PolicySource => None,
    }
}

/// Every cached object carrying `gatehouse.dev/source=<source>` in `ns`: (kind, name).
fn inventory(caches: &Caches, ns: &str, source: &str) -> BTreeSet<(Kind, String)> {
    fn of<K>(
        store: &Store<DeserializeGuard<K>>,
        ns: &str,
        source: &str,
        out: &mut BTreeSet<(Kind, String)>,
    ) where
        K: Kinded + Clone + 'static,
    {
        for object in store.state() {
            let meta = match &object.0 {
                Ok(k) => k.meta(),
                Err(e) => &e.metadata,
            };
            let ours = meta
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::SOURCE))
                .is_some_and(|s| s == source);
            if ours && meta.namespace.as_deref() == Some(ns) {
                out.insert((K::KIND, meta.name.clone().unwrap_or_default()));
            }
        }
    }
    let mut out = BTreeSet::new();
    of(&caches.identities, ns, source, &mut out);
    of(&caches.policies, ns, source, &mut out);
    of(&caches.exceptions, ns, source, &mut out);
    of(&caches.targets, ns, source, &mut out);
    of(&caches.reviews, ns, source, &mut out);
    of(&caches.responses, ns, source, &mut out);
    out
}

/// Whether the cluster's copy already is what Git says: the same digest, and the same
/// spec (the generation this controller last applied, or else an equal spec).
fn up_to_date(
    meta: &kube::api::ObjectMeta,
    json: &dyn Fn() -> Option<Value>,
    applied_generation: Option<i64>,
    wanted: &DesiredObject,
) -> bool {
    let digest = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::DIGEST));
    if digest != Some(&wanted.digest) {
        return false;
    }
    match applied_generation {
        Some(g) if meta.generation == Some(g) => true,
        _ => json().as_ref().and_then(|o| o.get("spec")) == wanted.body.get("spec"),
    }
}

fn resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::Identity => ApiResource::erase::<Identity>(&()),
        Kind::AccessPolicy => ApiResource::erase::<AccessPolicy>(&()),
        Kind::Exception => ApiResource::erase::<Exception>(&()),
        Kind::TargetSystem => ApiResource::erase::<TargetSystem>(&()),
        Kind::AccessReview => ApiResource::erase::<AccessReview>(&()),
        Kind::AccessReviewResponse => ApiResource::erase::<AccessReviewResponse>(&()),
        Kind::PolicySource => ApiResource::erase::<PolicySource>(&()),
    }
}

/// Objects of this commit that another PolicySource already applied: a commit with any is
/// refused as a whole, so that two sources never fight over one object.
fn conflicts(ctx: &Context, source: &PolicySource, desired: &Desired) -> Vec<Diagnostic> {
    let ns = source.namespace().unwrap_or_default();
    let name = source.name_any();
    desired
        .objects
        .iter()
        .filter_map(|object| {
            let other = with_cached(&ctx.caches, object.kind, &ns, &object.name, |meta, _| {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(labels::SOURCE))
                    .filter(|o| **o != name)
                    .cloned()
            })??;
            Some(Diagnostic {
                severity: crate::engine::Severity::Error,
                file: object.file.clone(),
                object: Some(object.key(&ns).to_string()),
                field: Some("metadata.name".into()),
                message: format!(
                    "already applied by PolicySource {other}: define it in one source only"
                ),
            })
        })
        .collect()
}

/// Applies the objects that differ from the cluster and, when `prune` is on and
/// `with_prune`, deletes this source's objects that left Git. Returns (applied, pruned).
async fn apply_and_prune(
    ctx: &Context,
    source: &PolicySource,
    desired: &Desired,
    with_prune: bool,
) -> Result<(usize, usize), String> {
    let ns = source.namespace().unwrap_or_default();
    let name = source.name_any();
    let key = format!("{ns}/{name}");
    let changed: Vec<&DesiredObject> = {
        let memory = ctx.memory.lock().expect("memory lock");
        let applied_generations = memory.get(&key).map(|m| &m.generations);
        desired
            .objects
            .iter()
            .filter(|object| {
                let applied = applied_generations
                    .and_then(|g| g.get(&(object.kind, object.name.clone())))
                    .copied();
                with_cached(&ctx.caches, object.kind, &ns, &object.name, |meta, json| {
                    let owner = meta.labels.as_ref().and_then(|l| l.get(labels::SOURCE));
                    // Another source's object is never taken over (see `conflicts`).
                    owner.is_some_and(|o| *o != name) || up_to_date(meta, json, applied, object)
                })
                .is_none_or(|skip| !skip)
            })
            .collect()
    };
    let params = PatchParams::apply(SOURCE_MANAGER).force();
    let client = &ctx.client;
    let writes: Vec<_> = changed
        .iter()
        .map(|object| {
            let ns = ns.clone();
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ns, &resource(object.kind));
            let params = params.clone();
            async move {
                api.patch(&object.name, &params, &Patch::Apply(&*object.body))
                    .await
                    .map_err(|e| {
                        format!(
                            "applying {} {ns}/{} from {}: {e}",
                            object.kind, object.name, object.file
                        )
                    })
            }
        })
        .collect();
    let results: Vec<Result<DynamicObject, String>> = futures::stream::iter(writes)
        .buffer_unordered(APPLY_CONCURRENCY)
        .collect()
        .await;
    let mut generations = Vec::with_capacity(results.len());
    for result in results {
        let object = result?;
        if let (Some(kind), Some(name), Some(generation)) = (
            object
                .types
                .as_ref()
                .and_then(|t| t.kind.parse::<Kind>().ok()),
            object.metadata.name.clone(),
            object.metadata.generation,
        ) {
            generations.push(((kind, name), generation));
        }
    }
    if let Some(memory) = ctx.memory.lock().expect("memory lock").get_mut(&key) {
        memory.generations.extend(generations);
    }
    let mut pruned = 0;
    if with_prune && source.spec.prune {
        let wanted: BTreeSet<(Kind, String)> = desired
            .objects
            .iter()
            .map(|o| (o.kind, o.name.clone()))
            .collect();
        for (kind, object) in inventory(&ctx.caches, &ns, &name).difference(&wanted) {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ns, &resource(*kind));
            match api.delete(object, &DeleteParams::default()).await {
                Ok(_) => pruned += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(format!("pruning {kind} {ns}/{object}: {e}")),
            }
        }
    }
    Ok((changed.len(), pruned))
}

fn conditions_of(source: &PolicySource) -> Option<&[Condition]> {
    source.status.as_ref().map(|s| s.conditions.as_slice())
}

/// Status after a failure that keeps the last good commit in force. `Verified` turns
/// False when the failure is `unverified`, and is kept as it was otherwise.
fn failed_status(
    source: &PolicySource,
    reason: &str,
    message: &str,
    stalled: bool,
    unverified: bool,
) -> PolicySourceStatus {
    let previous = source.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let mut conditions = Conditions::new(conditions_of(source), source.metadata.generation, now);
    let kept = match &previous.last_applied_commit {
        Some(c) => format!("; commit {} stays in force", short(c)),
        None => String::new(),
    };
    conditions.set(
        condition_types::READY,
        false,
        reason,
        format!("{message}{kept}"),
    );
    if unverified {
        conditions.set(condition_types::VERIFIED, false, reason, message);
    } else if let Some(verified) = previous
        .conditions
        .iter()
        .find(|c| c.type_ == condition_types::VERIFIED)
    {
        conditions.set_status(
            condition_types::VERIFIED,
            &verified.status,
            &verified.reason,
            verified.message.clone(),
        );
    }
    conditions.set_if(
        condition_types::STALLED,
        stalled.then(|| (reason, message.to_string())),
    );
    PolicySourceStatus {
        observed_generation: source.metadata.generation,
        conditions: conditions.finish(),
        ..previous
    }
}

async fn refused(ctx: &Context, source: &PolicySource, head: Oid, refusal: &Refusal) {
    let head_id = head.to_string();
    let (reason, message, unverified) = match refusal {
        Refusal::Unverified(rejection) => {
            let key = rejection
                .key
                .as_deref()
                .map(|k| format!(" (key {k})"))
                .unwrap_or_default();
            (
                "VerificationFailed",
                format!(
                    "{rejection}{key}; nothing from {} was applied",
                    short(&head_id)
                ),
                true,
            )
        }
        Refusal::Invalid(problems) => {
            let mut text: Vec<String> = problems
                .iter()
                .take(QUOTED_PROBLEMS)
                .map(|d| d.to_string())
                .collect();
            if problems.len() > QUOTED_PROBLEMS {
                text.push(format!("and {} more", problems.len() - QUOTED_PROBLEMS));
            }
            (
                "InvalidCommit",
                format!(
                    "commit {} has {} problem(s), so none of its objects were applied: {}",
                    short(&head_id),
                    problems.len(),
                    text.join("; ")
                ),
                false,
            )
        }
        Refusal::BadSpec(problem) => (
            "InvalidSpec",
            format!("{problem}: fix the PolicySource"),
            false,
        ),
    };
    for problem in match refusal {
        Refusal::Invalid(problems) => problems.as_slice(),
        _ => &[],
    } {
        tracing::warn!(source = %source.name_any(), commit = %short(&head_id), %problem, "commit refused");
    }
    let mut status = failed_status(source, reason, &message, true, unverified);
    status.last_attempted_commit = Some(head_id);
    let first_time = source
        .status
        .as_ref()
        .and_then(|s| s.last_attempted_commit.as_deref())
        != status.last_attempted_commit.as_deref();
    ctx.writer
        .status(source, source.status.as_ref(), &status, |s| &s.conditions)
        .await;
    if unverified && first_time {
        // The Ready Event may already exist from an earlier refusal; this one names the commit.
        ctx.writer
            .event(
                object_ref::<PolicySource>(&source.metadata),
                false,
                reason,
                &message,
            )
            .await;
    }
}

async fn applied_status(
    ctx: &Context,
    source: &PolicySource,
    head: Oid,
    movement: Movement,
    desired: &Desired,
    applied: usize,
    pruned: usize,
) {
    let head_id = head.to_string();
    let now = jiff::Timestamp::now();
    let mut conditions = Conditions::new(conditions_of(source), source.metadata.generation, now);
    let moved = match movement {
        Movement::Rollback | Movement::Diverged(_) => {
            let from = source
                .status
                .as_ref()
                .and_then(|s| s.last_applied_commit.as_deref())
                .map(short)
                .unwrap_or("?")
                .to_string();
            let note = format!(
                "history rewritten: {} moved from {from} to {}, which does not descend from it",
                fetch::ref_name(&source.spec.git_ref),
                short(&head_id)
            );
            ctx.writer
                .event(
                    object_ref::<PolicySource>(&source.metadata),
                    false,
                    "HistoryRewritten",
                    &note,
                )
                .await;
            format!(" ({note})")
        }
        _ => String::new(),
    };
    let message = format!(
        "applied commit {}: {} objects, {applied} changed, {pruned} pruned{moved}",
        short(&head_id),
        desired.objects.len()
    );
    conditions.set(condition_types::READY, true, "Applied", message.clone());
    match &source.spec.verify {
        Some(_) => conditions.set(
            condition_types::VERIFIED,
            true,
            "Verified",
            if desired.signers.is_empty() {
                format!(
                    "no new commit changed {}",
                    source.spec.path.as_deref().unwrap_or("the repository")
                )
            } else {
                format!(
                    "{} commit(s) signed by {}",
                    desired.verified_commits,
                    desired.signers.join(", ")
                )
            },
        ),
        None => conditions.set_status(
            condition_types::VERIFIED,
            "Unknown",
            "NotConfigured",
            "spec.verify is not set: commits are applied without signature checks",
        ),
    }
    let previous = source.status.clone().unwrap_or_default();
    let same_commit = previous.last_applied_commit.as_deref() == Some(head_id.as_str());
    let status = PolicySourceStatus {
        observed_generation: source.metadata.generation,
        last_applied_commit: Some(head_id.clone()),
        last_applied_time: if same_commit {
            previous.last_applied_time.clone()
        } else {
            Some(now.to_string())
        },
        last_attempted_commit: Some(head_id.clone()),
        inventory_count: Some(desired.objects.len() as i64),
        conditions: conditions.finish(),
    };
    ctx.writer
        .status(source, source.status.as_ref(), &status, |s| &s.conditions)
        .await;
    if !same_commit {
        ctx.writer
            .event(
                object_ref::<PolicySource>(&source.metadata),
                true,
                "Applied",
                &message,
            )
            .await;
    }
}
