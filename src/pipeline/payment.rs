//! `payment` jobs: Flutterwave says a charge completed. Nothing is believed until verified by
//! id with the client account's own key; only a successful payment in the link's currency of at
//! least its amount closes the deal, and only once.

use rust_decimal::Decimal;
use serde_json::Value;

use std::time::Duration;

use super::{Activity, Pipeline, Tenant, Waiting, flutterwave_outcome, kommo_outcome};
use crate::clock::now_ms;
use crate::flutterwave::model::Transaction;
use crate::money;
use crate::queue::Outcome;
use crate::store::StoreError;
use crate::store::jobs::JobRow;
use crate::store::links::{self, LinkRow, Step, state};
use crate::tenants::notes::{NoteKind, render};
use crate::tenants::settings::KOMMO_WON;

impl Pipeline {
    pub(super) async fn payment(
        &self,
        tenant: &Tenant,
        job: &JobRow,
        payload: &Value,
    ) -> Result<Outcome, Waiting> {
        let Some(tx_ref) = payload["tx_ref"].as_str() else {
            return Ok(Outcome::Dead { error: "the payment names no tx_ref".into() });
        };
        let link = match self.link(tenant, tx_ref).await {
            Ok(Some(link)) => link,
            Ok(None) => {
                Activity::new(tenant, "ignored", "ignored")
                    .tx_ref(tx_ref)
                    .detail("not a payment link pipepay issued for this client account")
                    .record(&self.db)
                    .await;
                return Ok(Outcome::Done);
            }
            Err(error) => return Ok(Outcome::Retry { error: error.to_string(), after: None }),
        };
        let secret = match self.secret_key(tenant).await {
            Ok(secret) => secret,
            Err(outcome) => return Ok(outcome),
        };
        // By id when the event has Flutterwave's numeric id; v4 events carry a charge id the v3
        // verify does not know, so those are verified by reference.
        let id = payload["transaction_id"].as_i64();
        let verified = match id {
            Some(id) => self.flutterwave.verify(&secret, id).await,
            None => self.flutterwave.verify_by_reference(&secret, tx_ref).await,
        };
        let transaction = match verified {
            Ok(Some(transaction)) => transaction,
            Ok(None) => {
                let what = id
                    .map_or_else(|| format!("a transaction for {tx_ref}"), |id| format!("transaction {id}"));
                return self.unknown(tenant, job, &link, &what).await;
            }
            Err(error) => return Ok(flutterwave_outcome(error)),
        };
        Ok(self.settle(tenant, &link, &transaction).await)
    }

    /// Flutterwave does not know the transaction a signed webhook named. Its verify endpoint can
    /// lag the webhook, so it is asked again, quietly, at growing intervals; once the window
    /// since the webhook has passed (or the attempts are spent) the job ends with one entry.
    /// Nothing is closed; reconciliation still watches the link for a real payment.
    async fn unknown(
        &self,
        tenant: &Tenant,
        job: &JobRow,
        link: &LinkRow,
        what: &str,
    ) -> Result<Outcome, Waiting> {
        let window = self.unknown_transaction_window;
        match next_look(job, now_ms(), window) {
            Some(after) => Err(Waiting { reason: format!("Flutterwave does not know {what} (yet)"), after }),
            None => {
                Activity::new(tenant, "payment_unknown", "failed")
                    .lead(link.lead_id)
                    .tx_ref(&link.tx_ref)
                    .detail(format!(
                        "Flutterwave does not know {what}: not closed (looked for it for {}s after the webhook)",
                        window.as_secs()
                    ))
                    .record(&self.db)
                    .await;
                Ok(Outcome::Done)
            }
        }
    }

    async fn link(&self, tenant: &Tenant, tx_ref: &str) -> Result<Option<LinkRow>, StoreError> {
        let mut tx = self.db.read().await?;
        let link = links::by_tx_ref(&mut tx, tenant.id, tx_ref).await?;
        tx.commit().await?;
        Ok(link)
    }

    /// Acts on a verified transaction of one of the client's links.
    pub(super) async fn settle(&self, tenant: &Tenant, link: &LinkRow, transaction: &Transaction) -> Outcome {
        if transaction.tx_ref != link.tx_ref {
            Activity::new(tenant, "ignored", "ignored")
                .lead(link.lead_id)
                .tx_ref(&link.tx_ref)
                .detail(format!("Flutterwave's transaction {} belongs to another reference", transaction.id))
                .record(&self.db)
                .await;
            return Outcome::Done;
        }
        match transaction.status.as_str() {
            _ if transaction.is_successful() => self.close(tenant, link, transaction).await,
            "failed" => self.failed_attempt(tenant, link, transaction).await,
            "pending" => {
                Outcome::Retry { error: "the payment is still pending at Flutterwave".into(), after: None }
            }
            other => {
                Activity::new(tenant, "ignored", "ignored")
                    .lead(link.lead_id)
                    .tx_ref(&link.tx_ref)
                    .detail(format!("transaction {} is {other}", transaction.id))
                    .record(&self.db)
                    .await;
                Outcome::Done
            }
        }
    }

    async fn close(&self, tenant: &Tenant, link: &LinkRow, transaction: &Transaction) -> Outcome {
        if link.state == state::PAID {
            if link.transaction_id == Some(transaction.id) {
                // A repeat of the payment that closed it: only the note may still be owed.
                return self.paid_note(tenant, link, transaction, false).await;
            }
            Activity::new(tenant, "ignored", "ignored")
                .lead(link.lead_id)
                .tx_ref(&link.tx_ref)
                .detail(format!("another successful payment ({}) for a link paid already", transaction.id))
                .record(&self.db)
                .await;
            return Outcome::Done;
        }
        let expected: Option<Decimal> = link.amount.parse().ok();
        let problem = if transaction.currency != link.currency {
            Some(format!("paid in {} but the link asks for {}", transaction.currency, link.currency))
        } else if expected.is_none_or(|expected| transaction.amount < expected) {
            Some(format!(
                "paid {} {} but the link asks for {} {}",
                money::format(&transaction.currency, transaction.amount),
                transaction.currency,
                money::format_text(&link.currency, &link.amount),
                link.currency
            ))
        } else {
            None
        };
        if let Some(reason) = problem {
            Activity::new(tenant, "payment_rejected", "failed")
                .lead(link.lead_id)
                .tx_ref(&link.tx_ref)
                .detail(format!("not closed: {reason}"))
                .record(&self.db)
                .await;
            let text = problem_note(tenant, link, transaction, &reason);
            return self
                .notice_once(tenant, link.lead_id, &format!("problem:{}", transaction.id), &text)
                .await;
        }
        Activity::new(tenant, "payment_verified", "ok")
            .lead(link.lead_id)
            .tx_ref(&link.tx_ref)
            .detail(format!(
                "{} {} by {} (Flutterwave {})",
                money::format(&transaction.currency, transaction.amount),
                transaction.currency,
                transaction.payment_type,
                transaction.id
            ))
            .record(&self.db)
            .await;
        // The deal is won in the pipeline its link was made in. A chosen won stage belongs to the
        // trigger pipeline; if the settings have moved to another pipeline since, Kommo's own
        // "closed - won" (the same id in every pipeline) is the won stage that exists there.
        let won = match &tenant.settings.trigger {
            Some(trigger) if trigger.pipeline_id != link.pipeline_id => KOMMO_WON,
            _ => tenant.settings.won_stage(),
        };
        // Moving to won twice is harmless, so the move comes first and the record after.
        if let Err(error) = self.kommo.move_lead(tenant.id, link.lead_id, link.pipeline_id, won).await {
            return kommo_outcome(error);
        }
        let recorded = async {
            let mut tx = self.db.write().await?;
            let first = links::paid(
                &mut tx,
                link.id,
                transaction.id,
                &transaction.amount.to_string(),
                &transaction.currency,
                &transaction.payment_type,
                &transaction.flw_ref,
                now_ms(),
            )
            .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(first)
        };
        match recorded.await {
            Ok(true) => {
                Activity::new(tenant, "deal_closed", "ok")
                    .lead(link.lead_id)
                    .tx_ref(&link.tx_ref)
                    .detail(format!("moved to stage {won}"))
                    .record(&self.db)
                    .await;
            }
            Ok(false) => {}
            Err(error) => return Outcome::Retry { error: error.to_string(), after: None },
        }
        self.paid_note(tenant, link, transaction, was_replaced(link)).await
    }

    /// The payment note, at most once per link.
    async fn paid_note(
        &self,
        tenant: &Tenant,
        link: &LinkRow,
        transaction: &Transaction,
        replaced: bool,
    ) -> Outcome {
        let current = match self.link(tenant, &link.tx_ref).await {
            Ok(Some(current)) => current,
            Ok(None) => return Outcome::Done,
            Err(error) => return Outcome::Retry { error: error.to_string(), after: None },
        };
        if current.paid_note_posted_at.is_some() {
            return Outcome::Done;
        }
        let mut text = render(
            tenant.settings.notes.get(NoteKind::PaymentReceived),
            &[
                ("amount", &money::format(&transaction.currency, transaction.amount)),
                ("currency", &transaction.currency),
                ("method", &transaction.payment_type),
                ("reference", &transaction.flw_ref),
                ("tx_ref", &link.tx_ref),
                ("lead_id", &link.lead_id.to_string()),
            ],
        );
        if replaced {
            text.push_str(" (This payment used an earlier payment link that had been replaced.)");
        }
        let earlier = match self.attempt(&current, Step::PaidNote, &text).await {
            Ok(earlier) => earlier,
            Err(outcome) => return outcome,
        };
        if let Err(outcome) = self.post_note(tenant, link.lead_id, &text, earlier).await {
            return outcome;
        }
        if let Err(error) = self.mark(&current, Step::PaidNote).await {
            return Outcome::Retry { error: error.to_string(), after: None };
        }
        Activity::new(tenant, "note_posted", "ok")
            .lead(link.lead_id)
            .tx_ref(&link.tx_ref)
            .detail("payment note")
            .record(&self.db)
            .await;
        Outcome::Done
    }

    /// A failed attempt: one note per transaction, and never anything on a won deal.
    async fn failed_attempt(&self, tenant: &Tenant, link: &LinkRow, transaction: &Transaction) -> Outcome {
        match self.lead_paid(tenant, link.lead_id).await {
            Ok(true) => {
                Activity::new(tenant, "ignored", "ignored")
                    .lead(link.lead_id)
                    .tx_ref(&link.tx_ref)
                    .detail(format!("a failed attempt ({}) after the deal was won", transaction.id))
                    .record(&self.db)
                    .await;
                return Outcome::Done;
            }
            Ok(false) => {}
            Err(error) => return Outcome::Retry { error: error.to_string(), after: None },
        }
        Activity::new(tenant, "payment_failed", "failed")
            .lead(link.lead_id)
            .tx_ref(&link.tx_ref)
            .detail(format!("attempt {} by {} failed", transaction.id, transaction.payment_type))
            .record(&self.db)
            .await;
        let reason = format!("the {} payment attempt failed; the link still works", transaction.payment_type);
        let text = problem_note(tenant, link, transaction, &reason);
        self.notice_once(tenant, link.lead_id, &format!("failed:{}", transaction.id), &text).await
    }

    async fn lead_paid(&self, tenant: &Tenant, lead_id: i64) -> Result<bool, StoreError> {
        let mut tx = self.db.read().await?;
        let paid = links::lead_is_paid(&mut tx, tenant.id, lead_id).await?;
        tx.commit().await?;
        Ok(paid)
    }
}

/// The client's "payment problem" note for this transaction and reason.
fn problem_note(tenant: &Tenant, link: &LinkRow, transaction: &Transaction, reason: &str) -> String {
    render(
        tenant.settings.notes.get(NoteKind::PaymentProblem),
        &[
            ("reason", reason),
            ("amount", &money::format(&transaction.currency, transaction.amount)),
            ("currency", &transaction.currency),
            ("expected_amount", &money::format_text(&link.currency, &link.amount)),
            ("expected_currency", &link.currency),
            ("reference", &transaction.flw_ref),
            ("tx_ref", &link.tx_ref),
        ],
    )
}

/// When to look for an unknown transaction again, or `None` to stop. Each wait is twice the
/// time since the webhook (at least 5 s), so the looks come at about 5 s, 15 s, 45 s, 2 min,
/// 7 min, 20 min and then at the window's end: a few early ones for Flutterwave's usual lag,
/// eight attempts in an hour, within the default ten. The job's first run is the webhook's
/// arrival (they are stored together).
fn next_look(job: &JobRow, now: i64, window: Duration) -> Option<Duration> {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let elapsed = (now - job.created_at).max(0);
    if elapsed >= window_ms || job.attempts >= job.max_attempts {
        return None;
    }
    let wait = (elapsed * 2).max(5_000).min(window_ms - elapsed);
    Some(Duration::from_millis(wait.unsigned_abs()))
}

/// A link that had been superseded, cancelled or left uncertain before it was paid.
fn was_replaced(link: &LinkRow) -> bool {
    matches!(link.state.as_str(), state::SUPERSEDED | state::CANCELLED | state::UNCERTAIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(attempts: i64, created_at: i64) -> JobRow {
        JobRow {
            id: uuid::Uuid::nil(),
            client_id: crate::ids::ClientId(uuid::Uuid::nil()),
            kind: "payment".into(),
            event_id: None,
            payload: "{}".into(),
            state: "running".into(),
            attempts,
            max_attempts: 10,
            run_at: 0,
            last_error: None,
            trace: None,
            created_at,
            updated_at: 0,
        }
    }

    #[test]
    fn an_unknown_transaction_is_looked_for_a_few_times_within_the_window_then_given_up() {
        let hour = Duration::from_secs(3600);
        let (mut now, mut attempts, mut looks) = (0_i64, 1_i64, Vec::new());
        while let Some(after) = next_look(&job(attempts, 0), now, hour) {
            looks.push(after.as_secs());
            now += i64::try_from(after.as_millis()).unwrap();
            attempts += 1;
        }
        assert_eq!(looks, [5, 10, 30, 90, 270, 810, 2385], "ending at the window's end");
        assert_eq!(now, 3_600_000);
        assert!(attempts <= 10, "within the default attempts: {attempts}");
        assert_eq!(next_look(&job(10, 0), 1_000, hour), None, "the last attempt concludes");
    }
}
