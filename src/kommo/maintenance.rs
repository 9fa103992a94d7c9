//! Background care of Kommo connections: idle ones are refreshed before Kommo's three-month
//! refresh-token expiry can end them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Kommo;
use super::tokens::IDLE_REFRESH;

/// How often to look for idle connections.
const EVERY: Duration = Duration::from_secs(3600);

pub async fn run(kommo: Arc<Kommo>, stop: CancellationToken) {
    // A little after start, so a fleet restarting together does not refresh in lockstep.
    let first = Duration::from_secs(30 + u64::from(rand::random::<u8>()));
    let mut wait = first;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match kommo.refresh_idle(IDLE_REFRESH).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "refreshed idle Kommo connections"),
            Err(error) => tracing::warn!(%error, "scheduled Kommo refresh failed"),
        }
        wait = EVERY;
    }
}
