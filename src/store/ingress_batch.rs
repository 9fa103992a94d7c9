//! The statements of the ingress's group commit: one batch of webhooks stored in one
//! transaction, each step one statement for the whole batch. On PostgreSQL the rows travel as
//! arrays (`UNNEST`), because every round trip to the server costs as much as the work. On
//! SQLite they travel as one JSON array read by `json_each`: SQLite runs in the process, but
//! sqlx runs each statement on the connection's own thread, so a statement per row costs two
//! thread hand-offs per row, which the profile showed to be most of a batch's time. One JSON
//! text also keeps the statement's SQL the same whatever the batch's size, so it is prepared
//! once and then reused from the connection's statement cache.

use std::collections::HashSet;

use crate::ids::{ClientId, TxRef};

use super::activity::ActivityRow;
use super::events::{self, NewEvent};
use super::{StoreError, Tx};

/// One webhook of a batch, as the batch's check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub client: ClientId,
    /// The hash of the token it came with.
    pub token_hash: &'a [u8],
    /// A reference to look up among the client's payment links, if it matters.
    pub tx_ref: Option<&'a str>,
}

/// What the batch's check found for one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The token still belongs to the client: checked in the batch's transaction, so a token
    /// rotated or deleted a moment ago stores nothing.
    pub current: bool,
    /// Its reference is a payment link pipepay issued to that client.
    pub issued: bool,
}

/// Checks every webhook of a batch in one statement: is its token still its client's, and is
/// its reference one of that client's links.
pub async fn check(tx: &mut Tx, batch: &[Asked<'_>]) -> Result<Vec<Checked>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<(bool, bool)> = match tx {
        Tx::Postgres(t) => {
            let clients: Vec<uuid::Uuid> = batch.iter().map(|a| a.client.0).collect();
            let hashes: Vec<&[u8]> = batch.iter().map(|a| a.token_hash).collect();
            let refs: Vec<Option<&str>> = batch.iter().map(|a| a.tx_ref).collect();
            sqlx::query_as(
                "SELECT c.id IS NOT NULL, \
                        b.tx_ref IS NOT NULL AND EXISTS (SELECT 1 FROM payment_links p \
                                                         WHERE p.tx_ref = b.tx_ref AND p.client_id = b.client) \
                 FROM UNNEST($1::uuid[], $2::bytea[], $3::text[]) WITH ORDINALITY AS b(client, hash, tx_ref, n) \
                 LEFT JOIN clients c ON c.id = b.client AND c.ingress_token_hash = b.hash \
                 ORDER BY b.n",
            )
            .bind(&clients)
            .bind(&hashes)
            .bind(&refs)
            .fetch_all(&mut **t)
            .await?
        }
        Tx::Sqlite(t) => {
            let rows: Vec<_> =
                batch.iter().map(|a| (hex_id(a.client.0), hex::encode(a.token_hash), a.tx_ref)).collect();
            sqlx::query_as(
                "SELECT c.id IS NOT NULL, \
                        b.value->>2 IS NOT NULL AND EXISTS (SELECT 1 FROM payment_links p \
                                                            WHERE p.tx_ref = b.value->>2 \
                                                              AND p.client_id = unhex(b.value->>0)) \
                 FROM json_each($1) AS b \
                 LEFT JOIN clients c ON c.id = unhex(b.value->>0) AND c.ingress_token_hash = unhex(b.value->>1) \
                 ORDER BY b.key",
            )
            .bind(json(&rows)?)
            .fetch_all(&mut **t)
            .await?
        }
    };
    if found.len() != batch.len() {
        return Err(StoreError::Corrupt(format!(
            "the ingress batch check answered {} rows for {} webhooks",
            found.len(),
            batch.len()
        )));
    }
    Ok(found.into_iter().map(|(current, issued)| Checked { current, issued }).collect())
}

/// A batch's rows as one JSON text, for `json_each` on SQLite.
pub(super) fn json<T: serde::Serialize>(rows: &T) -> Result<String, StoreError> {
    serde_json::to_string(rows)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a batch as JSON: {e}")))
}

/// An id as `json_each` carries it, for `unhex` to turn back into the stored blob.
pub(super) fn hex_id(id: uuid::Uuid) -> String {
    hex::encode(id.as_bytes())
}

/// Stores each event unless one with its key is stored already (before, or earlier in the same
/// batch), with its timeline entry (`timeline[i]` is `events[i]`'s); for each, whether it was
/// stored (`false`: a duplicate, whose entry is not added either).
pub async fn store(
    tx: &mut Tx,
    events: &[NewEvent<'_>],
    timeline: &[ActivityRow],
) -> Result<Vec<bool>, StoreError> {
    if events.len() != timeline.len() {
        return Err(StoreError::Corrupt(format!(
            "{} timeline entries for {} webhooks in an ingress batch",
            timeline.len(),
            events.len()
        )));
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }
    match tx {
        Tx::Postgres(t) => store_postgres(t, events, timeline).await,
        Tx::Sqlite(t) => {
            let stored = insert_events_sqlite(t, events).await?;
            let entries: Vec<&ActivityRow> =
                timeline.iter().zip(&stored).filter(|(_, stored)| **stored).map(|(row, _)| row).collect();
            insert_activity_sqlite(t, &entries).await?;
            Ok(stored)
        }
    }
}

/// Both inserts in one statement, so the batch costs one round trip to the server for them.
async fn store_postgres(
    t: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    batch: &[NewEvent<'_>],
    timeline: &[ActivityRow],
) -> Result<Vec<bool>, StoreError> {
    let kept: Vec<_> = batch.iter().map(|e| events::kept(e.outcome, e.payload)).collect();
    let ids: Vec<uuid::Uuid> = batch.iter().map(|e| e.id).collect();
    let clients: Vec<uuid::Uuid> = batch.iter().map(|e| e.client.0).collect();
    let sources: Vec<&str> = batch.iter().map(|e| e.source).collect();
    let keys: Vec<&str> = batch.iter().map(|e| e.dedup_key).collect();
    let payloads: Vec<&str> = kept.iter().map(|k| k.0).collect();
    let received: Vec<i64> = batch.iter().map(|e| e.received_at).collect();
    let outcomes: Vec<&str> = batch.iter().map(|e| e.outcome).collect();
    let details: Vec<Option<&str>> = batch.iter().map(|e| e.detail).collect();
    let digests: Vec<Option<&str>> = kept.iter().map(|k| k.1.as_deref()).collect();
    let bytes: Vec<Option<i64>> = kept.iter().map(|k| k.2).collect();
    let entry_ids: Vec<uuid::Uuid> = timeline.iter().map(|r| r.id).collect();
    let entry_clients: Vec<uuid::Uuid> = timeline.iter().map(|r| r.client_id.0).collect();
    let entry_at: Vec<i64> = timeline.iter().map(|r| r.at).collect();
    let kinds: Vec<&str> = timeline.iter().map(|r| r.kind.as_str()).collect();
    let entry_outcomes: Vec<&str> = timeline.iter().map(|r| r.outcome.as_str()).collect();
    let leads: Vec<Option<i64>> = timeline.iter().map(|r| r.lead_id.map(|l| l.0)).collect();
    let refs: Vec<Option<&str>> = timeline.iter().map(|r| r.tx_ref.as_ref().map(TxRef::as_str)).collect();
    let jobs: Vec<Option<uuid::Uuid>> = timeline.iter().map(|r| r.job_id).collect();
    let entry_details: Vec<&str> = timeline.iter().map(|r| r.detail.as_str()).collect();
    // WITH ORDINALITY keeps the batch's order, so of two with one key the first wins, as it
    // would one request after the other. The timeline entries join the events that went in,
    // so a duplicate adds none.
    let stored: Vec<uuid::Uuid> = sqlx::query_scalar(
        "WITH stored AS ( \
             INSERT INTO inbound_events (id, client_id, source, dedup_key, payload, received_at, outcome, \
                                         detail, payload_sha256, payload_bytes) \
             SELECT id, client_id, source, dedup_key, payload, received_at, outcome, detail, sha, bytes \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
                         $7::text[], $8::text[], $9::text[], $10::bigint[]) WITH ORDINALITY \
                  AS b(id, client_id, source, dedup_key, payload, received_at, outcome, detail, sha, bytes, n) \
             ORDER BY n \
             ON CONFLICT (client_id, dedup_key) DO NOTHING RETURNING id \
         ), entries AS ( \
             INSERT INTO activity (id, client_id, at, kind, outcome, lead_id, tx_ref, job_id, detail) \
             SELECT a.id, a.client_id, a.at, a.kind, a.outcome, a.lead_id, a.tx_ref, a.job_id, a.detail \
             FROM UNNEST($1::uuid[], $11::uuid[], $12::uuid[], $13::bigint[], $14::text[], $15::text[], \
                         $16::bigint[], $17::text[], $18::uuid[], $19::text[]) \
                  AS a(event_id, id, client_id, at, kind, outcome, lead_id, tx_ref, job_id, detail) \
             JOIN stored ON stored.id = a.event_id \
         ) \
         SELECT id FROM stored",
    )
    .bind(&ids)
    .bind(&clients)
    .bind(&sources)
    .bind(&keys)
    .bind(&payloads)
    .bind(&received)
    .bind(&outcomes)
    .bind(&details)
    .bind(&digests)
    .bind(&bytes)
    .bind(&entry_ids)
    .bind(&entry_clients)
    .bind(&entry_at)
    .bind(&kinds)
    .bind(&entry_outcomes)
    .bind(&leads)
    .bind(&refs)
    .bind(&jobs)
    .bind(&entry_details)
    .fetch_all(&mut **t)
    .await?;
    let stored: HashSet<uuid::Uuid> = stored.into_iter().collect();
    Ok(ids.iter().map(|id| stored.contains(id)).collect())
}

async fn insert_events_sqlite(
    t: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    batch: &[NewEvent<'_>],
) -> Result<Vec<bool>, StoreError> {
    let rows: Vec<_> = batch
        .iter()
        .map(|e| {
            let (payload, sha, bytes) = events::kept(e.outcome, e.payload);
            (
                hex_id(e.id),
                hex_id(e.client.0),
                e.source,
                e.dedup_key,
                payload,
                e.received_at,
                e.outcome,
                e.detail,
                sha,
                bytes,
            )
        })
        .collect();
    // json_each yields the array in order and the rows are inserted one after the other, so of
    // two with one key the first wins, as on PostgreSQL. (`WHERE true` tells SQLite's parser
    // the ON CONFLICT belongs to the INSERT, not a join.)
    let stored: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO inbound_events (id, client_id, source, dedup_key, payload, received_at, outcome, \
         detail, payload_sha256, payload_bytes) \
         SELECT unhex(value->>0), unhex(value->>1), value->>2, value->>3, value->>4, value->>5, \
                value->>6, value->>7, value->>8, value->>9 \
         FROM json_each($1) WHERE true ORDER BY key \
         ON CONFLICT (client_id, dedup_key) DO NOTHING RETURNING id",
    )
    .bind(json(&rows)?)
    .fetch_all(&mut **t)
    .await?;
    let stored: HashSet<uuid::Uuid> = stored.into_iter().collect();
    Ok(batch.iter().map(|e| stored.contains(&e.id)).collect())
}

async fn insert_activity_sqlite(
    t: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    rows: &[&ActivityRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                hex_id(r.id),
                hex_id(r.client_id.0),
                r.at,
                r.kind.as_str(),
                r.outcome.as_str(),
                r.lead_id.map(|l| l.0),
                r.tx_ref.as_ref().map(TxRef::as_str),
                r.job_id.map(hex_id),
                r.detail.as_str(),
            )
        })
        .collect();
    sqlx::query(
        "INSERT INTO activity (id, client_id, at, kind, outcome, lead_id, tx_ref, job_id, detail) \
         SELECT unhex(value->>0), unhex(value->>1), value->>2, value->>3, value->>4, value->>5, \
                value->>6, unhex(value->>7), value->>8 \
         FROM json_each($1) ORDER BY key",
    )
    .bind(json(&rows)?)
    .execute(&mut **t)
    .await?;
    Ok(())
}
