//! What the pipeline did for one client account, as the API and the web app show it: the
//! timeline, the jobs, replaying dead ones, the pause, and the payments received per day.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;

use super::audit;
use crate::auth::Access;
use crate::clock::{now_ms, rfc3339};
use crate::error::{Error, Result};
use crate::ids::ClientId;
use crate::queue::Queue;
use crate::roles::Role;
use crate::store::activity::{ActivityKind, ActivityRow, Filter};
use crate::store::jobs::JobState;
use crate::store::{self, Db, Tx};

/// Activity kinds' stored words, in the order the pipeline meets them (for filters and docs).
/// A test checks it names every `ActivityKind`.
pub const KINDS: &[&str] = &[
    "received",
    "ignored",
    "link_created",
    "link_reused",
    "link_disabled",
    "note_posted",
    "payment_verified",
    "deal_closed",
    "payment_rejected",
    "payment_failed",
    "payment_unknown",
    "failure",
    "paused",
    "dead",
];

/// An activity kind's stored word as people say it; "Other" for a word that is no kind.
pub fn kind_words(kind: &str) -> &'static str {
    kind.parse::<ActivityKind>().map(words_for).unwrap_or("Other")
}

/// An activity kind as people say it; a new kind does not compile until it has its words.
pub fn words_for(kind: ActivityKind) -> &'static str {
    match kind {
        ActivityKind::Received => "Webhook received",
        ActivityKind::Ignored => "Webhook ignored",
        ActivityKind::LinkCreated => "Payment link created",
        ActivityKind::LinkReused => "Payment link reused",
        ActivityKind::LinkDisabled => "Payment link disabled",
        ActivityKind::NotePosted => "Payment link sent",
        ActivityKind::PaymentVerified => "Payment verified",
        ActivityKind::DealClosed => "Deal won",
        ActivityKind::PaymentRejected => "Payment rejected",
        ActivityKind::PaymentFailed => "Payment failed",
        ActivityKind::PaymentUnknown => "Payment not confirmed",
        ActivityKind::Failure => "Something failed",
        ActivityKind::Paused => "Paused",
        ActivityKind::Dead => "Gave up",
    }
}

/// Activity outcomes' stored words. A test checks it names every `ActivityOutcome`.
pub const OUTCOMES: &[&str] = &["ok", "ignored", "failed", "refused"];

#[cfg(test)]
mod words {
    use std::collections::HashSet;

    use crate::store::activity::{ActivityKind, ActivityOutcome};

    #[test]
    fn every_kind_has_its_own_words() {
        let words: HashSet<_> = super::KINDS.iter().map(|k| super::kind_words(k)).collect();
        assert_eq!(words.len(), super::KINDS.len());
        assert!(!words.contains("Other"));
        assert_eq!(super::kind_words("deal_closed"), "Deal won");
        assert_eq!(super::kind_words("note_posted"), "Payment link sent");
        assert_eq!(super::kind_words("no_such_kind"), "Other");
    }

    #[test]
    fn the_filter_lists_name_every_kind_and_outcome_once() {
        let kinds: Vec<&str> = ActivityKind::ALL.iter().map(|k| k.as_str()).collect();
        let listed: HashSet<&str> = super::KINDS.iter().copied().collect();
        assert_eq!(listed.len(), super::KINDS.len());
        assert_eq!(listed, kinds.into_iter().collect::<HashSet<_>>());
        let outcomes: HashSet<&str> = ActivityOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(super::OUTCOMES.iter().copied().collect::<HashSet<_>>(), outcomes);
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActivityEntry {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub at: String,
    /// received, ignored, link_created, link_reused, link_disabled, note_posted, payment_verified,
    /// deal_closed, payment_rejected, payment_failed, payment_unknown, failure, paused, dead.
    pub kind: String,
    /// ok, ignored, failed or refused.
    pub outcome: String,
    pub lead_id: Option<i64>,
    pub tx_ref: Option<String>,
    pub detail: String,
    /// Milliseconds since the epoch, for pages that format the time themselves.
    #[serde(skip)]
    pub at_ms: i64,
}

impl From<ActivityRow> for ActivityEntry {
    fn from(row: ActivityRow) -> ActivityEntry {
        ActivityEntry {
            id: row.id,
            at: rfc3339(row.at),
            at_ms: row.at,
            kind: row.kind.as_str().to_owned(),
            outcome: row.outcome.as_str().to_owned(),
            lead_id: row.lead_id.map(|l| l.0),
            tx_ref: row.tx_ref.map(|t| t.0),
            detail: row.detail,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// lead, payment or reconcile.
    pub kind: String,
    /// ready, running, done, dead or paused.
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
    pub run_at: String,
    pub created_at: String,
    #[serde(skip)]
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PipelineStatus {
    /// Why the client account's jobs wait for a person, if they do.
    pub paused: Option<Paused>,
    /// Job counts by state.
    #[schema(value_type = Object)]
    pub jobs: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Paused {
    pub reason: String,
    pub since: String,
}

/// Payments closed on one UTC day in one currency, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayTotal {
    pub day: NaiveDate,
    pub currency: String,
    pub total: Decimal,
    pub payments: usize,
}

/// The client account must be the agency's before anything about it is read: another agency's
/// id is a 404, like a missing one.
async fn own(tx: &mut Tx, access: &Access, client: ClientId) -> Result<()> {
    store::clients::get(tx, access.agency, client).await?.ok_or(Error::NotFound)?;
    Ok(())
}

/// The timeline, newest first; `limit` is clamped to 1-500.
pub async fn activity(
    db: &Db,
    access: &Access,
    client: ClientId,
    filter: &Filter,
    limit: i64,
) -> Result<Vec<ActivityEntry>> {
    let mut tx = db.read().await?;
    own(&mut tx, access, client).await?;
    let rows = store::activity::list(&mut tx, client, filter, limit.clamp(1, 500)).await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(ActivityEntry::from).collect())
}

/// The jobs, newest first, optionally only those in `state`; `limit` is clamped to 1-500.
pub async fn jobs(
    db: &Db,
    access: &Access,
    client: ClientId,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<JobView>> {
    let mut tx = db.read().await?;
    own(&mut tx, access, client).await?;
    // A state no job can be in matches no job, as the text comparison it replaces did.
    let Ok(state) = state.map(str::parse::<JobState>).transpose() else { return Ok(Vec::new()) };
    let rows = store::jobs::list(&mut tx, client, state, limit.clamp(1, 500)).await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|r| JobView {
            id: r.id,
            kind: r.kind,
            state: r.state.as_str().to_owned(),
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            last_error: r.last_error,
            run_at: rfc3339(r.run_at),
            created_at: rfc3339(r.created_at),
            created_at_ms: r.created_at,
        })
        .collect())
}

/// Runs a dead job again with a fresh set of attempts (admins and owners).
pub async fn replay(
    db: &Db,
    queue: &Queue,
    access: &Access,
    client: ClientId,
    job: uuid::Uuid,
) -> Result<()> {
    let mut tx = db.write().await?;
    own(&mut tx, access, client).await?;
    // Looked up before the role check so another client's job is a 404 for everyone.
    let found = store::jobs::state_of(&mut tx, client, job).await?.ok_or(Error::NotFound)?;
    access.require(Role::Admin)?;
    if found != JobState::Dead || !store::jobs::replay(&mut tx, client, job, now_ms()).await? {
        return Err(Error::conflict("job", format!("only a dead job can be replayed; this one is {found}")));
    }
    audit::record(&mut tx, access, Some(client), "job.replayed", json!({ "job": job })).await?;
    tx.commit().await?;
    queue.wake();
    Ok(())
}

/// Whether the pipeline runs for this client account, and its job counts.
pub async fn status(db: &Db, access: &Access, client: ClientId) -> Result<PipelineStatus> {
    let mut tx = db.read().await?;
    own(&mut tx, access, client).await?;
    let paused = store::jobs::pause_reason(&mut tx, client).await?;
    let counts = store::jobs::counts(&mut tx, client).await?;
    tx.commit().await?;
    Ok(PipelineStatus {
        paused: paused.map(|(reason, since)| Paused { reason, since: rfc3339(since) }),
        jobs: counts
            .into_iter()
            .map(|(state, n)| (state.as_str().to_owned(), serde_json::Value::from(n)))
            .collect(),
    })
}

/// Payments received per UTC day since `since` (ms), per currency, in day then currency
/// order. Days without payments are left out.
pub async fn payments_per_day(
    db: &Db,
    access: &Access,
    client: ClientId,
    since: i64,
) -> Result<Vec<DayTotal>> {
    let mut tx = db.read().await?;
    own(&mut tx, access, client).await?;
    let rows = store::overview::client_payments_since(&mut tx, access.agency, client, since).await?;
    tx.commit().await?;
    let mut days: BTreeMap<(NaiveDate, String), (Decimal, usize)> = BTreeMap::new();
    for (closed_at, amount, currency) in rows {
        // Stored as exact decimal text by the pipeline; a row that does not parse is skipped
        // rather than guessed at.
        let (Ok(amount), Some(at)) =
            (amount.parse::<Decimal>(), chrono::DateTime::from_timestamp_millis(closed_at))
        else {
            continue;
        };
        let total = days.entry((at.date_naive(), currency)).or_insert((Decimal::ZERO, 0));
        total.0 += amount;
        total.1 += 1;
    }
    Ok(days
        .into_iter()
        .map(|((day, currency), (total, payments))| DayTotal { day, currency, total, payments })
        .collect())
}
