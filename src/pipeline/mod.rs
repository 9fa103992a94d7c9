//! The payment pipeline: what each job does. `lead` turns a lead in a trigger stage into a
//! payment link (and a lost lead into a disabled one), `payment` turns a verified payment into
//! a won deal, `reconcile` finds payments whose webhook never came.
//!
//! Every step records its outcome before the next starts (the link row before the note, the
//! closing before the payment note), and every external write is either idempotent (moving a
//! lead to won twice is harmless) or guarded by a record (a note already marked posted is not
//! posted again). A job can therefore be run again after a crash at any point.
//!
//! Steps return [`Step`] and use `?`: a failure becomes the job's outcome with its causes.

mod activity;
mod lead;
mod notes;
mod payment;
pub mod reconcile;
pub mod request;
mod step;

use std::sync::Arc;
use std::time::Duration;

pub use self::activity::Activity;
pub use self::step::chain;
pub(crate) use self::step::{Step, Stop, Waiting};
use crate::flutterwave::client::Flutterwave;
use crate::ids::{AgencyId, ClientId};
use crate::kommo::Kommo;
use crate::kommo::tokens::Session;
use crate::queue::job::JobError;
use crate::queue::{Job, Outcome, Queue, worker::Handler};
use crate::store::activity::{ActivityKind as Kind, ActivityOutcome as Turned};
use crate::store::jobs::JobRow;
use crate::store::pauses::PauseCause;
use crate::store::{self, Db};
use crate::telemetry::metrics::{kv, metrics};
use crate::tenants::flutterwave_keys::SECRET_KEY;
use crate::tenants::secrets;
use crate::tenants::settings::ClientSettings;
use crate::vault::{Secret, Vault};
use tracing::Instrument;

/// Runs `$body` in one write transaction on `$db`, committed if the body gets through (`?` in
/// it rolls back); a step's writes that belong together go through one of these.
macro_rules! write_tx {
    ($db:expr, $tx:ident => $body:expr) => {
        async {
            let mut $tx = $db.write().await?;
            let value = $body;
            $tx.commit().await?;
            Ok::<_, $crate::store::StoreError>(value)
        }
        .await
    };
}

/// [`write_tx!`] for reads: one consistent snapshot.
macro_rules! read_tx {
    ($db:expr, $tx:ident => $body:expr) => {
        async {
            let mut $tx = $db.read().await?;
            let value = $body;
            $tx.commit().await?;
            Ok::<_, $crate::store::StoreError>(value)
        }
        .await
    };
}

pub(crate) use {read_tx, write_tx};

pub struct Pipeline {
    pub db: Db,
    pub vault: Vault,
    pub kommo: Arc<Kommo>,
    pub flutterwave: Arc<Flutterwave>,
    pub queue: Queue,
    /// Links younger than this are left to their webhook by reconciliation.
    pub reconcile_after: Duration,
    /// How long after its webhook a transaction Flutterwave does not know is looked for again.
    pub unknown_transaction_window: Duration,
}

/// What one attempt at a job knows of its client account, read once when the attempt starts.
pub(crate) struct JobContext {
    pub client: ClientId,
    pub agency: AgencyId,
    /// For traces only.
    pub kommo_account: Option<i64>,
    /// The Kommo connection as this attempt holds it: read with the rest of the context, and
    /// read again only to refresh its token.
    pub kommo: Session,
    /// The Kommo account's currency: the last place a lead's currency is looked for.
    pub kommo_currency: Option<String>,
    pub settings: ClientSettings,
    pub job: uuid::Uuid,
    secret: Option<Secret>,
}

impl JobContext {
    /// The client account's Flutterwave secret key, or the pause that waits for one.
    pub fn secret(&self) -> Step<&Secret> {
        self.secret.as_ref().ok_or_else(|| {
            Stop::pause(PauseCause::FlutterwaveKeysMissing, "the Flutterwave keys are not set")
        })
    }
}

impl Handler for Pipeline {
    async fn handle(&self, job: &JobRow) -> Outcome {
        let (outcome, transactions) = store::counting(self.run(job)).await;
        tracing::debug!(job = %job.id, kind = %job.kind, transactions, "job attempt's transactions");
        outcome
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done => "done",
        Outcome::Retry { .. } => "retry",
        Outcome::Pause { .. } => "paused",
        Outcome::Dead { .. } => "dead",
    }
}

impl Pipeline {
    async fn run(&self, row: &JobRow) -> Outcome {
        let started = std::time::Instant::now();
        // An unknown kind is a dead end the timeline hears of; a payload that does not parse is
        // not even tied to a client account's settings.
        let job = match Job::parse(&row.kind, &row.payload) {
            Ok(job) => Ok(job),
            Err(error @ JobError::Payload(_)) => return Outcome::Dead { error: error.to_string() },
            Err(error @ JobError::UnknownKind(_)) => Err(error.to_string()),
        };
        let cx = match self.context(row).await {
            Ok(Some(cx)) => cx,
            Ok(None) => return Outcome::Dead { error: "the client account no longer exists".into() },
            Err(error) => return Outcome::Retry { error: chain(&error), after: None },
        };
        let (lead_id, tx_ref) = match &job {
            Ok(job) => (job.lead_id().map(|id| id.0), job.tx_ref().map(|t| t.as_str())),
            Err(_) => (None, None),
        };
        // One span per attempt, in the trace of the webhook that caused the job. It names the
        // tenant and agency at creation, so every span inside it is routed to that agency.
        let span = tracing::info_span!(
            "job",
            otel.name = %format!("job {}", row.kind),
            otel.status_code = tracing::field::Empty,
            pipepay.client_id = %cx.client,
            pipepay.agency_id = %cx.agency,
            pipepay.job.kind = %row.kind,
            pipepay.job.attempt = row.attempts,
            pipepay.lead_id = lead_id,
            pipepay.tx_ref = tx_ref,
            pipepay.kommo.account_id = cx.kommo_account,
            pipepay.outcome = tracing::field::Empty,
        );
        crate::telemetry::context::adopt(&span, row.trace.as_deref());
        let outcome = async {
            let ran = match &job {
                Ok(Job::Lead(lead)) => self.lead(&cx, lead).await,
                Ok(Job::Payment(payment)) => self.payment(&cx, row, payment).await,
                Ok(Job::Reconcile) => self.reconcile(&cx).await,
                Err(unknown) => Err(Stop::dead(unknown.clone())),
            };
            let outcome = match ran {
                Ok(()) => Outcome::Done,
                Err(Stop::End(outcome)) => outcome,
                Err(Stop::Wait(Waiting { reason, after })) => {
                    return Outcome::Retry { error: reason, after: Some(after) };
                }
            };
            self.record_outcome(&cx, row, &outcome).await;
            outcome
        }
        .instrument(span.clone())
        .await;
        let label = outcome_label(&outcome);
        span.record("pipepay.outcome", label);
        if !matches!(outcome, Outcome::Done) {
            span.record("otel.status_code", "ERROR");
        }
        let kind = row.kind.clone();
        metrics()
            .job_duration
            .record(started.elapsed().as_secs_f64(), &[kv("kind", kind), kv("outcome", label)]);
        outcome
    }

    /// The attempt's client account, its Kommo connection and its Flutterwave key, in one read.
    async fn context(&self, job: &JobRow) -> Result<Option<JobContext>, crate::error::Error> {
        let read = read_tx!(self.db, tx => match store::clients::by_id(&mut tx, job.client_id).await? {
            Some(row) => {
                let (kommo, connection) = Session::read(&mut tx, &self.vault, job.client_id).await?;
                let secret = secrets::open(&mut tx, &self.vault, job.client_id, SECRET_KEY).await;
                Some((row, kommo, connection, secret))
            }
            None => None,
        })?;
        let Some((row, kommo, connection, secret)) = read else { return Ok(None) };
        let Ok(settings) = serde_json::from_str(&row.settings) else { return Ok(None) };
        Ok(Some(JobContext {
            client: row.id,
            agency: row.agency_id,
            kommo_account: connection.as_ref().map(|c| c.account_id),
            kommo_currency: connection.and_then(|c| c.currency),
            kommo,
            settings,
            job: job.id,
            secret: secret?,
        }))
    }

    /// Failures and dead ends go on the timeline; successes are recorded by the steps.
    async fn record_outcome(&self, cx: &JobContext, job: &JobRow, outcome: &Outcome) {
        let (kind, detail) = match outcome {
            Outcome::Done => return,
            Outcome::Retry { error, .. } if job.attempts >= job.max_attempts => {
                (Kind::Dead, format!("gave up after {} attempts: {error}", job.attempts))
            }
            Outcome::Retry { error, .. } => {
                (Kind::Failure, format!("will retry (attempt {}): {error}", job.attempts))
            }
            Outcome::Pause { reason, .. } => (Kind::Paused, format!("waiting for a person: {reason}")),
            Outcome::Dead { error } => (Kind::Dead, error.clone()),
        };
        Activity::new(cx, kind, Turned::Failed).detail(detail).record(&self.db).await;
    }
}
