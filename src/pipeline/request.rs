//! Lead jobs asked for from inside Kommo rather than by a stage change: Kommo's Digital
//! Pipeline action, and the deal card's "send" and "disable" buttons. The request travels in
//! the job's payload (`LeadJob::request`), so the job acts on it after reading the lead afresh; a job
//! without one is the ordinary webhook job, decided by the client account's trigger stages.
//!
//! [`enqueue`] is the one place these jobs are queued, for the ingress and the API alike.

use crate::ids::{ClientId, LeadId};
use crate::kommo::model::Lead;
use crate::queue::Queue;
pub use crate::queue::job::{DpSettings, LeadRequest};
use crate::queue::job::{Job, LeadJob};
use crate::store::{StoreError, Tx};
use crate::tenants::settings::CURRENCIES;
use rust_decimal::Decimal;

impl DpSettings {
    /// The settings from the strings Kommo sends, or what is wrong with them.
    pub fn parse(amount: Option<&str>, currency: Option<&str>, note: Option<&str>) -> Result<Self, String> {
        let clean = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        let amount_field_id = match clean(amount).as_deref() {
            None | Some("price") => None,
            Some(other) => {
                let id = other.strip_prefix("field:").unwrap_or(other);
                Some(id.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
                    format!("the amount setting {other:?} is neither \"price\" nor a field id")
                })?)
            }
        };
        let currency = clean(currency).map(|c| c.to_uppercase());
        if let Some(code) = &currency
            && !CURRENCIES.contains(&code.as_str())
        {
            return Err(format!("the currency setting {code:?} is not a currency pipepay takes"));
        }
        let note: Option<String> = clean(note).map(|n| n.chars().take(2000).collect());
        Ok(DpSettings { amount_field_id, currency, note })
    }

    /// The amount this action asks for on `lead`: `Err` when its field holds no number.
    pub fn amount(&self, lead: &Lead) -> Result<Option<Decimal>, String> {
        let Some(field) = self.amount_field_id else { return Ok(None) };
        let raw = lead.field(field).ok_or_else(|| format!("the lead's amount field {field} is empty"))?;
        let cleaned: String = raw.chars().filter(|c| !c.is_whitespace() && *c != ',').collect();
        cleaned
            .parse::<Decimal>()
            .map(Some)
            .map_err(|_| format!("the lead's amount field {field} holds {raw:?}, not an amount"))
    }
}

/// Queues a lead job carrying `request`, in the caller's transaction. `Ok(false)` when a job
/// with the same `dedup_key` is already waiting.
#[allow(clippy::too_many_arguments)]
pub async fn enqueue(
    queue: &Queue,
    tx: &mut Tx,
    client: ClientId,
    event_id: Option<uuid::Uuid>,
    lead_id: i64,
    stage: Option<(i64, i64)>,
    request: &LeadRequest,
    dedup_key: Option<&str>,
) -> Result<bool, StoreError> {
    let job = Job::Lead(LeadJob {
        lead_id: LeadId(lead_id),
        pipeline_id: stage.map(|s| s.0),
        status_id: stage.map(|s| s.1),
        request: Some(request.clone()),
    });
    queue.enqueue(tx, client, &job, event_id, dedup_key).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_kommo_strings() {
        let s = DpSettings::parse(Some("price"), Some(" kes "), Some("  ")).unwrap();
        assert_eq!(s, DpSettings { amount_field_id: None, currency: Some("KES".into()), note: None });
        let s = DpSettings::parse(Some("field:184994"), None, Some("Pay: {link}")).unwrap();
        assert_eq!(s.amount_field_id, Some(184_994));
        assert_eq!(s.note.as_deref(), Some("Pay: {link}"));
        assert!(DpSettings::parse(Some("lots"), None, None).is_err());
        assert!(DpSettings::parse(None, Some("BTC"), None).is_err());
    }

    #[test]
    fn requests_round_trip_through_a_payload() {
        let request = LeadRequest::DigitalPipeline(DpSettings::parse(Some("7"), Some("USD"), None).unwrap());
        let job = Job::Lead(LeadJob {
            lead_id: LeadId(1),
            pipeline_id: None,
            status_id: None,
            request: Some(request),
        });
        assert_eq!(Job::parse(Job::LEAD, &job.payload()).unwrap(), job);
        assert!(Job::parse(Job::LEAD, r#"{"lead_id": 1, "request": {"kind": "explode"}}"#).is_err());
    }
}
