//! `payment` jobs: Flutterwave says a charge completed. Nothing is believed until verified by
//! id with the client account's own key; only a successful payment in the link's currency of at
//! least its amount closes the deal, and only once.

use super::{Activity, JobContext, Pipeline, Step, Stop, Waiting, read_tx, write_tx};
use crate::clock::now_ms;
use crate::flutterwave::model::Transaction;
use crate::ids::TxRef;
use crate::money;
use crate::queue::job::PaymentJob;
use crate::store::activity::{ActivityKind as Kind, ActivityOutcome as Turned};
use crate::store::jobs::JobRow;
use crate::store::links::{self, LinkRow, LinkState, Step as LinkStep};
use crate::tenants::notes::{NoteKind, render};
use crate::tenants::settings::KOMMO_WON;

use std::time::Duration;

impl Pipeline {
    pub(super) async fn payment(&self, cx: &JobContext, job: &JobRow, payment: &PaymentJob) -> Step {
        let tx_ref = &payment.tx_ref;
        let Some(link) = self.link(cx, tx_ref).await? else {
            Activity::new(cx, Kind::Ignored, Turned::Ignored)
                .tx_ref(tx_ref)
                .detail("not a payment link pipepay issued for this client account")
                .record(&self.db)
                .await;
            return Ok(());
        };
        let secret = cx.secret()?;
        // By id when the event has Flutterwave's numeric id; v4 events carry a charge id the v3
        // verify does not know, so those are verified by reference.
        let id = payment.transaction_id;
        let verified = match id {
            Some(id) => self.flutterwave.verify(secret, id).await?,
            None => self.flutterwave.verify_by_reference(secret, tx_ref.as_str()).await?,
        };
        let Some(transaction) = verified else {
            let what =
                id.map_or_else(|| format!("a transaction for {tx_ref}"), |id| format!("transaction {id}"));
            return self.unknown(cx, job, &link, &what).await;
        };
        self.settle(cx, &link, &transaction).await
    }

    /// Flutterwave does not know the transaction a signed webhook named. Its verify endpoint can
    /// lag the webhook, so it is asked again, quietly, at growing intervals; once the window
    /// since the webhook has passed (or the attempts are spent) the job ends with one entry.
    /// Nothing is closed; reconciliation still watches the link for a real payment.
    async fn unknown(&self, cx: &JobContext, job: &JobRow, link: &LinkRow, what: &str) -> Step {
        let window = self.unknown_transaction_window;
        if let Some(after) = next_look(job, now_ms(), window) {
            return Err(Stop::Wait(Waiting {
                reason: format!("Flutterwave does not know {what} (yet)"),
                after,
            }));
        }
        Activity::new(cx, Kind::PaymentUnknown, Turned::Failed)
            .lead(link.lead_id)
            .tx_ref(&link.tx_ref)
            .detail(format!(
                "Flutterwave does not know {what}: not closed (looked for it for {}s after the webhook)",
                window.as_secs()
            ))
            .record(&self.db)
            .await;
        Ok(())
    }

    async fn link(&self, cx: &JobContext, tx_ref: &TxRef) -> Step<Option<LinkRow>> {
        Ok(read_tx!(self.db, tx => links::by_tx_ref(&mut tx, cx.client, tx_ref).await?)?)
    }

    /// Acts on a verified transaction of one of the client's links.
    pub(super) async fn settle(&self, cx: &JobContext, link: &LinkRow, transaction: &Transaction) -> Step {
        let ignored = |detail: String| {
            Activity::new(cx, Kind::Ignored, Turned::Ignored)
                .lead(link.lead_id)
                .tx_ref(&link.tx_ref)
                .detail(detail)
        };
        if transaction.tx_ref != link.tx_ref.as_str() {
            let detail = format!("Flutterwave's transaction {} belongs to another reference", transaction.id);
            ignored(detail).record(&self.db).await;
            return Ok(());
        }
        match transaction.status.as_str() {
            _ if transaction.is_successful() => self.close(cx, link, transaction).await,
            "failed" => self.failed_attempt(cx, link, transaction).await,
            "pending" => Err(Stop::retry("the payment is still pending at Flutterwave")),
            other => {
                ignored(format!("transaction {} is {other}", transaction.id)).record(&self.db).await;
                Ok(())
            }
        }
    }

    async fn close(&self, cx: &JobContext, link: &LinkRow, transaction: &Transaction) -> Step {
        if link.state == LinkState::Paid {
            if link.transaction_id == Some(transaction.id) {
                // A repeat of the payment that closed it: only the note may still be owed.
                return self.paid_note(cx, link, transaction, false).await;
            }
            Activity::new(cx, Kind::Ignored, Turned::Ignored)
                .lead(link.lead_id)
                .tx_ref(&link.tx_ref)
                .detail(format!("another successful payment ({}) for a link paid already", transaction.id))
                .record(&self.db)
                .await;
            return Ok(());
        }
        let expected = &link.price;
        let problem = if transaction.currency != expected.currency {
            Some(format!("paid in {} but the link asks for {}", transaction.currency, expected.currency))
        } else if transaction.amount < expected.amount {
            Some(format!("paid {} but the link asks for {expected}", transaction.money()))
        } else {
            None
        };
        if let Some(reason) = problem {
            Activity::new(cx, Kind::PaymentRejected, Turned::Failed)
                .lead(link.lead_id)
                .tx_ref(&link.tx_ref)
                .detail(format!("not closed: {reason}"))
                .record(&self.db)
                .await;
            let text = problem_note(cx, link, transaction, &reason);
            return self.notice_once(cx, link.lead_id, &format!("problem:{}", transaction.id), &text).await;
        }
        Activity::new(cx, Kind::PaymentVerified, Turned::Ok)
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
        let won = match &cx.settings.trigger {
            Some(trigger) if trigger.pipeline_id != link.pipeline_id => KOMMO_WON,
            _ => cx.settings.won_stage(),
        };
        // Moving to won twice is harmless, so the move comes first and the record after.
        self.kommo.move_lead(&cx.kommo, link.lead_id, link.pipeline_id, won).await?;
        let closed = Activity::new(cx, Kind::DealClosed, Turned::Ok)
            .lead(link.lead_id)
            .tx_ref(&link.tx_ref)
            .detail(format!("moved to stage {won}"));
        write_tx!(self.db, tx => {
            let first = links::paid(
                &mut tx,
                link.id,
                transaction.id,
                &transaction.money(),
                &transaction.payment_type,
                &transaction.flw_ref,
                now_ms(),
            )
            .await?;
            if first {
                closed.record_in(&mut tx).await?;
            }
        })?;
        self.paid_note(cx, link, transaction, was_replaced(link)).await
    }

    /// The payment note, at most once per link.
    async fn paid_note(
        &self,
        cx: &JobContext,
        link: &LinkRow,
        transaction: &Transaction,
        replaced: bool,
    ) -> Step {
        let Some(current) = self.link(cx, &link.tx_ref).await? else { return Ok(()) };
        if current.paid_note_posted_at.is_some() {
            return Ok(());
        }
        let mut text = render(
            cx.settings.notes.get(NoteKind::PaymentReceived),
            &[
                ("amount", &money::format(&transaction.currency, transaction.amount)),
                ("currency", &transaction.currency),
                ("method", &transaction.payment_type),
                ("reference", &transaction.flw_ref),
                ("tx_ref", link.tx_ref.as_str()),
                ("lead_id", &link.lead_id.to_string()),
            ],
        );
        if replaced {
            text.push_str(" (This payment used an earlier payment link that had been replaced.)");
        }
        let posted = Activity::new(cx, Kind::NotePosted, Turned::Ok)
            .lead(link.lead_id)
            .tx_ref(&link.tx_ref)
            .detail("payment note");
        self.link_note(&current, LinkStep::PaidNote, &text, posted, cx).await
    }

    /// A failed attempt: one note per transaction, and never anything on a won deal.
    async fn failed_attempt(&self, cx: &JobContext, link: &LinkRow, transaction: &Transaction) -> Step {
        if read_tx!(self.db, tx => links::lead_is_paid(&mut tx, cx.client, link.lead_id).await?)? {
            Activity::new(cx, Kind::Ignored, Turned::Ignored)
                .lead(link.lead_id)
                .tx_ref(&link.tx_ref)
                .detail(format!("a failed attempt ({}) after the deal was won", transaction.id))
                .record(&self.db)
                .await;
            return Ok(());
        }
        Activity::new(cx, Kind::PaymentFailed, Turned::Failed)
            .lead(link.lead_id)
            .tx_ref(&link.tx_ref)
            .detail(format!("attempt {} by {} failed", transaction.id, transaction.payment_type))
            .record(&self.db)
            .await;
        let reason = format!("the {} payment attempt failed; the link still works", transaction.payment_type);
        let text = problem_note(cx, link, transaction, &reason);
        self.notice_once(cx, link.lead_id, &format!("failed:{}", transaction.id), &text).await
    }
}

/// The client's "payment problem" note for this transaction and reason.
fn problem_note(cx: &JobContext, link: &LinkRow, transaction: &Transaction, reason: &str) -> String {
    render(
        cx.settings.notes.get(NoteKind::PaymentProblem),
        &[
            ("reason", reason),
            ("amount", &money::format(&transaction.currency, transaction.amount)),
            ("currency", &transaction.currency),
            ("expected_amount", &link.price.amount_text()),
            ("expected_currency", &link.price.currency),
            ("reference", &transaction.flw_ref),
            ("tx_ref", link.tx_ref.as_str()),
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
    matches!(link.state, LinkState::Superseded | LinkState::Cancelled | LinkState::Uncertain)
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
            state: crate::store::jobs::JobState::Running,
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
