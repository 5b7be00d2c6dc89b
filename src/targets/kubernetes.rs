//! Kubernetes RBAC: an entitlement `{kind: ClusterRole|Role, name, namespace}` becomes a
//! ClusterRoleBinding or a RoleBinding for one subject, a `User` for humans and a
//! `ServiceAccount` (created here, in the tenant's namespace) for machines.
//!
//! Every managed object carries deterministic names and labels, so observation lists by
//! label and never touches anything else. A disabled account keeps its bindings with no
//! subjects (access gone, entitlements kept for the return); a machine's disable also
//! deletes its token Secrets.
//!
//! **Owner exit.** A machine whose owner left has its credentials rotated once: the legacy
//! token Secrets of its ServiceAccount (`kubernetes.io/service-account-token` annotated with
//! its name) and every Secret gatehouse labelled as the identity's are deleted, then the
//! ServiceAccount is annotated `gatehouse.dev/credentials-rotated: <owner exit instant>`,
//! which the next observation reads back. Tokens from the TokenRequest API are bound to the
//! ServiceAccount's UID and expire on their own; they are not revoked here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRoleBinding, RoleBinding, RoleRef, Subject as RbacSubject,
};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Client, Resource};

use super::{Applied, Capabilities, Connector, Observed, Reread, Subject, TargetError};
use crate::api::{EntitlementRef, IdentityType};
use crate::engine::IdentityKey;
use crate::plan::{AccessState, AccountState, Action, Holding, Operation};

/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "gatehouse";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const IDENTITY: &str = "gatehouse.dev/identity";
const TENANT: &str = "gatehouse.dev/tenant";
const TARGET: &str = "gatehouse.dev/target";
const DISABLED: &str = "gatehouse.dev/disabled";
/// ServiceAccount annotation: the owner-exit instant of the last credential rotation.
pub const ROTATED: &str = "gatehouse.dev/credentials-rotated";
/// Field manager of the rotation annotation (apart from [`FIELD_MANAGER`], so the
/// ServiceAccount's server-side applies never drop it).
const ROTATION_MANAGER: &str = "gatehouse-rotation";
/// Key of the kubeconfig in a remote cluster's Secret.
pub const KUBECONFIG_KEY: &str = "kubeconfig";

/// The RBAC connector for one TargetSystem of one tenant namespace.
pub struct KubernetesRbac {
    client: Client,
    tenant: String,
    target: String,
}

impl KubernetesRbac {
    /// A connector writing through `client` for the identities of `tenant`.
    /// Connects to the cluster a TargetSystem names: `local` unless
    /// `spec.kubernetes.kubeconfigSecretRef` names a Secret whose `kubeconfig` key points
    /// elsewhere.
    pub async fn connect(
        local: &Client,
        config: &super::TargetConfig,
    ) -> Result<Self, TargetError> {
        let remote = config
            .spec
            .kubernetes
            .as_ref()
            .and_then(|k| k.kubeconfig_secret_ref.as_ref());
        let client = match remote {
            None => local.clone(),
            Some(_) => {
                let yaml = config.credentials.required(KUBECONFIG_KEY)?;
                let bad = |e: &dyn std::fmt::Display| {
                    TargetError::Config(format!(
                        "Secret {}: key {KUBECONFIG_KEY:?} is not a usable kubeconfig: {e}",
                        config.credentials.secret
                    ))
                };
                let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).map_err(|e| bad(&e))?;
                let options = kube::config::KubeConfigOptions::default();
                let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| bad(&e))?;
                Client::try_from(cfg).map_err(|e| bad(&e))?
            }
        };
        Ok(Self::new(client, &config.namespace, &config.name))
    }

    /// The connector for `target` of tenant `tenant`, on the cluster `client` reaches.
    pub fn new(client: Client, tenant: &str, target: &str) -> Self {
        Self {
            client,
            tenant: tenant.to_string(),
            target: target.to_string(),
        }
    }

    /// Everything this connector manages, or only one identity's objects.
    fn selector(&self, identity: Option<&str>) -> ListParams {
        let mut selector = format!(
            "{MANAGED_BY}=gatehouse,{TENANT}={},{TARGET}={}",
            self.tenant, self.target
        );
        if let Some(identity) = identity {
            selector.push_str(&format!(",{IDENTITY}={identity}"));
        }
        ListParams::default().labels(&selector)
    }

    fn labels(&self, identity: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.to_string(), "gatehouse".to_string()),
            (IDENTITY.to_string(), identity.to_string()),
            (TENANT.to_string(), self.tenant.clone()),
            (TARGET.to_string(), self.target.clone()),
        ])
    }

    /// The binding's name: readable, unique per (tenant, target, identity, entitlement).
    pub fn binding_name(&self, identity: &str, entitlement: &EntitlementRef) -> String {
        let key = format!(
            "{}\0{}\0{identity}\0{entitlement}",
            self.tenant, self.target
        );
        let prefix: String = identity.chars().take(200).collect();
        format!("gatehouse-{prefix}-{:016x}", fnv1a(key.as_bytes()))
    }

    fn rbac_subject(&self, subject: &Subject) -> RbacSubject {
        match subject.identity_type {
            IdentityType::Human => RbacSubject {
                kind: "User".into(),
                name: subject.account.clone(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                namespace: None,
            },
            IdentityType::NonHuman => RbacSubject {
                kind: "ServiceAccount".into(),
                name: subject.account.clone(),
                api_group: None,
                namespace: Some(self.tenant.clone()),
            },
        }
    }

    fn binding_meta(
        &self,
        subject: &Subject,
        entitlement: &EntitlementRef,
        enabled: bool,
    ) -> ObjectMeta {
        let mut annotations = BTreeMap::from([(
            "gatehouse.dev/entitlement".to_string(),
            entitlement.to_string(),
        )]);
        if !enabled {
            annotations.insert(DISABLED.to_string(), "true".to_string());
        }
        ObjectMeta {
            name: Some(self.binding_name(&subject.identity.name, entitlement)),
            namespace: entitlement
                .namespace
                .clone()
                .filter(|_| entitlement.kind.as_deref() == Some("Role")),
            labels: Some(self.labels(&subject.identity.name)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }
    }

    async fn put_binding(
        &self,
        subject: &Subject,
        entitlement: &EntitlementRef,
        enabled: bool,
    ) -> Result<(), TargetError> {
        let kind = entitlement.kind.as_deref().unwrap_or_default();
        let role_ref = RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: kind.to_string(),
            name: entitlement.name.clone(),
        };
        let subjects = enabled
            .then(|| vec![self.rbac_subject(subject)])
            .or(Some(vec![]));
        let metadata = self.binding_meta(subject, entitlement, enabled);
        let name = metadata.name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match (kind, &entitlement.namespace) {
            ("ClusterRole", _) => {
                let binding = ClusterRoleBinding {
                    metadata,
                    role_ref,
                    subjects,
                };
                let api: Api<ClusterRoleBinding> = Api::all(self.client.clone());
                api.patch(&name, &params, &Patch::Apply(typed(binding)))
                    .await
                    .map(drop)
                    .map_err(classify)
            }
            ("Role", Some(namespace)) => {
                let binding = RoleBinding {
                    metadata,
                    role_ref,
                    subjects,
                };
                let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), namespace);
                api.patch(&name, &params, &Patch::Apply(typed(binding)))
                    .await
                    .map(drop)
                    .map_err(classify)
            }
            _ => Err(TargetError::Permanent(format!(
                "{entitlement} is neither a ClusterRole nor a namespaced Role"
            ))),
        }
    }

    async fn delete_binding(
        &self,
        identity: &str,
        entitlement: &EntitlementRef,
    ) -> Result<(), TargetError> {
        let name = self.binding_name(identity, entitlement);
        let result = match (entitlement.kind.as_deref(), &entitlement.namespace) {
            (Some("Role"), Some(ns)) => Api::<RoleBinding>::namespaced(self.client.clone(), ns)
                .delete(&name, &DeleteParams::default())
                .await
                .map(drop),
            _ => Api::<ClusterRoleBinding>::all(self.client.clone())
                .delete(&name, &DeleteParams::default())
                .await
                .map(drop),
        };
        ignore_not_found(result)
    }

    /// Every managed binding of one identity.
    async fn bindings_of(&self, identity: &str) -> Result<Vec<EntitlementRef>, TargetError> {
        let params = self.selector(Some(identity));
        let mut out = Vec::new();
        for b in Api::<ClusterRoleBinding>::all(self.client.clone())
            .list(&params)
            .await
            .map_err(classify)?
        {
            out.push(entitlement_of(&self.target, &b.role_ref, None));
        }
        for b in Api::<RoleBinding>::all(self.client.clone())
            .list(&params)
            .await
            .map_err(classify)?
        {
            out.push(entitlement_of(
                &self.target,
                &b.role_ref,
                b.metadata.namespace.clone(),
            ));
        }
        Ok(out)
    }

    /// Empties (or refills) the subjects of every binding of the identity and, for a
    /// machine, deletes its tokens and marks its ServiceAccount. Every step is tried even
    /// when one fails (a binding whose namespace is gone must not keep a leaver's token
    /// alive); the first failure is returned after all of them.
    async fn set_enabled(&self, subject: &Subject, enabled: bool) -> Result<(), TargetError> {
        let mut first_error = None;
        let mut note = |result: Result<(), TargetError>| {
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        };
        if subject.identity_type == IdentityType::NonHuman && !enabled {
            note(self.delete_tokens(&subject.account).await);
        }
        match self.bindings_of(&subject.identity.name).await {
            Ok(bindings) => {
                for entitlement in bindings {
                    note(self.put_binding(subject, &entitlement, enabled).await);
                }
            }
            Err(e) => note(Err(e)),
        }
        if subject.identity_type == IdentityType::NonHuman {
            note(self.put_service_account(subject, enabled).await);
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn put_service_account(
        &self,
        subject: &Subject,
        enabled: bool,
    ) -> Result<(), TargetError> {
        let mut annotations = BTreeMap::new();
        if !enabled {
            annotations.insert(DISABLED.to_string(), "true".to_string());
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(subject.account.clone()),
                namespace: Some(self.tenant.clone()),
                labels: Some(self.labels(&subject.identity.name)),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.tenant);
        api.patch(
            &subject.account,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(typed(sa)),
        )
        .await
        .map(drop)
        .map_err(classify)
    }

    /// Owner exit: deletes the machine's token Secrets and the Secrets gatehouse labelled
    /// as its own, then records the rotation on its ServiceAccount.
    async fn rotate(&self, subject: &Subject, left_at: jiff::Timestamp) -> Result<(), TargetError> {
        self.delete_tokens(&subject.account).await?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.tenant);
        let labelled = api
            .list(&self.selector(Some(&subject.identity.name)))
            .await
            .map_err(classify)?;
        for secret in labelled {
            let name = secret.metadata.name.clone().unwrap_or_default();
            ignore_not_found(api.delete(&name, &DeleteParams::default()).await.map(drop))?;
        }
        self.mark_rotated(&subject.account, left_at).await
    }

    /// Records on a ServiceAccount that its credentials were rotated for the owner exit at
    /// `left_at` (a ServiceAccount that is gone has nothing to mark).
    async fn mark_rotated(
        &self,
        account: &str,
        left_at: jiff::Timestamp,
    ) -> Result<(), TargetError> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.tenant);
        let patch =
            serde_json::json!({"metadata": {"annotations": {ROTATED: left_at.to_string()}}});
        let params = PatchParams {
            field_manager: Some(ROTATION_MANAGER.into()),
            ..PatchParams::default()
        };
        ignore_not_found(
            accounts
                .patch(account, &params, &Patch::Merge(patch))
                .await
                .map(drop),
        )
    }

    /// Deletes the long-lived token Secrets of a ServiceAccount.
    async fn delete_tokens(&self, account: &str) -> Result<(), TargetError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.tenant);
        let secrets = api
            .list(&ListParams::default().fields("type=kubernetes.io/service-account-token"))
            .await
            .map_err(classify)?;
        for secret in secrets {
            let owner = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"));
            if owner.map(String::as_str) == Some(account) {
                let name = secret.metadata.name.clone().unwrap_or_default();
                ignore_not_found(api.delete(&name, &DeleteParams::default()).await.map(drop))?;
            }
        }
        Ok(())
    }
}

impl KubernetesRbac {
    /// What the bindings and service accounts that `params` selects show.
    async fn observe_where(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
        params: ListParams,
    ) -> Result<Observed, TargetError> {
        let mut seen: Vec<(String, EntitlementRef, ObjectMeta, Option<Vec<RbacSubject>>)> =
            Vec::new();
        for b in Api::<ClusterRoleBinding>::all(self.client.clone())
            .list(&params)
            .await
            .map_err(classify)?
        {
            let e = entitlement_of(&self.target, &b.role_ref, None);
            seen.push((label(&b.metadata, IDENTITY), e, b.metadata, b.subjects));
        }
        for b in Api::<RoleBinding>::all(self.client.clone())
            .list(&params)
            .await
            .map_err(classify)?
        {
            let e = entitlement_of(&self.target, &b.role_ref, b.metadata.namespace.clone());
            seen.push((label(&b.metadata, IDENTITY), e, b.metadata, b.subjects));
        }
        let mut state = AccessState::default();
        for (identity, entitlement, meta, subjects) in seen {
            let key = IdentityKey::new(&self.tenant, &identity);
            let Some(subject) = expected.get(&key) else {
                // No longer in the desired state: held as it stands, so the plan revokes it.
                let holding = state.identities.entry(key).or_default();
                holding
                    .accounts
                    .entry(self.target.clone())
                    .or_insert(AccountState::Enabled);
                holding
                    .entitlements
                    .insert(Arc::new(entitlement), Default::default());
                continue;
            };
            let disabled = meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(DISABLED))
                .is_some();
            let subjects = subjects.unwrap_or_default();
            let intact = meta.name.as_deref()
                == Some(self.binding_name(&identity, &entitlement).as_str())
                && if disabled {
                    subjects.is_empty()
                } else {
                    subjects == vec![self.rbac_subject(subject)]
                };
            if !intact {
                continue; // edited by hand: not held, so the plan grants it again
            }
            let holding = state.identities.entry(key).or_default();
            if subject.identity_type == IdentityType::Human {
                let account = if disabled {
                    AccountState::Disabled
                } else {
                    AccountState::Enabled
                };
                holding.accounts.insert(self.target.clone(), account);
            }
            holding
                .entitlements
                .insert(Arc::new(entitlement), Default::default());
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.tenant);
        for sa in accounts.list(&params).await.map_err(classify)? {
            let key = IdentityKey::new(&self.tenant, label(&sa.metadata, IDENTITY));
            let disabled = sa
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DISABLED))
                .is_some();
            let account = if disabled {
                AccountState::Disabled
            } else {
                AccountState::Enabled
            };
            let rotated = sa
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ROTATED))
                .and_then(|at| at.parse::<jiff::Timestamp>().ok());
            let holding = state.identities.entry(key).or_insert_with(Holding::default);
            holding.accounts.insert(self.target.clone(), account);
            if let Some(at) = rotated {
                holding.rotated.insert(self.target.clone(), at);
            }
        }
        // Every object here is gatehouse's own: one whose Identity is gone is revoked by the
        // plan, so nothing is left over as an orphan.
        Ok(Observed {
            held: state,
            orphans: Vec::new(),

            findings: Vec::new(),
        })
    }
}

impl Connector for KubernetesRbac {
    fn capabilities(&self) -> Capabilities {
        // Humans are external users: their "sessions" are credentials Kubernetes cannot see.
        Capabilities {
            disable: true,
            delete: true,
            revoke_sessions: false,
            case_insensitive_names: false,
        }
    }

    async fn observe(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
    ) -> Result<Observed, TargetError> {
        self.observe_where(expected, self.selector(None)).await
    }

    fn reads_accounts(&self) -> bool {
        true
    }

    /// Three label-selected lists per 100 identities, whatever the tenant's size.
    async fn observe_accounts(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
        only: &BTreeSet<IdentityKey>,
    ) -> Result<Reread, TargetError> {
        let names: Vec<&str> = only.iter().map(|k| k.name.as_str()).collect();
        let mut held = AccessState::default();
        for chunk in names.chunks(100) {
            let params = self.selector(None);
            let selector = format!(
                "{},{IDENTITY} in ({})",
                params.label_selector.clone().unwrap_or_default(),
                chunk.join(",")
            );
            let observed = self
                .observe_where(expected, ListParams::default().labels(&selector))
                .await?;
            held.identities.extend(observed.held.identities);
        }
        held.identities.retain(|k, _| only.contains(k));
        Ok(Reread::Accounts(held))
    }

    async fn apply(
        &self,
        operation: &Operation,
        subject: &Subject,
    ) -> Result<Applied, TargetError> {
        let machine = subject.identity_type == IdentityType::NonHuman;
        match &operation.action {
            Action::Grant { entitlement } => {
                self.put_binding(subject, entitlement, subject.enabled)
                    .await?;
            }
            Action::Revoke { entitlement } => {
                self.delete_binding(&subject.identity.name, entitlement)
                    .await?;
            }
            Action::CreateAccount {
                enabled,
                rotated_for,
                ..
            } if machine => {
                self.put_service_account(subject, *enabled).await?;
                if let Some(at) = rotated_for {
                    self.mark_rotated(&subject.account, *at).await?;
                }
            }
            Action::CreateAccount { .. } => return Ok(Applied::Unsupported),
            // RBAC subjects carry no attributes (a mapping cannot be configured).
            Action::UpdateAttributes { .. } => return Ok(Applied::Unsupported),
            Action::DisableAccount => self.set_enabled(subject, false).await?,
            Action::EnableAccount => self.set_enabled(subject, true).await?,
            Action::RevokeSessions if machine => self.delete_tokens(&subject.account).await?,
            Action::RevokeSessions => return Ok(Applied::Unsupported),
            Action::RotateCredentials { owner_left_at } if machine => {
                self.rotate(subject, *owner_left_at).await?
            }
            // A user's credentials are issued outside the cluster.
            Action::RotateCredentials { .. } => return Ok(Applied::Unsupported),
            Action::DeleteAccount => {
                let remaining: BTreeSet<EntitlementRef> = self
                    .bindings_of(&subject.identity.name)
                    .await?
                    .into_iter()
                    .collect();
                for entitlement in remaining {
                    self.delete_binding(&subject.identity.name, &entitlement)
                        .await?;
                }
                if machine {
                    self.delete_tokens(&subject.account).await?;
                    let api: Api<ServiceAccount> =
                        Api::namespaced(self.client.clone(), &self.tenant);
                    ignore_not_found(
                        api.delete(&subject.account, &DeleteParams::default())
                            .await
                            .map(drop),
                    )?;
                }
            }
        }
        Ok(Applied::Done)
    }
}

/// Serializes a typed object with its apiVersion and kind, as server-side apply needs.
fn typed<K: Resource<DynamicType = ()> + serde::Serialize>(object: K) -> serde_json::Value {
    let mut value = serde_json::to_value(&object).unwrap_or_default();
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value
}

fn entitlement_of(target: &str, role: &RoleRef, namespace: Option<String>) -> EntitlementRef {
    EntitlementRef {
        target: target.to_string(),
        kind: Some(role.kind.clone()),
        namespace,
        name: role.name.clone(),
    }
}

fn label(meta: &ObjectMeta, key: &str) -> String {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .cloned()
        .unwrap_or_default()
}

/// A client error classified by meaning: the API server's answers by [`classify_status`];
/// unusable credentials or TLS set-up are configuration; an answer that is not a Kubernetes
/// object, or a request that cannot be built, is permanent; connection failures are
/// transient.
fn classify(error: kube::Error) -> TargetError {
    match &error {
        kube::Error::Api(status) => classify_status(
            status.code,
            &status.reason,
            status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0),
            &status.message,
        ),
        kube::Error::Auth(_)
        | kube::Error::InferConfig(_)
        | kube::Error::InferKubeconfig(_)
        | kube::Error::RustlsTls(_)
        | kube::Error::TlsRequired
        | kube::Error::ProxyProtocolUnsupported { .. }
        | kube::Error::ProxyProtocolDisabled { .. } => TargetError::Config(format!(
            "the cluster's client configuration is unusable: {error}; check the kubeconfig in spec.kubernetes.kubeconfigSecretRef (or the controller's own service account)"
        )),
        kube::Error::SerdeError(_)
        | kube::Error::BuildRequest(_)
        | kube::Error::FromUtf8(_)
        | kube::Error::HttpError(_) => TargetError::Permanent(format!(
            "the request or the answer is not what Kubernetes speaks: {error}"
        )),
        _ => TargetError::Transient(error.to_string()),
    }
}

/// An API server answer classified by meaning (`code`, `reason` as in `metav1.Status`):
/// `401` is configuration (the credentials); `400`, `403`, `404`, `405`, `413`, `422`,
/// `501` and other client errors are permanent (a person must change RBAC, the entitlement
/// or the cluster); optimistic-concurrency conflicts, `410`, `429` and server errors are
/// transient, and wait for the server's `retryAfterSeconds` when it gives one.
pub fn classify_status(
    code: u16,
    reason: &str,
    retry_after: Option<u32>,
    message: &str,
) -> TargetError {
    let what = format!("HTTP {code} {reason}: {message}");
    let retry = |m: String| match retry_after {
        Some(secs) => TargetError::RetryAfter(m, std::time::Duration::from_secs(u64::from(secs))),
        None => TargetError::Transient(m),
    };
    match code {
        401 => TargetError::Config(format!(
            "{what}; the cluster rejected the controller's credentials: check the kubeconfig in spec.kubernetes.kubeconfigSecretRef (or the controller's own service account token)"
        )),
        403 => TargetError::Permanent(format!(
            "{what}; give the controller's service account this permission (binding a role also needs `bind` on it, or every permission it grants)"
        )),
        404 => TargetError::Permanent(format!(
            "{what}; the object the entitlement needs does not exist (a Role binding's namespace?)"
        )),
        405 | 501 => TargetError::Permanent(format!(
            "{what}; the API server does not support this request"
        )),
        409 | 410 | 429 | 500..=599 => retry(what),
        400..=499 => TargetError::Permanent(what),
        _ => TargetError::Transient(what),
    }
}

fn ignore_not_found(result: Result<(), kube::Error>) -> Result<(), TargetError> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map_err(classify),
    }
}

/// FNV-1a: a stable, dependency-free hash for deterministic object names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class of a result, for the table.
    fn class(e: &TargetError) -> &'static str {
        match e {
            TargetError::Transient(_) => "transient",
            TargetError::RetryAfter(..) => "retry-after",
            TargetError::Permanent(_) => "permanent",
            TargetError::Config(_) => "config",
        }
    }

    #[test]
    fn api_answers_are_classified_by_meaning() {
        // (code, reason, retryAfterSeconds, class)
        let table = [
            (400, "BadRequest", None, "permanent"),
            (401, "Unauthorized", None, "config"),
            (403, "Forbidden", None, "permanent"),
            (404, "NotFound", None, "permanent"),
            (405, "MethodNotAllowed", None, "permanent"),
            (409, "Conflict", None, "transient"),
            (409, "AlreadyExists", None, "transient"),
            (410, "Expired", None, "transient"),
            (413, "RequestEntityTooLarge", None, "permanent"),
            (415, "UnsupportedMediaType", None, "permanent"),
            (422, "Invalid", None, "permanent"),
            (429, "TooManyRequests", None, "transient"),
            (429, "TooManyRequests", Some(3), "retry-after"),
            (500, "InternalError", None, "transient"),
            (501, "NotImplemented", None, "permanent"),
            (503, "ServiceUnavailable", Some(1), "retry-after"),
            (504, "Timeout", None, "transient"),
        ];
        for (code, reason, retry, expected) in table {
            let e = classify_status(code, reason, retry, "the server's text");
            assert_eq!(class(&e), expected, "{code} {reason}");
            assert!(e.message().contains("the server's text"), "{e}");
            if let Some(secs) = retry {
                assert_eq!(
                    e.retry_after(),
                    Some(std::time::Duration::from_secs(secs.into()))
                );
            }
        }
    }

    #[test]
    fn client_errors_are_classified_by_meaning() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 503, "reason": "ServiceUnavailable",
            "message": "etcd leader changed", "details": {"retryAfterSeconds": 2}
        }))
        .unwrap();
        let e = classify(kube::Error::Api(Box::new(status)));
        assert_eq!(class(&e), "retry-after", "{e}");
        let garbage = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert_eq!(
            class(&classify(kube::Error::SerdeError(garbage))),
            "permanent"
        );
        assert_eq!(class(&classify(kube::Error::TlsRequired)), "config");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(class(&classify(kube::Error::ReadEvents(io))), "transient");
    }
}
