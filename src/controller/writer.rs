//! Writes status (server-side apply, only when it changed) and Events (on transitions
//! only), so an idle controller makes no writes at all.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use crate::api::{Condition, condition_types};
use crate::targets::kubernetes::FIELD_MANAGER;

/// The status writer and event recorder shared by a controller.
pub struct Writer {
    client: Client,
    recorder: Recorder,
    /// What was last written about objects that fail to deserialize (their status cannot
    /// be read back to compare): uid, generation and message.
    invalid: HashMap<String, (Option<i64>, String)>,
}

/// The `Ready` condition among `conditions`.
fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions
        .iter()
        .find(|c| c.type_ == condition_types::READY)
}

impl Writer {
    /// A writer reporting as `instance` (the pod name) of controller `gatehouse`.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "gatehouse".into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            invalid: HashMap::new(),
        }
    }

    /// Applies `status` to the object unless it equals `previous`; records an Event when
    /// its `Ready` condition changed (status or reason) or first appears False.
    pub async fn status<K, S>(
        &self,
        object: &K,
        previous: Option<&S>,
        status: &S,
        conditions: fn(&S) -> &[Condition],
    ) where
        K: Resource<DynamicType = ()>,
        S: serde::Serialize + PartialEq,
    {
        if previous == Some(status) {
            return;
        }
        let meta = object.meta();
        let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
            return;
        };
        if !self
            .apply_status::<K>(ns, name, serde_json::json!(status))
            .await
        {
            return;
        }
        let before = previous.and_then(|p| ready(conditions(p)));
        let Some(after) = ready(conditions(status)) else {
            return;
        };
        let changed = match before {
            None => after.status != "True",
            Some(b) => b.status != after.status || b.reason != after.reason,
        };
        if changed {
            self.event(
                object_ref::<K>(meta),
                after.status == "True",
                &after.reason,
                &after.message,
            )
            .await;
        }
    }

    /// Marks an object that fails to deserialize: `Ready=False`, reason `InvalidSpec`, with
    /// the decoder's message, once per generation.
    pub async fn invalid<K: Resource<DynamicType = ()>>(
        &mut self,
        meta: &ObjectMeta,
        error: &str,
        now: jiff::Timestamp,
    ) {
        let (Some(ns), Some(name), Some(uid)) = (
            meta.namespace.as_deref(),
            meta.name.as_deref(),
            meta.uid.clone(),
        ) else {
            return;
        };
        let message = format!(
            "{} {ns}/{name} cannot be read by this controller: {error}; fix the object (or upgrade the controller to match the installed CRD)",
            K::kind(&())
        );
        let memo = (meta.generation, message.clone());
        if self.invalid.get(&uid) == Some(&memo) {
            return;
        }
        let condition = Condition {
            type_: condition_types::READY.into(),
            status: "False".into(),
            reason: "InvalidSpec".into(),
            message: message.clone(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
            observed_generation: meta.generation,
        };
        let stalled = Condition {
            type_: condition_types::STALLED.into(),
            ..condition.clone()
        };
        let status = serde_json::json!({
            "observedGeneration": meta.generation,
            "conditions": [condition, stalled],
        });
        if self.apply_status::<K>(ns, name, status).await {
            self.event(object_ref::<K>(meta), false, "InvalidSpec", &message)
                .await;
            self.invalid.insert(uid, memo);
        }
    }

    /// Server-side applies `status` to `K` `ns/name` (through the dynamic API, so an object
    /// that does not deserialize can be written too); logs and returns false on failure.
    async fn apply_status<K: Resource<DynamicType = ()>>(
        &self,
        ns: &str,
        name: &str,
        status: serde_json::Value,
    ) -> bool {
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &ApiResource::erase::<K>(&()));
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(kind = %K::kind(&()), namespace = ns, name, %error, "status write failed");
                false
            }
        }
    }

    /// Publishes one Event about `reference`.
    pub async fn event(&self, reference: ObjectReference, normal: bool, reason: &str, note: &str) {
        let event = Event {
            type_: if normal {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: reason.chars().take(128).collect(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::debug!(%error, "event not recorded");
        }
    }
}

/// A reference to an object from its metadata, for Events.
pub fn object_ref<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into()),
        kind: Some(K::kind(&()).into()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    }
}
