//! PolicySource end to end: real repositories built with the git CLI and signed with
//! `ssh-keygen` keys, served over `file://` and smart HTTP (`git http-backend`), synced by
//! the controller into the real API server.
// The harness carries its own copy of tests/peer_script.rs; the SSH test starts sshd with it.
#![allow(clippy::duplicate_mod)]

mod gitrepo;
mod harness;
#[allow(dead_code)] // only `run`, `var` and `stop_at_exit` are used here
mod peer_script;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gatehouse::api::{AccessPolicy, Identity, PolicySource, annotations};
use gatehouse::controller::{Options, run};
use gitrepo::{GitHttpServer, PgpKey, Repo, ServeOptions, Sign, SigningKey, TestCa};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};

const HR: &str = "Hanna HR <hanna@acme.example>";
const IAM: &str = "Ivan IAM <ivan@acme.example>";

fn person(name: &str, dept: &str) -> String {
    format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}}}\nspec:\n  type: Human\n  employment: {{status: Active, type: Employee, department: {dept}, manager: {name}, startDate: '2025-01-01'}}\n"
    )
}

fn policy(name: &str, dept: &str, role: &str) -> String {
    format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchAttributes: {{department: {dept}}}}}\n  entitlements: [{{target: k8s, kind: ClusterRole, name: {role}}}]\n"
    )
}

const TARGET: &str = "apiVersion: gatehouse.dev/v1alpha1\nkind: TargetSystem\nmetadata: {name: k8s}\nspec: {type: Kubernetes}\n";

/// A test world: keys, a repository under `tenants/acme`, a namespace and a controller.
struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    repo: Repo,
    hr: SigningKey,
    iam: SigningKey,
    client: Client,
    ns: String,
    http: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl World {
    async fn new(prefix: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("served");
        let keys = dir.path().join("keys");
        let hr = SigningKey::generate(&keys, "hr-bot");
        let iam = SigningKey::generate(&keys, "iam-lead");
        let repo = Repo::init(&root.join("access"));
        let client = harness::client().await;
        let ns = harness::namespace(&client, prefix).await;
        let options = Options {
            namespace: Some(ns.clone()),
            resync: Duration::from_secs(60),
            source_cache_dir: dir.path().join("cache"),
            ..Options::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let routes = gatehouse::http::router(options.health.clone(), options.metrics.clone())
            .merge(gatehouse::http::hooks(client.clone()));
        tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(run(client.clone(), options, async {
            let _ = stopped.await;
        }));
        World {
            _dir: dir,
            root,
            repo,
            hr,
            iam,
            client,
            ns,
            http,
            _stop: stop,
        }
    }

    /// Commits the baseline: two people (HR) and a policy plus target (IAM).
    fn baseline(&self) -> (String, String) {
        self.repo.write(
            "tenants/acme/identities/alice.yaml",
            &person("alice", "finance"),
        );
        self.repo.write(
            "tenants/acme/identities/bob.yaml",
            &person("bob", "engineering"),
        );
        let people = self.repo.commit("people", HR, Some(&self.hr));
        self.repo.write(
            "tenants/acme/policies/finance.yaml",
            &policy("finance", "finance", "view"),
        );
        self.repo.write("tenants/acme/targets/k8s.yaml", TARGET);
        let rules = self.repo.commit("rules", IAM, Some(&self.iam));
        (people, rules)
    }

    async fn source(&self, url: &str, extra: &str) {
        self.source_polling(url, "1s", extra).await
    }

    async fn source_polling(&self, url: &str, interval: &str, extra: &str) {
        let yaml = format!(
            "metadata: {{name: access}}\nspec:\n  url: {url}\n  ref: {{branch: main}}\n  path: tenants/acme\n  interval: {interval}\n  verify:\n    keys:\n    - {{name: hr-bot, publicKey: '{}'}}\n    - {{name: iam-lead, publicKey: '{}'}}\n  pathOwners:\n  - {{path: 'identities/**', keys: [hr-bot]}}\n  - {{path: 'policies/**', keys: [iam-lead]}}\n  - {{path: 'targets/**', keys: [iam-lead]}}\n{extra}",
            self.hr.public_key, self.iam.public_key
        );
        harness::apply::<PolicySource>(&self.client, &self.ns, &yaml).await;
    }

    /// Waits until the controller has counted more than `before` passes that found the
    /// source suspended; returns the count.
    async fn suspended_passes_after(&self, before: u64) -> u64 {
        let series = format!(
            "gatehouse_source_syncs_total{{namespace=\"{}\",source=\"access\",result=\"suspended\"}}",
            self.ns
        );
        harness::eventually(
            "a pass that finds the source suspended",
            Duration::from_secs(30),
            || async {
                let count = harness::metric(self.http, &series).await.unwrap_or(0.0) as u64;
                if count > before {
                    Ok(count)
                } else {
                    Err(format!("{count} suspended passes"))
                }
            },
        )
        .await
    }

    /// Asks for a sync now, as the webhook does.
    async fn request_sync(&self) {
        let patch = serde_json::json!({"metadata": {"annotations": {
            annotations::REQUESTED_AT: jiff::Timestamp::now().to_string(),
        }}});
        Api::<PolicySource>::namespaced(self.client.clone(), &self.ns)
            .patch("access", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn get(&self) -> PolicySource {
        Api::<PolicySource>::namespaced(self.client.clone(), &self.ns)
            .get("access")
            .await
            .unwrap()
    }

    /// Waits until the source has applied `commit` and is Ready.
    async fn applied(&self, commit: &str) -> PolicySource {
        let api = Api::<PolicySource>::namespaced(self.client.clone(), &self.ns);
        harness::eventually(
            &format!("commit {commit} applied"),
            Duration::from_secs(30),
            || async {
                let s = api.get("access").await.map_err(|e| e.to_string())?;
                let status = s.status.clone().unwrap_or_default();
                let ready = harness::condition(&status.conditions, "Ready");
                if status.last_applied_commit.as_deref() == Some(commit)
                    && ready.as_ref().is_some_and(|r| r.0 == "True")
                {
                    Ok(s)
                } else {
                    Err(format!("{status:?}"))
                }
            },
        )
        .await
    }

    /// Waits until the source has attempted `commit` and refused it; returns the status.
    async fn refused(&self, commit: &str) -> PolicySource {
        let api = Api::<PolicySource>::namespaced(self.client.clone(), &self.ns);
        harness::eventually(
            &format!("commit {commit} refused"),
            Duration::from_secs(30),
            || async {
                let s = api.get("access").await.map_err(|e| e.to_string())?;
                let status = s.status.clone().unwrap_or_default();
                let ready = harness::condition(&status.conditions, "Ready");
                if status.last_attempted_commit.as_deref() == Some(commit)
                    && ready.as_ref().is_some_and(|r| r.0 == "False")
                {
                    Ok(s)
                } else {
                    Err(format!("{status:?}"))
                }
            },
        )
        .await
    }

    async fn names<K>(&self) -> Vec<String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let mut names: Vec<String> = Api::<K>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter_map(|o| o.meta().name.clone())
            .collect();
        names.sort();
        names
    }
}

fn condition(source: &PolicySource, type_: &str) -> (String, String, String) {
    harness::condition(&source.status.clone().unwrap_or_default().conditions, type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {:?}", source.status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_update_prune_and_provenance_over_file_url() {
    let w = World::new("src-sync").await;
    let (people, rules) = w.baseline();
    w.source(&w.repo.url_file(), "").await;
    let source = w.applied(&rules).await;
    let status = source.status.clone().unwrap();
    assert_eq!(status.inventory_count, Some(4));
    assert_eq!(condition(&source, "Verified").0, "True");
    assert_eq!(w.names::<Identity>().await, ["alice", "bob"]);

    // Provenance: the commit that last changed each file, its author and verified signer.
    let alice = Api::<Identity>::namespaced(w.client.clone(), &w.ns)
        .get("alice")
        .await
        .unwrap();
    let a = alice.metadata.annotations.clone().unwrap();
    assert_eq!(a[annotations::COMMIT], people);
    assert_eq!(a[annotations::PATH], "tenants/acme/identities/alice.yaml");
    assert_eq!(a[annotations::AUTHOR], HR);
    assert_eq!(a[annotations::SIGNER], "hr-bot");
    let finance = Api::<AccessPolicy>::namespaced(w.client.clone(), &w.ns)
        .get("finance")
        .await
        .unwrap();
    assert_eq!(
        finance.metadata.annotations.clone().unwrap()[annotations::SIGNER],
        "iam-lead"
    );

    // The controller reconciles what came from Git: alice's entitlement carries the
    // policy's Git provenance into her status.
    let provenance =
        harness::eventually("alice's entitlement", Duration::from_secs(30), || async {
            let alice = Api::<Identity>::namespaced(w.client.clone(), &w.ns)
                .get("alice")
                .await
                .map_err(|e| e.to_string())?;
            let status = alice.status.unwrap_or_default();
            let json = serde_json::to_value(&status.entitlements).unwrap();
            let text = json.to_string();
            if text.contains(&rules) {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .await;
    assert!(provenance.contains("iam-lead"), "{provenance}");

    // An update (mover) and a removal (prune) in one signed HR commit.
    w.repo.write(
        "tenants/acme/identities/alice.yaml",
        &person("alice", "engineering"),
    );
    w.repo.remove("tenants/acme/identities/bob.yaml");
    let moved = w
        .repo
        .commit("alice moves, bob leaves Git", HR, Some(&w.hr));
    let source = w.applied(&moved).await;
    assert_eq!(source.status.clone().unwrap().inventory_count, Some(3));
    assert_eq!(
        harness::eventually("bob pruned", Duration::from_secs(30), || async {
            let names = w.names::<Identity>().await;
            if names == ["alice"] {
                Ok(names)
            } else {
                Err(format!("{names:?}"))
            }
        })
        .await,
        ["alice"]
    );
    let alice = Api::<Identity>::namespaced(w.client.clone(), &w.ns)
        .get("alice")
        .await
        .unwrap();
    assert_eq!(
        alice
            .spec
            .employment
            .as_ref()
            .unwrap()
            .department
            .as_deref(),
        Some("engineering")
    );
    assert_eq!(
        alice.metadata.annotations.unwrap()[annotations::COMMIT],
        moved
    );

    // A change made in the cluster to a Git-managed object is put back on the next poll.
    harness::apply::<Identity>(
        &w.client,
        &w.ns,
        &person("alice", "sales")
            .replace("apiVersion: gatehouse.dev/v1alpha1\nkind: Identity\n", ""),
    )
    .await;
    harness::eventually("drift repaired", Duration::from_secs(30), || async {
        let alice = Api::<Identity>::namespaced(w.client.clone(), &w.ns)
            .get("alice")
            .await
            .map_err(|e| e.to_string())?;
        let dept = alice.spec.employment.unwrap().department;
        if dept.as_deref() == Some("engineering") {
            Ok(())
        } else {
            Err(format!("{dept:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_commit_in_the_middle_and_wrong_owner_are_refused() {
    let w = World::new("src-verify").await;
    let (_, rules) = w.baseline();
    w.source(&w.repo.url_file(), "").await;
    w.applied(&rules).await;

    // An unsigned commit followed by a signed one: the range is refused as a whole.
    w.repo.write(
        "tenants/acme/identities/carol.yaml",
        &person("carol", "finance"),
    );
    let unsigned = w.repo.commit("carol, unsigned", HR, None);
    w.repo.write(
        "tenants/acme/identities/dave.yaml",
        &person("dave", "finance"),
    );
    let signed = w.repo.commit("dave", HR, Some(&w.hr));
    let source = w.refused(&signed).await;
    let (status, reason, message) = condition(&source, "Verified");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "VerificationFailed")
    );
    assert!(message.contains(&unsigned[..12]), "{message}");
    assert!(message.contains("is not signed"), "{message}");
    assert_eq!(condition(&source, "Stalled").0, "True");
    let st = source.status.clone().unwrap();
    assert_eq!(st.last_applied_commit.as_deref(), Some(rules.as_str()));
    assert_eq!(
        w.names::<Identity>().await,
        ["alice", "bob"],
        "nothing from the range applied"
    );

    // History rewritten without the unsigned commit, but an HR file signed by IAM.
    w.repo.reset_hard(&rules);
    w.repo.write(
        "tenants/acme/identities/carol.yaml",
        &person("carol", "finance"),
    );
    let wrong = w.repo.commit("carol, by IAM", IAM, Some(&w.iam));
    let source = w.refused(&wrong).await;
    let (_, _, message) = condition(&source, "Verified");
    assert!(message.contains("identities/carol.yaml"), "{message}");
    assert!(message.contains("iam-lead"), "{message}");
    assert!(
        message.contains("may only be changed by hr-bot"),
        "{message}"
    );
    assert_eq!(w.names::<Identity>().await, ["alice", "bob"]);
    let events = warning_events(&w).await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("VerificationFailed") && e.contains("identities/carol.yaml")),
        "{events:?}"
    );

    // Signed by HR: applied.
    w.repo.reset_hard(&rules);
    w.repo.write(
        "tenants/acme/identities/carol.yaml",
        &person("carol", "finance"),
    );
    let good = w.repo.commit("carol, by HR", HR, Some(&w.hr));
    let source = w.applied(&good).await;
    assert_eq!(condition(&source, "Verified").0, "True");
    assert!(
        source
            .status
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "Stalled")
    );
    assert_eq!(w.names::<Identity>().await, ["alice", "bob", "carol"]);
}

/// OpenPGP through the real sync: a forge's merge commit (OpenPGP, like GitHub's merge
/// button) over an SSH-signed branch is applied; a commit signed by an expired OpenPGP key
/// is refused with `Verified=False` naming the commit and the key, the merge kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forge_merge_signed_with_openpgp_is_applied_and_an_expired_key_refused() {
    let w = World::new("src-pgp").await;
    let keys = w.root.parent().unwrap().join("pgp");
    let forge = PgpKey::generate(&keys, "GitHub <noreply@github.com>");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let old = PgpKey::generate_with(&keys, "Old HR <old@hr.example>", "1d", Some(now - 864_000));
    let (_, rules) = w.baseline();
    let yaml = format!(
        "metadata: {{name: access}}\nspec:\n  url: {}\n  ref: {{branch: main}}\n  path: tenants/acme\n  interval: 1s\n  verify:\n    keys:\n    - {{name: hr-bot, publicKey: '{}'}}\n    - {{name: iam-lead, publicKey: '{}'}}\n    - {{name: github, publicKey: {}}}\n    - {{name: old-hr, publicKey: {}}}\n  pathOwners:\n  - {{path: 'identities/**', keys: [hr-bot, github, old-hr]}}\n  - {{path: 'policies/**', keys: [iam-lead]}}\n  - {{path: 'targets/**', keys: [iam-lead]}}\n",
        w.repo.url_file(),
        w.hr.public_key,
        w.iam.public_key,
        serde_json::to_string(&forge.public_key()).unwrap(),
        serde_json::to_string(&old.public_key()).unwrap(),
    );
    harness::apply::<PolicySource>(&w.client, &w.ns, &yaml).await;
    w.applied(&rules).await;

    gitrepo::git(w.repo.path(), &["checkout", "-q", "-b", "pr"]);
    w.repo.write(
        "tenants/acme/identities/carol.yaml",
        &person("carol", "finance"),
    );
    w.repo.commit("carol", HR, Some(&w.hr));
    gitrepo::git(w.repo.path(), &["checkout", "-q", "main"]);
    let dave = person("dave", "finance");
    let merge = w.repo.merge(
        "pr",
        "Merge pull request #1",
        "GitHub <noreply@github.com>",
        Sign::Pgp(&forge),
        &[("tenants/acme/identities/dave.yaml", &dave)],
    );
    let source = w.applied(&merge).await;
    assert_eq!(condition(&source, "Verified").0, "True");
    assert_eq!(
        w.names::<Identity>().await,
        ["alice", "bob", "carol", "dave"]
    );
    let dave = Api::<Identity>::namespaced(w.client.clone(), &w.ns)
        .get("dave")
        .await
        .unwrap();
    assert_eq!(
        dave.metadata
            .annotations
            .unwrap_or_default()
            .get(annotations::SIGNER)
            .map(String::as_str),
        Some("github")
    );

    w.repo.write(
        "tenants/acme/identities/erin.yaml",
        &person("erin", "finance"),
    );
    let expired = w.repo.commit_signed("erin", HR, Sign::Pgp(&old));
    let source = w.refused(&expired).await;
    let (status, reason, message) = condition(&source, "Verified");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "VerificationFailed")
    );
    assert!(message.contains(&expired[..12]), "{message}");
    assert!(
        message.contains(&format!("old-hr (OpenPGP {})", old.fingerprint)),
        "{message}"
    );
    assert!(message.contains("expired on"), "{message}");
    let st = source.status.unwrap();
    assert_eq!(st.last_applied_commit.as_deref(), Some(merge.as_str()));
    assert_eq!(
        w.names::<Identity>().await,
        ["alice", "bob", "carol", "dave"]
    );
}

/// Approvals through the real sync: `policies/**` needs one approval by another owner.
/// The forge's OpenPGP-signed merge of iam-lead's pull request is applied; iam-lead's
/// direct push, its self-merge, hr-bot's merge (not an owner of policies) and an unsigned
/// merge are each refused with `Verified=False` naming the commit, the path, the author and
/// the missing approval, the merge kept in force; iam-2's signed merge is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_need_an_approving_merge_by_another_owner() {
    let w = World::new("src-approve").await;
    let keys = w.root.parent().unwrap().join("approvers");
    let forge = PgpKey::generate(&keys, "GitHub <noreply@github.com>");
    let iam2 = SigningKey::generate(&keys, "iam-2");
    w.repo.write(
        "tenants/acme/identities/alice.yaml",
        &person("alice", "finance"),
    );
    w.repo.write("tenants/acme/targets/k8s.yaml", TARGET);
    let people = w.repo.commit("people", HR, Some(&w.hr));
    let yaml = format!(
        "metadata: {{name: access}}\nspec:\n  url: {}\n  ref: {{branch: main}}\n  path: tenants/acme\n  interval: 1s\n  verify:\n    keys:\n    - {{name: hr-bot, publicKey: '{}'}}\n    - {{name: iam-lead, publicKey: '{}'}}\n    - {{name: iam-2, publicKey: '{}'}}\n    - {{name: github, publicKey: {}}}\n  pathOwners:\n  - {{path: 'identities/**', keys: [hr-bot]}}\n  - {{path: 'targets/**', keys: [hr-bot]}}\n  - {{path: 'policies/**', keys: [iam-lead, iam-2, github], requireApprovals: 1}}\n",
        w.repo.url_file(),
        w.hr.public_key,
        w.iam.public_key,
        iam2.public_key,
        serde_json::to_string(&forge.public_key()).unwrap(),
    );
    harness::apply::<PolicySource>(&w.client, &w.ns, &yaml).await;
    w.applied(&people).await;

    // A pull request by iam-lead, merged with the forge's button.
    let pull_request = |branch: &str, name: &str| {
        gitrepo::git(w.repo.path(), &["checkout", "-q", "-b", branch, "main"]);
        w.repo.write(
            &format!("tenants/acme/policies/{name}.yaml"),
            &policy(name, "finance", "view"),
        );
        let commit = w.repo.commit(name, IAM, Some(&w.iam));
        gitrepo::git(w.repo.path(), &["checkout", "-q", "main"]);
        commit
    };
    pull_request("pr-1", "finance");
    let merged = w.repo.merge(
        "pr-1",
        "Merge pull request #1",
        "GitHub <noreply@github.com>",
        Sign::Pgp(&forge),
        &[],
    );
    let source = w.applied(&merged).await;
    assert_eq!(condition(&source, "Verified").0, "True");
    assert_eq!(w.names::<AccessPolicy>().await, ["finance"]);

    // Pushed straight to main.
    w.repo.write(
        "tenants/acme/policies/direct.yaml",
        &policy("direct", "finance", "edit"),
    );
    let direct = w.repo.commit("direct", IAM, Some(&w.iam));
    let source = w.refused(&direct).await;
    let (status, reason, message) = condition(&source, "Verified");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "VerificationFailed")
    );
    assert!(
        message.contains(&format!(
            "commit {} changes policies/direct.yaml",
            &direct[..12]
        )) && message.contains("signed by iam-lead (its author) without the approval it needs")
            && message.contains("need 1 approval by other owners (github, iam-2)")
            && message.contains("pushed to the branch directly"),
        "{message}"
    );
    assert_eq!(condition(&source, "Stalled").0, "True");
    assert_eq!(
        source.status.unwrap().last_applied_commit.as_deref(),
        Some(merged.as_str())
    );
    assert_eq!(w.names::<AccessPolicy>().await, ["finance"]);

    // Self-approved, merged by a key that does not own policies/, and an unsigned merge.
    for (branch, merger, expect) in [
        (
            "pr-self",
            Some(&w.iam),
            "signed by iam-lead, the author, whose approval does not count",
        ),
        (
            "pr-hr",
            Some(&w.hr),
            "signed by hr-bot, which does not own \"policies/**\"",
        ),
        ("pr-unsigned", None, "unsigned"),
    ] {
        w.repo.reset_hard(&merged);
        let commit = pull_request(branch, branch);
        let merge = w
            .repo
            .merge(branch, branch, IAM, merger.map_or(Sign::No, Sign::Ssh), &[]);
        let source = w.refused(&merge).await;
        let (_, _, message) = condition(&source, "Verified");
        assert!(
            message.contains(&format!(
                "commit {} changes policies/{branch}.yaml",
                &commit[..12]
            )) && message.contains(&format!("{} {expect}", &merge[..12])),
            "{branch}: {message}"
        );
        assert_eq!(
            source.status.unwrap().last_applied_commit.as_deref(),
            Some(merged.as_str()),
            "{branch}"
        );
        assert_eq!(w.names::<AccessPolicy>().await, ["finance"], "{branch}");
    }

    // Merged by iam-2: approved.
    w.repo.reset_hard(&merged);
    pull_request("pr-2", "audit");
    let approved = w
        .repo
        .merge("pr-2", "Merge pr-2", IAM, Sign::Ssh(&iam2), &[]);
    let source = w.applied(&approved).await;
    assert_eq!(condition(&source, "Verified").0, "True");
    assert_eq!(w.names::<AccessPolicy>().await, ["audit", "finance"]);
}

async fn warning_events(w: &World) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(w.client.clone(), &w.ns);
    harness::eventually("events", Duration::from_secs(10), || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let texts: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .map(|e| {
                format!(
                    "{} {}",
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default()
                )
            })
            .collect();
        if texts.iter().any(|t| t.starts_with("VerificationFailed")) {
            Ok(texts)
        } else {
            Err(format!("{texts:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_push_to_an_older_commit_is_applied_and_reported() {
    let w = World::new("src-rollback").await;
    let (_, rules) = w.baseline();
    w.source(&w.repo.url_file(), "").await;
    w.applied(&rules).await;
    w.repo.write(
        "tenants/acme/identities/erin.yaml",
        &person("erin", "finance"),
    );
    let newer = w.repo.commit("erin", HR, Some(&w.hr));
    w.applied(&newer).await;
    assert_eq!(w.names::<Identity>().await, ["alice", "bob", "erin"]);

    // Rewritten history: a new commit on top of an older one (diverged), then a reset to
    // the older commit itself (rollback). Both are applied and reported.
    w.repo.reset_hard(&rules);
    w.repo.write(
        "tenants/acme/identities/fay.yaml",
        &person("fay", "finance"),
    );
    let diverged = w.repo.commit("fay instead of erin", HR, Some(&w.hr));
    let source = w.applied(&diverged).await;
    let (_, _, message) = condition(&source, "Ready");
    assert!(message.contains("history rewritten"), "{message}");
    assert!(message.contains(&newer[..12]), "{message}");
    harness::eventually(
        "erin pruned, fay added",
        Duration::from_secs(30),
        || async {
            let names = w.names::<Identity>().await;
            if names == ["alice", "bob", "fay"] {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        },
    )
    .await;
    // A diverged branch is verified from the common commit: an unsigned one is refused.
    w.repo.reset_hard(&rules);
    w.repo.write(
        "tenants/acme/identities/gus.yaml",
        &person("gus", "finance"),
    );
    let unsigned = w.repo.commit("gus, unsigned, rewritten", HR, None);
    let (_, _, message) = condition(&w.refused(&unsigned).await, "Verified");
    assert!(
        message.contains(&unsigned[..12]) && message.contains("is not signed"),
        "{message}"
    );

    w.repo.reset_hard(&rules);
    let source = w.applied(&rules).await;
    let (_, _, message) = condition(&source, "Ready");
    assert!(message.contains("history rewritten"), "{message}");
    harness::eventually("fay pruned", Duration::from_secs(30), || async {
        let names = w.names::<Identity>().await;
        if names == ["alice", "bob"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_never_fight_over_one_object() {
    let w = World::new("src-two").await;
    let (_, rules) = w.baseline();
    w.source(&w.repo.url_file(), "").await;
    w.applied(&rules).await;
    // A second repository in the same namespace defining alice too.
    let other = Repo::init(&w.root.join("other"));
    other.write("people/alice.yaml", &person("alice", "sales"));
    other.write("people/zoe.yaml", &person("zoe", "sales"));
    let head = other.commit("alice and zoe", HR, None);
    harness::apply::<PolicySource>(
        &w.client,
        &w.ns,
        &format!("metadata: {{name: other}}\nspec: {{url: '{}', ref: {{branch: main}}, path: people, interval: 1s}}", other.url_file()),
    )
    .await;
    let api = Api::<PolicySource>::namespaced(w.client.clone(), &w.ns);
    let message = harness::eventually(
        "the second source refused",
        Duration::from_secs(30),
        || async {
            let s = api.get("other").await.map_err(|e| e.to_string())?;
            let status = s.status.unwrap_or_default();
            match harness::condition(&status.conditions, "Ready") {
                Some((st, reason, message))
                    if st == "False" && status.last_attempted_commit.as_deref() == Some(&head) =>
                {
                    Ok((reason, message))
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(message.0, "InvalidCommit", "{message:?}");
    assert!(
        message.1.contains("people/alice.yaml")
            && message.1.contains("already applied by PolicySource access"),
        "{message:?}"
    );
    // Nothing of that commit is applied, not even zoe; alice stays as the first source has her.
    assert_eq!(w.names::<Identity>().await, ["alice", "bob"]);
    let alice = Api::<Identity>::namespaced(w.client.clone(), &w.ns)
        .get("alice")
        .await
        .unwrap();
    assert_eq!(
        alice.spec.employment.unwrap().department.as_deref(),
        Some("finance")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_blocks_the_whole_commit_and_names_file_and_reason() {
    let w = World::new("src-bad").await;
    let (_, rules) = w.baseline();
    w.source(&w.repo.url_file(), "").await;
    w.applied(&rules).await;

    // A good new person plus one bad file in the same commit: neither is applied.
    let bad_files: Vec<(&str, String, &str)> = vec![
        ("identities/typo.yaml", person("typo", "finance").replace("department", "departmnet"), "unknown field"),
        (
            "identities/bomb.yaml",
            "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n".to_string(),
            "repetition limit exceeded",
        ),
        ("identities/huge.yaml", format!("{}# {}\n", person("huge", "finance"), "x".repeat(1024 * 1024)), "over the 1048576-byte limit"),
        ("identities/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n".to_string(), "only gatehouse.dev/v1alpha1"),
        ("identities/elsewhere.yaml", person("mallory", "finance").replace("metadata: {name: mallory}", "metadata: {name: mallory, namespace: kube-system}"), "applies into namespace"),
    ];
    for (file, text, expect) in bad_files {
        w.repo.write(
            "tenants/acme/identities/frank.yaml",
            &person("frank", "finance"),
        );
        w.repo.write(&format!("tenants/acme/{file}"), &text);
        let bad = w.repo.commit(&format!("frank and {file}"), HR, Some(&w.hr));
        let source = w.refused(&bad).await;
        let (_, reason, message) = condition(&source, "Ready");
        assert_eq!(reason, "InvalidCommit", "{file}: {message}");
        assert!(message.contains(file), "{file}: {message}");
        assert!(
            message.contains(expect),
            "{file}: expected {expect:?} in {message}"
        );
        assert_eq!(condition(&source, "Stalled").0, "True");
        assert_eq!(
            w.names::<Identity>().await,
            ["alice", "bob"],
            "{file}: nothing applied"
        );
        w.repo.remove(&format!("tenants/acme/{file}"));
    }
    // A symlink and a submodule are refused by name too.
    w.repo
        .symlink("tenants/acme/identities/link.yaml", "alice.yaml");
    let link = w.repo.commit("a symlink", HR, Some(&w.hr));
    let (_, _, message) = condition(&w.refused(&link).await, "Ready");
    assert!(
        message.contains("identities/link.yaml") && message.contains("symbolic links"),
        "{message}"
    );
    w.repo.remove("tenants/acme/identities/link.yaml");
    w.repo.add_submodule_entry("tenants/acme/vendored");
    let sub = w.repo.commit("a submodule", HR, Some(&w.hr));
    let (_, _, message) = condition(&w.refused(&sub).await, "Ready");
    assert!(
        message.contains("vendored") && message.contains("submodules"),
        "{message}"
    );
    gitrepo::git(
        w.repo.path(),
        &["rm", "-q", "--cached", "tenants/acme/vendored"],
    );

    // Fixed: everything in the commit arrives at once.
    let fixed = w.repo.commit("fixed", HR, Some(&w.hr));
    w.applied(&fixed).await;
    assert_eq!(w.names::<Identity>().await, ["alice", "bob", "frank"]);
}

async fn post_hook(http: SocketAddr, path: &str, headers: &[(&str, String)], body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response[9..12].parse().unwrap()
}

fn github_signature(secret: &str, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_over_http_syncs_at_once_and_refuses_a_bad_hmac() {
    let w = World::new("src-hook").await;
    let server = GitHttpServer::start(&w.root);
    let (_, rules) = w.baseline();
    harness::apply::<k8s_openapi::api::core::v1::Secret>(
        &w.client,
        &w.ns,
        "metadata: {name: hook}\nstringData: {token: s3cret}",
    )
    .await;
    // Polling once an hour: only the webhook can bring the next commit in quickly.
    w.source_polling(
        &server.url("access"),
        "1h",
        "  webhook: {secretRef: {name: hook}}\n",
    )
    .await;
    w.applied(&rules).await;

    w.repo.write(
        "tenants/acme/identities/gina.yaml",
        &person("gina", "finance"),
    );
    let pushed = w.repo.commit("gina", HR, Some(&w.hr));
    let body = r#"{"ref":"refs/heads/main"}"#;
    let path = format!("/hook/{}/access", w.ns);
    let bad = post_hook(
        w.http,
        &path,
        &[("X-Hub-Signature-256", github_signature("wrong", body))],
        body,
    )
    .await;
    assert_eq!(bad, 401);
    assert_eq!(
        post_hook(w.http, &format!("/hook/{}/nope", w.ns), &[], body).await,
        404
    );
    let started = Instant::now();
    let good = post_hook(
        w.http,
        &path,
        &[("X-Hub-Signature-256", github_signature("s3cret", body))],
        body,
    )
    .await;
    assert_eq!(good, 202);
    w.applied(&pushed).await;
    let took = started.elapsed();
    eprintln!("webhook to applied: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the webhook should trigger a sync at once, not the hourly poll ({took:?})"
    );
    assert_eq!(w.names::<Identity>().await, ["alice", "bob", "gina"]);

    // Unreachable: the last good commit stays in force, and Ready says why.
    server.set_down(true);
    w.repo.write(
        "tenants/acme/identities/hal.yaml",
        &person("hal", "finance"),
    );
    w.repo.commit("hal", HR, Some(&w.hr));
    let gitlab = post_hook(w.http, &path, &[("X-Gitlab-Token", "s3cret".into())], body).await;
    assert_eq!(gitlab, 202);
    let (reason, message) = harness::wait_for_condition::<PolicySource>(
        &w.client,
        &w.ns,
        "access",
        "Ready",
        "False",
        |s| s.status.clone().unwrap_or_default().conditions,
    )
    .await;
    assert_eq!(reason, "FetchFailed", "{message}");
    assert!(
        message.contains(&format!("commit {} stays in force", &pushed[..12])),
        "{message}"
    );
    assert_eq!(w.names::<Identity>().await, ["alice", "bob", "gina"]);
    server.set_down(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_syncing_until_resumed() {
    let w = World::new("src-suspend").await;
    let (_, rules) = w.baseline();
    w.source(&w.repo.url_file(), "").await;
    w.applied(&rules).await;
    w.source(&w.repo.url_file(), "  suspend: true\n").await;
    // The controller has seen the suspension before the new commits land.
    let mut seen = w.suspended_passes_after(0).await;
    // While suspended: an unsigned commit, then a signed one on top of it.
    w.repo.write(
        "tenants/acme/identities/jon.yaml",
        &person("jon", "finance"),
    );
    let unsigned = w.repo.commit("jon, unsigned", HR, None);
    w.repo.write(
        "tenants/acme/identities/ian.yaml",
        &person("ian", "finance"),
    );
    let on_top = w.repo.commit("ian", HR, Some(&w.hr));
    // Two more passes over the source after the commits (asked for as the webhook does),
    // each finding it suspended.
    for _ in 0..2 {
        w.request_sync().await;
        seen = w.suspended_passes_after(seen).await;
    }
    assert_eq!(
        w.names::<Identity>().await,
        ["alice", "bob"],
        "suspended: nothing applied"
    );
    assert_eq!(
        w.get().await.status.unwrap().last_applied_commit.as_deref(),
        Some(rules.as_str())
    );
    // Resumed: every commit made meanwhile is verified, not only the newest.
    w.source(&w.repo.url_file(), "  suspend: false\n").await;
    let (_, _, message) = condition(&w.refused(&on_top).await, "Verified");
    assert!(message.contains(&unsigned[..12]), "{message}");
    assert_eq!(w.names::<Identity>().await, ["alice", "bob"]);
    // Rewritten: another tenant's unsigned commit (outside this source's folder, so not
    // checked), then ian, signed.
    w.repo.reset_hard(&rules);
    w.repo.write(
        "tenants/beta/identities/kim.yaml",
        &person("kim", "finance"),
    );
    let beta = w.repo.commit("beta, unsigned", HR, None);
    w.repo.write(
        "tenants/acme/identities/ian.yaml",
        &person("ian", "finance"),
    );
    let held = w.repo.commit("ian", HR, Some(&w.hr));
    w.applied(&held).await;
    assert_eq!(w.names::<Identity>().await, ["alice", "bob", "ian"]);

    // Pointing the source at the other folder, at the same head, checks the commit that
    // shaped that folder: what was verified for the old path proves nothing for the new one.
    w.source(&w.repo.url_file(), "").await;
    let patch = serde_json::json!({"spec": {"path": "tenants/beta"}});
    Api::<PolicySource>::namespaced(w.client.clone(), &w.ns)
        .patch("access", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let api = Api::<PolicySource>::namespaced(w.client.clone(), &w.ns);
    let message = harness::eventually(
        "the new folder refused",
        Duration::from_secs(30),
        || async {
            let s = api.get("access").await.map_err(|e| e.to_string())?;
            let v =
                harness::condition(&s.status.clone().unwrap_or_default().conditions, "Verified");
            match v {
                Some((st, _, m)) if st == "False" => Ok(m),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(
        message.contains(&beta[..12]) && message.contains("is not signed"),
        "{message}"
    );
    assert_eq!(w.names::<Identity>().await, ["alice", "bob", "ian"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_transport_checks_the_host_key() {
    // A private sshd on loopback (Debian's openssh-server) serving this user's repositories.
    let sshd_dir = std::env::temp_dir().join(format!("gatehouse-sshd-{}", std::process::id()));
    let vars = peer_script::run("start-sshd.sh", &sshd_dir, &[], "see stderr above");
    peer_script::stop_at_exit("start-sshd.sh", &sshd_dir);
    let var = |k: &str| peer_script::var(&vars, "start-sshd.sh", k);
    let read = |k: &str| std::fs::read_to_string(var(k)).unwrap();
    let w = World::new("src-ssh").await;
    let (_, rules) = w.baseline();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        var("SSH_USER"),
        var("SSHD_PORT"),
        w.repo.path().canonicalize().unwrap().display()
    );
    let secret = |known_hosts: &str| {
        serde_json::json!({
            "metadata": {"name": "repo-ssh"},
            "stringData": {"identity": read("SSH_IDENTITY"), "known_hosts": known_hosts},
        })
        .to_string()
    };
    // A known_hosts line for another host key: refused before any credential is sent.
    let other = SigningKey::generate(&w.root.join("other-host"), "other-host");
    let wrong = format!("[127.0.0.1]:{} {}", var("SSHD_PORT"), other.public_key);
    harness::apply::<k8s_openapi::api::core::v1::Secret>(&w.client, &w.ns, &secret(&wrong)).await;
    w.source(&url, "  secretRef: {name: repo-ssh}\n").await;
    let (reason, message) = harness::wait_for_condition::<PolicySource>(
        &w.client,
        &w.ns,
        "access",
        "Stalled",
        "True",
        |s| s.status.clone().unwrap_or_default().conditions,
    )
    .await;
    assert_eq!(reason, "FetchFailed", "{message}");
    assert!(
        message.contains("host key of 127.0.0.1 is not in known_hosts"),
        "{message}"
    );
    assert!(!message.contains("BEGIN OPENSSH PRIVATE KEY"), "{message}");
    assert!(w.names::<Identity>().await.is_empty());

    // The right host key: synced over SSH with the client key.
    harness::apply::<k8s_openapi::api::core::v1::Secret>(
        &w.client,
        &w.ns,
        &secret(&read("SSH_KNOWN_HOSTS")),
    )
    .await;
    w.applied(&rules).await;
    assert_eq!(w.names::<Identity>().await, ["alice", "bob"]);
}

/// Waits for `Ready=False` with a message containing `expect`; returns (reason, message,
/// whether `Stalled=True`).
async fn not_ready(w: &World, expect: &str) -> (String, String, bool) {
    let api = Api::<PolicySource>::namespaced(w.client.clone(), &w.ns);
    harness::eventually(
        &format!("Ready=False saying {expect:?}"),
        Duration::from_secs(30),
        || async {
            let s = api.get("access").await.map_err(|e| e.to_string())?;
            let conditions = s.status.clone().unwrap_or_default().conditions;
            match harness::condition(&conditions, "Ready") {
                Some((st, reason, message)) if st == "False" && message.contains(expect) => {
                    let stalled =
                        harness::condition(&conditions, "Stalled").is_some_and(|c| c.0 == "True");
                    Ok((reason, message, stalled))
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// HTTPS behind a TLS front on loopback (rustls, a certificate from a private CA made with
/// openssl) running `git http-backend`: basic credentials and a bearer token from the
/// Secret, its `ca.crt` trusted for this source only; a wrong CA, no CA (the system's do
/// not know it), a wrong password and a wrong token are refused with a reason, never
/// sending the credentials to a server the CA does not vouch for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_and_basic_or_bearer_credentials() {
    let w = World::new("src-https").await;
    let (_, rules) = w.baseline();
    let pki = w.root.parent().unwrap().join("pki");
    let ca = TestCa::generate(&pki, "gatehouse test CA");
    let other = TestCa::generate(&pki, "some other CA");
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bot:s3cret")
    );
    let server = GitHttpServer::start_with(
        &w.root,
        ServeOptions {
            tls: Some(ca.server_certificate()),
            authorization: Some(basic),
        },
    );
    let url = server.url("access");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let secret = |data: serde_json::Value| {
        let yaml = serde_json::json!({"metadata": {"name": "repo-https"}, "stringData": data});
        let client = w.client.clone();
        let ns = w.ns.clone();
        async move {
            // Replace, not merge: a key left out must be gone.
            let api = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns);
            let _ = api.delete("repo-https", &Default::default()).await;
            harness::apply::<k8s_openapi::api::core::v1::Secret>(&client, &ns, &yaml.to_string())
                .await;
        }
    };

    // The wrong CA: refused at the TLS handshake, before any credential is sent.
    secret(serde_json::json!({"username": "bot", "password": "s3cret", "ca.crt": other.cert_pem}))
        .await;
    w.source(&url, "  secretRef: {name: repo-https}\n").await;
    let (reason, message, stalled) = not_ready(&w, "TLS certificate of 127.0.0.1 is refused").await;
    assert_eq!(reason, "FetchFailed", "{message}");
    assert!(stalled, "a person must act: {message}");
    assert!(
        message.contains(&format!("key \"ca.crt\" of Secret {}/repo-https", w.ns))
            && message.contains("UnknownIssuer"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    assert_eq!(server.requests(), 0, "no HTTP request reached the server");
    assert!(w.names::<Identity>().await.is_empty());

    // The right CA, and basic credentials: applied.
    secret(serde_json::json!({"username": "bot", "password": "s3cret", "ca.crt": ca.cert_pem}))
        .await;
    w.applied(&rules).await;
    assert_eq!(w.names::<Identity>().await, ["alice", "bob"]);
    assert!(
        server.unauthorized() >= 1,
        "libgit2 answered the Basic challenge"
    );

    // No ca.crt: the system's CAs do not know this one.
    secret(serde_json::json!({"username": "bot", "password": "s3cret"})).await;
    let (_, message, stalled) = not_ready(&w, "not trusted by the system's CA certificates").await;
    assert!(stalled, "{message}");
    assert!(
        message.contains(&format!("commit {} stays in force", &rules[..12])),
        "{message}"
    );

    // A wrong password.
    secret(serde_json::json!({"username": "bot", "password": "wrong", "ca.crt": ca.cert_pem}))
        .await;
    let (_, message, _) = not_ready(&w, "refused the credentials").await;
    assert!(!message.contains("wrong"), "{message}");

    // A bearer token, sent with every request (the server never challenges it).
    let bearer = GitHttpServer::start_with(
        &w.root,
        ServeOptions {
            tls: Some(ca.server_certificate()),
            authorization: Some("Bearer t0ken-123".into()),
        },
    );
    secret(serde_json::json!({"bearerToken": "t0ken-123", "ca.crt": ca.cert_pem})).await;
    w.repo.write(
        "tenants/acme/identities/carol.yaml",
        &person("carol", "finance"),
    );
    let carol = w.repo.commit("carol", HR, Some(&w.hr));
    w.source(&bearer.url("access"), "  secretRef: {name: repo-https}\n")
        .await;
    w.applied(&carol).await;
    assert_eq!(w.names::<Identity>().await, ["alice", "bob", "carol"]);
    assert_eq!(
        bearer.unauthorized(),
        0,
        "the token went with every request"
    );
    assert!(bearer.requests() >= 2, "polled and fetched over HTTPS");

    // A wrong token: the server's 401 names the key to fix, never the token.
    secret(serde_json::json!({"bearerToken": "expired-token", "ca.crt": ca.cert_pem})).await;
    let (_, message, stalled) = not_ready(&w, "refused the bearer token").await;
    assert!(stalled, "{message}");
    assert!(
        message.contains("key \"bearerToken\"") && !message.contains("expired-token"),
        "{message}"
    );
}

/// A SHA-256 repository (`git init --object-format=sha256`, whose commits carry
/// `gpgsig-sha256`) cannot be read by libgit2: refused as a configuration error that says
/// so, over `file://` and smart HTTP alike, not retried as an unreachable remote.
#[test]
fn sha256_repositories_are_refused_with_a_clear_reason() {
    use gatehouse::source::fetch::{self, FetchError, GitCredentials};
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    gitrepo::git(
        &served,
        &["init", "-q", "--object-format=sha256", "-b", "main", "r"],
    );
    let repo = Repo::open(&served.join("r"));
    for (key, value) in [("user.name", "T"), ("user.email", "t@example.org")] {
        gitrepo::git(repo.path(), &["config", key, value]);
    }
    repo.write("identities/a.yaml", &person("a", "finance"));
    repo.commit("a", HR, None);
    let server = GitHttpServer::start(&served);
    let cache = fetch::open_cache(&dir.path().join("cache"), "ns", "s").unwrap();
    let git_ref = gatehouse::api::GitRef {
        branch: Some("main".into()),
        tag: None,
    };
    for url in [repo.url_file(), server.url("r")] {
        for result in [
            fetch::remote_head(&cache, &url, &git_ref, &GitCredentials::default()),
            fetch::fetch(&cache, &url, &git_ref, &GitCredentials::default()),
        ] {
            match result {
                Err(FetchError::Config(message)) => assert!(
                    message.contains("uses SHA-256 object names")
                        && message.contains("sync from a SHA-1 repository"),
                    "{message}"
                ),
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}

/// A break-glass Exception created outside Git is not this source's (no source label), so
/// prune leaves it; a Git commit of the same Exception ratifies it (the source applies it,
/// stamping provenance and the label, keeping the creator annotation), and from then on it
/// is Git's: removed from Git, it is pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_leaves_break_glass_made_outside_git_until_git_ratifies_it() {
    use gatehouse::api::Exception;
    let w = World::new("src-bg").await;
    let (_, rules) = w.baseline();
    w.source(&w.repo.url_file(), "").await;
    w.applied(&rules).await;
    let from = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(1);
    let until = from + jiff::SignedDuration::from_hours(2);
    let fmt = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let spec = format!(
        "spec: {{identity: alice, entitlements: [{{target: k8s, kind: ClusterRole, name: edit}}], justification: INC-9, requestedBy: alice, approvedBy: [], validFrom: '{}', expiresAt: '{}', breakGlass: true}}\n",
        fmt(from),
        fmt(until)
    );
    harness::apply::<Exception>(
        &w.client,
        &w.ns,
        &format!(
            "metadata: {{name: bg, annotations: {{gatehouse.dev/break-glass-by: ana}}}}\n{spec}"
        ),
    )
    .await;

    w.repo.remove("tenants/acme/identities/bob.yaml");
    let pruned = w.repo.commit("bob leaves Git", HR, Some(&w.hr));
    w.applied(&pruned).await;
    harness::eventually("bob pruned", Duration::from_secs(30), || async {
        match w.names::<Identity>().await {
            n if n == ["alice"] => Ok(()),
            n => Err(format!("{n:?}")),
        }
    })
    .await;
    assert_eq!(
        w.names::<Exception>().await,
        ["bg"],
        "prune left break-glass alone"
    );

    w.repo.write(
        "tenants/acme/exceptions/bg.yaml",
        &format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Exception\nmetadata: {{name: bg}}\n{spec}"
        ),
    );
    let ratified = w.repo.commit("ratify INC-9 break-glass", IAM, Some(&w.iam));
    w.applied(&ratified).await;
    let bg = Api::<Exception>::namespaced(w.client.clone(), &w.ns)
        .get("bg")
        .await
        .unwrap();
    let notes = bg.metadata.annotations.clone().unwrap();
    assert_eq!(notes[annotations::COMMIT], ratified);
    assert_eq!(notes[annotations::BREAK_GLASS_BY], "ana");
    assert_eq!(
        bg.metadata.labels.unwrap()[gatehouse::api::labels::SOURCE],
        "access"
    );

    w.repo.remove("tenants/acme/exceptions/bg.yaml");
    let gone = w.repo.commit("INC-9 closed", IAM, Some(&w.iam));
    w.applied(&gone).await;
    harness::eventually("bg pruned once Git's", Duration::from_secs(30), || async {
        match w.names::<Exception>().await {
            n if n.is_empty() => Ok(()),
            n => Err(format!("{n:?}")),
        }
    })
    .await;
}
