//! SCIM 2.0 (RFC 7643, RFC 7644): accounts are Users, entitlements are memberships of the
//! Group whose `displayName` is the entitlement name.
//!
//! **Managed scope.** Gatehouse writes `externalId = <namespace>/<identity>` on the users it
//! creates, and manages exactly the users whose `externalId` starts with `<namespace>/`.
//! Such a user whose identity the tenant does not have is an orphan: reported, never
//! changed. Users without that prefix are never read into the state nor written. Every
//! group membership of a managed user counts as held (so a membership added by hand is
//! revoked), and groups are created on the first grant that needs them.
//!
//! **Adapting to the server.** `/ServiceProviderConfig` is read at connect time: ETags are
//! sent as `If-Match` when supported (a `412` re-reads the resource, and the change is
//! retried once if it is still needed), Bulk is used within `maxOperations` and
//! `maxPayloadSize` by [`Connector::apply_batch`], filters find single resources (else the
//! connector lists and searches), and lists are paged with `startIndex`/`count`. Filters
//! announced as unsupported are never sent. Without PATCH, changes are read-modify-write
//! PUTs. PATCH may answer `200` with a body or `204` without.
//!
//! **Learning from answers.** Servers announce more than they do. A `501`/`405` to a PATCH,
//! or a `400` about its path, filter or syntax, moves the connector to the next shape for
//! its life (logged once): members are removed by the filter path `members[value eq "id"]`,
//! then by value, then by a PUT of the group's member list; a refused filter query lists
//! instead. A successful answer that shows the resource must show the change: a server
//! that answers `200` and ignores `members` or `active` gets a permanent error, never
//! `Done`. Members that name no user (deleted users some servers leave behind) are ignored.
//!
//! **Attributes.** The owned attributes (`spec.attributes` over the SCIM defaults, see
//! `attrs` and docs/attributes.md) are read from the listed users, sent with the create, and
//! changed by one PATCH per account; a refused PATCH (`405`, `501`) or refused filtered
//! e-mail path falls back, for the connector's life, to a PUT of the user as the server has
//! it. Every write is confirmed against what the server then shows.

mod accounts;
mod attrs;
mod bulk;
pub mod http;
mod learned;
mod members;
mod observe;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use reqwest::Method;

use self::http::{Http, Reply};
use self::learned::Learned;
use self::types::*;
use super::{
    Applied, Capabilities, Connector, Observed, Reread, Subject, TargetConfig, TargetError,
};
use crate::api::EntitlementRef;
use crate::engine::IdentityKey;
use crate::plan::{Action, Operation};

/// Default page size when listing.
const PAGE_SIZE: u32 = 200;
/// Requests in flight at once for independent account steps without Bulk.
const CONCURRENCY: usize = 4;
/// Members added or removed by one PATCH.
const MEMBERS_PER_PATCH: usize = 200;

/// What the server supports, from `/ServiceProviderConfig` and the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// PATCH is supported (else read-modify-write PUT).
    pub patch: bool,
    /// Bulk limits (maxOperations, maxPayloadSize) when Bulk is supported and enabled.
    pub bulk: Option<(usize, usize)>,
    /// Filtering is supported.
    pub filter: bool,
    /// ETags are supported.
    pub etag: bool,
    /// `count` per page.
    pub page_size: u32,
}

/// A resource known by id, with its entity tag.
#[derive(Clone, Debug)]
struct Known {
    id: String,
    etag: Option<String>,
}

/// What the last observation and the writes since taught about ids and tags.
#[derive(Default)]
struct Cache {
    users: HashMap<IdentityKey, Known>,
    groups: HashMap<String, Known>,
    /// The ids of managed accounts by account name (userName as gatehouse names it): what a
    /// reference to another account (the enterprise `manager`) is written as.
    accounts: HashMap<String, String>,
    /// userNames (lowercased) of the users gatehouse does not manage that the last
    /// observation listed, with their externalId: a server whose uniqueness is
    /// case-sensitive (django-scim2) would take `alice` next to `Alice`, where RFC 7643's
    /// `caseExact: false` makes them one name.
    unmanaged: HashMap<String, Option<String>>,
    /// A member id and the group the last listing showed it in: what probes whether the
    /// server filters Groups by member ([`Scim::member_filter`]).
    member_probe: Option<Box<(String, String)>>,
}

/// The SCIM connector for one TargetSystem of one tenant.
pub struct Scim {
    http: Http,
    tenant: String,
    target: String,
    features: Features,
    cache: Mutex<Cache>,
    /// What the server's answers taught beyond its announced features.
    learned: Learned,
    /// The attributes gatehouse owns on this target's users (`spec.attributes` with the
    /// SCIM defaults), sorted.
    owned: Vec<String>,
}

impl Scim {
    /// Connects: builds the client and reads `/ServiceProviderConfig`.
    pub async fn connect(config: &TargetConfig) -> Result<Self, TargetError> {
        let http = Http::new(config)?;
        let scim = config.block(&config.spec.scim, "scim")?;
        let reply = http
            .send(Method::GET, "ServiceProviderConfig", &[], None, None)
            .await?;
        if reply.status.as_u16() == 404 {
            return Err(TargetError::Config(format!(
                "TargetSystem {}/{}: spec.scim.url has no /ServiceProviderConfig (HTTP 404); it must be the SCIM root, e.g. https://app.example/scim/v2",
                config.namespace, config.name
            )));
        }
        if !reply.ok() {
            return Err(reply.error());
        }
        let spc: ServiceProviderConfig = reply.json()?;
        // The configuration is public (RFC 7644 §4): prove the credentials with one read.
        http.expect(
            Method::GET,
            "Users",
            &[("startIndex", "1".into()), ("count", "1".into())],
            None,
            None,
        )
        .await?;
        let bulk = (spc.bulk.supported == Some(true) && scim.bulk != Some(false))
            .then(|| {
                let ops = spc.bulk.max_operations.unwrap_or(0) as usize;
                let size = spc.bulk.max_payload_size.unwrap_or(1 << 20) as usize;
                (ops >= 2).then_some((ops, size.max(4096)))
            })
            .flatten();
        let mut page_size = scim.page_size.unwrap_or(PAGE_SIZE).max(1);
        if let Some(max) = spc.filter.max_results.filter(|m| *m > 0) {
            page_size = page_size.min(u32::try_from(max).unwrap_or(u32::MAX));
        }
        let features = Features {
            patch: spc.patch.yes(),
            bulk,
            filter: spc.filter.supported == Some(true),
            etag: spc.etag.yes(),
            page_size,
        };
        tracing::debug!(namespace = %config.namespace, target = %config.name, ?features, "SCIM service provider config");
        Ok(Self {
            http,
            tenant: config.namespace.clone(),
            target: config.name.clone(),
            features,
            cache: Mutex::default(),
            learned: Learned::new(&config.name, features.patch, features.filter),
            owned: crate::engine::attributes::Mapping::compile(&config.spec)
                .0
                .names()
                .map(str::to_string)
                .collect(),
        })
    }

    /// What the server supports, as this connector uses it.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Bulk limits while Bulk is announced and not refused.
    fn bulk_limits(&self) -> Option<(usize, usize)> {
        self.features.bulk.filter(|_| self.learned.bulk())
    }

    /// The `externalId` gatehouse writes for an identity.
    pub fn external_id(key: &IdentityKey) -> String {
        format!("{}/{}", key.namespace, key.name)
    }

    fn prefix(&self) -> String {
        format!("{}/", self.tenant)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn if_match<'a>(&self, known: &'a Known) -> Option<&'a str> {
        known.etag.as_deref().filter(|_| self.features.etag)
    }

    fn entitlement(&self, group: &str) -> EntitlementRef {
        EntitlementRef {
            target: self.target.clone(),
            kind: None,
            namespace: None,
            name: group.to_string(),
        }
    }
}

/// Whether a listing's answer refuses the filter itself (so listing without one can help).
fn filter_refused(reply: &Reply) -> bool {
    matches!(reply.status.as_u16(), 400 | 501)
}

/// A SCIM filter string literal (JSON string syntax).
fn quote(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl Connector for Scim {
    fn capabilities(&self) -> Capabilities {
        // `active: false` is the only lever SCIM defines; what it does to live sessions is
        // up to the application.
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
        self.observe_managed(expected).await
    }

    fn reads_accounts(&self) -> bool {
        self.learned.member_filter() == Some(true)
    }

    async fn observe_accounts(
        &self,
        expected: &BTreeMap<IdentityKey, Subject>,
        only: &std::collections::BTreeSet<IdentityKey>,
    ) -> Result<Reread, TargetError> {
        self.observe_some(expected, only).await
    }

    async fn apply(
        &self,
        operation: &Operation,
        subject: &Subject,
    ) -> Result<Applied, TargetError> {
        match &operation.action {
            Action::CreateAccount {
                enabled,
                attributes,
                ..
            } => self.create(subject, *enabled, attributes).await?,
            Action::UpdateAttributes { changes } => {
                self.update_attributes(subject, changes).await?
            }
            Action::EnableAccount => return self.set_active(subject, true).await,
            Action::DisableAccount => return self.set_active(subject, false).await,
            Action::RevokeSessions => return Ok(Applied::Unsupported),
            // SCIM has no operation that rotates an account's tokens: never planned here
            // (the engine reports CredentialsNotRotated).
            Action::RotateCredentials { .. } => return Ok(Applied::Unsupported),
            Action::DeleteAccount => self.delete(subject).await?,
            Action::Grant { entitlement } => self.membership(subject, entitlement, true).await?,
            Action::Revoke { entitlement } => self.membership(subject, entitlement, false).await?,
        }
        Ok(Applied::Done)
    }

    async fn apply_batch(
        &self,
        operations: &[(&Operation, &Subject)],
    ) -> Vec<Result<Applied, TargetError>> {
        // Runs of one kind of step, in plan order: a run never depends on a later one, and
        // the planner already put every revocation before every grant.
        let mut out = Vec::with_capacity(operations.len());
        let mut start = 0;
        while start < operations.len() {
            let rank = operations[start].0.action.rank();
            let end = operations[start..]
                .iter()
                .position(|(op, _)| op.action.rank() != rank)
                .map_or(operations.len(), |n| start + n);
            out.extend(self.run(&operations[start..end]).await);
            start = end;
        }
        out
    }
}
