//! The picture of the gateway that the operator page, `/admin/snapshot`
//! and `castari-gateway status` show ([`model::Snapshot`]), built from the
//! gateway's own state ([`build`], [`keys`], [`replicas`]) by one sampler
//! task ([`sampler`]) that feeds the console's event stream.

pub mod build;
pub mod keys;
pub mod model;
pub mod replicas;
pub mod sampler;
pub mod template;

use crate::state::AppState;

/// Everything shown now, with the newest requests: what a new stream
/// starts from and what `/admin/snapshot` answers.
pub async fn full(state: &AppState) -> model::Snapshot {
    let mut snapshot = build::snapshot(state, None).await;
    if let Some(cluster) = &state.cluster {
        snapshot.cluster = Some(replicas::info(cluster, false).await);
    }
    snapshot.keys = keys::rows(state).await;
    snapshot
}
