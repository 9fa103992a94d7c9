//! The statements of the ingress's group commit: one batch of webhooks stored in one
//! transaction, each step one statement for the whole batch. On PostgreSQL the rows travel as
//! arrays (`UNNEST`), because every round trip to the server costs as much as the work. On
//! SQLite they travel as one JSON array read by `json_each`: SQLite runs in the process, but
//! sqlx runs each statement on the connection's own thread, so a statement per row costs two
//! thread hand-offs per row, which the profile showed to be most of a batch's time. One JSON
//! text also keeps the statement's SQL the same whatever the batch's size, so it is prepared
//! once and then reused from the connection's statement cache.

use std::collections::{HashMap, HashSet};

use crate::ids::{ClientId, TxRef};

use super::activity::ActivityRow;
use super::events::{self, NewEvent};
use super::{StoreError, Tx};

/// For each `(client, token hash)`, whether the hash still belongs to the client: checked in
/// the batch's transaction, so a token rotated or deleted a moment ago stores nothing.
pub async fn current_tokens(tx: &mut Tx, tokens: &[(ClientId, &[u8])]) -> Result<Vec<bool>, StoreError> {
    match tx {
        Tx::Postgres(t) => {
            let clients: Vec<uuid::Uuid> = tokens.iter().map(|(c, _)| c.0).collect();
            let current: Vec<(uuid::Uuid, Vec<u8>)> =
                sqlx::query_as("SELECT id, ingress_token_hash FROM clients WHERE id = ANY($1)")
                    .bind(&clients)
                    .fetch_all(&mut **t)
                    .await?;
            Ok(tokens.iter().map(|(c, hash)| current.iter().any(|(id, h)| *id == c.0 && h == hash)).collect())
        }
        Tx::Sqlite(t) => {
            let clients: Vec<String> = tokens.iter().map(|(c, _)| hex::encode(c.0.as_bytes())).collect();
            let current: HashMap<uuid::Uuid, Vec<u8>> = sqlx::query_as(
                "SELECT id, ingress_token_hash FROM clients WHERE id IN (SELECT unhex(value) FROM json_each($1))",
            )
            .bind(json(&clients)?)
            .fetch_all(&mut **t)
            .await?
            .into_iter()
            .collect();
            Ok(tokens.iter().map(|(c, hash)| current.get(&c.0).is_some_and(|h| h == hash)).collect())
        }
    }
}

/// A batch's rows as one JSON text, for `json_each` on SQLite.
fn json<T: serde::Serialize>(rows: &T) -> Result<String, StoreError> {
    serde_json::to_string(rows)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a batch as JSON: {e}")))
}

fn hex_id(id: uuid::Uuid) -> String {
    hex::encode(id.as_bytes())
}

/// For each `(client, tx_ref)`, whether it is a payment link pipepay issued to that client.
pub async fn issued_links(tx: &mut Tx, refs: &[(ClientId, &str)]) -> Result<Vec<bool>, StoreError> {
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let found: HashSet<(uuid::Uuid, String)> = match tx {
        Tx::Postgres(t) => {
            let wanted: Vec<String> = refs.iter().map(|(_, r)| (*r).to_owned()).collect();
            sqlx::query_as("SELECT client_id, tx_ref FROM payment_links WHERE tx_ref = ANY($1)")
                .bind(&wanted)
                .fetch_all(&mut **t)
                .await?
                .into_iter()
                .collect()
        }
        Tx::Sqlite(t) => {
            let wanted: Vec<&str> = refs.iter().map(|(_, r)| *r).collect();
            sqlx::query_as(
                "SELECT client_id, tx_ref FROM payment_links WHERE tx_ref IN (SELECT value FROM json_each($1))",
            )
            .bind(json(&wanted)?)
            .fetch_all(&mut **t)
            .await?
            .into_iter()
            .collect()
        }
    };
    Ok(refs.iter().map(|(c, r)| found.contains(&(c.0, (*r).to_owned()))).collect())
}

/// Stores each event unless one with its key is stored already (before, or earlier in the same
/// batch); for each, whether it was stored (`false`: a duplicate).
pub async fn insert_events(tx: &mut Tx, batch: &[NewEvent<'_>]) -> Result<Vec<bool>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    match tx {
        Tx::Postgres(t) => {
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
            // WITH ORDINALITY keeps the batch's order, so of two with one key the first wins,
            // as it would one request after the other.
            let stored: Vec<uuid::Uuid> = sqlx::query_scalar(
                "INSERT INTO inbound_events (id, client_id, source, dedup_key, payload, received_at, outcome, \
                 detail, payload_sha256, payload_bytes) \
                 SELECT id, client_id, source, dedup_key, payload, received_at, outcome, detail, sha, bytes \
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
                             $7::text[], $8::text[], $9::text[], $10::bigint[]) WITH ORDINALITY \
                      AS b(id, client_id, source, dedup_key, payload, received_at, outcome, detail, sha, bytes, n) \
                 ORDER BY n \
                 ON CONFLICT (client_id, dedup_key) DO NOTHING RETURNING id",
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
            .fetch_all(&mut **t)
            .await?;
            let stored: HashSet<uuid::Uuid> = stored.into_iter().collect();
            Ok(ids.iter().map(|id| stored.contains(id)).collect())
        }
        Tx::Sqlite(t) => {
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
            // json_each yields the array in order and the rows are inserted one after the
            // other, so of two with one key the first wins, as on PostgreSQL. (`WHERE true`
            // tells SQLite's parser the ON CONFLICT belongs to the INSERT, not a join.)
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
    }
}

/// Adds the timeline entries.
pub async fn insert_activity(tx: &mut Tx, rows: &[ActivityRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Postgres(t) => {
            let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
            let clients: Vec<uuid::Uuid> = rows.iter().map(|r| r.client_id.0).collect();
            let at: Vec<i64> = rows.iter().map(|r| r.at).collect();
            let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
            let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
            let leads: Vec<Option<i64>> = rows.iter().map(|r| r.lead_id.map(|l| l.0)).collect();
            let refs: Vec<Option<&str>> = rows.iter().map(|r| r.tx_ref.as_ref().map(TxRef::as_str)).collect();
            let jobs: Vec<Option<uuid::Uuid>> = rows.iter().map(|r| r.job_id).collect();
            let details: Vec<&str> = rows.iter().map(|r| r.detail.as_str()).collect();
            sqlx::query(
                "INSERT INTO activity (id, client_id, at, kind, outcome, lead_id, tx_ref, job_id, detail) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], \
                                      $6::bigint[], $7::text[], $8::uuid[], $9::text[])",
            )
            .bind(&ids)
            .bind(&clients)
            .bind(&at)
            .bind(&kinds)
            .bind(&outcomes)
            .bind(&leads)
            .bind(&refs)
            .bind(&jobs)
            .bind(&details)
            .execute(&mut **t)
            .await?;
            Ok(())
        }
        Tx::Sqlite(t) => {
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
    }
}
