//! Leases on named background duties: one holder at a time, taken over once lapsed.

use crate::on_tx;

use super::{StoreError, Tx};

/// Takes `name` for `holder` until `until`, or renews it, unless another holder's lease is
/// still running at `now`. One statement, so two instances racing for a lapsed lease cannot
/// both win: the loser's conditional update matches no row. Returns whether `holder` has it.
pub async fn take(tx: &mut Tx, name: &str, holder: &str, now: i64, until: i64) -> Result<bool, StoreError> {
    let taken = on_tx!(tx, c => sqlx::query(
        "INSERT INTO background_leases (name, holder, until_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
         WHERE background_leases.holder = excluded.holder OR background_leases.until_ms < $4",
    )
    .bind(name)
    .bind(holder)
    .bind(until)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(taken == 1)
}

/// Gives the lease up (on a clean stop), so another instance need not wait for it to lapse.
pub async fn release(tx: &mut Tx, name: &str, holder: &str) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("DELETE FROM background_leases WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The current holder and when its lease ends, if anyone holds it.
pub async fn holder(tx: &mut Tx, name: &str) -> Result<Option<(String, i64)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as("SELECT holder, until_ms FROM background_leases WHERE name = $1")
        .bind(name)
        .fetch_optional(c)
        .await)?)
}
