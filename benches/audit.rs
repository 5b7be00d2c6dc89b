//! `gatehouse audit` over a large history: a repository of 10,000 identity files (plus
//! the synthetic organisation's targets, policies and exceptions) and 1,000 commits after
//! it, each a joiner, a mover or a leaver (a few files), with a policy edit every 50th.
//! Times the real binary replaying the whole history, and prints the rows it found.
//!
//! `cargo bench --bench audit` (full size; `GATEHOUSE_BENCH_IDENTITIES` and
//! `GATEHOUSE_BENCH_COMMITS` override it). `cargo test --benches` runs it once on a small
//! repository. Generated repositories are kept under the target directory, keyed by size,
//! so reruns skip the generation.

#[path = "../tests/gitrepo/mod.rs"]
mod gitrepo;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use gatehouse::synthetic::{NAMESPACE, OrgSize, identity_name, identity_yaml, rules_yaml};
use gitrepo::{BulkCommit, Repo, git};

const HR: &str = "Hana Hr <hana@hr.example>";
const IAM: &str = "Ivan Iam <ivan@iam.example>";
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600;
/// Two hours between commits.
const STEP: i64 = 7_200;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The history: the organisation in one commit, then `commits` small changes.
fn history(size: OrgSize, commits: usize) -> Vec<BulkCommit> {
    let path = |i: usize| format!("identities/{}.yaml", identity_name(i));
    let mut files: Vec<(String, String)> = rules_yaml(size);
    files.extend((0..size.identities).map(|i| (path(i), identity_yaml(i, 0))));
    let mut out = vec![BulkCommit {
        message: "The organisation".into(),
        author: HR.into(),
        time: START,
        files,
        deletes: vec![],
    }];
    let mut next = size.identities;
    let mut left = std::collections::BTreeSet::new();
    for c in 0..commits {
        let time = START + (c as i64 + 1) * STEP;
        // Spread the changes over the organisation deterministically.
        let pick = |k: usize| (c * 7919 + k * 104_729) % size.identities;
        let mut commit = BulkCommit {
            author: HR.into(),
            time,
            ..BulkCommit::default()
        };
        if c % 50 == 49 && size.policies > 0 {
            let p = c / 50 % size.policies;
            let (file, body) = rules_yaml(size)
                .into_iter()
                .find(|(f, _)| f == &format!("policies/p{p:04}.yaml"))
                .expect("policy file");
            commit.message = format!("IAM: p{p:04} grants one more group");
            commit.author = IAM.into();
            commit.files.push((
                file,
                format!("{body}  # edited\n").replace(
                    "  entitlements:\n",
                    &format!("  entitlements:\n    - {{target: corp-ldap, name: extra{c}}}\n"),
                ),
            ));
        } else {
            match c % 3 {
                0 => {
                    commit.message = "HR: joiners".into();
                    for _ in 0..2 {
                        commit.files.push((path(next), identity_yaml(next, 0)));
                        next += 1;
                    }
                }
                1 => {
                    commit.message = "HR: movers".into();
                    for k in 0..3 {
                        let i = pick(k);
                        if !left.contains(&i) {
                            commit.files.push((path(i), identity_yaml(i, 1 + c % 7)));
                        }
                    }
                }
                _ => {
                    commit.message = "HR: a leaver".into();
                    let i = pick(0);
                    left.insert(i);
                    let body = identity_yaml(i, 0)
                        .replace("status: Active", "status: Terminated")
                        .replace("status: OnLeave", "status: Terminated");
                    commit.files.push((path(i), body));
                }
            }
        }
        if commit.files.is_empty() {
            commit.message = "HR: note".into();
            commit
                .files
                .push(("identities/README.md".into(), format!("note {c}\n")));
        }
        out.push(commit);
    }
    out
}

/// The repository for this size, generated once and kept.
fn repository(size: OrgSize, commits: usize) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "audit-bench-{}-{}-{}-{commits}",
        size.identities, size.policies, size.exceptions
    ));
    let done = dir.join(".git").join("gatehouse-bench-complete");
    if done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let repo = Repo::init(&dir);
    let ids = repo.fast_import(&history(size, commits));
    std::fs::write(&done, ids.last().cloned().unwrap_or_default()).expect("marker");
    println!(
        "generated {} ({} commits) in {:.1?}",
        dir.display(),
        ids.len(),
        started.elapsed()
    );
    dir
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (size, commits) = if smoke {
        (
            OrgSize {
                identities: 300,
                policies: 10,
                exceptions: 10,
            },
            30,
        )
    } else {
        (
            OrgSize {
                identities: env_or("GATEHOUSE_BENCH_IDENTITIES", 10_000),
                policies: 200,
                exceptions: 500,
            },
            env_or("GATEHOUSE_BENCH_COMMITS", 1_000),
        )
    };
    let dir = repository(size, commits);
    let count = git(&dir, &["rev-list", "--count", "HEAD"]);
    let files = git(&dir, &["ls-files"]).lines().count();
    // The last commit is 2 h * commits after the start; replay time-driven changes up to a
    // day later.
    let until = jiff::Timestamp::from_second(START + (commits as i64 + 12) * STEP)
        .expect("valid instant")
        .to_string();
    let runs = if smoke { 1 } else { 3 };
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["audit", "--repo"])
            .arg(&dir)
            .args(["--now", &until, "--output", "json", "-n", NAMESPACE])
            .output()
            .expect("gatehouse runs");
        times.push(started.elapsed());
        assert!(
            out.status.success(),
            "gatehouse audit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("audit JSON parses");
        rows = parsed.as_array().map_or(0, Vec::len);
        assert!(rows > 0, "the history grants and revokes something");
    }
    times.sort();
    println!(
        "audit: {} identities (+{} joiners), {} files, {} commits: {rows} rows; best {:.2?}, median {:.2?} over {runs} runs",
        size.identities,
        commits / 3,
        files,
        count.trim(),
        times[0],
        times[times.len() / 2],
    );
    // The same history at the first commit alone, for scale: one full read and evaluation.
    let first = git(&dir, &["rev-list", "--max-parents=0", "HEAD"]);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["audit", "--repo"])
        .arg(&dir)
        .args(["--ref", first.trim(), "--now", &until, "-o", "csv"])
        .output()
        .expect("gatehouse runs");
    assert!(out.status.success());
    println!(
        "audit of the first commit alone (full read + evaluation): {:.2?}",
        started.elapsed()
    );
}
