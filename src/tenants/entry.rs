//! One timeline entry in full: the webhook behind it (secrets and personal data masked), the
//! job it belongs to with its attempts and last error, the job's other steps, and running the
//! job again, whatever became of it.

use serde_json::{Value, json};

use super::audit;
use crate::auth::Access;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::ids::{ClientId, TxRef};
use crate::queue::Queue;
use crate::queue::job::Job;
use crate::roles::Role;
use crate::store::activity::ActivityRow;
use crate::store::jobs::{JobRow, JobState};
use crate::store::timeline::EventRow;
use crate::store::{self, Db, Tx};
use crate::telemetry::calls::mask_json;

pub use crate::telemetry::calls::{Call, HIDDEN, sensitive};

/// A stored webhook body as people may read it: JSON pretty-printed, a form (Kommo's) one
/// field a line, each with sensitive values hidden. A body that is neither is not shown at all:
/// there is no telling what in it is secret.
pub fn masked(payload: &str) -> String {
    if let Ok(mut body) = serde_json::from_str::<Value>(payload) {
        mask_json(&mut body);
        return serde_json::to_string_pretty(&body).unwrap_or_default();
    }
    if payload.contains('=') && !payload.trim().contains(char::is_whitespace) {
        return url::form_urlencoded::parse(payload.as_bytes())
            .map(|(name, value)| {
                let value = if sensitive(&name) { HIDDEN.into() } else { value };
                format!("{name} = {value}")
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    "(not shown: the body is neither JSON nor a form)".to_owned()
}

#[derive(Debug, Clone)]
pub struct Event {
    pub source: String,
    pub received_at: i64,
    /// queued or ignored.
    pub outcome: String,
    pub detail: Option<String>,
    /// [`masked`].
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Detail {
    pub entry: ActivityRow,
    pub event: Option<Event>,
    pub job: Option<JobRow>,
    /// The job's timeline entries, oldest first.
    pub steps: Vec<ActivityRow>,
    /// The job's attempts (the latest ones), oldest first, each with the calls it made.
    pub attempts: Vec<Attempt>,
}

/// One attempt at the job and the Kommo and Flutterwave calls it made (masked when recorded).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub number: i64,
    pub started_at: i64,
    pub finished_at: i64,
    /// done | retry | paused | dead | lost | abandoned
    pub ended: String,
    pub calls: Vec<Call>,
    /// Calls past the cap, not kept.
    pub calls_dropped: i64,
}

/// The webhook behind an entry: its job's event, or for an entry the ingress wrote (it names
/// no job), the webhook received at the same instant about the same deal or payment.
async fn event_of(
    tx: &mut Tx,
    client: ClientId,
    entry: &ActivityRow,
    job: Option<&JobRow>,
) -> Result<Option<EventRow>> {
    if let Some(event) = job.and_then(|j| j.event_id) {
        return Ok(store::timeline::event(tx, client, event).await?);
    }
    if entry.job_id.is_some() {
        return Ok(None);
    }
    let about = entry.lead_id.map(|l| l.to_string()).or_else(|| entry.tx_ref.as_ref().map(TxRef::to_string));
    Ok(store::timeline::events_at(tx, client, entry.at)
        .await?
        .into_iter()
        .find(|e| about.as_deref().is_none_or(|a| e.payload.contains(a))))
}

async fn resolve(
    tx: &mut Tx,
    access: &Access,
    client: ClientId,
    id: uuid::Uuid,
) -> Result<(ActivityRow, Option<JobRow>, Option<EventRow>)> {
    store::clients::get(tx, access.agency, client).await?.ok_or(Error::NotFound)?;
    let entry = store::timeline::entry(tx, client, id).await?.ok_or(Error::NotFound)?;
    let mut job = match entry.job_id {
        Some(job) => store::timeline::job(tx, client, job).await?,
        None => None,
    };
    let event = event_of(tx, client, &entry, job.as_ref()).await?;
    if job.is_none()
        && let Some(event) = &event
    {
        job = store::timeline::job_of_event(tx, client, event.id).await?;
    }
    Ok((entry, job, event))
}

/// The entry `id` of the client account, in full.
pub async fn detail(db: &Db, access: &Access, client: ClientId, id: uuid::Uuid) -> Result<Detail> {
    let mut tx = db.read().await?;
    let (entry, job, event) = resolve(&mut tx, access, client, id).await?;
    let (steps, attempts) = match &job {
        Some(job) => (
            store::timeline::entries_of_job(&mut tx, client, job.id).await?,
            store::calls::of_job(&mut tx, client, job.id).await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    tx.commit().await?;
    Ok(Detail {
        entry,
        event: event.map(|e| Event {
            body: masked(&e.payload),
            source: e.source,
            received_at: e.received_at,
            outcome: e.outcome,
            detail: e.detail,
        }),
        job,
        steps,
        attempts: attempts
            .into_iter()
            .map(|a| Attempt {
                // Stored as written by the worker; a row that does not parse shows no calls
                // rather than hiding the attempt.
                calls: serde_json::from_str(&a.calls).unwrap_or_default(),
                number: a.attempt,
                started_at: a.started_at,
                finished_at: a.finished_at,
                ended: a.ended,
                calls_dropped: a.calls_dropped,
            })
            .collect(),
    })
}

/// Runs the entry's job again (admins and owners): a dead one with a fresh set of attempts, a
/// finished one as a new job with the same event and payload (the pipeline's steps are safe to
/// repeat: a link or note made before is not made twice). One still waiting to run is left as
/// it is.
pub async fn replay(db: &Db, queue: &Queue, access: &Access, client: ClientId, id: uuid::Uuid) -> Result<()> {
    let mut tx = db.write().await?;
    // Looked up before the role check so another client's entry is a 404 for everyone.
    let (_, job, _) = resolve(&mut tx, access, client, id).await?;
    access.require(Role::Admin)?;
    let job = job.ok_or_else(|| {
        Error::conflict("entry", "nothing ran for this entry, so there is nothing to run again")
    })?;
    match job.state {
        JobState::Dead if store::jobs::replay(&mut tx, client, job.id, now_ms()).await? => {}
        JobState::Done | JobState::Dead => {
            let again = Job::parse(&job.kind, &job.payload).map_err(|e| Error::Internal(e.into()))?;
            queue.enqueue(&mut tx, client, &again, job.event_id, None).await?;
        }
        other => {
            return Err(Error::conflict("entry", format!("its job is {other}: it will run without help")));
        }
    }
    let detail = json!({ "entry": id, "job": job.id, "kind": job.kind, "was": job.state.as_str() });
    audit::record(&mut tx, access, Some(client), "event.replayed", detail).await?;
    tx.commit().await?;
    queue.wake();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_personal_data_are_hidden_and_the_rest_kept() {
        let body = r#"{"event":"charge.completed","data":{"id":1,"tx_ref":"pp-1","amount":100.5,
            "customer":{"name":"Yemi","email":"y@x.com","phone_number":null},
            "card":{"first_6digits":"553188","last_4digits":"2950"},"ip":"1.2.3.4","description":"ship it"}}"#;
        let shown = masked(body);
        for hidden in ["Yemi", "y@x.com", "553188", "2950", "1.2.3.4"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        for kept in ["pp-1", "100.5", "charge.completed", "ship it"] {
            assert!(shown.contains(kept), "{kept} missing from {shown}");
        }
        let form = "leads%5Bstatus%5D%5B0%5D%5Bid%5D=501&leads%5Bstatus%5D%5B0%5D%5Bname%5D=Wanjiru+Kamau";
        let shown = masked(form);
        assert!(shown.contains("leads[status][0][id] = 501"), "{shown}");
        assert!(shown.contains("leads[status][0][name] = [hidden]"), "{shown}");
        assert!(!masked("plain words with spaces").contains("plain"));
    }

    #[test]
    fn field_names_are_read_word_by_word() {
        assert!(sensitive("fullName") && sensitive("first_6digits") && sensitive("verif-hash"));
        assert!(sensitive("account_number") && sensitive("IP"));
        assert!(!sensitive("description") && !sensitive("shipping") && !sensitive("account[id]"));
    }
}
