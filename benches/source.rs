//! PolicySource sync against a real API server (the test harness's control plane) from a
//! real repository of N identity files (served over smart HTTP by `git http-backend`):
//! first apply, a no-change poll (duration and API writes), and one changed file from push
//! to applied through the webhook. Run twice in the same process, on two repositories
//! whose commits are signed by an `ssh-keygen` key and by a `gpg` (OpenPGP) key, each with
//! its own namespace and controller, one after the other; a table compares them at the end.
//!
//! `cargo bench --bench source` (N = 10,000; `GATEHOUSE_BENCH_IDENTITIES` to change it).
//! `cargo test --benches` runs it once on 200 identities.

#[path = "../tests/gitrepo/mod.rs"]
mod gitrepo;
#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use gatehouse::api::{Identity, PolicySource};
use gatehouse::controller::{Options, run};
use gatehouse::synthetic::{self, OrgSize};
use gitrepo::{BulkCommit, GitHttpServer, PgpKey, Repo, Sign, SigningKey};
use kube::api::{Api, ListParams};

const HR: &str = "Hanna HR <hanna@acme.example>";

/// A value from the controller's own metrics text.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn identity_file(i: usize, shift: usize) -> (String, String) {
    (
        format!("tenant/identities/{}.yaml", synthetic::identity_name(i)),
        synthetic::identity_yaml(i, shift)
            .replace(&format!(", namespace: {}", synthetic::NAMESPACE), ""),
    )
}

fn hook_signature(secret: &str, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_hook(address: std::net::SocketAddr, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {}\r\nX-Hub-Signature-256: {}\r\n\r\n{body}",
        body.len(),
        hook_signature("s3cret", body)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

async fn status(api: &Api<PolicySource>) -> gatehouse::api::PolicySourceStatus {
    api.get("access").await.unwrap().status.unwrap_or_default()
}

async fn wait_applied(api: &Api<PolicySource>, commit: &str, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(api).await;
        if s.last_applied_commit.as_deref() == Some(commit) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "commit {commit} not applied within {timeout:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What one signature scheme measured.
struct Measured {
    label: &'static str,
    objects: usize,
    first_apply: Duration,
    poll_mean_ms: f64,
    polls: f64,
    poll_writes: u64,
    p50: Duration,
    max: Duration,
    verify_one: Duration,
}

/// A key to sign the bench's commits with, and its `verify.keys[].publicKey`.
enum BenchKey {
    Ssh(SigningKey),
    Pgp(PgpKey),
}

impl BenchKey {
    fn sign(&self) -> Sign<'_> {
        match self {
            BenchKey::Ssh(k) => Sign::Ssh(k),
            BenchKey::Pgp(k) => Sign::Pgp(k),
        }
    }

    fn public_key(&self) -> String {
        match self {
            BenchKey::Ssh(k) => k.public_key.clone(),
            BenchKey::Pgp(k) => k.public_key(),
        }
    }
}

/// Writes `files` and commits them signed with `key`.
fn commit(repo: &Repo, files: &[(String, String)], message: &str, key: &BenchKey) -> String {
    for (path, text) in files {
        repo.write(path, text);
    }
    repo.commit_signed(message, HR, key.sign())
}

#[allow(clippy::too_many_arguments)]
async fn scenario(
    label: &'static str,
    key: BenchKey,
    dir: &std::path::Path,
    client: &kube::Client,
    n: usize,
    rounds: usize,
    window: Duration,
) -> Measured {
    // The repository: every identity in one fast-imported commit, then a signed commit
    // that adds the policies (what a first sync verifies).
    let root = dir.join(format!("served-{label}"));
    let repo = Repo::init(&root.join("access"));
    let built = Instant::now();
    repo.fast_import(&[BulkCommit {
        message: "import the HR feed".into(),
        author: HR.into(),
        time: 1_767_600_000,
        files: (0..n).map(|i| identity_file(i, 0)).collect(),
        deletes: Vec::new(),
    }]);
    let size = OrgSize {
        identities: n,
        policies: (n / 50).max(5),
        exceptions: 0,
    };
    let policies: Vec<(String, String)> = synthetic::rules_yaml(size)
        .into_iter()
        .filter(|(path, _)| path.starts_with("policies/"))
        .map(|(path, text)| {
            (
                format!("tenant/{path}"),
                text.replace(&format!(", namespace: {}", synthetic::NAMESPACE), ""),
            )
        })
        .collect();
    let head = commit(&repo, &policies, "policies", &key);
    println!(
        "source[{label}]: repository of {n} identity files and {} policies built in {:.1?}",
        policies.len(),
        built.elapsed()
    );
    let server = GitHttpServer::start(&root);

    let ns = harness::namespace(client, &format!("bench-src-{label}")).await;
    let options = Options {
        namespace: Some(ns.clone()),
        resync: Duration::from_secs(600),
        source_cache_dir: dir.join(format!("cache-{label}")),
        ..Options::default()
    };
    let metrics = options.metrics.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let routes = gatehouse::http::router(options.health.clone(), options.metrics.clone())
        .merge(gatehouse::http::hooks(client.clone()));
    let serving = tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));
    harness::apply::<k8s_openapi::api::core::v1::Secret>(
        client,
        &ns,
        "metadata: {name: hook}\nstringData: {token: s3cret}",
    )
    .await;

    // First apply.
    let api: Api<PolicySource> = Api::namespaced(client.clone(), &ns);
    let public_key = serde_json::to_string(&key.public_key()).unwrap();
    let source_yaml = |interval: &str| {
        format!(
            "metadata: {{name: access}}\nspec:\n  url: {}\n  ref: {{branch: main}}\n  path: tenant\n  interval: {interval}\n  verify: {{keys: [{{name: hr-bot, publicKey: {public_key}}}]}}\n  webhook: {{secretRef: {{name: hook}}}}\n",
            server.url("access"),
        )
    };
    let started = Instant::now();
    harness::apply::<PolicySource>(client, &ns, &source_yaml("1s")).await;
    let done = wait_applied(&api, &head, Duration::from_secs(600)).await;
    let first = done - started;
    let count = Api::<Identity>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().limit(1))
        .await
        .unwrap();
    println!(
        "source[{label}]: first apply of {} objects: {first:.2?} (inventory {:?}, identities listed: {})",
        n + policies.len(),
        status(&api).await.inventory_count,
        count.metadata.remaining_item_count.unwrap_or(0) + count.items.len() as i64
    );

    // Let the main reconciler write every Identity's status before counting writes.
    let settle = Instant::now();
    loop {
        let before = harness::api_writes(client, &["leases", "events"]).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        if harness::api_writes(client, &["leases", "events"]).await == before
            || settle.elapsed() > Duration::from_secs(600)
        {
            break;
        }
    }
    // (pass duration sum, pass count, unchanged passes) from the controller's own metrics.
    let unchanged = format!(
        "gatehouse_source_syncs_total{{namespace=\"{ns}\",source=\"access\",result=\"unchanged\"}}"
    );
    let passes = || {
        let text = metrics.render();
        (
            metric(&text, "gatehouse_source_sync_duration_seconds_sum"),
            metric(&text, "gatehouse_source_sync_duration_seconds_count"),
            metric(&text, &unchanged),
        )
    };
    let (sum0, count0, unchanged0) = passes();
    let writes0 = harness::api_writes(client, &["leases", "events"]).await;
    tokio::time::sleep(window).await;
    let writes1 = harness::api_writes(client, &["leases", "events"]).await;
    let (sum1, count1, unchanged1) = passes();
    let polls = count1 - count0;
    let poll_mean_ms = if polls > 0.0 {
        (sum1 - sum0) / polls * 1000.0
    } else {
        f64::NAN
    };
    println!(
        "source[{label}]: no-change polls over {window:?}: {polls} passes ({} unchanged), mean {poll_mean_ms:.1} ms, {} API writes (leases and events excluded)",
        unchanged1 - unchanged0,
        writes1 - writes0
    );
    assert!(polls > 0.0, "the source kept polling");
    assert_eq!(writes1, writes0, "a no-change poll writes nothing");

    // One changed file, from push to applied, woken by the webhook (polling hourly).
    harness::apply::<PolicySource>(client, &ns, &source_yaml("1h")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hook = format!("/hook/{ns}/access");
    let mut latencies = Vec::new();
    let mut signed = vec![head.clone()];
    for round in 0..rounds {
        let changed = identity_file(round * 7, round + 1);
        let commit = commit(&repo, &[changed], "a mover", &key);
        signed.push(commit.clone());
        let pushed = Instant::now();
        let answer = post_hook(address, &hook, r#"{"ref":"refs/heads/main"}"#).await;
        assert!(answer.contains("202"), "{answer}");
        let applied = wait_applied(&api, &commit, Duration::from_secs(30)).await;
        latencies.push(applied - pushed);
    }
    latencies.sort();
    let (p50, max) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    println!(
        "source[{label}]: webhook push to applied, one changed file, {rounds} rounds: p50 {p50:.0?}, max {max:.0?}"
    );
    println!(
        "source[{label}]: git HTTP requests served: {}",
        server.requests()
    );
    // The signature check alone (what verification adds per commit), repeated.
    let keys =
        gatehouse::source::verify::TrustedKeys::new([("hr-bot".to_string(), key.public_key())])
            .unwrap();
    let git2repo = git2::Repository::open(repo.path()).unwrap();
    let oids: Vec<git2::Oid> = signed
        .iter()
        .map(|c| git2::Oid::from_str(c).unwrap())
        .collect();
    let repeat = 50;
    let timed = Instant::now();
    for _ in 0..repeat {
        for oid in &oids {
            let signer = gatehouse::source::verify::commit_signer(&git2repo, *oid, &keys);
            assert_eq!(
                signer,
                gatehouse::source::verify::Signer::Trusted("hr-bot".into())
            );
        }
    }
    let verify_one = timed.elapsed() / (repeat * oids.len()) as u32;
    println!(
        "source[{label}]: one commit's signature checked in {verify_one:.1?} (mean of {})",
        repeat * oids.len()
    );
    let _ = stop.send(());
    let _ = controller.await;
    serving.abort();
    Measured {
        label,
        objects: n + policies.len(),
        first_apply: first,
        poll_mean_ms,
        polls,
        poll_writes: writes1 - writes0,
        p50,
        max,
        verify_one,
    }
}

#[tokio::main]
async fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n: usize = if smoke {
        200
    } else {
        std::env::var("GATEHOUSE_BENCH_IDENTITIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000)
    };
    let rounds = if smoke { 2 } else { 10 };
    let window = Duration::from_secs(if smoke { 3 } else { 15 });
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let client = harness::client().await;
    // `GATEHOUSE_BENCH_SIGNATURES=openpgp,ssh` runs them in the other order.
    let order = std::env::var("GATEHOUSE_BENCH_SIGNATURES").unwrap_or("ssh,openpgp".into());
    let mut results = Vec::new();
    for label in order.split(',').map(str::trim) {
        let (label, key) = match label {
            "ssh" => ("ssh", BenchKey::Ssh(SigningKey::generate(&keys, "hr-bot"))),
            "openpgp" => (
                "openpgp",
                BenchKey::Pgp(PgpKey::generate(&keys, "HR Bot <hr-bot@acme.example>")),
            ),
            other => panic!("GATEHOUSE_BENCH_SIGNATURES: unknown {other:?}: ssh or openpgp"),
        };
        results.push(scenario(label, key, dir.path(), &client, n, rounds, window).await);
    }
    println!(
        "\n| signatures | first apply ({} objects) | no-change poll (mean, passes, API writes) | webhook push to applied (p50, max) | one signature check |",
        results[0].objects
    );
    println!("|---|---|---|---|---|");
    for m in &results {
        println!(
            "| {} | {:.2?} | {:.1} ms, {}, {} | {:.0?}, {:.0?} | {:.1?} |",
            m.label,
            m.first_apply,
            m.poll_mean_ms,
            m.polls,
            m.poll_writes,
            m.p50,
            m.max,
            m.verify_one
        );
    }
}
