//! "Send a test event": a webhook of each kind to the client account's own addresses, through
//! the real ingress (over the public URL), to show whether its settings let webhooks in. Each
//! one is made so that nothing acts on it: the Flutterwave charge names a reference pipepay
//! never issues (`pipepay-test-...`), so no job verifies it; the Kommo event is a lead event
//! kind pipepay never acts on. Both are recorded in the timeline as ignored, in words that say
//! they were tests.

use std::time::Duration;

use serde_json::{Value, json};
use url::Url;

use super::{audit, clients, secrets};
use crate::auth::Access;
use crate::error::Result;
use crate::ids::ClientId;
use crate::roles::Role;
use crate::store::{self, Db};
use crate::tenants::flutterwave_keys::WEBHOOK_HASH;
use crate::vault::Vault;

/// Every test payment reference starts so; the checklist does not count such a webhook.
pub const TEST_REF_PREFIX: &str = "pipepay-test-";
/// The Kommo lead event kind of a test: pipepay acts on `status`, `add` and `update` only.
pub const TEST_KOMMO_EVENT: &str = "pipepay_test";

const TIMEOUT: Duration = Duration::from_secs(10);

/// What one test webhook showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `Kommo` or `Flutterwave`.
    pub to: &'static str,
    pub ok: bool,
    pub words: String,
}

/// The Flutterwave test: a `charge.completed` signed with the client account's secret hash.
async fn flutterwave(http: &reqwest::Client, url: &str, hash: Option<String>) -> Check {
    let Some(hash) = hash else {
        return Check {
            to: "Flutterwave",
            ok: false,
            words: "No secret hash is saved: add the Flutterwave keys first.".into(),
        };
    };
    let tx_ref = format!("{TEST_REF_PREFIX}{}", uuid::Uuid::now_v7().simple());
    let body = json!({
        "event": "charge.completed",
        "data": {
            "id": rand_id(),
            "tx_ref": tx_ref,
            "flw_ref": "PIPEPAY-TEST",
            "amount": 0,
            "currency": "NGN",
            "status": "successful",
            "narration": "pipepay test event: no payment was made",
        },
    });
    let sent = http.post(url).header("verif-hash", hash).json(&body).timeout(TIMEOUT).send().await;
    let words = match sent.map(|r| r.status().as_u16()) {
        Ok(200) => {
            "The webhook URL reaches pipepay and the secret hash pipepay holds was accepted. Flutterwave's \
                    dashboard must hold the same hash: the first real payment's webhook proves it."
                .to_owned()
        }
        Ok(401) => {
            "pipepay refused the signature: save the Flutterwave keys again with the secret hash that \
                    is set in Flutterwave's dashboard."
                .to_owned()
        }
        Ok(404) => "The webhook URL is unknown to pipepay: its token was rotated; paste the new URL into \
                    Flutterwave."
            .to_owned(),
        Ok(status) => format!("pipepay answered {status}: try again shortly."),
        Err(error) => format!(
            "The webhook URL could not be reached from pipepay ({error}): check the public URL setting."
        ),
    };
    let ok = words.starts_with("The webhook URL reaches");
    Check { to: "Flutterwave", ok, words }
}

/// A Flutterwave transaction id for the test: positive and unlikely to repeat, so each test is
/// stored rather than taken for a redelivery.
fn rand_id() -> i64 {
    i64::from(uuid::Uuid::now_v7().as_u128() as u32 & 0x7fff_ffff)
}

/// The Kommo test: a lead event of a kind pipepay never acts on, from the connected account.
async fn kommo(http: &reqwest::Client, url: &str, account: Option<(i64, String)>) -> Check {
    let Some((account_id, subdomain)) = account else {
        return Check { to: "Kommo", ok: false, words: "Kommo is not connected yet.".into() };
    };
    let form = [
        ("account[id]", account_id.to_string()),
        ("account[subdomain]", subdomain),
        (&*format!("leads[{TEST_KOMMO_EVENT}][0][id]"), "1".to_owned()),
    ]
    .iter()
    .fold(url::form_urlencoded::Serializer::new(String::new()), |mut s, (k, v)| {
        s.append_pair(k, v);
        s
    })
    .finish();
    let sent = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .timeout(TIMEOUT)
        .send()
        .await;
    let answer = match sent {
        Ok(response) if response.status().as_u16() == 200 => response.json::<Value>().await.ok(),
        Ok(response) if response.status().as_u16() == 404 => {
            return Check {
                to: "Kommo",
                ok: false,
                words: "The webhook URL is unknown to pipepay: its token was rotated; reconnect Kommo."
                    .into(),
            };
        }
        Ok(response) => {
            let status = response.status().as_u16();
            return Check {
                to: "Kommo",
                ok: false,
                words: format!("pipepay answered {status}: try again shortly."),
            };
        }
        Err(error) => {
            return Check {
                to: "Kommo",
                ok: false,
                words: format!(
                    "The webhook URL could not be reached from pipepay ({error}): check the public URL setting."
                ),
            };
        }
    };
    let reasons: Vec<&str> = answer
        .as_ref()
        .and_then(|a| a["ignored"].as_array())
        .map(|list| list.iter().filter_map(|i| i["reason"].as_str()).collect())
        .unwrap_or_default();
    if reasons.contains(&"not_acted_on") {
        Check {
            to: "Kommo",
            ok: true,
            words: "The webhook URL reaches pipepay and names the connected Kommo account.".into(),
        }
    } else {
        Check {
            to: "Kommo",
            ok: false,
            words: format!("pipepay did not take it as this account's ({reasons:?})."),
        }
    }
}

/// Where a test webhook goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Kommo,
    Flutterwave,
}

/// Sends both test webhooks (admins and owners: the addresses carry the ingress token).
pub async fn send(
    db: &Db,
    vault: &Vault,
    public_url: &Url,
    access: &Access,
    client: ClientId,
) -> Result<Vec<Check>> {
    send_to(db, vault, public_url, access, client, &[Service::Kommo, Service::Flutterwave]).await
}

/// Sends the test webhooks of `services`, in that order (admins and owners).
pub async fn send_to(
    db: &Db,
    vault: &Vault,
    public_url: &Url,
    access: &Access,
    client: ClientId,
    services: &[Service],
) -> Result<Vec<Check>> {
    let urls = clients::current_webhook_urls(db, vault, public_url, access, client).await?;
    access.require(Role::Admin)?;
    let mut tx = db.read().await?;
    let hash = secrets::open(&mut tx, vault, client, WEBHOOK_HASH).await?.map(|h| h.expose().to_owned());
    let account = store::kommo::connection(&mut tx, client).await?.map(|c| (c.account_id, c.subdomain));
    tx.commit().await?;
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| crate::error::Error::Internal(e.into()))?;
    let mut checks = Vec::with_capacity(services.len());
    for service in services {
        checks.push(match service {
            Service::Kommo => kommo(&http, &urls.kommo, account.clone()).await,
            Service::Flutterwave => flutterwave(&http, &urls.flutterwave, hash.clone()).await,
        });
    }
    let mut tx = db.write().await?;
    let detail = json!({ "ok": checks.iter().filter(|c| c.ok).map(|c| c.to).collect::<Vec<_>>() });
    audit::record(&mut tx, access, Some(client), "client.test_event_sent", detail).await?;
    tx.commit().await?;
    Ok(checks)
}
