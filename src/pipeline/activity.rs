//! Writing the activity timeline.

use super::JobContext;
use crate::clock::now_ms;
use crate::ids::{LeadId, TxRef};
use crate::store::activity::{ActivityKind, ActivityOutcome, ActivityRow};
use crate::store::{self, Db, StoreError, Tx};

/// One timeline entry, built up then recorded.
pub struct Activity {
    row: ActivityRow,
}

impl Activity {
    pub(crate) fn new(cx: &JobContext, kind: ActivityKind, outcome: ActivityOutcome) -> Activity {
        Activity {
            row: ActivityRow {
                id: uuid::Uuid::now_v7(),
                client_id: cx.client,
                at: now_ms(),
                kind,
                outcome,
                lead_id: None,
                tx_ref: None,
                job_id: Some(cx.job),
                detail: String::new(),
            },
        }
    }

    pub fn lead(mut self, lead_id: LeadId) -> Activity {
        self.row.lead_id = Some(lead_id);
        self
    }

    pub fn tx_ref(mut self, tx_ref: &TxRef) -> Activity {
        self.row.tx_ref = Some(tx_ref.clone());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Activity {
        self.row.detail = detail.into();
        self
    }

    /// Records it with the write it reports, in that write's transaction.
    pub async fn record_in(self, tx: &mut Tx) -> Result<(), StoreError> {
        store::activity::insert(tx, &self.row).await
    }

    /// Records it; a timeline write that fails is logged, never fails the job.
    pub async fn record(self, db: &Db) {
        let write = async {
            let mut tx = db.write().await?;
            store::activity::insert(&mut tx, &self.row).await?;
            tx.commit().await
        };
        if let Err(error) = write.await {
            tracing::warn!(%error, kind = %self.row.kind, "could not record activity");
        }
    }
}
