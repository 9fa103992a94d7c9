//! What a job asks for, typed. A job is stored as its kind (a column) and its payload (JSON
//! text); the payloads serialise to exactly the JSON stored before this type existed (fields in
//! the same order, absent values as `null`), so rows already queued still parse.

use serde::{Deserialize, Serialize};

use crate::ids::{LeadId, TxRef};

/// One unit of work for the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// A lead changed in Kommo.
    Lead(LeadJob),
    /// Flutterwave says a charge completed.
    Payment(PaymentJob),
    /// Look for payments whose webhook never came.
    Reconcile,
}

/// The lead as its webhook named it; the pipeline asks Kommo for the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadJob {
    pub lead_id: LeadId,
    #[serde(default)]
    pub pipeline_id: Option<i64>,
    #[serde(default)]
    pub status_id: Option<i64>,
    /// Asked for from inside Kommo (the Digital Pipeline action, the deal card); a webhook's
    /// job has none, and its payload stays the JSON it always was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<LeadRequest>,
}

/// What a Kommo user (or Kommo's Digital Pipeline) asked for a lead; `pipeline::request`
/// reads and queues these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LeadRequest {
    /// The Digital Pipeline action ran in the lead's stage: a link now, on its settings,
    /// whatever the trigger stages say.
    DigitalPipeline(DpSettings),
    /// "Send the link now" on the deal card.
    Send { user_id: i64 },
    /// "Disable the link" on the deal card.
    Disable { user_id: i64 },
}

/// The Digital Pipeline action's settings, as the user filled them in inside Kommo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpSettings {
    /// A lead custom field holding the amount; the lead's price when `None`.
    pub amount_field_id: Option<i64>,
    /// An ISO code overriding the client account's currency rules.
    pub currency: Option<String>,
    /// The note posted with the link, instead of the client account's template; the same
    /// `{link}`, `{amount}`, `{currency}` placeholders.
    pub note: Option<String>,
}

/// The charge as its webhook named it; nothing in it is believed until verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentJob {
    #[serde(default)]
    pub status: String,
    /// Flutterwave's numeric id; v4 events carry a charge id instead, and no number.
    #[serde(default)]
    pub transaction_id: Option<i64>,
    pub tx_ref: TxRef,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("unknown job kind {0:?}")]
    UnknownKind(String),
    #[error("the job's payload does not parse: {0}")]
    Payload(#[from] serde_json::Error),
}

impl Job {
    pub const LEAD: &'static str = "lead";
    pub const PAYMENT: &'static str = "payment";
    pub const RECONCILE: &'static str = "reconcile";

    /// The `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Lead(_) => Job::LEAD,
            Job::Payment(_) => Job::PAYMENT,
            Job::Reconcile => Job::RECONCILE,
        }
    }

    /// The `payload` column.
    pub fn payload(&self) -> String {
        let written = match self {
            Job::Lead(lead) => serde_json::to_string(lead),
            Job::Payment(payment) => serde_json::to_string(payment),
            Job::Reconcile => serde_json::to_string(&Empty {}),
        };
        // Plain structs of numbers and strings always serialise.
        written.unwrap_or_else(|_| "{}".to_owned())
    }

    /// A stored job back from its two columns.
    pub fn parse(kind: &str, payload: &str) -> Result<Job, JobError> {
        Ok(match kind {
            Job::LEAD => Job::Lead(serde_json::from_str(payload)?),
            Job::PAYMENT => Job::Payment(serde_json::from_str(payload)?),
            Job::RECONCILE => {
                serde_json::from_str::<serde::de::IgnoredAny>(payload)?;
                Job::Reconcile
            }
            other => return Err(JobError::UnknownKind(other.to_owned())),
        })
    }

    pub fn lead_id(&self) -> Option<LeadId> {
        match self {
            Job::Lead(lead) => Some(lead.lead_id),
            _ => None,
        }
    }

    pub fn tx_ref(&self) -> Option<&TxRef> {
        match self {
            Job::Payment(payment) => Some(&payment.tx_ref),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payloads_are_the_json_stored_before_and_todays_rows_parse() {
        // What the ingress wrote with `json!` before the type existed (serde_json sorts keys).
        let lead = json!({ "lead_id": 4242, "status_id": 7003, "pipeline_id": 7001 }).to_string();
        let moved = json!({ "lead_id": 4243, "status_id": null, "pipeline_id": null }).to_string();
        let paid =
            json!({ "tx_ref": "pp-0193", "transaction_id": 5_551_234, "status": "successful" }).to_string();
        let v4 = json!({ "tx_ref": "pp-0194", "transaction_id": null, "status": "failed" }).to_string();

        let job = Job::parse("lead", &lead).unwrap();
        assert_eq!(
            job,
            Job::Lead(LeadJob {
                lead_id: LeadId(4242),
                pipeline_id: Some(7001),
                status_id: Some(7003),
                request: None,
            })
        );
        assert_eq!(job.payload(), lead);
        assert_eq!(Job::parse("lead", &moved).unwrap().payload(), moved);
        let job = Job::parse("payment", &paid).unwrap();
        assert_eq!(job.tx_ref().map(TxRef::as_str), Some("pp-0193"));
        assert_eq!(job.payload(), paid);
        assert_eq!(Job::parse("payment", &v4).unwrap().payload(), v4);
        assert_eq!(Job::parse("reconcile", "{}").unwrap(), Job::Reconcile);
        assert_eq!(Job::Reconcile.payload(), json!({}).to_string());
        // Jobs written by hand (tests, an operator) carry only the id.
        assert_eq!(Job::parse("lead", r#"{"lead_id": 9}"#).unwrap().lead_id(), Some(LeadId(9)));
    }

    #[test]
    fn a_payload_without_its_subject_or_of_an_unknown_kind_does_not_parse() {
        assert!(matches!(Job::parse("lead", "{}"), Err(JobError::Payload(_))));
        assert!(matches!(Job::parse("payment", r#"{"status": "successful"}"#), Err(JobError::Payload(_))));
        assert!(matches!(Job::parse("refund", "{}"), Err(JobError::UnknownKind(_))));
    }
}
