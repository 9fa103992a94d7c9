//! Background care of Kommo connections: idle ones are refreshed before Kommo's three-month
//! refresh-token expiry can end them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Kommo;
use super::tokens::IDLE_REFRESH;
use crate::background::{self, Lease};

/// How often to look for idle connections.
const EVERY: Duration = Duration::from_secs(3600);

/// Refreshes idle connections every hour while this instance holds the background lease.
pub async fn run(kommo: Arc<Kommo>, lease: Arc<Lease>, stop: CancellationToken) {
    // A little after start, so a fleet restarting together does not refresh in lockstep.
    let first = Duration::from_secs(30 + u64::from(rand::random::<u8>()));
    background::every(lease, first, EVERY, stop, || async {
        match kommo.refresh_idle(IDLE_REFRESH).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "refreshed idle Kommo connections"),
            Err(error) => tracing::warn!(%error, "scheduled Kommo refresh failed"),
        }
    })
    .await
}
