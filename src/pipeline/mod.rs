//! The payment pipeline: what each job does. `lead` turns a lead in a trigger stage into a
//! payment link (and a lost lead into a disabled one), `payment` turns a verified payment into
//! a won deal, `reconcile` finds payments whose webhook never came.
//!
//! Every step records its outcome before the next starts (the link row before the note, the
//! closing before the payment note), and every external write is either idempotent (moving a
//! lead to won twice is harmless) or guarded by a record (a note already marked posted is not
//! posted again). A job can therefore be run again after a crash at any point.

mod activity;
mod lead;
mod notes;
mod payment;
pub mod reconcile;
pub mod request;

use std::sync::Arc;
use std::time::Duration;

pub use self::activity::Activity;
use crate::flutterwave::client::{Flutterwave, FlutterwaveError};
use crate::ids::{AgencyId, ClientId};
use crate::kommo::{Kommo, KommoError};
use crate::queue::{Outcome, Queue, worker::Handler};
use crate::store::jobs::JobRow;
use crate::store::{self, Db, StoreError};
use crate::telemetry::metrics::{kv, metrics};
use crate::tenants::flutterwave_keys::SECRET_KEY;
use crate::tenants::secrets;
use crate::tenants::settings::ClientSettings;
use crate::vault::{Secret, Vault};
use tracing::Instrument;

pub mod kinds {
    pub const LEAD: &str = "lead";
    pub const PAYMENT: &str = "payment";
    pub const RECONCILE: &str = "reconcile";
}

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

/// A retry the step expected, which the timeline does not hear of each time: the step writes
/// one entry when it stops waiting.
pub(crate) struct Waiting {
    pub reason: String,
    pub after: Duration,
}

/// A job's client account, as the steps need it.
pub(crate) struct Tenant {
    pub id: ClientId,
    pub agency: AgencyId,
    /// For traces only: the steps go through the Kommo client, which reads the connection.
    pub kommo_account: Option<i64>,
    pub settings: ClientSettings,
    pub job: uuid::Uuid,
}

impl Handler for Pipeline {
    async fn handle(&self, job: &JobRow) -> Outcome {
        let started = std::time::Instant::now();
        let payload: serde_json::Value = match serde_json::from_str(&job.payload) {
            Ok(payload) => payload,
            Err(error) => {
                return Outcome::Dead { error: format!("the job's payload does not parse: {error}") };
            }
        };
        let tenant = match self.tenant(job).await {
            Ok(Some(tenant)) => tenant,
            Ok(None) => return Outcome::Dead { error: "the client account no longer exists".into() },
            Err(error) => return Outcome::Retry { error: error.to_string(), after: None },
        };
        // One span per attempt, in the trace of the webhook that caused the job. It names the
        // tenant and agency at creation, so every span inside it is routed to that agency.
        let span = tracing::info_span!(
            "job",
            otel.name = %format!("job {}", job.kind),
            otel.status_code = tracing::field::Empty,
            pipepay.client_id = %tenant.id,
            pipepay.agency_id = %tenant.agency,
            pipepay.job.kind = %job.kind,
            pipepay.job.attempt = job.attempts,
            pipepay.lead_id = payload["lead_id"].as_i64(),
            pipepay.tx_ref = payload["tx_ref"].as_str(),
            pipepay.kommo.account_id = tenant.kommo_account,
            pipepay.outcome = tracing::field::Empty,
        );
        crate::telemetry::context::adopt(&span, job.trace.as_deref());
        let outcome = async {
            let outcome = match job.kind.as_str() {
                kinds::LEAD => self.lead(&tenant, &payload).await,
                kinds::PAYMENT => match self.payment(&tenant, job, &payload).await {
                    Ok(outcome) => outcome,
                    Err(Waiting { reason, after }) => {
                        return Outcome::Retry { error: reason, after: Some(after) };
                    }
                },
                kinds::RECONCILE => self.reconcile(&tenant).await,
                other => Outcome::Dead { error: format!("unknown job kind {other:?}") },
            };
            self.record_outcome(&tenant, job, &outcome).await;
            outcome
        }
        .instrument(span.clone())
        .await;
        let label = outcome_label(&outcome);
        span.record("pipepay.outcome", label);
        if !matches!(outcome, Outcome::Done) {
            span.record("otel.status_code", "ERROR");
        }
        let kind = job.kind.clone();
        metrics()
            .job_duration
            .record(started.elapsed().as_secs_f64(), &[kv("kind", kind), kv("outcome", label)]);
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
    async fn tenant(&self, job: &JobRow) -> Result<Option<Tenant>, StoreError> {
        let mut tx = self.db.read().await?;
        let row = store::clients::by_id(&mut tx, job.client_id).await?;
        let kommo_account = store::kommo::connection(&mut tx, job.client_id).await?.map(|c| c.account_id);
        tx.commit().await?;
        Ok(row.and_then(|row| {
            let settings = serde_json::from_str(&row.settings).ok()?;
            Some(Tenant { id: row.id, agency: row.agency_id, kommo_account, settings, job: job.id })
        }))
    }

    /// The client account's Flutterwave secret key, or the pause that waits for one.
    async fn secret_key(&self, tenant: &Tenant) -> Result<Secret, Outcome> {
        let opened = async {
            let mut tx = self.db.read().await?;
            let key = secrets::open(&mut tx, &self.vault, tenant.id, SECRET_KEY).await?;
            tx.commit().await?;
            Ok::<_, crate::error::Error>(key)
        };
        match opened.await {
            Ok(Some(key)) => Ok(key),
            Ok(None) => Err(Outcome::Pause { reason: "the Flutterwave keys are not set".into() }),
            Err(error) => Err(Outcome::Retry { error: error.to_string(), after: None }),
        }
    }

    /// Failures and dead ends go on the timeline; successes are recorded by the steps.
    async fn record_outcome(&self, tenant: &Tenant, job: &JobRow, outcome: &Outcome) {
        let (kind, detail) = match outcome {
            Outcome::Done => return,
            Outcome::Retry { error, .. } if job.attempts >= job.max_attempts => {
                ("dead", format!("gave up after {} attempts: {error}", job.attempts))
            }
            Outcome::Retry { error, .. } => {
                ("failure", format!("will retry (attempt {}): {error}", job.attempts))
            }
            Outcome::Pause { reason } => ("paused", format!("waiting for a person: {reason}")),
            Outcome::Dead { error } => ("dead", error.clone()),
        };
        Activity::new(tenant, kind, "failed").detail(detail).record(&self.db).await;
    }
}

/// What a Kommo failure means for the job.
pub(crate) fn kommo_outcome(error: KommoError) -> Outcome {
    match error {
        KommoError::NotConnected => Outcome::Pause { reason: "Kommo is not connected".into() },
        KommoError::Revoked => Outcome::Pause { reason: "Kommo access was revoked (uninstalled)".into() },
        KommoError::NeedsReauth(why) => Outcome::Pause { reason: why },
        KommoError::PaymentRequired => {
            Outcome::Pause { reason: "the Kommo account's subscription has ended".into() }
        }
        KommoError::Config(why) => Outcome::Pause { reason: why },
        KommoError::RateLimited { retry_after } => {
            Outcome::Retry { error: "Kommo asked to slow down".into(), after: Some(retry_after) }
        }
        // An IP block lifts by itself after a while; hammering it would extend it.
        KommoError::Blocked(why) => Outcome::Retry {
            error: format!("Kommo refuses requests: {why}"),
            after: Some(Duration::from_secs(600)),
        },
        KommoError::Rejected { status, detail } => {
            Outcome::Dead { error: format!("Kommo refused ({status}): {detail}") }
        }
        other => Outcome::Retry { error: other.to_string(), after: None },
    }
}

/// What a Flutterwave failure means for the job.
pub(crate) fn flutterwave_outcome(error: FlutterwaveError) -> Outcome {
    match error {
        FlutterwaveError::Unauthorized => {
            Outcome::Pause { reason: "Flutterwave refused the secret key; paste the current keys".into() }
        }
        FlutterwaveError::RateLimited { retry_after } => {
            Outcome::Retry { error: "Flutterwave asked to slow down".into(), after: Some(retry_after) }
        }
        FlutterwaveError::Rejected { status, message } => {
            Outcome::Dead { error: format!("Flutterwave refused ({status}): {message}") }
        }
        FlutterwaveError::Invalid(why) => Outcome::Dead { error: format!("not sent to Flutterwave: {why}") },
        other => Outcome::Retry { error: other.to_string(), after: None },
    }
}
