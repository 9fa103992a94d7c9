//! Notes on leads, sent at most once. Kommo has no idempotency key for notes, so a note whose
//! sending was cut short (its answer lost, or pipepay stopped before recording it) is looked
//! for on the lead before it is sent again.

use super::{Outcome, Pipeline, Tenant, kommo_outcome};
use crate::store::StoreError;
use crate::store::links::{self, LinkRow, Step};

impl Pipeline {
    /// Sends `text` to the lead, or, when an earlier attempt sent `earlier`, those same words
    /// unless the lead already has them.
    pub(super) async fn post_note(
        &self,
        tenant: &Tenant,
        lead_id: i64,
        text: &str,
        earlier: Option<String>,
    ) -> Result<(), Outcome> {
        let text = earlier.as_deref().unwrap_or(text);
        if earlier.is_some() {
            match self.kommo.lead_has_note(tenant.id, lead_id, text).await {
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
    /// the words of an earlier attempt, if one was made.
    pub(super) async fn attempt(
        &self,
        link: &LinkRow,
        step: Step,
        text: &str,
    ) -> Result<Option<String>, Outcome> {
        let recorded = async {
            let mut tx = self.db.write().await?;
            let earlier = links::attempt(&mut tx, link.id, step, text).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(earlier)
        };
        recorded.await.map_err(|error| Outcome::Retry { error: error.to_string(), after: None })
    }
}
