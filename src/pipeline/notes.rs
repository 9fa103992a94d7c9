//! Notes on leads, sent at most once. Kommo has no idempotency key for notes, so a note whose
//! sending was cut short (its answer lost, or pipepay stopped before recording it) is looked
//! for on the lead before it is sent again.

use super::{Outcome, Pipeline, Tenant, kommo_outcome};
use crate::clock::now_ms;
use crate::store::StoreError;
use crate::store::links::{self, LinkRow, Step};

impl Pipeline {
    /// Sends `text` to the lead unless `attempted` (an earlier attempt got as far as sending it)
    /// and the lead already has it.
    pub(super) async fn post_note(
        &self,
        tenant: &Tenant,
        lead_id: i64,
        text: &str,
        attempted: bool,
    ) -> Result<(), Outcome> {
        if attempted {
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

    /// Records that a link's note (`Step::Note` or `Step::PaidNote`) is being sent; `true` if an
    /// earlier attempt already was.
    pub(super) async fn attempt(&self, link: &LinkRow, step: Step) -> Result<bool, Outcome> {
        let recorded = async {
            let mut tx = self.db.write().await?;
            let earlier = links::attempt(&mut tx, link.id, step, now_ms()).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(earlier)
        };
        recorded.await.map_err(|error| Outcome::Retry { error: error.to_string(), after: None })
    }
}
