//! Leader election over a coordination.k8s.io Lease (kube-lease-manager): every replica
//! keeps its caches warm, only the leader reconciles and writes.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// How to take part in the election.
#[derive(Clone, Debug)]
pub struct LeaderOptions {
    /// Name of the Lease.
    pub lease: String,
    /// Namespace of the Lease (the controller's own).
    pub namespace: String,
    /// This replica's name in the Lease (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal: the longest a crashed leader keeps others
    /// waiting.
    pub duration: Duration,
}

/// This replica's part in the election.
pub struct Election {
    /// Whether this replica leads now.
    pub leading: watch::Receiver<bool>,
    /// The Lease keeper. Once every receiver of `leading` is dropped it releases the Lease
    /// and ends: await it at shutdown, so that a standby takes over at once.
    pub released: tokio::task::JoinHandle<()>,
}

/// Joins the election.
pub async fn elect(client: Client, options: &LeaderOptions) -> anyhow::Result<Election> {
    let duration = options.duration.as_secs().max(2);
    // Renew when a third of the lease is left, as client-go's defaults do (15 s / 10 s).
    let grace = (duration / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &options.lease)
        .with_namespace(&options.namespace)
        .with_identity(&options.identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "leader election: cannot use Lease {}/{}: {e}",
                options.namespace,
                options.lease
            )
        })?;
    let (leading, task) = manager.watch().await;
    let released = tokio::spawn(async move {
        if let Ok(Err(error)) = task.await {
            tracing::error!(%error, "leader election stopped");
        }
    });
    Ok(Election { leading, released })
}
