//! Alert webhooks: a JSON body (with Slack's `text` field), signed with the agency's secret.
//!
//! `Pipepay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the time is
//! inside what is signed, so a receiver that refuses old times cannot be sent a replay.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::Failure;
use crate::ids::AgencyId;
use crate::store::outbox::OutboxRow;
use crate::store::{self, Db};
use crate::telemetry::agency::{PublicOnly, refused_target};
use crate::vault::{Secret, Slot, Vault};

pub const SIGNATURE_HEADER: &str = "Pipepay-Signature";
/// Where the agency's signing secret is sealed.
pub const SECRET: Slot = Slot { table: "alert_settings", field: "webhook_secret" };
const TIMEOUT: Duration = Duration::from_secs(15);

/// The signature header's value for `body` at `unix_secs`.
pub fn signature(secret: &str, unix_secs: i64, body: &str) -> String {
    // HMAC takes a key of any length, so this never returns early.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{unix_secs}.{body}").as_bytes());
    format!("t={unix_secs},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct Client {
    http: reqwest::Client,
    allow_private: bool,
}

impl Client {
    pub fn new(allow_private: bool) -> anyhow::Result<Client> {
        crate::install_tls_provider();
        let mut builder =
            reqwest::Client::builder().timeout(TIMEOUT).redirect(reqwest::redirect::Policy::none());
        if !allow_private {
            // Through a proxy, the proxy would resolve the agency's host out of the resolver's sight.
            builder = builder.dns_resolver(Arc::new(PublicOnly)).no_proxy();
        }
        Ok(Client { http: builder.build()?, allow_private })
    }

    pub async fn send(&self, db: &Db, vault: &Vault, row: &OutboxRow) -> Result<(), Failure> {
        let agency = row.agency_id.ok_or_else(|| Failure::Permanent("a webhook without an agency".into()))?;
        if let Some(why) = refused_target(&row.recipient, self.allow_private) {
            return Err(Failure::Permanent(why));
        }
        let secret = self.secret(db, vault, agency).await?;
        let now = crate::clock::now_ms() / 1000;
        let answer = self
            .http
            .post(&row.recipient)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature(secret.expose(), now, &row.body))
            .body(row.body.clone())
            .send()
            .await
            .map_err(|e| Failure::Transient(crate::error_chain(&e)))?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Err(Failure::Transient(format!("the receiver answered {status}")))
        } else {
            Err(Failure::Permanent(format!("the receiver answered {status}")))
        }
    }

    async fn secret(&self, db: &Db, vault: &Vault, agency: AgencyId) -> Result<Secret, Failure> {
        let read = async {
            let mut tx = db.read().await?;
            let row = store::alerts::settings(&mut tx, agency).await?;
            tx.commit().await?;
            Ok::<_, store::StoreError>(row)
        };
        let row = read.await.map_err(|e| Failure::Transient(crate::error_chain(&e)))?;
        let sealed = row
            .and_then(|r| r.webhook_secret)
            .ok_or_else(|| Failure::Permanent("the agency has no webhook secret any more".into()))?;
        vault.open_for_agency(agency, SECRET, &sealed).map_err(|e| Failure::Permanent(e.to_string()))
    }
}
