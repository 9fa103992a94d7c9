//! Notes on leads, sent at most once. Kommo has no idempotency key for notes, so a note whose
//! sending was cut short (its answer lost, or pipepay stopped before recording it) is looked
//! for on the lead before it is sent again.

use super::{Activity, JobContext, Pipeline, Step, write_tx};
use crate::clock::now_ms;
use crate::ids::LeadId;
use crate::store::activity::{ActivityKind as Kind, ActivityOutcome as Turned};
use crate::store::links::{self, Attempt, LinkRow, Step as LinkStep};
use crate::store::notices;

/// How far Kommo's clock may be behind ours when a note it took is dated.
const CLOCK_SKEW_SECS: i64 = 120;

impl Pipeline {
    /// Sends `text` to the lead; or, when an earlier attempt sent its words, those same words
    /// unless a note with them was made on the lead since that attempt (an identical note from
    /// before, say a plain "Paid, thanks!" of an earlier payment, does not count).
    pub(super) async fn post_note(
        &self,
        cx: &JobContext,
        lead_id: LeadId,
        text: &str,
        earlier: Option<Attempt>,
    ) -> Step {
        let text = earlier.as_ref().map_or(text, |a| a.text.as_str());
        if let Some(attempt) = &earlier {
            let since = attempt.at / 1000 - CLOCK_SKEW_SECS;
            if self.kommo.lead_has_note(&cx.kommo, lead_id, text, since).await? {
                tracing::info!(
                    lead_id = lead_id.0,
                    "the earlier attempt's note is on the lead; not sending it again"
                );
                return Ok(());
            }
        }
        Ok(self.kommo.add_note(&cx.kommo, lead_id, text).await?)
    }

    /// A link's note (`Note` or `PaidNote`), once: the attempt recorded, the note sent, then
    /// marked posted together with its timeline entry.
    pub(super) async fn link_note(
        &self,
        link: &LinkRow,
        step: LinkStep,
        text: &str,
        posted: Activity,
        cx: &JobContext,
    ) -> Step {
        self.send_link_note(cx, link, step, text, None).await?;
        write_tx!(self.db, tx => {
            links::mark(&mut tx, link.id, step, now_ms()).await?;
            posted.record_in(&mut tx).await?;
        })?;
        Ok(())
    }

    /// Sends a link's note after recording the attempt, unless `attempted` says it was recorded
    /// already (and what that found); the caller stamps it posted.
    pub(super) async fn send_link_note(
        &self,
        cx: &JobContext,
        link: &LinkRow,
        step: LinkStep,
        text: &str,
        attempted: Option<Option<Attempt>>,
    ) -> Step {
        let earlier = match attempted {
            Some(earlier) => earlier,
            None => write_tx!(self.db, tx => links::attempt(&mut tx, link.id, step, text, now_ms()).await?)?,
        };
        self.post_note(cx, link.lead_id, text, earlier).await
    }

    /// Posts a note keyed by `key` at most once, even across crashes and repeats.
    pub(super) async fn notice_once(&self, cx: &JobContext, lead_id: LeadId, key: &str, text: &str) -> Step {
        // Claimed before sending: a claim still pending on a later attempt may have been sent.
        let (pending, earlier) = write_tx!(self.db, tx => {
            let fresh = notices::claim(&mut tx, cx.client, key).await?;
            let pending = fresh || notices::pending(&mut tx, cx.client, key).await?;
            let earlier = if pending {
                notices::attempt(&mut tx, cx.client, key, text, now_ms()).await?
            } else {
                None
            };
            (pending, earlier)
        })?;
        if !pending {
            return Ok(());
        }
        self.post_note(cx, lead_id, text, earlier).await?;
        let posted = Activity::new(cx, Kind::NotePosted, Turned::Ok)
            .lead(lead_id)
            .detail(key.split(':').next().unwrap_or(key));
        write_tx!(self.db, tx => {
            notices::posted(&mut tx, cx.client, key, now_ms()).await?;
            posted.record_in(&mut tx).await?;
        })?;
        Ok(())
    }
}
