//! `gatehouse run` started wrongly: a bad flag, no cluster configuration, a busy port. Each
//! says which and exits non-zero, before doing anything.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `gatehouse run ARGS` with no cluster configuration in the environment (a fresh HOME,
/// no KUBECONFIG, not in a pod) plus `env`.
fn run(args: &[&str], home: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .arg("run")
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("POD_NAMESPACE")
        .env_remove("POD_NAME");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A kubeconfig naming an API server that is never contacted (the checks fail first).
fn kubeconfig(dir: &Path) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:9'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n",
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn a_bad_duration_flag_is_named() {
    let home = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (
            &["--resync", "bogus"][..],
            "--resync \"bogus\" is not a duration like 5m or 168h",
        ),
        (&["--owner-grace", "a week"][..], "--owner-grace"),
        (
            &["--max-exception-duration", "90 days"][..],
            "--max-exception-duration",
        ),
        (
            &["--lease-duration", "1s"][..],
            "--lease-duration \"1s\" is too short; use at least 2s",
        ),
    ] {
        let out = run(args, home.path(), &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn an_unknown_flag_or_bad_address_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let out = run(&["--resinc", "5m"], home.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unexpected argument '--resinc'"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--listen", "8080"], home.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid value '8080' for '--listen <LISTEN>'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_cluster_configuration_says_where_it_looked() {
    let home = tempfile::tempdir().unwrap();
    let out = run(&["--listen", "127.0.0.1:0"], home.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("no Kubernetes configuration (KUBECONFIG or in-cluster)"),
        "{message}"
    );

    let missing = home.path().join("does-not-exist");
    let out = run(
        &["--listen", "127.0.0.1:0"],
        home.path(),
        &[("KUBECONFIG", missing.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("no Kubernetes configuration (KUBECONFIG or in-cluster)"),
        "{message}"
    );
    assert!(
        message.contains(missing.to_str().unwrap()),
        "names the file: {message}"
    );
}

#[test]
fn a_busy_listen_port_is_named() {
    let home = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let config = kubeconfig(home.path());
    let out = run(
        &["--listen", &address, "--leader-elect=false"],
        home.path(),
        &[("KUBECONFIG", &config)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("cannot listen on {address} (--listen)")),
        "{message}"
    );
    drop(busy);
}
