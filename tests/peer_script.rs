//! Starting a real peer through its `scripts/start-*.sh DIR` and stopping it when the test
//! binary exits: shared by the control plane, slapd, PostgreSQL and scim2-server harnesses.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `scripts/<name>` in this repository.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs `bash scripts/<name> DIR ARGS...` (its stderr shown) and returns the `KEY=VALUE`
/// lines it prints; fails the test with `hint` when it does not succeed.
pub fn run(name: &str, dir: &Path, args: &[&OsStr], hint: &str) -> BTreeMap<String, String> {
    let out = Command::new("bash")
        .arg(script(name))
        .arg(dir)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("bash runs scripts/{name}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{name} failed ({hint}; files in {})",
        dir.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value `scripts/<name>` printed for `key`.
pub fn var(vars: &BTreeMap<String, String>, name: &str, key: &str) -> String {
    vars.get(key)
        .cloned()
        .unwrap_or_else(|| panic!("scripts/{name} prints {key}="))
}

/// Once this test binary has exited, runs `scripts/<name> --stop DIR` and removes DIR.
pub fn stop_at_exit(name: &str, dir: &Path) {
    let watcher = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; bash '{script}' --stop '{dir}'; rm -rf '{dir}'",
        pid = std::process::id(),
        script = script(name).display(),
        dir = dir.display()
    );
    // Never waited for on purpose: it must outlive this process.
    #[allow(clippy::zombie_processes)]
    let _watcher = Command::new("bash")
        .args(["-c", &watcher])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the cleanup watcher starts");
}
