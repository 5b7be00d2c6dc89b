//! Connectors: the only code that talks to target systems. A connector observes what the
//! identities of one tenant hold on its target and carries out planned operations; it never
//! decides policy (that is the engine's job) nor the order of work (the planner's).

pub mod config;
pub mod kubernetes;
pub mod ldap;
pub mod postgres;
pub mod scim;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use crate::api::IdentityType;
use crate::engine::IdentityKey;
use crate::plan::{AccessState, Operation};

pub use config::{Credentials, TargetConfig};

/// What a target can do besides granting and revoking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Accounts can be disabled and enabled again.
    pub disable: bool,
    /// Accounts can be deleted.
    pub delete: bool,
    /// Live sessions can be ended.
    pub revoke_sessions: bool,
    /// Entitlement names compare case-insensitively on the target (LDAP group names): what
    /// `observe` reports is respelled like the desired state before planning
    /// ([`crate::plan::AccessState::respell`]).
    pub case_insensitive_names: bool,
}

/// How an identity appears on a target, as the desired state says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// Namespace and name of the Identity.
    pub identity: IdentityKey,
    /// Human or machine.
    pub identity_type: IdentityType,
    /// Account name on the target (`spec.accounts[target]`, else the identity's name).
    pub account: String,
    /// Whether the account should be able to log in (false while on leave).
    pub enabled: bool,
}

/// The outcome of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The target now reflects the operation.
    Done,
    /// The target has no such notion (for example the sessions of a Kubernetes user).
    Unsupported,
}

/// What a connector found on its target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// What the tenant's identities hold there.
    pub held: AccessState,
    /// Accounts in the managed scope that belong to no Identity, sorted. They are reported
    /// in the TargetSystem status and never removed by the controller.
    pub orphans: Vec<String>,
    /// Things the connector found on the target that a person should look at, one
    /// sentence each; reported in the TargetSystem status.
    pub findings: Vec<String>,
}

/// What a targeted re-read ([`Connector::observe_accounts`]) returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reread {
    /// What the identities asked about hold, and nothing about anyone else: an identity
    /// asked about and absent holds nothing.
    Accounts(AccessState),
    /// The connector listed the whole target instead (it has no cheaper way): a full
    /// observation, as [`Connector::observe`] returns it.
    Full(Observed),
}

/// A failure talking to a target, classified for the retry policy.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Worth retrying with backoff: timeouts, unavailability, conflicts.
    #[error("transient: {0}")]
    Transient(String),
    /// Transient, and the target said when to come back (`Retry-After`): not retried
    /// before then.
    #[error("transient: {0} (retry after {secs}s)", secs = .1.as_secs())]
    RetryAfter(String, std::time::Duration),
    /// Retrying will not help until someone changes something: permissions, bad input.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The target's configuration (its spec or Secret) is unusable; the message names the
    /// field or key and the fix.
    #[error("configuration: {0}")]
    Config(String),
}

impl TargetError {
    /// Whether a retry with backoff can succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::RetryAfter(..))
    }

    /// The message, without the classification.
    pub fn message(&self) -> &str {
        match self {
            Self::Transient(m) | Self::RetryAfter(m, _) | Self::Permanent(m) | Self::Config(m) => m,
        }
    }

    /// The earliest retry the target asked for, if it named one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::RetryAfter(_, after) => Some(*after),
            _ => None,
        }
    }
}

/// One target system, seen through one tenant.
pub trait Connector {
    /// What the target supports.
    fn capabilities(&self) -> Capabilities;

    /// What the tenant's identities hold on the target. `expected` gives each identity's
    /// subject: anything that no longer matches it (a hand edit) does not count as held.
    fn observe(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
    ) -> impl Future<Output = Result<Observed, TargetError>> + Send;

    /// Whether [`Connector::observe_accounts`] reads only the accounts asked for (else it
    /// lists the whole target).
    fn reads_accounts(&self) -> bool {
        false
    }

    /// What the identities in `only` hold on the target: a targeted re-read of a few
    /// accounts (an operation whose outcome is unknown, a revocation to confirm, a new or
    /// renamed subject). `expected` is every subject, as for [`Connector::observe`]. The
    /// default lists the whole target; a connector that can read a few accounts cheaply
    /// overrides it.
    fn observe_accounts(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
        only: &BTreeSet<IdentityKey>,
    ) -> impl Future<Output = Result<Reread, TargetError>> + Send
    where
        Self: Sync,
    {
        let _ = only;
        async move { self.observe(expected).await.map(Reread::Full) }
    }

    /// Carries out one planned operation for `subject`.
    fn apply(
        &self,
        operation: &Operation,
        subject: &Subject,
    ) -> impl Future<Output = Result<Applied, TargetError>> + Send;

    /// Carries out planned operations, in plan order, with one result per operation in the
    /// same order. The default applies them one at a time; a connector may group them (SCIM
    /// Bulk, one PATCH per group) as long as each result is the operation's own and nothing
    /// is done before the operations that precede it in the plan.
    fn apply_batch(
        &self,
        operations: &[(&Operation, &Subject)],
    ) -> impl Future<Output = Vec<Result<Applied, TargetError>>> + Send
    where
        Self: Sync,
    {
        async move {
            let mut out = Vec::with_capacity(operations.len());
            for (operation, subject) in operations {
                out.push(self.apply(operation, subject).await);
            }
            out
        }
    }
}

/// Every connector this build has, behind one type so the controller can hold any of them.
pub enum AnyConnector {
    /// Kubernetes RBAC.
    Kubernetes(kubernetes::KubernetesRbac),
    /// LDAP / Active Directory.
    Ldap(ldap::LdapDirectory),
    /// PostgreSQL login and group roles.
    Postgres(postgres::Postgres),
    /// SCIM 2.0.
    Scim(scim::Scim),
}

impl AnyConnector {
    /// Builds the connector a TargetSystem asks for. `local` is the controller's own cluster,
    /// used by Kubernetes targets without a kubeconfig Secret.
    pub async fn connect(local: &kube::Client, config: &TargetConfig) -> Result<Self, TargetError> {
        use crate::api::TargetType;
        match config.spec.type_ {
            TargetType::Kubernetes => Ok(Self::Kubernetes(
                kubernetes::KubernetesRbac::connect(local, config).await?,
            )),
            TargetType::LDAP => Ok(Self::Ldap(ldap::LdapDirectory::connect(config).await?)),
            TargetType::PostgreSQL => {
                Ok(Self::Postgres(postgres::Postgres::connect(config).await?))
            }
            TargetType::SCIM => Ok(Self::Scim(scim::Scim::connect(config).await?)),
        }
    }
}

impl Connector for AnyConnector {
    fn capabilities(&self) -> Capabilities {
        match self {
            Self::Kubernetes(c) => c.capabilities(),
            Self::Ldap(c) => c.capabilities(),
            Self::Postgres(c) => c.capabilities(),
            Self::Scim(c) => c.capabilities(),
        }
    }

    async fn observe(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
    ) -> Result<Observed, TargetError> {
        match self {
            Self::Kubernetes(c) => c.observe(expected).await,
            Self::Ldap(c) => c.observe(expected).await,
            Self::Postgres(c) => c.observe(expected).await,
            Self::Scim(c) => c.observe(expected).await,
        }
    }

    fn reads_accounts(&self) -> bool {
        match self {
            Self::Kubernetes(c) => c.reads_accounts(),
            Self::Ldap(c) => c.reads_accounts(),
            Self::Postgres(c) => c.reads_accounts(),
            Self::Scim(c) => c.reads_accounts(),
        }
    }

    async fn observe_accounts(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
        only: &BTreeSet<IdentityKey>,
    ) -> Result<Reread, TargetError> {
        match self {
            Self::Kubernetes(c) => c.observe_accounts(expected, only).await,
            Self::Ldap(c) => c.observe_accounts(expected, only).await,
            Self::Postgres(c) => c.observe_accounts(expected, only).await,
            Self::Scim(c) => c.observe_accounts(expected, only).await,
        }
    }

    async fn apply(
        &self,
        operation: &Operation,
        subject: &Subject,
    ) -> Result<Applied, TargetError> {
        match self {
            Self::Kubernetes(c) => c.apply(operation, subject).await,
            Self::Ldap(c) => c.apply(operation, subject).await,
            Self::Postgres(c) => c.apply(operation, subject).await,
            Self::Scim(c) => c.apply(operation, subject).await,
        }
    }

    async fn apply_batch(
        &self,
        operations: &[(&Operation, &Subject)],
    ) -> Vec<Result<Applied, TargetError>> {
        match self {
            Self::Kubernetes(c) => c.apply_batch(operations).await,
            Self::Ldap(c) => c.apply_batch(operations).await,
            Self::Postgres(c) => c.apply_batch(operations).await,
            Self::Scim(c) => c.apply_batch(operations).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::plan::Action;

    /// Records what it is asked to apply; refuses revocations.
    struct Recorder(Mutex<Vec<String>>);

    impl Connector for Recorder {
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }

        async fn observe(
            &self,
            _expected: &BTreeMap<IdentityKey, Subject>,
        ) -> Result<Observed, TargetError> {
            Ok(Observed::default())
        }

        async fn apply(
            &self,
            operation: &Operation,
            _subject: &Subject,
        ) -> Result<Applied, TargetError> {
            self.0.lock().unwrap().push(operation.action.name().into());
            match operation.action {
                Action::DisableAccount => Err(TargetError::Permanent("no".into())),
                _ => Ok(Applied::Done),
            }
        }
    }

    #[tokio::test]
    async fn the_default_batch_applies_in_order_with_one_result_each() {
        let key = IdentityKey::new("acme", "alice");
        let subject = Subject {
            identity: key.clone(),
            identity_type: IdentityType::Human,
            account: "alice".into(),
            enabled: true,
        };
        let op = |action| Operation {
            identity: std::sync::Arc::new(key.clone()),
            target: "t".into(),
            action,
            leaver: false,
            sources: Default::default(),
        };
        let ops = [
            op(Action::DisableAccount),
            op(Action::CreateAccount {
                enabled: true,
                attributes: Default::default(),
                rotated_for: None,
            }),
        ];
        let recorder = Recorder(Mutex::default());
        let pairs: Vec<_> = ops.iter().map(|o| (o, &subject)).collect();
        let results = recorder.apply_batch(&pairs).await;
        assert_eq!(
            *recorder.0.lock().unwrap(),
            ["disableAccount", "createAccount"]
        );
        assert!(results[0].is_err() && results[1].is_ok());
    }
}
