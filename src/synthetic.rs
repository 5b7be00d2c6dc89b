//! A deterministic synthetic organisation, for benchmarks and scale runs: identities in a
//! manager tree, department policies, exceptions and SoD rules at any size.

use std::fmt::Write;

use crate::engine::Snapshot;

/// Size of a synthetic organisation.
#[derive(Clone, Copy, Debug)]
pub struct OrgSize {
    /// Identities (about 5% non-human).
    pub identities: usize,
    /// Access policies.
    pub policies: usize,
    /// Exceptions.
    pub exceptions: usize,
}

/// The namespace every synthetic object lives in.
pub const NAMESPACE: &str = "bench";
const DEPARTMENTS: usize = 50;
const LOCATIONS: [&str; 8] = [
    "berlin", "paris", "london", "remote", "madrid", "oslo", "rome", "vienna",
];
const TARGETS: [(&str, &str); 4] = [
    ("corp-ldap", "LDAP"),
    ("erp-scim", "SCIM"),
    ("ledger-db", "PostgreSQL"),
    ("k8s", "Kubernetes"),
];

/// A small deterministic pseudo-random sequence (SplitMix64).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The identity's name for index `i`.
pub fn identity_name(i: usize) -> String {
    format!("u{i:06}")
}

/// One identity's manifest; `department_shift` moves it to another department (a mover).
pub fn identity_yaml(i: usize, department_shift: usize) -> String {
    let mut rng = Mix(i as u64 * 7919 + 1);
    let name = identity_name(i);
    if i % 20 == 19 {
        let owner = identity_name(i - 1 - rng.below(18.min(i)));
        return format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n  type: NonHuman\n  owner: {owner}\n  attributes: {{system: ci}}\n"
        );
    }
    let department = (i / 7 + department_shift) % DEPARTMENTS;
    let location = LOCATIONS[rng.below(LOCATIONS.len())];
    // A tree: i reports to (i - 1) / 10, stepping past machine identities (every 20th).
    let manager = match i {
        0 => name.clone(),
        _ => {
            let m = (i - 1) / 10;
            identity_name(if m % 20 == 19 { m - 1 } else { m })
        }
    };
    let status = match rng.below(100) {
        0..=2 => "Terminated",
        3..=5 => "OnLeave",
        6 => "PreHire",
        _ => "Active",
    };
    let (kind, end) = if rng.below(10) == 0 {
        ("Contractor", "\n    endDate: \"2027-06-30\"")
    } else {
        ("Employee", "")
    };
    let level = ["IAL1", "IAL2", "IAL2", "IAL3"][rng.below(4)];
    format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n  type: Human\n  employment:\n    status: {status}\n    type: {kind}\n    department: d{department}\n    location: {location}\n    title: t{}\n    manager: {manager}\n    startDate: \"2024-0{}-01\"{end}\n  proofing: {{level: {level}}}\n  attributes: {{costCenter: \"c{}\"}}\n",
        rng.below(30),
        1 + rng.below(9),
        rng.below(200),
    )
}

/// Every non-identity manifest: targets, policies and exceptions.
pub fn rules_yaml(size: OrgSize) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for (name, kind) in TARGETS {
        let block = match kind {
            "LDAP" => "ldap: {url: 'ldaps://ldap', baseDN: 'dc=bench'}",
            "SCIM" => "scim: {url: 'https://scim/v2'}",
            "PostgreSQL" => "postgresql: {host: db, database: ledger}",
            _ => "kubernetes: {}",
        };
        files.push((
            format!("targets/{name}.yaml"),
            format!("apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec: {{type: {kind}, {block}}}\n"),
        ));
    }
    let mut rng = Mix(42);
    for p in 0..size.policies {
        let mut body = format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: p{p:04}, namespace: {NAMESPACE}}}\nspec:\n  selector:\n    matchAttributes: {{department: d{}}}\n",
            p % DEPARTMENTS
        );
        if p % 3 == 1 {
            let _ = writeln!(
                body,
                "    matchExpressions: [{{key: location, operator: In, values: [{}, {}]}}]",
                LOCATIONS[rng.below(8)],
                LOCATIONS[rng.below(8)]
            );
        }
        if p % 5 == 2 {
            body.push_str("  requires: {proofing: IAL2}\n");
        }
        body.push_str("  entitlements:\n");
        for _ in 0..2 + rng.below(3) {
            let (target, _) = TARGETS[rng.below(3)];
            let _ = writeln!(
                body,
                "    - {{target: {target}, name: g{}}}",
                rng.below(400)
            );
        }
        body.push_str("    - {target: k8s, kind: ClusterRole, name: view}\n");
        if p % 50 == 0 {
            let _ = writeln!(
                body,
                "  separationOfDuties:\n    - name: sod{p}\n      entitlements: [{{target: erp-scim, name: g{}}}, {{target: erp-scim, name: g{}}}]",
                rng.below(400),
                rng.below(400)
            );
        }
        body.push_str("  exceptionPolicy: {maxDuration: 720h}\n");
        files.push((format!("policies/p{p:04}.yaml"), body));
    }
    for e in 0..size.exceptions {
        let subject = rng.below(size.identities);
        let approver = (subject + 1 + rng.below(size.identities - 1)) % size.identities;
        let requester = (approver + 1 + rng.below(size.identities - 2)) % size.identities;
        let day = 1 + rng.below(28);
        files.push((
            format!("exceptions/e{e:05}.yaml"),
            format!(
                "apiVersion: gatehouse.dev/v1alpha1\nkind: Exception\nmetadata: {{name: e{e:05}, namespace: {NAMESPACE}}}\nspec:\n  identity: {}\n  entitlements: [{{target: ledger-db, name: g{}}}]\n  justification: bench\n  requestedBy: {}\n  approvedBy: [{}]\n  validFrom: \"2026-11-{day:02}T00:00:00Z\"\n  expiresAt: \"2026-12-{day:02}T00:00:00Z\"\n",
                identity_name(subject),
                rng.below(400),
                identity_name(requester),
                identity_name(approver),
            ),
        ));
    }
    files
}

/// The organisation as a snapshot, parsed from the same manifests the files would hold.
pub fn snapshot(size: OrgSize, department_shift_every: Option<usize>) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for (path, body) in rules_yaml(size) {
        let top = path.split('/').next().unwrap_or_default();
        match top {
            "targets" => snapshot
                .targets
                .push(serde_yaml::from_str(&body).expect("synthetic target")),
            "policies" => snapshot
                .policies
                .push(serde_yaml::from_str(&body).expect("synthetic policy")),
            _ => snapshot
                .exceptions
                .push(serde_yaml::from_str(&body).expect("synthetic exception")),
        }
    }
    for i in 0..size.identities {
        let shift = department_shift_every.map_or(0, |every| usize::from(i % every == 0));
        snapshot
            .identities
            .push(serde_yaml::from_str(&identity_yaml(i, shift)).expect("synthetic identity"));
    }
    snapshot
}
