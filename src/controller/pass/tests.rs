//! The whole decide → apply path of a pass, over scripted connectors that hold real state
//! and fail the operations a test chooses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;
use crate::api::TargetSystem;
use crate::controller::connectors::Loaded;
use crate::plan::{AccessState, AccountState};
use crate::targets::{Capabilities, Credentials, Observed, Reread, TargetConfig};

/// Which operations a scripted target refuses, and how.
type Refusal = Box<dyn Fn(&IdentityKey, &Action) -> Option<TargetError> + Send + Sync>;

/// A target that keeps what it holds in memory, applies operations to it, and refuses
/// the ones its refusal picks.
struct Scripted {
    name: String,
    held: Mutex<AccessState>,
    refuse: Refusal,
    /// `identity action` per operation received, in order.
    log: Mutex<Vec<String>>,
    /// Acknowledge revocations and attribute writes without doing them (a server that
    /// lies, or rewrites what it is sent).
    ack_only: bool,
    /// Full listings served.
    listings: std::sync::atomic::AtomicUsize,
    /// Log every full listing as `LIST`, among the operations.
    log_listings: bool,
    /// Cannot read a few accounts: a re-read lists the whole target.
    lists_only: bool,
    /// Identities asked about in targeted re-reads, per re-read.
    rereads: Mutex<Vec<Vec<String>>>,
    /// Held by a test to keep a listing in progress: a listing takes its snapshot, then
    /// waits for it (a slow listing of a large directory).
    gate: tokio::sync::Mutex<()>,
    /// Held by a test to keep every operation but a cut-off waiting for the target's
    /// answer (a slow server: a group change on a group of 100,000 members).
    slow_changes: tokio::sync::Mutex<()>,
    /// Targeted re-reads queue behind the slow changes too (a single-threaded server).
    reads_queue: std::sync::atomic::AtomicBool,
}

impl Scripted {
    fn new(name: &str, refuse: Refusal) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            held: Mutex::default(),
            refuse,
            log: Mutex::default(),
            ack_only: false,
            listings: Default::default(),
            log_listings: false,
            lists_only: false,
            rereads: Mutex::default(),
            gate: tokio::sync::Mutex::new(()),
            slow_changes: tokio::sync::Mutex::new(()),
            reads_queue: Default::default(),
        })
    }

    fn grant(&self, identity: &str, group: &str) {
        let mut held = self.held.lock().unwrap();
        let holding = held
            .identities
            .entry(IdentityKey::new("t", identity))
            .or_default();
        holding
            .accounts
            .insert(self.name.clone(), AccountState::Enabled);
        holding
            .entitlements
            .insert(Arc::new(group_ref(&self.name, group)), Default::default());
    }

    fn account(&self, identity: &str) -> Option<AccountState> {
        self.held
            .lock()
            .unwrap()
            .identities
            .get(&IdentityKey::new("t", identity))
            .and_then(|h| h.accounts.get(&self.name).copied())
    }

    fn groups(&self, identity: &str) -> Vec<String> {
        self.held
            .lock()
            .unwrap()
            .identities
            .get(&IdentityKey::new("t", identity))
            .map(|h| h.entitlements.keys().map(|e| e.name.clone()).collect())
            .unwrap_or_default()
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn listings(&self) -> usize {
        self.listings.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn rereads(&self) -> Vec<Vec<String>> {
        self.rereads.lock().unwrap().clone()
    }

    /// Revokes by hand, behind the controller's back (drift).
    fn drop_group(&self, identity: &str, group: &str) {
        let mut held = self.held.lock().unwrap();
        if let Some(h) = held.identities.get_mut(&IdentityKey::new("t", identity)) {
            h.entitlements.retain(|e, _| e.name != group);
        }
    }
}

/// A target that refuses nothing and logs its listings as `LIST`; `lists_only`: it cannot
/// read a few accounts alone.
fn listing_logged(name: &str, lists_only: bool) -> Arc<Scripted> {
    Arc::new(Scripted {
        log_listings: true,
        lists_only,
        ..Arc::into_inner(Scripted::new(name, Box::new(|_, _| None))).unwrap()
    })
}

fn group_ref(target: &str, name: &str) -> crate::api::EntitlementRef {
    serde_yaml::from_str(&format!(
        "{{target: {target}, kind: ClusterRole, name: {name}}}"
    ))
    .unwrap()
}

/// The connector a factory hands out: a shared scripted target.
#[derive(Clone)]
struct Handle(Arc<Scripted>);

impl Connector for Handle {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            disable: true,
            delete: true,
            revoke_sessions: true,
            case_insensitive_names: false,
        }
    }

    async fn observe(
        &self,
        _expected: &BTreeMap<IdentityKey, Subject>,
    ) -> Result<Observed, TargetError> {
        let held = self.0.held.lock().unwrap().clone();
        let _slow = self.0.gate.lock().await;
        self.0
            .listings
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.0.log_listings {
            self.0.log.lock().unwrap().push("LIST".into());
        }
        Ok(Observed {
            held,
            ..Observed::default()
        })
    }

    fn reads_accounts(&self) -> bool {
        !self.0.lists_only
    }

    async fn observe_accounts(
        &self,
        _expected: &BTreeMap<IdentityKey, Subject>,
        only: &BTreeSet<IdentityKey>,
    ) -> Result<Reread, TargetError> {
        if self.0.lists_only {
            return self.observe(_expected).await.map(Reread::Full);
        }
        if self.0.reads_queue.load(std::sync::atomic::Ordering::SeqCst) {
            let _behind = self.0.slow_changes.lock().await;
        }
        self.0
            .rereads
            .lock()
            .unwrap()
            .push(only.iter().map(|k| k.name.clone()).collect());
        let mut held = self.0.held.lock().unwrap().clone();
        held.identities.retain(|k, _| only.contains(k));
        Ok(Reread::Accounts(held))
    }

    async fn apply(
        &self,
        operation: &Operation,
        _subject: &Subject,
    ) -> Result<Applied, TargetError> {
        let target = &self.0;
        target.log.lock().unwrap().push(format!(
            "{} {}",
            operation.identity.name,
            operation.action.name()
        ));
        if !is_cut_off(&operation.action) {
            let _slow = target.slow_changes.lock().await;
        }
        if let Some(error) = (target.refuse)(&operation.identity, &operation.action) {
            return Err(error);
        }
        let mut held = target.held.lock().unwrap();
        let holding = held
            .identities
            .entry((*operation.identity).clone())
            .or_default();
        match &operation.action {
            Action::DisableAccount => {
                holding
                    .accounts
                    .insert(target.name.clone(), AccountState::Disabled);
            }
            Action::EnableAccount => {
                holding
                    .accounts
                    .insert(target.name.clone(), AccountState::Enabled);
            }
            Action::CreateAccount {
                enabled,
                attributes,
                ..
            } => {
                let state = if *enabled {
                    AccountState::Enabled
                } else {
                    AccountState::Disabled
                };
                holding.accounts.insert(target.name.clone(), state);
                if !attributes.is_empty() {
                    holding
                        .attributes
                        .insert(target.name.clone(), attributes.clone());
                }
            }
            Action::UpdateAttributes { .. } if target.ack_only => {}
            Action::UpdateAttributes { changes } => {
                let attrs = holding.attributes.entry(target.name.clone()).or_default();
                for c in changes {
                    match &c.to {
                        Some(v) => attrs.insert(c.name.clone(), v.clone()),
                        None => attrs.remove(&c.name),
                    };
                }
            }
            Action::RevokeSessions => {}
            Action::RotateCredentials { owner_left_at } => {
                holding.rotated.insert(target.name.clone(), *owner_left_at);
            }
            Action::Revoke { entitlement } if !target.ack_only => {
                holding.entitlements.remove(entitlement);
            }
            Action::Revoke { .. } => {}
            Action::DeleteAccount => {
                holding.accounts.remove(&target.name);
                holding.attributes.remove(&target.name);
                holding.entitlements.retain(|e, _| e.target != target.name);
            }
            Action::Grant { entitlement } => {
                holding
                    .entitlements
                    .insert(entitlement.clone(), Default::default());
            }
        }
        if holding.accounts.is_empty() && holding.entitlements.is_empty() {
            held.identities.remove(&*operation.identity);
        }
        Ok(Applied::Done)
    }
}

/// Hands out the scripted targets by TargetSystem name.
struct Fake(BTreeMap<String, Arc<Scripted>>);

impl Factory for Fake {
    type Connector = Handle;

    async fn load(&self, target: &TargetSystem) -> Loaded {
        Loaded {
            fingerprint: (target.metadata.generation, None),
            config: Ok(TargetConfig {
                namespace: "t".into(),
                name: target.metadata.name.clone().unwrap_or_default(),
                spec: target.spec.clone(),
                credentials: Credentials::default(),
            }),
        }
    }

    async fn connect(&self, config: &TargetConfig) -> Result<Handle, TargetError> {
        self.0
            .get(&config.name)
            .map(|t| Handle(t.clone()))
            .ok_or_else(|| TargetError::Transient(format!("{} is down", config.name)))
    }
}

/// `(name, HR status, groups its policies grant)`.
type Person<'a> = (&'a str, &'a str, &'a [&'a str]);

fn tenant(people: &[Person<'_>], targets: &[(&str, &str)]) -> TenantObjects {
    let mut identities = Vec::new();
    let mut policies = Vec::new();
    for (name, status, groups) in people {
        identities.push(serde_yaml::from_str(&format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}, namespace: t}}\nspec: {{type: Human, employment: {{status: {status}, department: {name}, manager: {name}}}}}"
        )).unwrap());
        for (target, _) in targets {
            for group in *groups {
                policies.push(serde_yaml::from_str(&format!(
                    "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}-{target}-{group}, namespace: t}}\nspec: {{selector: {{matchAttributes: {{department: {name}}}}}, entitlements: [{{target: {target}, kind: ClusterRole, name: {group}}}]}}"
                )).unwrap());
            }
        }
    }
    let targets = targets
        .iter()
        .map(|(name, extra)| {
            serde_yaml::from_str(&format!(
                "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {{name: {name}, namespace: t, generation: 1}}\nspec: {{type: Kubernetes{extra}}}"
            ))
            .unwrap()
        })
        .collect();
    TenantObjects {
        namespace: "t".into(),
        identities: identities.into_iter().map(SharedIdentity::new).collect(),
        policies,
        targets,
        exceptions: vec![],
        deleting: vec![],
        ..Default::default()
    }
}

async fn pass(
    slots: &mut Slots<Fake>,
    tenant: &TenantObjects,
    leading: &(dyn Fn() -> bool + Sync),
) -> Result<PassResult, LostLeadership> {
    pass_with(slots, tenant, leading, &|| false).await
}

/// A pass that sees a change queued whenever `preempted` says so.
async fn pass_with(
    slots: &mut Slots<Fake>,
    tenant: &TenantObjects,
    leading: &(dyn Fn() -> bool + Sync),
    preempted: &(dyn Fn() -> bool + Sync),
) -> Result<PassResult, LostLeadership> {
    let metrics = Metrics::default();
    let settings = Settings::default();
    let ctx = PassContext {
        now: "2026-12-01T00:00:00Z".parse().unwrap(),
        settings: &settings,
        resync: Duration::from_secs(600),
        leading,
        preempted,
        metrics: &metrics,
    };
    let engine = Engine::new(&tenant.to_snapshot(), settings.clone());
    run(slots, tenant, &engine, &ctx).await
}

fn outcome_of<'a>(result: &'a PassResult, target: &str, who: &str, action: &str) -> &'a Outcome {
    let plan = &result.decision.targets[target];
    let i = plan
        .operations
        .iter()
        .position(|op| op.identity.name == who && op.action.name() == action)
        .unwrap_or_else(|| panic!("no {action} for {who} on {target}: {:?}", plan.operations));
    &result.targets[target].outcomes[i]
}

fn refuse_revocations_of(who: &'static str, error: fn() -> TargetError) -> Refusal {
    Box::new(move |id, action| {
        (id.name == who && matches!(action, Action::Revoke { .. })).then(error)
    })
}

#[tokio::test]
async fn a_leavers_disable_goes_first_and_does_not_wait_on_failing_revocations() {
    let ldap = Scripted::new(
        "ldap",
        refuse_revocations_of("alice", || {
            TargetError::Permanent("501 Not Implemented: filter-path remove".into())
        }),
    );
    ldap.grant("alice", "finance");
    ldap.grant("alice", "payroll");
    let tenant = tenant(&[("alice", "Terminated", &[])], &[("ldap", "")]);
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let result = pass(&mut slots, &tenant, &|| true).await.unwrap();

    assert_eq!(
        ldap.account("alice"),
        Some(AccountState::Disabled),
        "cut off"
    );
    let log = ldap.log();
    assert_eq!(
        &log[..2],
        ["alice disableAccount", "alice revokeSessions"],
        "the cut-off is sent before anything else: {log:?}"
    );
    assert_eq!(
        outcome_of(&result, "ldap", "alice", "disableAccount"),
        &Outcome::Done
    );
    let Outcome::Failed(f) = outcome_of(&result, "ldap", "alice", "revoke") else {
        panic!("the refused revocation is reported as failed");
    };
    assert!(f.permanent && f.message.contains("501"), "{f:?}");
    assert_eq!(ldap.groups("alice").len(), 2, "the server really refused");

    // The permanent failure is parked until the resync: the next pass does not resend it.
    let sent = ldap.log().len();
    let again = pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert!(
        matches!(outcome_of(&again, "ldap", "alice", "revoke"), Outcome::Parked(p) if p.permanent)
    );
    assert_eq!(ldap.log().len(), sent, "nothing resent: {:?}", ldap.log());
}

#[tokio::test]
async fn another_identitys_failures_and_another_target_being_down_hold_up_no_disable() {
    let ldap = Scripted::new(
        "ldap",
        Box::new(|id, action| {
            (id.name == "bob" && matches!(action, Action::Grant { .. }))
                .then(|| TargetError::Transient("503 Service Unavailable".into()))
        }),
    );
    ldap.grant("alice", "finance");
    let tenant = tenant(
        &[
            ("alice", "Terminated", &[]),
            ("bob", "Active", &["finance"]),
        ],
        &[("ldap", ""), ("down", "")],
    );
    // `down` has no connector: connecting fails every pass.
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let result = pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert_eq!(ldap.account("alice"), Some(AccountState::Disabled));
    assert!(ldap.groups("alice").is_empty(), "revoked");
    assert!(matches!(
        outcome_of(&result, "ldap", "bob", "grant"),
        Outcome::Failed(f) if !f.permanent
    ));
    assert!(result.targets["down"].unreachable.is_some());
}

#[tokio::test]
async fn a_transfer_revokes_before_it_grants_and_a_failed_revocation_holds_the_grant() {
    let ldap = Scripted::new(
        "ldap",
        refuse_revocations_of("carol", || TargetError::Permanent("403".into())),
    );
    ldap.grant("carol", "old");
    let tenant = tenant(&[("carol", "Active", &["new"])], &[("ldap", "")]);
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let result = pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert!(matches!(
        outcome_of(&result, "ldap", "carol", "grant"),
        Outcome::Held(why) if why.contains("revocation")
    ));
    assert_eq!(ldap.groups("carol"), ["old"], "nothing new granted");
}

#[tokio::test]
async fn a_refused_account_creation_holds_its_grants_instead_of_retrying_them_for_ever() {
    // As a SCIM server does when the userName is taken: the create is refused for good,
    // and a grant sent anyway fails for want of the account.
    let scim = Scripted::new(
        "scim",
        Box::new(|id, action| match action {
            Action::CreateAccount { .. } if id.name == "mallory" => Some(TargetError::Permanent(
                "409 userName taken by an account gatehouse does not manage".into(),
            )),
            Action::Grant { .. } if id.name == "mallory" => Some(TargetError::Transient(
                "the account does not exist yet".into(),
            )),
            _ => None,
        }),
    );
    let tenant = tenant(
        &[
            ("mallory", "Active", &["payments"]),
            ("bob", "Active", &["payments"]),
        ],
        &[("scim", "")],
    );
    let mut slots = Slots::new(Fake(BTreeMap::from([("scim".into(), scim.clone())])));
    pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert_eq!(scim.groups("bob"), ["payments"], "bob is not held up");
    // The backoff of mallory's transient grant failure runs out.
    let slot = slots.get_mut("t", "scim").unwrap();
    for parked in slot.parked.values_mut().filter(|p| !p.failure.permanent) {
        parked.until = Instant::now();
    }
    let sent = scim.log().len();
    let again = pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert!(matches!(
        outcome_of(&again, "scim", "mallory", "createAccount"),
        Outcome::Parked(p) if p.permanent
    ));
    assert!(matches!(
        outcome_of(&again, "scim", "mallory", "grant"),
        Outcome::Held(why) if why.contains("account of t/mallory is created")
    ));
    assert_eq!(scim.log().len(), sent, "nothing resent: {:?}", scim.log());
}

#[tokio::test]
async fn losing_the_lease_stops_before_the_first_apply_batch() {
    let ldap = Scripted::new("ldap", Box::new(|_, _| None));
    ldap.grant("alice", "finance");
    let tenant = tenant(&[("alice", "Terminated", &[])], &[("ldap", "")]);
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let lost = pass(&mut slots, &tenant, &|| false).await;
    assert_eq!(lost.err(), Some(LostLeadership));
    assert!(ldap.log().is_empty(), "nothing written without the Lease");
}

#[tokio::test]
async fn the_blast_radius_guard_holds_revocations_but_never_a_disable() {
    let ldap = Scripted::new("ldap", Box::new(|_, _| None));
    for group in ["a", "b", "c"] {
        ldap.grant("alice", group);
    }
    let tenant = tenant(
        &[("alice", "Terminated", &[])],
        &[("ldap", ", limits: {maxRevocationsPerSync: 1}")],
    );
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let result = pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert_eq!(ldap.account("alice"), Some(AccountState::Disabled));
    assert_eq!(
        ldap.groups("alice").len(),
        3,
        "revocations held by the guard"
    );
    assert!(matches!(
        outcome_of(&result, "ldap", "alice", "revoke"),
        Outcome::Held(_)
    ));
}

#[tokio::test]
async fn under_the_guard_a_non_leaver_left_with_nothing_is_not_disabled() {
    // A bad policy change takes everyone's only group: the guard stops it, and the
    // disables it implies for people still employed are held too.
    let ldap = Scripted::new("ldap", Box::new(|_, _| None));
    for who in ["bob", "carol"] {
        ldap.grant(who, "view");
    }
    let tenant = tenant(
        &[("bob", "Active", &[]), ("carol", "Active", &[])],
        &[("ldap", ", limits: {maxRevocationsPerSync: 1}")],
    );
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let result = pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert!(ldap.log().is_empty(), "{:?}", ldap.log());
    assert_eq!(ldap.account("bob"), Some(AccountState::Enabled));
    assert!(matches!(
        outcome_of(&result, "ldap", "bob", "disableAccount"),
        Outcome::Held(why) if why.contains("maxRevocationsPerSync")
    ));
}

#[tokio::test]
async fn observe_mode_applies_nothing() {
    let ldap = Scripted::new("ldap", Box::new(|_, _| None));
    ldap.grant("alice", "finance");
    let tenant = tenant(
        &[("alice", "Terminated", &[])],
        &[("ldap", ", mode: Observe")],
    );
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert!(ldap.log().is_empty());
}

#[tokio::test]
async fn an_acknowledged_revocation_that_a_reobservation_contradicts_fails_instead_of_looping() {
    let ldap = Arc::new(Scripted {
        ack_only: true,
        ..Arc::into_inner(Scripted::new("ldap", Box::new(|_, _| None))).unwrap()
    });
    ldap.grant("alice", "finance");
    let tenant = tenant(&[("alice", "Terminated", &[])], &[("ldap", "")]);
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let first = pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert_eq!(
        outcome_of(&first, "ldap", "alice", "revoke"),
        &Outcome::Done
    );
    assert!(first.confirm_soon, "a re-observation is due");
    let second = pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert!(matches!(
        outcome_of(&second, "ldap", "alice", "revoke"),
        Outcome::Failed(f) if f.permanent && f.message.contains("re-observation")
    ));
    let revokes = ldap.log().iter().filter(|l| l.ends_with("revoke")).count();
    assert_eq!(revokes, 1, "sent once, not again: {:?}", ldap.log());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever subset of operations the targets refuse, permanently or not, every
    /// leaver's account is disabled on every target, in the pass the leaver appears, and no
    /// identity is granted anything on a target where one of its revocations failed.
    #[test]
    fn every_leaver_is_disabled_whatever_else_fails(
        refused in proptest::collection::btree_set((0usize..4, 0usize..3, any::<bool>()), 0..12),
        statuses in proptest::collection::vec(prop_oneof![Just("Active"), Just("Terminated")], 4),
    ) {
        let people = ["p0", "p1", "p2", "p3"];
        let kinds = ["revoke", "grant", "revokeSessions"];
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let refused = Arc::new(refused);
        let mut targets = BTreeMap::new();
        for name in ["ldap", "scim"] {
            let refused = refused.clone();
            let target = Scripted::new(name, Box::new(move |id, action| {
                let who = people.iter().position(|p| *p == id.name)?;
                let kind = kinds.iter().position(|k| *k == action.name())?;
                refused.iter().find(|(w, k, _)| *w == who && *k == kind).map(|(_, _, permanent)| {
                    if *permanent { TargetError::Permanent("refused".into()) } else { TargetError::Transient("busy".into()) }
                })
            }));
            for p in people {
                target.grant(p, "old");
            }
            targets.insert(name.to_string(), target);
        }
        let roster: Vec<Person<'_>> = people
            .iter()
            .zip(&statuses)
            .map(|(p, s)| (*p, *s, &["new"][..]))
            .collect();
        let tenant = tenant(&roster, &[("ldap", ""), ("scim", "")]);
        let mut slots = Slots::new(Fake(targets.clone()));
        let result = runtime.block_on(pass(&mut slots, &tenant, &|| true)).unwrap();
        for (p, status) in people.iter().zip(&statuses) {
            // A revocation of `p` not done anywhere holds every grant of `p` everywhere.
            let revoke_failed = result.targets.iter().any(|(name, out)| {
                out.outcomes
                    .iter()
                    .zip(&result.decision.targets[name].operations)
                    .any(|(o, op)| op.identity.name == *p && op.action.is_revocation() && !o.succeeded())
            });
            for target in targets.values() {
                let log = target.log();
                if *status == "Terminated" {
                    prop_assert_eq!(target.account(p), Some(AccountState::Disabled), "{} on {}", p, target.name);
                    let disabled = log.iter().position(|l| *l == format!("{p} disableAccount"));
                    let first_revoke = log.iter().position(|l| *l == format!("{p} revoke"));
                    prop_assert!(disabled < first_revoke || first_revoke.is_none(), "{:?}", log);
                } else if revoke_failed {
                    prop_assert!(!target.groups(p).contains(&"new".to_string()), "{} granted while a revocation failed", p);
                } else {
                    let refused_grant = refused.iter().any(|(w, k, _)| people[*w] == *p && *k == 1);
                    prop_assert_eq!(target.groups(p).contains(&"new".to_string()), !refused_grant, "{} on {}: {:?}", p, target.name, log);
                }
            }
        }
    }
}

/// The tenant of [`tenant`] with its one target turned into a SCIM app: the SCIM default
/// attribute mapping applies (`name.familyName` from the account for these test people).
fn scim_tenant(people: &[Person<'_>]) -> TenantObjects {
    let mut t = tenant(people, &[("scim", "")]);
    let spec = &mut t.targets[0].spec;
    spec.type_ = crate::api::TargetType::SCIM;
    spec.scim = Some(serde_yaml::from_str("{url: 'http://scim.invalid'}").unwrap());
    t
}

#[tokio::test]
async fn an_acknowledged_attribute_write_that_a_reobservation_contradicts_is_not_resent() {
    let scim = Arc::new(Scripted {
        ack_only: true,
        ..Arc::into_inner(Scripted::new("scim", Box::new(|_, _| None))).unwrap()
    });
    // alice holds her group but none of her owned attributes.
    scim.grant("alice", "payments");
    let tenant = scim_tenant(&[("alice", "Active", &["payments"])]);
    let mut slots = Slots::new(Fake(BTreeMap::from([("scim".into(), scim.clone())])));
    let first = pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert_eq!(
        outcome_of(&first, "scim", "alice", "updateAttributes"),
        &Outcome::Done
    );
    assert_eq!(scim.log(), ["alice updateAttributes"]);
    // The target acknowledged the write, yet still shows the old values: not sent again.
    let second = pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert!(matches!(
        outcome_of(&second, "scim", "alice", "updateAttributes"),
        Outcome::Failed(f) if f.permanent && f.message.contains("still shows it undone")
    ));
    assert_eq!(scim.log().len(), 1, "{:?}", scim.log());
}

#[tokio::test]
async fn a_joiner_is_created_with_its_attributes_and_converges() {
    let scim = Scripted::new("scim", Box::new(|_, _| None));
    let tenant = scim_tenant(&[("alice", "Active", &["payments"])]);
    let mut slots = Slots::new(Fake(BTreeMap::from([("scim".into(), scim.clone())])));
    let first = pass(&mut slots, &tenant, &|| true).await.unwrap();
    let create = first.decision.targets["scim"]
        .operations
        .iter()
        .find_map(|op| match &op.action {
            Action::CreateAccount { attributes, .. } => Some(attributes.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        create.get("name.familyName"),
        Some(&crate::engine::attributes::AttrValue::Text("alice".into()))
    );
    let second = pass(&mut slots, &tenant, &|| true).await.unwrap();
    assert!(
        second.decision.targets["scim"].operations.is_empty(),
        "{:?}",
        second.decision.targets["scim"].operations
    );
}

#[tokio::test]
async fn a_change_is_planned_against_the_cache_and_drift_waits_for_the_next_listing() {
    let ldap = Scripted::new("ldap", Box::new(|_, _| None));
    let targets = BTreeMap::from([("ldap".to_string(), ldap.clone())]);
    let mut slots = Slots::new(Fake(targets));
    let people = |bob: &'static str| {
        tenant(
            &[
                ("alice", "Active", &["finance"]),
                ("bob", bob, &["finance"]),
            ],
            &[("ldap", "")],
        )
    };
    pass(&mut slots, &people("Active"), &|| true).await.unwrap();
    assert_eq!(
        (ldap.listings(), ldap.groups("bob")),
        (1, vec!["finance".into()])
    );

    // Nothing changed: nothing read, nothing planned.
    let idle = pass(&mut slots, &people("Active"), &|| true).await.unwrap();
    assert!(idle.decision.targets["ldap"].operations.is_empty());
    assert_eq!((ldap.listings(), ldap.rereads().len()), (1, 0));

    // A leaver: planned against the cache, cut off, no listing.
    let leaver = pass(&mut slots, &people("Terminated"), &|| true)
        .await
        .unwrap();
    assert_eq!(
        outcome_of(&leaver, "ldap", "bob", "disableAccount"),
        &Outcome::Done
    );
    assert_eq!(ldap.listings(), 1, "no full listing for one leaver");
    assert!(leaver.confirm_soon);
    // The acknowledged revocations are confirmed by re-reading bob alone.
    let confirm = pass(&mut slots, &people("Terminated"), &|| true)
        .await
        .unwrap();
    assert_eq!(ldap.rereads(), [vec!["bob".to_string()]]);
    assert!(confirm.decision.targets["ldap"].operations.is_empty());
    assert_eq!(ldap.listings(), 1);

    // A hand edit is drift: not seen until the next full listing (here: the resync).
    ldap.drop_group("alice", "finance");
    let blind = pass(&mut slots, &people("Terminated"), &|| true)
        .await
        .unwrap();
    assert!(blind.decision.targets["ldap"].operations.is_empty());
    // The resync lists in the background; its answer is installed by the pass after it.
    slots.resync("t");
    pass(&mut slots, &people("Terminated"), &|| true)
        .await
        .unwrap();
    slots.settle().await;
    let repaired = pass(&mut slots, &people("Terminated"), &|| true)
        .await
        .unwrap();
    assert_eq!(ldap.listings(), 2);
    assert_eq!(
        outcome_of(&repaired, "ldap", "alice", "grant"),
        &Outcome::Done
    );
    assert_eq!(ldap.groups("alice"), ["finance"]);
}

#[tokio::test]
async fn a_failed_operation_and_a_new_subject_are_re_read_and_a_zero_drift_interval_lists_every_pass()
 {
    let refused = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let refusing = refused.clone();
    let ldap = Scripted::new(
        "ldap",
        Box::new(move |id, action| {
            (id.name == "alice"
                && matches!(action, Action::Grant { .. })
                && refusing.swap(false, std::sync::atomic::Ordering::SeqCst))
            .then(|| TargetError::Transient("timed out; outcome unknown".into()))
        }),
    );
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let one = tenant(&[("alice", "Active", &["finance"])], &[("ldap", "")]);
    let first = pass(&mut slots, &one, &|| true).await.unwrap();
    assert!(matches!(
        outcome_of(&first, "ldap", "alice", "grant"),
        Outcome::Failed(_)
    ));
    // The failed grant waits for its retry; its identity is re-read before it is planned.
    if let Some(slot) = slots.get_mut("t", "ldap") {
        slot.parked.clear();
    }
    let second = pass(&mut slots, &one, &|| true).await.unwrap();
    assert_eq!(ldap.rereads(), [vec!["alice".to_string()]]);
    assert_eq!(
        outcome_of(&second, "ldap", "alice", "grant"),
        &Outcome::Done
    );
    // A joiner is a new subject: re-read (an account of that name may exist already).
    let two = tenant(
        &[
            ("alice", "Active", &["finance"]),
            ("bob", "Active", &["finance"]),
        ],
        &[("ldap", "")],
    );
    pass(&mut slots, &two, &|| true).await.unwrap();
    assert_eq!(ldap.rereads().last().unwrap(), &["bob".to_string()]);
    assert_eq!(ldap.listings(), 1);
    // driftInterval 0s: every pass lists the target.
    let always = tenant(
        &[("alice", "Active", &["finance"])],
        &[("ldap", ", driftInterval: 0s")],
    );
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    pass(&mut slots, &always, &|| true).await.unwrap();
    pass(&mut slots, &always, &|| true).await.unwrap();
    slots.settle().await;
    assert_eq!(ldap.listings(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Planning against the cache (the last listing, plus the operations the target
    /// confirmed, plus re-reads of what it could not vouch for) gives the same plan as
    /// planning against a fresh listing of the target, whatever failed, whatever the
    /// target only pretended to do, and whatever the next change is; also when a change
    /// was applied while a background listing (whose snapshot predates it) was running.
    #[test]
    fn planning_against_the_cache_equals_planning_against_a_fresh_listing(
        refused in proptest::collection::btree_set((0usize..4, 0usize..4, any::<bool>()), 0..10),
        held in proptest::collection::vec(proptest::collection::btree_set(0usize..3, 0..3), 4),
        before in proptest::collection::vec(0usize..4, 4),
        during in proptest::option::of(proptest::collection::vec(0usize..4, 4)),
        after in proptest::collection::vec(0usize..4, 4),
        ack_only in any::<bool>(),
    ) {
        let people = ["p0", "p1", "p2", "p3"];
        let groups = ["g0", "g1", "g2"];
        let kinds = ["revoke", "grant", "disableAccount", "enableAccount"];
        // HR status and the groups its policies grant, by choice.
        let roster = |choice: &[usize]| -> TenantObjects {
            let rows: Vec<Person<'_>> = people
                .iter()
                .zip(choice)
                .map(|(p, c)| match c {
                    0 => (*p, "Terminated", &[][..]),
                    1 => (*p, "Active", &["g0"][..]),
                    2 => (*p, "Active", &["g1", "g2"][..]),
                    _ => (*p, "OnLeave", &["g0"][..]),
                })
                .collect();
            tenant(&rows, &[("ldap", "")])
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let refused = Arc::new(refused);
        let rules = refused.clone();
        let target = Arc::new(Scripted {
            ack_only,
            ..Arc::into_inner(Scripted::new("ldap", Box::new(move |id, action| {
                let who = people.iter().position(|p| *p == id.name)?;
                let kind = kinds.iter().position(|k| *k == action.name())?;
                rules.iter().find(|(w, k, _)| *w == who && *k == kind).map(|(_, _, permanent)| {
                    if *permanent { TargetError::Permanent("refused".into()) } else { TargetError::Transient("timed out".into()) }
                })
            }))).unwrap()
        });
        for (p, gs) in people.iter().zip(&held) {
            for g in gs {
                target.grant(p, groups[*g]);
            }
        }
        let targets = BTreeMap::from([("ldap".to_string(), target.clone())]);
        let mut cached = Slots::new(Fake(targets.clone()));
        let first = roster(&before);
        runtime.block_on(pass(&mut cached, &first, &|| true)).unwrap();
        if let Some(during) = &during {
            // A listing takes its snapshot and is still running while a change is applied.
            runtime.block_on(async {
                let slow = target.gate.lock().await;
                cached.resync("t");
                pass(&mut cached, &first, &|| true).await.unwrap();
                tokio::task::yield_now().await;
                pass(&mut cached, &roster(during), &|| true).await.unwrap();
                drop(slow);
                cached.settle().await;
            });
        }
        // The next change, decided against the cache and against a fresh listing.
        let next = roster(&after);
        let metrics = Metrics::default();
        let settings = Settings::default();
        let ctx = PassContext {
            now: "2026-12-01T00:00:00Z".parse().unwrap(),
            settings: &settings,
            resync: Duration::from_secs(600),
            leading: &|| true,
            preempted: &|| false,
            metrics: &metrics,
        };
        let engine = Engine::new(&next.to_snapshot(), settings.clone());
        let (from_cache, waiting) = runtime.block_on(observe(&mut cached, &next, &ctx));
        prop_assert!(waiting.is_empty(), "a few changes are read before the plan: {:?}", waiting);
        let mut fresh = Slots::new(Fake(targets));
        let (from_listing, _) = runtime.block_on(observe(&mut fresh, &next, &ctx));
        let a = decide(&engine, "t", ctx.now, &from_cache);
        let b = decide(&engine, "t", ctx.now, &from_listing);
        prop_assert_eq!(&a.targets["ldap"].operations, &b.targets["ldap"].operations);
        prop_assert_eq!(a.held, b.held);
    }
}

#[tokio::test]
async fn a_change_queued_during_a_large_batch_goes_ahead_of_the_rest_of_it() {
    let ldap = Scripted::new("ldap", Box::new(|_, _| None));
    ldap.grant("zed", "g");
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let names: Vec<String> = (0..100).map(|i| format!("j{i:03}")).collect();
    let roster = |zed: &'static str| -> TenantObjects {
        let mut rows: Vec<Person<'_>> = names
            .iter()
            .map(|n| (n.as_str(), "Active", &["g"][..]))
            .collect();
        rows.push(("zed", zed, &["g"][..]));
        tenant(&rows, &[("ldap", "")])
    };
    // A leaver's change arrives as soon as the first round of joiner work is sent.
    let log = ldap.clone();
    let queued = move || !log.log().is_empty();
    let big = pass_with(&mut slots, &roster("Active"), &|| true, &queued)
        .await
        .unwrap();
    assert_eq!(ldap.log().len(), APPLY_BATCH, "one round, then it yields");
    let sent = big.deferred.as_ref().expect("the rest is deferred");
    assert_eq!(sent.len(), APPLY_BATCH, "{sent:?}");
    let deferred = big.targets["ldap"]
        .outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Held(why) if why == DEFERRED))
        .count();
    assert_eq!(deferred, 2 * names.len() - APPLY_BATCH);

    // The next pass (the leaver's): zed's cut-off is the first thing sent, then the rest.
    let next = pass(&mut slots, &roster("Terminated"), &|| true)
        .await
        .unwrap();
    assert!(next.deferred.is_none());
    assert_eq!(
        ldap.log()[APPLY_BATCH],
        "zed disableAccount",
        "{:?}",
        ldap.log()
    );
    assert_eq!(ldap.account("zed"), Some(AccountState::Disabled));
    assert!(names.iter().all(|n| ldap.groups(n) == ["g"]));
}

#[tokio::test]
async fn a_leaver_is_cut_off_and_revoked_while_a_listing_is_in_progress() {
    let ldap = listing_logged("ldap", false);
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let people = |bob: &'static str| {
        tenant(
            &[
                ("alice", "Active", &["finance"]),
                ("bob", bob, &["finance"]),
            ],
            &[("ldap", "")],
        )
    };
    pass(&mut slots, &people("Active"), &|| true).await.unwrap();
    let before = ldap.log().len();
    // The resync makes a full listing due, and the listing is slow: it is still in
    // progress when bob leaves.
    let slow = ldap.gate.lock().await;
    slots.resync("t");
    pass(&mut slots, &people("Active"), &|| true).await.unwrap();
    let leaver = pass(&mut slots, &people("Terminated"), &|| true)
        .await
        .unwrap();
    assert_eq!(
        ldap.log()[before..],
        ["bob disableAccount", "bob revokeSessions", "bob revoke"],
        "nothing waits for the listing"
    );
    assert_eq!(ldap.listings(), 1, "the second listing has not finished");
    assert_eq!(
        outcome_of(&leaver, "ldap", "bob", "disableAccount"),
        &Outcome::Done
    );
    assert_eq!(ldap.account("bob"), Some(AccountState::Disabled));
    assert!(ldap.groups("bob").is_empty());
    // The listing ends; its answer (taken before bob left) is installed with bob's
    // operations replayed on it, and confirms them.
    drop(slow);
    slots.settle().await;
    let after = pass(&mut slots, &people("Terminated"), &|| true)
        .await
        .unwrap();
    assert_eq!(ldap.listings(), 2);
    assert!(
        after.decision.targets["ldap"].operations.is_empty(),
        "{:?}",
        after.decision.targets["ldap"].operations
    );
    assert!(ldap.log()[before..].iter().all(|l| l != "alice grant"));
}

#[tokio::test]
async fn what_is_confirmed_during_a_listing_is_replayed_on_its_answer() {
    let ldap = Scripted::new("ldap", Box::new(|_, _| None));
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let alice =
        |groups: &'static [&'static str]| tenant(&[("alice", "Active", groups)], &[("ldap", "")]);
    pass(&mut slots, &alice(&["finance"]), &|| true)
        .await
        .unwrap();
    // A listing starts and takes its snapshot (alice: finance)…
    let slow = ldap.gate.lock().await;
    slots.resync("t");
    pass(&mut slots, &alice(&["finance"]), &|| true)
        .await
        .unwrap();
    tokio::task::yield_now().await;
    // …then alice is granted audit, confirmed by the target, before the listing ends.
    let grant = pass(&mut slots, &alice(&["finance", "audit"]), &|| true)
        .await
        .unwrap();
    assert_eq!(outcome_of(&grant, "ldap", "alice", "grant"), &Outcome::Done);
    drop(slow);
    slots.settle().await;
    let after = pass(&mut slots, &alice(&["finance", "audit"]), &|| true)
        .await
        .unwrap();
    assert_eq!(ldap.listings(), 2);
    // The listing's answer lacks audit; the replayed grant puts it back, so it is not
    // planned (and sent) again.
    assert!(
        after.decision.targets["ldap"].operations.is_empty(),
        "{:?}",
        after.decision.targets["ldap"].operations
    );
    assert_eq!(
        ldap.log().iter().filter(|l| *l == "alice grant").count(),
        2,
        "finance once, audit once: {:?}",
        ldap.log()
    );
}

#[tokio::test]
async fn a_leaver_arriving_with_a_large_import_is_cut_off_while_the_joiners_wait_for_the_listing() {
    let ldap = listing_logged("ldap", false);
    let mut slots = Slots::new(Fake(BTreeMap::from([("ldap".into(), ldap.clone())])));
    let joiners: Vec<String> = (0..300).map(|i| format!("j{i:03}")).collect();
    let roster = |zed: &'static str, import: bool| -> TenantObjects {
        let mut rows: Vec<Person<'_>> = vec![("zed", zed, &["g"][..])];
        if import {
            rows.extend(joiners.iter().map(|n| (n.as_str(), "Active", &["g"][..])));
        }
        tenant(&rows, &[("ldap", "")])
    };
    pass(&mut slots, &roster("Active", false), &|| true)
        .await
        .unwrap();
    let before = ldap.log().len();
    // 300 new subjects: too many to re-read one by one, so the target is listed, in the
    // background; zed's cut-off goes at once, the joiners wait for the listing.
    let slow = ldap.gate.lock().await;
    let first = pass(&mut slots, &roster("Terminated", true), &|| true)
        .await
        .unwrap();
    assert_eq!(
        ldap.log()[before..],
        ["zed disableAccount", "zed revokeSessions", "zed revoke"]
    );
    assert!(matches!(
        outcome_of(&first, "ldap", "j000", "createAccount"),
        Outcome::Held(why) if why.contains("waiting for the read of ldap in progress")
    ));
    drop(slow);
    slots.settle().await;
    pass(&mut slots, &roster("Terminated", true), &|| true)
        .await
        .unwrap();
    assert_eq!(ldap.log()[before + 3], "LIST");
    assert!(joiners.iter().all(|n| ldap.groups(n) == ["g"]));
}

#[tokio::test]
async fn on_a_target_that_only_lists_a_leaver_is_cut_off_while_a_joiner_waits_for_the_listing() {
    let scim = listing_logged("scim", true);
    let mut slots = Slots::new(Fake(BTreeMap::from([("scim".into(), scim.clone())])));
    let people = |zed: &'static str, joiner: bool| {
        let mut rows: Vec<Person<'_>> = vec![("zed", zed, &["g"][..])];
        if joiner {
            rows.push(("ann", "Active", &["g"][..]));
        }
        tenant(&rows, &[("scim", "")])
    };
    pass(&mut slots, &people("Active", false), &|| true)
        .await
        .unwrap();
    let before = scim.log().len();
    // ann is a new subject: re-read, which on this target is a full listing, made in the
    // background.
    let slow = scim.gate.lock().await;
    pass(&mut slots, &people("Terminated", true), &|| true)
        .await
        .unwrap();
    assert_eq!(
        scim.log()[before..],
        ["zed disableAccount", "zed revokeSessions", "zed revoke"]
    );
    drop(slow);
    slots.settle().await;
    pass(&mut slots, &people("Terminated", true), &|| true)
        .await
        .unwrap();
    assert_eq!(scim.log()[before + 3], "LIST");
    assert_eq!(scim.groups("ann"), ["g"]);
}

#[tokio::test]
async fn a_leaver_is_cut_off_everywhere_while_a_slow_target_still_answers_an_earlier_round() {
    let fast = Scripted::new("fast", Box::new(|_, _| None));
    let slow = Scripted::new("slow", Box::new(|_, _| None));
    let mut slots = Slots::new(Fake(BTreeMap::from([
        ("fast".into(), fast.clone()),
        ("slow".into(), slow.clone()),
    ])));
    let targets = [("fast", ""), ("slow", "")];
    let roster = |carol: bool, bob: &'static str| {
        let mut rows: Vec<Person<'_>> = vec![("alice", "Active", &["g"]), ("bob", bob, &["g"])];
        if carol {
            rows.push(("carol", "Active", &["g"]));
        }
        tenant(&rows, &targets)
    };
    pass(&mut slots, &roster(false, "Active"), &|| true)
        .await
        .unwrap();
    assert_eq!(slow.groups("bob"), ["g"]);

    // carol joins; the slow target takes its time over her grant, and bob's change is
    // queued meanwhile.
    let answering = slow.slow_changes.lock().await;
    let seen = slow.clone();
    let before = slow.log().len();
    let queued = move || seen.log().len() > before;
    let joiner = tokio::time::timeout(
        Duration::from_secs(30),
        pass_with(&mut slots, &roster(true, "Active"), &|| true, &queued),
    )
    .await
    .expect("the pass waited for the slow target's answer")
    .unwrap();
    assert!(
        joiner.deferred.is_some(),
        "the pass stopped waiting for the slow target"
    );
    assert_eq!(fast.groups("carol"), ["g"]);
    assert_eq!(
        outcome_of(&joiner, "slow", "carol", "grant"),
        &Outcome::Held(DEFERRED.into())
    );
    assert!(slow.groups("carol").is_empty(), "still being answered");

    // bob's pass: cut off on both targets at once, the slow one included; his revocation
    // there waits for the slow target to answer the round in flight.
    let leaver = pass(&mut slots, &roster(true, "Terminated"), &|| true)
        .await
        .unwrap();
    for target in ["fast", "slow"] {
        assert_eq!(
            outcome_of(&leaver, target, "bob", "disableAccount"),
            &Outcome::Done,
            "{target}"
        );
    }
    assert_eq!(slow.account("bob"), Some(AccountState::Disabled));
    assert_eq!(fast.account("bob"), Some(AccountState::Disabled));
    assert!(fast.groups("bob").is_empty());
    assert!(
        matches!(outcome_of(&leaver, "slow", "bob", "revoke"), Outcome::Held(why) if why.contains("waiting for slow to answer")),
        "{:?}",
        outcome_of(&leaver, "slow", "bob", "revoke")
    );
    assert_eq!(slow.groups("bob"), ["g"]);

    // alice leaves too, the slow target still busy: bob's acknowledged cut-off would be
    // re-read there first, behind the round in flight; it waits instead, and alice is cut
    // off everywhere.
    slow.reads_queue
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let both = |carol| {
        let rows: Vec<Person<'_>> = vec![
            ("alice", "Terminated", &["g"]),
            ("bob", "Terminated", &["g"]),
            ("carol", carol, &["g"]),
        ];
        tenant(&rows, &targets)
    };
    let second = tokio::time::timeout(
        Duration::from_secs(30),
        pass(&mut slots, &both("Active"), &|| true),
    )
    .await
    .expect("the pass re-read behind the slow target's round")
    .unwrap();
    assert_eq!(
        outcome_of(&second, "slow", "alice", "disableAccount"),
        &Outcome::Done
    );
    assert_eq!(slow.account("alice"), Some(AccountState::Disabled));
    assert_eq!(fast.account("alice"), Some(AccountState::Disabled));

    // The slow target answers; the next pass records carol's grant (not sent again) and
    // revokes bob's group.
    drop(answering);
    slots.settle().await;
    let after = pass(&mut slots, &both("Active"), &|| true).await.unwrap();
    assert_eq!(slow.groups("carol"), ["g"]);
    assert!(slow.groups("bob").is_empty());
    assert_eq!(
        slow.log().iter().filter(|l| *l == "carol grant").count(),
        1,
        "{:?}",
        slow.log()
    );
    assert!(after.deferred.is_none());
    let settled = pass(&mut slots, &both("Active"), &|| true).await.unwrap();
    for target in ["fast", "slow"] {
        assert!(
            settled.decision.targets[target].operations.is_empty(),
            "{target}: {:?}",
            settled.decision.targets[target].operations
        );
    }
}
