//! Notes on leads, sent at most once. Kommo has no idempotency key for notes, so a note whose
//! sending was cut short (its answer lost, or pipepay stopped before recording it) is looked
//! for on the lead before it is sent again.

use super::{Outcome, Pipeline, Tenant, kommo_outcome};
use crate::clock::now_ms;
use crate::store::StoreError;
use crate::store::links::{self, Attempt, LinkRow, Step};

/// How far Kommo's clock may be behind ours when a note it took is dated.
const CLOCK_SKEW_SECS: i64 = 120;

impl Pipeline {
    /// Sends `text` to the lead; or, when an earlier attempt sent its words, those same words
    /// unless a note with them was made on the lead since that attempt (an identical note from
    /// before, say a plain "Paid, thanks!" of an earlier payment, does not count).
    pub(super) async fn post_note(
        &self,
        tenant: &Tenant,
        lead_id: i64,
        text: &str,
        earlier: Option<Attempt>,
    ) -> Result<(), Outcome> {
        let text = earlier.as_ref().map_or(text, |a| a.text.as_str());
        if let Some(attempt) = &earlier {
            let since = attempt.at / 1000 - CLOCK_SKEW_SECS;
            match self.kommo.lead_has_note(tenant.id, lead_id, text, since).await {
                Ok(true) => {
                    tracing::info!(
                        lead_id,
                        "the earlier attempt's note is on the lead; not sending it again"
                    );
                    return Ok(());
                }
                Ok(false) => {}
                Err(error) => return Err(kommo_outcome(error)),
            }
        }
        self.kommo.add_note(tenant.id, lead_id, text).await.map_err(kommo_outcome)
    }

    /// Records that a link's note (`Step::Note` or `Step::PaidNote`) is being sent as `text`;
    /// the earlier attempt, if one was made.
    pub(super) async fn attempt(
        &self,
        link: &LinkRow,
        step: Step,
        text: &str,
    ) -> Result<Option<Attempt>, Outcome> {
        let recorded = async {
            let mut tx = self.db.write().await?;
            let earlier = links::attempt(&mut tx, link.id, step, text, now_ms()).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(earlier)
        };
        recorded.await.map_err(|error| Outcome::Retry { error: error.to_string(), after: None })
    }
}
