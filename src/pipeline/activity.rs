//! Writing the activity timeline.

use super::Tenant;
use crate::clock::now_ms;
use crate::store::activity::ActivityRow;
use crate::store::{self, Db};

/// One timeline entry, built up then recorded.
pub struct Activity {
    row: ActivityRow,
}

impl Activity {
    pub(crate) fn new(tenant: &Tenant, kind: &str, outcome: &str) -> Activity {
        Activity {
            row: ActivityRow {
                id: uuid::Uuid::now_v7(),
                client_id: tenant.id,
                at: now_ms(),
                kind: kind.into(),
                outcome: outcome.into(),
                lead_id: None,
                tx_ref: None,
                job_id: Some(tenant.job),
                detail: String::new(),
            },
        }
    }

    pub fn lead(mut self, lead_id: i64) -> Activity {
        self.row.lead_id = Some(lead_id);
        self
    }

    pub fn tx_ref(mut self, tx_ref: &str) -> Activity {
        self.row.tx_ref = Some(tx_ref.to_owned());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Activity {
        self.row.detail = detail.into();
        self
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
