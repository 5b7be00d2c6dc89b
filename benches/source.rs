//! PolicySource sync against a real API server (the test harness's control plane) from a
//! real repository of N identity files (signed by an `ssh-keygen` key, served over smart
//! HTTP by `git http-backend`): first apply, a no-change poll (duration and API writes),
//! and one changed file from push to applied through the webhook.
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
use gitrepo::{BulkCommit, GitHttpServer, Repo, SigningKey};
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

    // The repository: every identity in one fast-imported commit, then a signed commit
    // that adds the policies (what a first sync verifies).
    let dir = tempfile::tempdir().unwrap();
    let keys = SigningKey::generate(&dir.path().join("keys"), "hr-bot");
    let root = dir.path().join("served");
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
    let head = repo.commit_files(&policies, "policies", HR, Some(&keys));
    println!(
        "source: repository of {n} identity files and {} policies built in {:.1?}",
        policies.len(),
        built.elapsed()
    );
    let server = GitHttpServer::start(&root);

    let client = harness::client().await;
    let ns = harness::namespace(&client, "bench-src").await;
    let options = Options {
        namespace: Some(ns.clone()),
        resync: Duration::from_secs(600),
        source_cache_dir: dir.path().join("cache"),
        ..Options::default()
    };
    let metrics = options.metrics.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let routes = gatehouse::http::router(options.health.clone(), options.metrics.clone())
        .merge(gatehouse::http::hooks(client.clone()));
    tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run(client.clone(), options, async {
        let _ = stopped.await;
    }));
    harness::apply::<k8s_openapi::api::core::v1::Secret>(
        &client,
        &ns,
        "metadata: {name: hook}\nstringData: {token: s3cret}",
    )
    .await;

    // First apply.
    let api: Api<PolicySource> = Api::namespaced(client.clone(), &ns);
    let source_yaml = |interval: &str| {
        format!(
            "metadata: {{name: access}}\nspec:\n  url: {}\n  ref: {{branch: main}}\n  path: tenant\n  interval: {interval}\n  verify: {{keys: [{{name: hr-bot, publicKey: '{}'}}]}}\n  webhook: {{secretRef: {{name: hook}}}}\n",
            server.url("access"),
            keys.public_key
        )
    };
    let started = Instant::now();
    harness::apply::<PolicySource>(&client, &ns, &source_yaml("1s")).await;
    let done = wait_applied(&api, &head, Duration::from_secs(600)).await;
    let first = done - started;
    let count = Api::<Identity>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().limit(1))
        .await
        .unwrap();
    println!(
        "source: first apply of {} objects: {first:.2?} (inventory {:?}, identities listed: {})",
        n + policies.len(),
        status(&api).await.inventory_count,
        count.metadata.remaining_item_count.unwrap_or(0) + count.items.len() as i64
    );

    // Let the main reconciler write every Identity's status before counting writes.
    let settle = Instant::now();
    loop {
        let before = harness::api_writes(&client, &["leases", "events"]).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        if harness::api_writes(&client, &["leases", "events"]).await == before
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
    let writes0 = harness::api_writes(&client, &["leases", "events"]).await;
    tokio::time::sleep(window).await;
    let writes1 = harness::api_writes(&client, &["leases", "events"]).await;
    let (sum1, count1, unchanged1) = passes();
    let polls = count1 - count0;
    println!(
        "source: no-change polls over {window:?}: {polls} passes ({} unchanged), mean {:.1} ms, {} API writes (leases and events excluded)",
        unchanged1 - unchanged0,
        if polls > 0.0 {
            (sum1 - sum0) / polls * 1000.0
        } else {
            f64::NAN
        },
        writes1 - writes0
    );
    assert!(polls > 0.0, "the source kept polling");
    assert_eq!(writes1, writes0, "a no-change poll writes nothing");

    // One changed file, from push to applied, woken by the webhook (polling hourly).
    harness::apply::<PolicySource>(&client, &ns, &source_yaml("1h")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hook = format!("/hook/{ns}/access");
    let mut latencies = Vec::new();
    for round in 0..rounds {
        let (path, text) = identity_file(round * 7, round + 1);
        let commit = repo.commit_files(&[(path, text)], "a mover", HR, Some(&keys));
        let pushed = Instant::now();
        let answer = post_hook(address, &hook, r#"{"ref":"refs/heads/main"}"#).await;
        assert!(answer.contains("202"), "{answer}");
        let applied = wait_applied(&api, &commit, Duration::from_secs(30)).await;
        latencies.push(applied - pushed);
    }
    latencies.sort();
    println!(
        "source: webhook push to applied, one changed file, {rounds} rounds: p50 {:.0?}, max {:.0?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    println!("source: git HTTP requests served: {}", server.requests());
}
