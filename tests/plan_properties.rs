//! Properties of the engine and planner over random small organisations: leavers hold
//! nothing, evaluation ignores input order and is deterministic, plans are idempotent,
//! reach their target, converge, and always revoke before they grant.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use gatehouse::engine::{
    AccountIntent, DesiredState, Engine, ExceptionPhase, IdentityKey, NothingHeld, Phase, Settings,
    Snapshot, SourceKind, evaluate,
};
use gatehouse::plan::{AccessState, AccountState, Plan, plan};
use jiff::civil::Date;
use jiff::{SignedDuration, Span, Timestamp};
use proptest::prelude::*;

use common::*;

/// Identities are `p0..pN`; references pick from `p0..p{NAMES-1}`, so some dangle.
const NAMES: usize = 32;
/// References past the pool: two fixed people in every namespace, the head of the
/// organisation and an auditor, so that many exceptions have a valid approver.
const CEO: usize = NAMES;
const AUDITOR: usize = NAMES + 1;

fn person(r: usize) -> String {
    match r {
        CEO => "ceo".into(),
        AUDITOR => "auditor".into(),
        i => format!("p{i}"),
    }
}
const NAMESPACES: [&str; 2] = ["acme", "globex"];
const STATUS: [&str; 4] = ["PreHire", "Active", "OnLeave", "Terminated"];
const EMPLOYMENT: [Option<&str>; 5] = [
    None,
    Some("Employee"),
    Some("Contractor"),
    Some("Vendor"),
    Some("Intern"),
];
const DEPARTMENTS: [&str; 3] = ["eng", "fin", "ops"];
const LOCATIONS: [&str; 2] = ["berlin", "paris"];
const PROOFING: [Option<&str>; 4] = [None, Some("IAL1"), Some("IAL2"), Some("IAL3")];
const COST: [&str; 2] = ["4100", "4200"];
const KEYS: [(&str, &[&str]); 6] = [
    ("department", &DEPARTMENTS),
    ("location", &LOCATIONS),
    ("status", &["Active", "OnLeave", "PreHire"]),
    ("employmentType", &["Employee", "Contractor"]),
    ("type", &["Human", "NonHuman"]),
    ("costCenter", &COST),
];
const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];
/// `ghost` is no target anywhere; `pg` exists only in acme.
const ENTITLEMENTS: [(&str, &str); 9] = [
    ("ldap", "eng"),
    ("ldap", "fin"),
    ("ldap", "all"),
    ("scim", "payments"),
    ("scim", "approvals"),
    ("scim", "jira"),
    ("pg", "ledger"),
    ("pg", "ro"),
    ("ghost", "x"),
];
const MAX_DURATION: [&str; 3] = ["168h", "720h", "3000h"];
/// A day offset that renders as an impossible date.
const BAD_DATE: i64 = 999;

fn day(offset: i64) -> String {
    if offset == BAD_DATE {
        return "2026-02-30".into();
    }
    Date::constant(2026, 6, 1)
        .checked_add(Span::new().days(offset))
        .unwrap()
        .to_string()
}

fn instant(hours: i64, seconds: i64) -> Timestamp {
    ts("2026-06-01T00:00:00Z")
        + SignedDuration::from_hours(hours)
        + SignedDuration::from_secs(seconds)
}

#[derive(Clone, Debug)]
struct GenIdentity {
    ns: usize,
    human: bool,
    status: usize,
    employment: usize,
    department: Option<usize>,
    location: Option<usize>,
    /// -1: the identity itself (head of the organisation).
    manager: Option<i64>,
    start: Option<i64>,
    end: Option<i64>,
    owner: Option<usize>,
    proofing: usize,
    cost: Option<usize>,
}

#[derive(Clone, Debug)]
struct GenPolicy {
    ns: usize,
    equals: Vec<(usize, usize)>,
    expression: Option<(usize, usize, Vec<usize>)>,
    requires: usize,
    entitlements: Vec<usize>,
    observe: bool,
    max_duration: Option<usize>,
    sod: Option<(usize, usize)>,
}

#[derive(Clone, Debug)]
struct GenException {
    /// Whether subject and requester are folded onto existing identities, and the
    /// exception placed in the subject's namespace.
    known: bool,
    ns: usize,
    /// `from_hours` is relative to the org's `now`.
    subject: usize,
    requester: usize,
    approvers: Vec<usize>,
    from_hours: i64,
    length_hours: i64,
    entitlements: Vec<usize>,
}

#[derive(Clone, Debug)]
struct GenOrg {
    pg_delete: bool,
    identities: Vec<GenIdentity>,
    /// Positions deleted from Git (only in revisions).
    dropped: BTreeSet<usize>,
    policies: Vec<GenPolicy>,
    exceptions: Vec<GenException>,
    now_hours: i64,
    now_seconds: i64,
}

fn namespace() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0usize), 1 => Just(1usize)]
}

/// A reference: mostly to the first few identities, sometimes to one that may not exist.
fn reference() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0usize..6, 3 => 0usize..NAMES]
}

fn date_offset() -> impl Strategy<Value = i64> {
    prop_oneof![20 => -40i64..40, 1 => Just(BAD_DATE)]
}

fn entitlement() -> impl Strategy<Value = usize> {
    prop_oneof![30 => 0usize..8, 1 => Just(8usize)]
}

fn gen_identity() -> impl Strategy<Value = GenIdentity> {
    (
        (
            namespace(),
            prop::bool::weighted(0.85),
            prop_oneof![1 => Just(0usize), 5 => Just(1usize), 1 => Just(2usize), 1 => Just(3usize)],
            0usize..EMPLOYMENT.len(),
            prop::option::weighted(0.9, 0usize..DEPARTMENTS.len()),
            prop::option::of(0usize..LOCATIONS.len()),
        ),
        (
            prop::option::weighted(
                0.85,
                prop_oneof![
                    1 => Just(-1i64),
                    3 => Just(CEO as i64),
                    4 => reference().prop_map(|r| r as i64),
                ],
            ),
            prop::option::weighted(0.4, date_offset()),
            prop::option::weighted(0.4, date_offset()),
            prop::option::weighted(0.9, prop_oneof![1 => Just(CEO), 4 => reference()]),
            0usize..PROOFING.len(),
            prop::option::of(0usize..COST.len()),
        ),
    )
        .prop_map(
            |(
                (ns, human, status, employment, department, location),
                (manager, start, end, owner, proofing, cost),
            )| GenIdentity {
                ns,
                human,
                status,
                employment,
                department,
                location,
                manager,
                start,
                end,
                owner,
                proofing,
                cost,
            },
        )
}

fn gen_policy() -> impl Strategy<Value = GenPolicy> {
    (
        namespace(),
        prop::collection::vec((0usize..KEYS.len(), 0usize..3), 0..3),
        prop::option::weighted(
            0.5,
            (
                0usize..KEYS.len(),
                0usize..OPERATORS.len(),
                prop::collection::vec(0usize..3, 1..3),
            ),
        ),
        prop_oneof![3 => Just(0usize), 1 => 1usize..PROOFING.len()],
        prop::collection::vec(entitlement(), 1..4),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.4, 0usize..MAX_DURATION.len()),
        prop::option::weighted(0.35, (entitlement(), entitlement())),
    )
        .prop_map(
            |(ns, equals, expression, requires, entitlements, observe, max_duration, sod)| {
                GenPolicy {
                    ns,
                    equals,
                    expression,
                    requires,
                    entitlements,
                    observe,
                    max_duration,
                    sod: sod.filter(|(a, b)| a != b),
                }
            },
        )
}

/// A reference among the first few identities: most exceptions name real people.
fn near() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..8, 1 => 0usize..NAMES]
}

fn gen_exception() -> impl Strategy<Value = GenException> {
    (
        prop::bool::weighted(0.9),
        namespace(),
        prop_oneof![3 => 0usize..3, 1 => near()],
        prop_oneof![2 => Just(CEO), 1 => near()],
        prop_oneof![
            1 => Just(vec![]),
            9 => prop::collection::vec(prop_oneof![3 => Just(AUDITOR), 1 => near()], 1..3),
        ],
        // Relative to the org's `now`, on the hour: windows open, close or start exactly now.
        prop_oneof![Just(0i64), Just(-24i64), Just(-240i64), -400i64..100],
        prop_oneof![2 => Just(24i64), 2 => Just(240i64), 3 => -24i64..800, 1 => 800i64..3000],
        prop::collection::vec(entitlement(), 1..3),
    )
        .prop_map(
            |(known, ns, subject, requester, approvers, from_hours, length_hours, entitlements)| {
                GenException {
                    known,
                    ns,
                    subject,
                    requester,
                    approvers,
                    from_hours,
                    length_hours,
                    entitlements,
                }
            },
        )
}

fn gen_org() -> impl Strategy<Value = GenOrg> {
    (
        any::<bool>(),
        prop::collection::vec(gen_identity(), 1..30),
        prop::collection::vec(gen_policy(), 1..8),
        prop::collection::vec(gen_exception(), 0..6),
        -960i64..960,
        prop_oneof![Just(0i64), 0i64..3600],
    )
        .prop_map(
            |(pg_delete, identities, policies, exceptions, now_hours, now_seconds)| GenOrg {
                pg_delete,
                identities,
                dropped: BTreeSet::new(),
                policies,
                exceptions,
                now_hours,
                now_seconds,
            },
        )
}

fn ent_yaml(i: usize) -> String {
    let (target, name) = ENTITLEMENTS[i];
    format!("{{target: {target}, name: {name}}}")
}

fn ents_yaml(list: &[usize]) -> String {
    let items: Vec<String> = list.iter().map(|&i| ent_yaml(i)).collect();
    format!("[{}]", items.join(", "))
}

impl GenIdentity {
    fn render(&self, index: usize) -> gatehouse::api::Identity {
        let name = format!("p{index}");
        let ns = NAMESPACES[self.ns];
        let mut extra = Vec::new();
        if let Some(level) = PROOFING[self.proofing] {
            extra.push(format!("proofing: {{level: {level}}}"));
        }
        if let Some(cost) = self.cost {
            extra.push(format!("attributes: {{costCenter: '{}'}}", COST[cost]));
        }
        if !self.human {
            let mut spec = vec!["type: NonHuman".to_string()];
            if let Some(owner) = self.owner {
                spec.push(format!("owner: {}", person(owner)));
            }
            spec.extend(extra);
            return object("Identity", ns, &name, &spec.join(", "));
        }
        let mut employment = vec![format!("status: {}", STATUS[self.status])];
        if let Some(t) = EMPLOYMENT[self.employment] {
            employment.push(format!("type: {t}"));
        }
        if let Some(d) = self.department {
            employment.push(format!("department: {}", DEPARTMENTS[d]));
        }
        if let Some(l) = self.location {
            employment.push(format!("location: {}", LOCATIONS[l]));
        }
        match self.manager {
            Some(-1) => employment.push(format!("manager: {name}")),
            Some(m) => employment.push(format!("manager: {}", person(m as usize))),
            None => {}
        }
        if let Some(d) = self.start {
            employment.push(format!("startDate: '{}'", day(d)));
        }
        if let Some(d) = self.end {
            employment.push(format!("endDate: '{}'", day(d)));
        }
        human_in(ns, &name, &employment.join(", "), &extra.join(", "))
    }
}

impl GenPolicy {
    fn render(&self, index: usize) -> gatehouse::api::AccessPolicy {
        let equals: BTreeMap<&str, &str> = self
            .equals
            .iter()
            .map(|&(k, v)| {
                let (key, values) = KEYS[k];
                (key, values[v % values.len()])
            })
            .collect();
        let equals: Vec<String> = equals.iter().map(|(k, v)| format!("{k}: '{v}'")).collect();
        let mut selector = vec![format!("matchAttributes: {{{}}}", equals.join(", "))];
        if let Some((k, op, values)) = &self.expression {
            let (key, pool) = KEYS[*k];
            let operator = OPERATORS[*op];
            let values: Vec<String> = if operator == "In" || operator == "NotIn" {
                values
                    .iter()
                    .map(|&v| format!("'{}'", pool[v % pool.len()]))
                    .collect()
            } else {
                vec![]
            };
            selector.push(format!(
                "matchExpressions: [{{key: {key}, operator: {operator}, values: [{}]}}]",
                values.join(", ")
            ));
        }
        let mut spec = vec![
            format!("selector: {{{}}}", selector.join(", ")),
            format!("entitlements: {}", ents_yaml(&self.entitlements)),
        ];
        if let Some(level) = PROOFING[self.requires] {
            spec.push(format!("requires: {{proofing: {level}}}"));
        }
        if self.observe {
            spec.push("mode: Observe".into());
        }
        if let Some(d) = self.max_duration {
            spec.push(format!(
                "exceptionPolicy: {{maxDuration: {}}}",
                MAX_DURATION[d]
            ));
        }
        if let Some((a, b)) = self.sod {
            spec.push(format!(
                "separationOfDuties: [{{name: toxic{index}, entitlements: {}}}]",
                ents_yaml(&[a, b])
            ));
        }
        policy_in(
            NAMESPACES[self.ns],
            &format!("pol{index}"),
            &spec.join(", "),
        )
    }
}

impl GenException {
    /// `org`: the identities it may refer to, and `now` (the window is relative to it).
    fn render(&self, index: usize, org: &GenOrg) -> gatehouse::api::Exception {
        let from = instant(org.now_hours + self.from_hours, 0);
        let n = org.identities.len();
        let fold = |r: usize| if self.known && r < NAMES { r % n } else { r };
        let (subject, requester) = (fold(self.subject), fold(self.requester));
        let ns = match org.identities.get(subject) {
            Some(g) if self.known => g.ns,
            _ => self.ns,
        };
        let until = from + SignedDuration::from_hours(self.length_hours);
        let approvers: Vec<String> = self.approvers.iter().map(|&a| person(fold(a))).collect();
        exception_in(
            NAMESPACES[ns],
            &format!("x{index}"),
            &format!(
                "identity: {}, entitlements: {}, justification: j, requestedBy: {}, approvedBy: [{}], validFrom: '{from}', expiresAt: '{until}'",
                person(subject),
                ents_yaml(&self.entitlements),
                person(requester),
                approvers.join(", ")
            ),
        )
    }
}

impl GenOrg {
    fn now(&self) -> Timestamp {
        instant(self.now_hours, self.now_seconds)
    }

    fn snapshot(&self) -> Snapshot {
        let pg = if self.pg_delete { "Delete" } else { "Disable" };
        let org = Org::empty()
            .target("acme", "ldap", "LDAP", "Disable")
            .target("acme", "scim", "SCIM", "Delete")
            .target("acme", "pg", "PostgreSQL", pg)
            .target("globex", "ldap", "LDAP", "Delete")
            .target("globex", "scim", "SCIM", "Disable")
            .human_x(
                "acme",
                "ceo",
                "status: Active, department: exec, manager: ceo",
                "",
            )
            .human_x(
                "acme",
                "auditor",
                "status: Active, department: sec, manager: ceo",
                "",
            )
            .human_x(
                "globex",
                "ceo",
                "status: Active, department: exec, manager: ceo",
                "",
            )
            .human_x(
                "globex",
                "auditor",
                "status: Active, department: sec, manager: ceo",
                "",
            );
        let mut snap = org.snap;
        snap.identities.extend(
            self.identities
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.dropped.contains(i))
                .map(|(i, g)| g.render(i)),
        );
        snap.policies = self
            .policies
            .iter()
            .enumerate()
            .map(|(i, g)| g.render(i))
            .collect();
        snap.exceptions = self
            .exceptions
            .iter()
            .enumerate()
            .map(|(i, g)| g.render(i, self))
            .collect();
        snap
    }

    /// A later revision: per identity and policy, keep this one, take `other`'s, or drop
    /// it (a dropped identity is deleted from Git).
    fn revise(&self, other: &GenOrg, picks: &[u8], later_hours: i64) -> GenOrg {
        fn mix<T: Clone>(a: &[T], b: &[T], picks: &[u8]) -> Vec<Option<T>> {
            (0..a.len().max(b.len()))
                .map(|i| {
                    let pick = picks.get(i % picks.len().max(1)).copied().unwrap_or(0) % 10;
                    match (pick, a.get(i), b.get(i)) {
                        (9, _, _) => None,
                        (0..=5, Some(x), _) | (6..=8, None, Some(x)) => Some(x.clone()),
                        (_, x, y) => y.or(x).cloned(),
                    }
                })
                .collect()
        }
        let identities = mix(&self.identities, &other.identities, picks);
        let policies = mix(&self.policies, &other.policies, &picks[picks.len() / 2..]);
        // Identity names are positional (`p{i}`): keep every position, remember the dropped.
        let dropped = identities
            .iter()
            .enumerate()
            .filter(|(_, g)| g.is_none())
            .map(|(i, _)| i)
            .collect();
        GenOrg {
            pg_delete: self.pg_delete,
            identities: identities
                .into_iter()
                .map(|g| g.unwrap_or_else(|| self.identities[0].clone()))
                .collect(),
            dropped,
            policies: policies.into_iter().flatten().collect(),
            exceptions: if picks[0].is_multiple_of(2) {
                self.exceptions.clone()
            } else {
                other.exceptions.clone()
            },
            now_hours: self.now_hours + later_hours,
            now_seconds: self.now_seconds,
        }
    }
}

fn eval(snap: &Snapshot, now: Timestamp) -> DesiredState {
    evaluate(snap, now, &Settings::default(), &NothingHeld)
}

/// Deterministic Fisher-Yates driven by a xorshift seed.
fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let j = (*seed % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// The org evaluated as generated and with every snapshot list shuffled.
fn shuffled_pair(org: &GenOrg, seed: u64) -> (DesiredState, DesiredState) {
    let snap = org.snapshot();
    let mut shuffled = snap.clone();
    let mut seed = seed | 1;
    shuffle(&mut shuffled.identities, &mut seed);
    shuffle(&mut shuffled.policies, &mut seed);
    shuffle(&mut shuffled.exceptions, &mut seed);
    shuffle(&mut shuffled.targets, &mut seed);
    (eval(&snap, org.now()), eval(&shuffled, org.now()))
}

/// Withheld lists sorted by entitlement, source and reason.
fn normalized(d: &DesiredState) -> DesiredState {
    let mut d = d.clone();
    for a in d.identities.values_mut() {
        a.withheld.sort_by_cached_key(|w| {
            (
                w.entitlement.clone(),
                w.source.kind,
                w.source.name.clone(),
                format!("{:?}", w.reason),
            )
        });
    }
    d
}

/// A readable description of the first difference between two desired states.
fn first_difference(a: &DesiredState, b: &DesiredState) -> Option<String> {
    if a == b {
        return None;
    }
    for (k, x) in &a.identities {
        match b.identities.get(k) {
            Some(y) if x == y => {}
            y => return Some(format!("{k} differs:\n{x:#?}\nvs\n{y:#?}")),
        }
    }
    Some(format!(
        "identities equal; other fields differ:\n{:#?}\nvs\n{:#?}",
        (
            &a.violations,
            &a.exceptions,
            &a.policy_matches,
            a.next_change,
            a.identities.len()
        ),
        (
            &b.violations,
            &b.exceptions,
            &b.policy_matches,
            b.next_change,
            b.identities.len()
        )
    ))
}

/// Revocations (rank <= 3) all come before grants (rank >= 4); ranks never decrease;
/// within a rank, leavers come first.
fn check_order(p: &Plan) -> Result<(), TestCaseError> {
    // Creations, attribute updates and grants (rank 4 and up) never precede a revocation.
    let mut seen_grant = false;
    for op in &p.operations {
        if op.action.rank() >= 4 {
            seen_grant = true;
        } else {
            prop_assert!(!seen_grant, "revocation after a grant: {:?}", op);
        }
    }
    for pair in p.operations.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        prop_assert!(
            (a.action.rank(), !a.leaver) <= (b.action.rank(), !b.leaver),
            "out of order: {a:?} before {b:?}"
        );
    }
    Ok(())
}

/// Applies a plan and checks that it reaches `desired`, leaves no enabled account for a
/// leaver, and that planning again is empty.
fn check_step(base: &AccessState, desired: &DesiredState) -> Result<AccessState, TestCaseError> {
    let p = plan(base, desired);
    check_order(&p)?;
    let after = base.apply(&p);
    prop_assert_eq!(
        entitlement_sets(&after),
        entitlement_sets(&AccessState::from_desired(desired))
    );
    // Every wanted account carries exactly what the mappings render (a leaver's disabled
    // account keeps what it had: nothing is written to it).
    let wanted = AccessState::from_desired(desired);
    let attributes = |s: &AccessState| -> Vec<(IdentityKey, String, String)> {
        s.identities
            .iter()
            .flat_map(|(k, h)| {
                h.attributes
                    .iter()
                    .filter(|(t, _)| {
                        wanted
                            .identities
                            .get(k)
                            .is_some_and(|w| w.accounts.contains_key(*t))
                    })
                    .map(move |(t, a)| (k.clone(), t.clone(), format!("{a:?}")))
            })
            .collect()
    };
    prop_assert_eq!(attributes(&after), attributes(&wanted));
    let again = plan(&after, desired);
    prop_assert!(again.is_empty(), "plan does not converge: {:#?}", again);
    for (key, holding) in &after.identities {
        let leaver = desired
            .identities
            .get(key)
            .is_none_or(|a| a.account == AccountIntent::Revoked);
        if leaver {
            prop_assert!(holding.entitlements.is_empty(), "{key} keeps {holding:?}");
            prop_assert!(
                holding
                    .accounts
                    .values()
                    .all(|s| *s == AccountState::Disabled),
                "{key} keeps an enabled account: {holding:?}"
            );
        }
        for e in holding.entitlements.keys() {
            prop_assert!(
                holding.accounts.contains_key(&e.target),
                "{key} holds {e} without an account on {}",
                e.target
            );
        }
    }
    Ok(after)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// (a) Every Terminated identity holds nothing and has its account revoked; humans are
    /// Terminated exactly when their status says so or their end date has passed; no
    /// phase without access carries entitlements.
    #[test]
    fn leavers_hold_nothing(org in gen_org()) {
        let now = org.now();
        let d = eval(&org.snapshot(), now);
        for (i, g) in org.identities.iter().enumerate() {
            let a = &d.identities[&IdentityKey::new(NAMESPACES[g.ns], format!("p{i}"))];
            if g.human {
                let ended = g.end.filter(|&e| e != BAD_DATE).is_some_and(|e| {
                    ts(&format!("{}T00:00:00Z", day(e))) + SignedDuration::from_hours(24) <= now
                });
                prop_assert_eq!(a.phase == Phase::Terminated, g.status == 3 || ended, "p{}", i);
            }
            match a.phase {
                Phase::Terminated => {
                    prop_assert!(a.entitlements.is_empty(), "{} keeps {:?}", a.key, a.entitlements);
                    prop_assert_eq!(a.account, AccountIntent::Revoked);
                }
                Phase::PreHire => {
                    prop_assert!(a.entitlements.is_empty());
                    prop_assert_eq!(a.account, AccountIntent::None);
                }
                Phase::Unowned => prop_assert!(a.entitlements.is_empty()),
                Phase::OwnerTerminated if a.account == AccountIntent::Revoked => {
                    prop_assert!(a.entitlements.is_empty())
                }
                _ => {}
            }
            if let Some(next) = a.next_change {
                prop_assert!(next > now, "{}: next_change {} not after now {}", a.key, next, now);
            }
        }
    }

    /// (b) Evaluation does not depend on the order of the snapshot's lists, up to the
    /// order of each identity's withheld list (see the strict variant below).
    #[test]
    fn evaluation_ignores_input_order(org in gen_org(), seed in any::<u64>()) {
        let (a, b) = shuffled_pair(&org, seed);
        prop_assert!(first_difference(&normalized(&a), &normalized(&b)).is_none(),
            "{}", first_difference(&normalized(&a), &normalized(&b)).unwrap());
    }

    /// (b, strict) The whole DesiredState, withheld order included, ignores input order.
    #[test]
    fn evaluation_ignores_input_order_strictly(org in gen_org(), seed in any::<u64>()) {
        let (a, b) = shuffled_pair(&org, seed);
        prop_assert!(first_difference(&a, &b).is_none(), "{}", first_difference(&a, &b).unwrap());
    }

    /// (c) A fully applied desired state needs no operation.
    #[test]
    fn plan_to_itself_is_empty(org in gen_org()) {
        let d = eval(&org.snapshot(), org.now());
        let p = plan(&AccessState::from_desired(&d), &d);
        prop_assert!(p.is_empty(), "{:#?}", p);
    }

    /// (d) + (e) Applying the plan from a base revision to a head revision reaches the
    /// head, converges, and orders revocations before grants; twice in a row, so the
    /// second step starts from an applied (not a freshly derived) state.
    #[test]
    fn plans_reach_their_target_in_order(
        base in gen_org(),
        other in gen_org(),
        third in gen_org(),
        picks in prop::collection::vec(any::<u8>(), 1..40),
        later in 0i64..500,
    ) {
        let head = base.revise(&other, &picks, later);
        let last = head.revise(&third, &picks[picks.len() / 3..], later);

        let state = AccessState::from_desired(&eval(&base.snapshot(), base.now()));
        let desired = evaluate(&head.snapshot(), head.now(), &Settings::default(), &state);
        let state = check_step(&state, &desired)?;
        // The same head evaluated without knowledge of what is held also converges.
        check_step(&state, &eval(&head.snapshot(), head.now()))?;

        let desired = evaluate(&last.snapshot(), last.now(), &Settings::default(), &state);
        check_step(&state, &desired)?;
        // From nothing at all.
        check_step(&AccessState::default(), &desired)?;
    }

    /// (f) Evaluation is deterministic, and the per-identity path agrees with the whole.
    #[test]
    fn evaluation_is_deterministic(org in gen_org()) {
        let snap = org.snapshot();
        let now = org.now();
        let first = eval(&snap, now);
        prop_assert_eq!(&first, &eval(&snap, now));
        let engine = Engine::new(&snap, Settings::default());
        let whole = engine.evaluate(now, &NothingHeld);
        prop_assert_eq!(&first, &whole);
        prop_assert_eq!(&whole, &engine.evaluate(now, &NothingHeld));
        for (key, access) in &whole.identities {
            let (one, _) = engine.evaluate_identity(key, now, &NothingHeld).expect("known identity");
            prop_assert_eq!(&one, access);
        }
        prop_assert_eq!(
            whole.next_change,
            whole.identities.values().filter_map(|a| a.next_change).min()
        );
    }

    /// Engine invariants: nothing is granted on a target that does not exist; with
    /// nothing held no identity ends up with a complete toxic combination; exceptions
    /// grant only while Active, and are Active only inside their window.
    #[test]
    fn grants_respect_targets_sod_and_exception_windows(org in gen_org()) {
        let snap = org.snapshot();
        let now = org.now();
        let d = eval(&snap, now);
        for ((_, name), verdict) in &d.exceptions {
            let k: usize = name.trim_start_matches('x').parse().unwrap();
            let from = instant(org.now_hours + org.exceptions[k].from_hours, 0);
            let until = from + SignedDuration::from_hours(org.exceptions[k].length_hours);
            let want = match verdict.phase {
                ExceptionPhase::Invalid => !verdict.problems.is_empty(),
                ExceptionPhase::Pending => now < from,
                ExceptionPhase::Active => from <= now && now < until,
                ExceptionPhase::Expired => now >= until,
                ExceptionPhase::Revoked => false, // generated exceptions are never break-glass
            };
            prop_assert!(want, "{name}: {verdict:?} with window [{from}, {until}) at {now}");
            prop_assert_eq!(verdict.problems.is_empty(), verdict.phase != ExceptionPhase::Invalid);
        }
        for (key, a) in &d.identities {
            for g in &a.entitlements {
                for s in g.sources.iter().filter(|s| s.kind == SourceKind::Exception) {
                    prop_assert_eq!(
                        d.exceptions[&(key.namespace.clone(), s.name.clone())].phase,
                        ExceptionPhase::Active
                    );
                }
            }
            for g in &a.entitlements {
                prop_assert!(
                    d.targets.contains_key(&(key.namespace.clone(), g.entitlement.target.clone())),
                    "{key} granted {} on an unknown target", g.entitlement
                );
            }
            let enforced: BTreeSet<String> = a.enforced().map(|g| g.entitlement.to_string()).collect();
            for p in org.policies.iter().filter(|p| !p.observe && NAMESPACES[p.ns] == key.namespace) {
                if let Some((x, y)) = p.sod {
                    let pair = [x, y].map(|i| format!("{}:{}", ENTITLEMENTS[i].0, ENTITLEMENTS[i].1));
                    prop_assert!(
                        !pair.iter().all(|e| enforced.contains(e)),
                        "{key} holds toxic pair {:?}", pair
                    );
                }
            }
        }
    }

    /// Incremental updates agree with a fresh build, and name every identity whose
    /// verdict changed.
    #[test]
    fn incremental_updates_agree_with_a_fresh_build(
        org in gen_org(),
        replacement in gen_identity(),
        pick in any::<prop::sample::Index>(),
    ) {
        let snap = org.snapshot();
        let now = org.now();
        let settings = Settings::default();
        let i = pick.index(snap.identities.len());
        let x = snap.identities[i].clone();
        let x_key = IdentityKey::new(
            x.metadata.namespace.clone().unwrap(),
            x.metadata.name.clone().unwrap(),
        );
        let mut without = snap.clone();
        without.identities.remove(i);
        let full = eval(&snap, now);
        let partial = eval(&without, now);

        let changed = |a: &DesiredState, b: &DesiredState| -> BTreeSet<IdentityKey> {
            a.identities
                .iter()
                .filter(|(k, v)| b.identities.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .collect()
        };

        // Insert.
        let mut engine = Engine::new(&without, settings.clone());
        let affected: BTreeSet<IdentityKey> = engine.upsert_identity(&x).into_iter().collect();
        prop_assert_eq!(&engine.evaluate(now, &NothingHeld), &full);
        for k in changed(&full, &partial) {
            prop_assert!(affected.contains(&k), "insert of {x_key}: {k} changed but is not reported");
        }

        // Remove.
        let mut engine = Engine::new(&snap, settings.clone());
        let affected: BTreeSet<IdentityKey> = engine.remove_identity(&x_key).into_iter().collect();
        prop_assert_eq!(&engine.evaluate(now, &NothingHeld), &partial);
        for k in changed(&partial, &full) {
            prop_assert!(affected.contains(&k), "removal of {x_key}: {k} changed but is not reported");
        }

        // Replace with another record under the same name and namespace.
        let mut y = replacement.render(i);
        y.metadata.name = x.metadata.name.clone();
        y.metadata.namespace = x.metadata.namespace.clone();
        let mut replaced = snap.clone();
        replaced.identities[i] = y.clone();
        let after = eval(&replaced, now);
        let mut engine = Engine::new(&snap, settings);
        let affected: BTreeSet<IdentityKey> = engine.upsert_identity(&y).into_iter().collect();
        prop_assert_eq!(&engine.evaluate(now, &NothingHeld), &after);
        for k in changed(&after, &full) {
            prop_assert!(affected.contains(&k), "replacement of {x_key}: {k} changed but is not reported");
        }
    }
}
