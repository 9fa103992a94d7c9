//! Webhooks as received, deduplicated per client account. Ignored ones keep a bounded prefix
//! with the digest and length of the whole, and are deleted after a while (`ingress::retention`).

use sha2::{Digest, Sha256};

use crate::ids::ClientId;
use crate::on_tx;

use super::{StoreError, Tx};

#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub id: uuid::Uuid,
    pub client: ClientId,
    pub source: &'a str,
    pub dedup_key: &'a str,
    pub payload: &'a str,
    pub received_at: i64,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
}

/// Bytes of an ignored event's payload that are kept: enough to see what it was.
pub const IGNORED_PREFIX_BYTES: usize = 2048;

/// What is stored of a payload: all of it, or for an ignored event longer than
/// [`IGNORED_PREFIX_BYTES`], a prefix (cut on a character boundary) with the whole's SHA-256
/// (hex) and length.
pub(super) fn kept<'a>(outcome: &str, payload: &'a str) -> (&'a str, Option<String>, Option<i64>) {
    if outcome != "ignored" || payload.len() <= IGNORED_PREFIX_BYTES {
        return (payload, None, None);
    }
    let mut end = IGNORED_PREFIX_BYTES;
    while !payload.is_char_boundary(end) {
        end -= 1;
    }
    let digest = hex::encode(Sha256::digest(payload.as_bytes()));
    (&payload[..end], Some(digest), i64::try_from(payload.len()).ok())
}

/// Stores the event unless one with the same key was stored before; `false` for a duplicate.
pub async fn insert(tx: &mut Tx, event: &NewEvent<'_>) -> Result<bool, StoreError> {
    let (payload, sha256, bytes) = kept(event.outcome, event.payload);
    let done = on_tx!(tx, c => sqlx::query(
        "INSERT INTO inbound_events (id, client_id, source, dedup_key, payload, received_at, outcome, detail, \
         payload_sha256, payload_bytes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (client_id, dedup_key) DO NOTHING",
    )
    .bind(event.id)
    .bind(event.client)
    .bind(event.source)
    .bind(event.dedup_key)
    .bind(payload)
    .bind(event.received_at)
    .bind(event.outcome)
    .bind(event.detail)
    .bind(sha256.as_deref())
    .bind(bytes)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// When Kommo's Digital Pipeline action last reached this client account (its events' dedup
/// keys start `kommo:dp:`; they are never ignored, so retention keeps them).
pub async fn last_digital_pipeline_call(tx: &mut Tx, client: ClientId) -> Result<Option<i64>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_scalar(
        "SELECT MAX(received_at) FROM inbound_events WHERE client_id = $1 AND source = 'kommo' \
         AND dedup_key LIKE 'kommo:dp:%'",
    )
    .bind(client)
    .fetch_one(c)
    .await)?)
}

/// The id of the event stored under `dedup_key`: the original a duplicate repeats.
pub async fn id_by_dedup(
    tx: &mut Tx,
    client: ClientId,
    dedup_key: &str,
) -> Result<Option<uuid::Uuid>, StoreError> {
    Ok(
        on_tx!(tx, c => sqlx::query_scalar("SELECT id FROM inbound_events WHERE client_id = $1 AND dedup_key = $2")
        .bind(client)
        .bind(dedup_key)
        .fetch_optional(c)
        .await)?,
    )
}

/// Whether the token hash still belongs to the client: checked in the transaction that stores
/// a webhook, so a rotated or deleted token stops working at once, whatever any cache says.
pub async fn token_is_current(tx: &mut Tx, client: ClientId, token_hash: &[u8]) -> Result<bool, StoreError> {
    let found: Option<i64> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT CAST(1 AS BIGINT) FROM clients WHERE id = $1 AND ingress_token_hash = $2",
    )
    .bind(client)
    .bind(token_hash)
    .fetch_optional(c)
    .await)?;
    Ok(found.is_some())
}

/// Deletes up to `limit` ignored events received before `before` (ms) that no job refers to;
/// how many went. Bounded, so each pass is a short transaction.
pub async fn delete_ignored_before(tx: &mut Tx, before: i64, limit: i64) -> Result<u64, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query(
        "DELETE FROM inbound_events WHERE id IN (SELECT e.id FROM inbound_events e \
         WHERE e.outcome = 'ignored' AND e.received_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.client_id = e.client_id AND j.event_id = e.id) \
         LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_payloads_keep_a_bounded_prefix_and_the_digest_of_the_whole() {
        let big = "é".repeat(5_000);
        let (prefix, sha, bytes) = kept("ignored", &big);
        assert!(prefix.len() <= IGNORED_PREFIX_BYTES && prefix.len() > IGNORED_PREFIX_BYTES - 4);
        assert!(big.starts_with(prefix));
        assert_eq!(sha, Some(hex::encode(Sha256::digest(big.as_bytes()))));
        assert_eq!(bytes, Some(10_000));
        assert_eq!(kept("queued", &big), (big.as_str(), None, None), "acted on: kept whole");
        assert_eq!(kept("ignored", "small"), ("small", None, None));
    }
}
