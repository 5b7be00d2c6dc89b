//! Break-glass announcements: a Warning Event, a metric and a durable ledger entry when a
//! break-glass Exception comes into force, expires or is revoked unratified. Which of
//! these happened is read from the old and new status (pure); the rest is wiring.

use std::collections::BTreeMap;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::writer::{self, Writer};
use crate::api::{Exception, ExceptionStatus};
use crate::http::{BreakGlassLabels, Metrics};

/// The tenant ConfigMap the controller appends break-glass records to: one key per
/// event, never rewritten, so the record outlives the Exception and any log retention.
pub const LEDGER: &str = "gatehouse-break-glass";
/// Field manager of ledger writes.
const LEDGER_MANAGER: &str = "gatehouse-break-glass";

/// One break-glass event, ready to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// `activated`, `expired` or `revoked`.
    pub event: &'static str,
    /// Event reason.
    pub reason: &'static str,
    /// Event note.
    pub note: String,
}

/// What changed between `previous` and `next` for a break-glass Exception, if anything.
pub fn transition(
    name: &str,
    identity: &str,
    previous: Option<&ExceptionStatus>,
    next: &ExceptionStatus,
) -> Option<Announcement> {
    let bg = next.break_glass.as_ref()?;
    let was = previous.and_then(|p| p.phase.as_deref());
    let is = next.phase.as_deref()?;
    if was == Some(is) {
        return None;
    }
    let by = bg.by.as_deref().unwrap_or("an unknown user");
    let (event, reason, note) = match is {
        "Active" => (
            "activated",
            "BreakGlassUsed",
            match &bg.ratify_by {
                Some(deadline) => format!(
                    "break-glass Exception {name} for {identity} used by {by}: in force until {}; ratify it by a Git commit before {deadline} or it is revoked then",
                    bg.until
                ),
                None => format!(
                    "break-glass Exception {name} for {identity} used by {by}: in force until {}",
                    bg.until
                ),
            },
        ),
        "Expired" => (
            "expired",
            "BreakGlassExpired",
            format!(
                "break-glass Exception {name} for {identity} (used by {by}) ended at {}: its grants and sessions are revoked",
                bg.until
            ),
        ),
        "Revoked" => (
            "revoked",
            "BreakGlassRevoked",
            format!(
                "break-glass Exception {name} for {identity} (used by {by}) was not ratified by a Git commit before {}: revoked early with its sessions",
                bg.ratify_by.as_deref().unwrap_or("its deadline")
            ),
        ),
        _ => return None,
    };
    Some(Announcement {
        event,
        reason,
        note,
    })
}

/// The ledger entry of an announcement: its key (`NAME.UID.EVENT`) and JSON value.
pub fn ledger_entry(
    exception: &Exception,
    status: &ExceptionStatus,
    announcement: &Announcement,
    now: jiff::Timestamp,
) -> (String, String) {
    let name = exception.metadata.name.clone().unwrap_or_default();
    let uid: String = exception
        .metadata
        .uid
        .as_deref()
        .unwrap_or("nouid")
        .chars()
        .take(8)
        .collect();
    let key = format!("{name}.{uid}.{}", announcement.event);
    let value = json!({
        "exception": name,
        "identity": exception.spec.identity,
        "entitlements": exception.spec.entitlements.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "justification": exception.spec.justification,
        "event": announcement.event,
        "at": now.to_string(),
        "record": status.break_glass,
    });
    (key, value.to_string())
}

/// Publishes what changed for one Exception: Warning Event, metric, ledger entry. Failures
/// are logged; the status already written keeps the facts either way.
pub async fn announce(
    client: &Client,
    writer: &Writer,
    metrics: &Metrics,
    exception: &Exception,
    status: &ExceptionStatus,
) {
    let name = exception.metadata.name.as_deref().unwrap_or_default();
    let Some(announcement) = transition(
        name,
        &exception.spec.identity,
        exception.status.as_ref(),
        status,
    ) else {
        return;
    };
    let namespace = exception.metadata.namespace.clone().unwrap_or_default();
    writer
        .event(
            writer::object_ref::<Exception>(&exception.metadata),
            false,
            announcement.reason,
            &announcement.note,
        )
        .await;
    metrics
        .break_glass
        .get_or_create(&BreakGlassLabels {
            namespace: namespace.clone(),
            event: announcement.event.to_string(),
        })
        .inc();
    let (key, value) = ledger_entry(exception, status, &announcement, jiff::Timestamp::now());
    let patch = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": LEDGER, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "gatehouse"}},
        "data": BTreeMap::from([(key, value)]),
    });
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), &namespace);
    // Server-side apply merges `data` by key, so each entry is added beside the others.
    // A distinct manager per entry keeps earlier entries owned (never removed).
    let manager = format!("{LEDGER_MANAGER}-{}", announcement.event);
    if let Err(error) = api
        .patch(LEDGER, &PatchParams::apply(&manager), &Patch::Apply(&patch))
        .await
    {
        tracing::warn!(namespace, exception = name, %error, "break-glass ledger write failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BreakGlassStatus;

    fn status(phase: &str) -> ExceptionStatus {
        ExceptionStatus {
            phase: Some(phase.into()),
            break_glass: Some(BreakGlassStatus {
                by: Some("ana".into()),
                from: "2026-06-15T10:00:00Z".into(),
                until: "2026-06-15T14:00:00Z".into(),
                ratify_by: Some("2026-06-15T11:00:00Z".into()),
                ..BreakGlassStatus::default()
            }),
            ..ExceptionStatus::default()
        }
    }

    #[test]
    fn each_phase_change_is_announced_once() {
        let t = |was: Option<&str>, is: &str| {
            let before = was.map(status);
            transition("bg", "alice", before.as_ref(), &status(is)).map(|a| a.reason)
        };
        assert_eq!(t(None, "Active"), Some("BreakGlassUsed"));
        assert_eq!(t(Some("Pending"), "Active"), Some("BreakGlassUsed"));
        assert_eq!(t(Some("Active"), "Active"), None);
        assert_eq!(t(Some("Active"), "Expired"), Some("BreakGlassExpired"));
        assert_eq!(t(Some("Active"), "Revoked"), Some("BreakGlassRevoked"));
        assert_eq!(t(Some("Revoked"), "Revoked"), None);
        assert_eq!(t(None, "Pending"), None);
        let plain = ExceptionStatus {
            phase: Some("Active".into()),
            ..ExceptionStatus::default()
        };
        assert_eq!(transition("x", "alice", None, &plain), None);
        let note = transition("bg", "alice", None, &status("Active"))
            .unwrap()
            .note;
        assert!(note.contains("used by ana") && note.contains("2026-06-15T11:00:00Z"));
    }
}
