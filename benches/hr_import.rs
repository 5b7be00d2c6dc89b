//! `gatehouse hr import` at scale: a CSV of N rows into an existing tree of N Identity files
//! (one commit), with 1 % of the rows changed (movers, leavers, joiners). Runs the release
//! binary as a child process and reports its wall time and peak RSS (getrusage of the
//! child), the size of the resulting commit, and a second, idempotent run.
//!
//! `cargo bench --bench hr_import` (N = 100,000; `GATEHOUSE_BENCH_IDENTITIES` to change it).
//! `cargo test --benches` runs it once on 2,000 identities.

#[path = "../tests/gitrepo/mod.rs"]
mod gitrepo;

use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

use gitrepo::{BulkCommit, Repo, git};

const DEPARTMENTS: [&str; 5] = ["Finance", "Engineering", "Sales", "People", "Legal"];
const MAPPING: &str = "namespace: bench\ncorrelation: {employeeId: id}\nname: \"{{ lower(first) }}.{{ lower(last) }}\"\ndateFormats: [\"%Y-%m-%d\"]\nfields:\n  displayName: {template: \"{{ first }} {{ last }}\"}\n  status: {from: status, values: {Active: Active, Terminated: Terminated}}\n  type: {from: type, values: {Regular: Employee}}\n  department: {from: dept, values: {Finance: finance, Engineering: engineering, Sales: sales, People: people-ops, Legal: legal}}\n  title: title\n  manager: manager\n  startDate: start\n  attributes.costCenter: cc\n";

fn identity(i: usize, dept: &str) -> String {
    let manager = if i == 0 { 0 } else { (i - 1) / 10 };
    format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: p.u{i:06}\n  namespace: bench\nspec:\n  type: Human\n  displayName: P U{i:06}\n  employment:\n    status: Active\n    type: Employee\n    department: {}\n    title: Engineer {}\n    manager: p.u{manager:06}\n    startDate: \"2024-01-01\"\n  proofing:\n    level: IAL2\n  attributes:\n    costCenter: \"c{}\"\n    employeeId: E{i:06}\n",
        dept.to_lowercase().replace("people", "people-ops"),
        i % 7,
        i % 100,
    )
}

fn row(out: &mut String, i: usize, dept: &str, status: &str) {
    let manager = if i == 0 { 0 } else { (i - 1) / 10 };
    let _ = writeln!(
        out,
        "E{i:06},P,U{i:06},{status},Regular,{dept},Engineer {},E{manager:06},2024-01-01,c{}",
        i % 7,
        i % 100
    );
}

struct Run {
    seconds: f64,
    max_rss_mb: f64,
    stdout: String,
    code: Option<i32>,
}

// The child is reaped by wait4 below (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run(args: &[&str]) -> Run {
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("gatehouse starts");
    let pid = child.id() as libc::pid_t;
    let mut stdout = String::new();
    use std::io::Read;
    let mut pipe = child.stdout.expect("stdout");
    let _ = pipe.read_to_string(&mut stdout);
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 reaps our own child and fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    Run {
        seconds: start.elapsed().as_secs_f64(),
        max_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        stdout,
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
    }
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("GATEHOUSE_BENCH_IDENTITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 100_000 });
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = Repo::init(&tmp.path().join("repo"));
    let t = Instant::now();
    let files: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("identities/p.u{i:06}.yaml"),
                identity(i, DEPARTMENTS[i % 5]),
            )
        })
        .collect();
    repo.fast_import(&[BulkCommit {
        message: "tree".into(),
        author: "HR <hr@bench.example>".into(),
        time: 1_767_607_200,
        files,
        deletes: vec![],
    }]);
    eprintln!(
        "built a tree of {n} identities in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // 1 % changes: half movers, a quarter leavers, a quarter joiners.
    let changes = n / 100;
    let (movers, leavers, joiners) = (
        changes / 2,
        changes / 4,
        changes - changes / 2 - changes / 4,
    );
    let mut csv = String::from("id,first,last,status,type,dept,title,manager,start,cc\n");
    for i in 0..n {
        let step = (n / changes.max(1)).max(1);
        let k = i / step;
        let on_step = i % step == step / 2 && i > 0;
        let (dept, status) = if on_step && k < movers {
            (DEPARTMENTS[(i + 1) % 5], "Active")
        } else if on_step && k < movers + leavers {
            (DEPARTMENTS[i % 5], "Terminated")
        } else {
            (DEPARTMENTS[i % 5], "Active")
        };
        row(&mut csv, i, dept, status);
    }
    for j in 0..joiners {
        row(&mut csv, n + j, DEPARTMENTS[j % 5], "Active");
    }
    let feed = tmp.path().join("feed.csv");
    std::fs::write(&feed, &csv).expect("feed");
    let mapping = tmp.path().join("mapping.yaml");
    std::fs::write(&mapping, MAPPING).expect("mapping");
    let (feed, mapping, repo_path) = (
        feed.display().to_string(),
        mapping.display().to_string(),
        repo.path().display().to_string(),
    );
    let args = [
        "hr",
        "import",
        "--from",
        &feed,
        "--format",
        "csv",
        "--mapping",
        &mapping,
        "--repo",
        &repo_path,
        "--commit",
        "--branch",
        "hr-import",
        "--no-plan",
        "--now",
        "2026-12-01T09:00:00Z",
    ];
    let first = run(&args);
    assert_eq!(first.code, Some(0), "{}", first.stdout);
    let summary = first.stdout.lines().next().unwrap_or_default().to_string();
    let committed = first
        .stdout
        .lines()
        .find(|l| l.starts_with("Committed"))
        .unwrap_or_default()
        .to_string();
    let numstat = git(repo.path(), &["diff", "--numstat", "main", "hr-import"]);
    let files_changed = numstat.lines().count();
    assert_eq!(files_changed, movers + leavers + joiners, "{summary}");
    let second = run(&args);
    assert_eq!(second.code, Some(0));
    assert!(
        second.stdout.contains("Nothing to change"),
        "{}",
        second.stdout
    );
    println!(
        "hr import: {n} rows into {n} identities, 1 % changed ({movers} movers, {leavers} leavers, {joiners} joiners)"
    );
    println!("  {summary}");
    println!("  {committed}");
    println!(
        "  first run:  {:.2} s wall, {:.0} MB peak RSS",
        first.seconds, first.max_rss_mb
    );
    println!(
        "  second run: {:.2} s wall, {:.0} MB peak RSS (idempotent: no commit)",
        second.seconds, second.max_rss_mb
    );
    println!(
        "  commit: {files_changed} files changed ({} lines +/-)",
        numstat
            .lines()
            .map(|l| l
                .split('\t')
                .take(2)
                .filter_map(|v| v.parse::<usize>().ok())
                .sum::<usize>())
            .sum::<usize>()
    );
}
