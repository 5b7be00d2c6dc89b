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

/// Joins the election. The receiver says whether this replica leads now; dropping it
/// releases the Lease.
pub async fn elect(
    client: Client,
    options: &LeaderOptions,
) -> anyhow::Result<watch::Receiver<bool>> {
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
    tokio::spawn(async move {
        if let Ok(Err(error)) = task.await {
            tracing::error!(%error, "leader election stopped");
        }
    });
    Ok(leading)
}
