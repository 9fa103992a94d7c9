//! An agency's client accounts at a glance: the health facts the agency home page shows, and
//! each one's setup checklist (what is left before it can make a payment link).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{Datelike, TimeZone, Utc};
use rust_decimal::Decimal;

use super::{clients, secrets};
use crate::auth::Access;
use crate::clock::now_ms;
use crate::error::Result;
use crate::flutterwave::keys::{self, Mode};
use crate::ids::ClientId;
use crate::store::{self, Db};
use crate::tenants::flutterwave_keys::SECRET_KEY;
use crate::vault::Vault;

#[derive(Debug, Clone)]
pub struct ClientHealth {
    pub id: ClientId,
    pub name: String,
    /// (health, subdomain) when Kommo is connected.
    pub kommo: Option<(String, String)>,
    /// The Flutterwave keys' mode when keys are set.
    pub flutterwave: Option<Mode>,
    pub last_webhook_at: Option<i64>,
    pub open_links: i64,
    /// Paid this calendar month (UTC), per currency: (currency, total, payments).
    pub payments_this_month: Vec<(String, Decimal, usize)>,
    /// Dead jobs: work that failed for good and waits for a replay.
    pub failures: i64,
    /// Why the pipeline waits for a person, if it does.
    pub paused: Option<String>,
    pub checklist: Checklist,
}

/// A client account's setup, in the order a person does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checklist {
    /// Kommo connected, and its connection working (not revoked or waiting for a reconnect).
    pub kommo: bool,
    /// Flutterwave keys saved: a key is checked with Flutterwave before it is saved.
    pub keys: bool,
    /// A trigger stage chosen in the settings: without one, no deal makes a link.
    pub trigger: bool,
    /// A Flutterwave webhook arrived at least once: the dashboard points at pipepay.
    pub flutterwave_webhook: bool,
}

/// The next thing to do on a client account's setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ConnectKommo,
    AddKeys,
    ChooseTrigger,
    AwaitFlutterwaveWebhook,
}

impl Checklist {
    /// Whether a deal reaching the trigger stage would get a payment link: the first three
    /// steps. The webhook only proves payments will be seen at once (reconciliation finds
    /// them otherwise), so it is not needed to make links.
    pub fn makes_links(&self) -> bool {
        self.kommo && self.keys && self.trigger
    }

    pub fn next(&self) -> Option<Step> {
        [
            (self.kommo, Step::ConnectKommo),
            (self.keys, Step::AddKeys),
            (self.trigger, Step::ChooseTrigger),
            (self.flutterwave_webhook, Step::AwaitFlutterwaveWebhook),
        ]
        .into_iter()
        .find(|(done, _)| !done)
        .map(|(_, step)| step)
    }

    pub fn done(&self) -> usize {
        [self.kommo, self.keys, self.trigger, self.flutterwave_webhook].into_iter().filter(|d| *d).count()
    }
}

/// One client account's checklist.
pub async fn checklist(db: &Db, vault: &Vault, access: &Access, client: ClientId) -> Result<Checklist> {
    // Also the ownership check: another agency's client account is a 404.
    let view = clients::get(db, access, client).await?;
    let mut tx = db.read().await?;
    let kommo = store::overview::connections(&mut tx, access.agency)
        .await?
        .into_iter()
        .any(|(id, health, _)| id == client && health == crate::kommo::health::ACTIVE);
    let keys = secrets::open(&mut tx, vault, client, SECRET_KEY).await?.is_some();
    let flutterwave_webhook = store::payments::flutterwave_heard(&mut tx, client).await?;
    tx.commit().await?;
    Ok(Checklist { kommo, keys, trigger: view.settings.trigger.is_some(), flutterwave_webhook })
}

/// What asks for a client account's payment links: its trigger stages, Kommo's Digital
/// Pipeline action (known only by its calls, since it is configured inside Kommo), both or
/// neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drivers {
    pub trigger: bool,
    /// When the action last called, in ms.
    pub digital_pipeline: Option<i64>,
}

pub async fn drivers(db: &Db, access: &Access, client: ClientId) -> Result<Drivers> {
    // Also the ownership check.
    let view = clients::get(db, access, client).await?;
    let mut tx = db.read().await?;
    let digital_pipeline = store::events::last_digital_pipeline_call(&mut tx, client).await?;
    tx.commit().await?;
    Ok(Drivers { trigger: view.settings.trigger.is_some(), digital_pipeline })
}

/// The first instant of this month, UTC, in ms.
fn month_start(now: i64) -> i64 {
    let now = Utc.timestamp_millis_opt(now).single().unwrap_or_else(Utc::now);
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().map_or(0, |d| d.timestamp_millis())
}

pub async fn clients(db: &Db, vault: &Vault, access: &Access) -> Result<Vec<ClientHealth>> {
    let list = clients::list(db, access).await?;
    let agency = access.agency;
    let mut tx = db.read().await?;
    let kommo: HashMap<ClientId, (String, String)> = store::overview::connections(&mut tx, agency)
        .await?
        .into_iter()
        .map(|(client, health, subdomain)| (client, (health, subdomain)))
        .collect();
    let last: HashMap<ClientId, i64> =
        store::overview::last_webhooks(&mut tx, agency).await?.into_iter().collect();
    let open: HashMap<ClientId, i64> =
        store::overview::open_links(&mut tx, agency).await?.into_iter().collect();
    let dead: HashMap<ClientId, i64> =
        store::overview::dead_jobs(&mut tx, agency).await?.into_iter().collect();
    let paused: HashMap<ClientId, String> =
        store::overview::pauses(&mut tx, agency).await?.into_iter().collect();
    let heard: HashSet<ClientId> =
        store::payments::flutterwave_heard_by(&mut tx, agency).await?.into_iter().collect();
    let mut paid: HashMap<ClientId, BTreeMap<String, (Decimal, usize)>> = HashMap::new();
    for (client, amount, currency) in
        store::overview::payments_since(&mut tx, agency, month_start(now_ms())).await?
    {
        // Stored as exact decimal text by the pipeline; a row that does not parse is skipped
        // rather than guessed at.
        let Ok(amount) = amount.parse::<Decimal>() else { continue };
        let total = paid.entry(client).or_default().entry(currency).or_insert((Decimal::ZERO, 0));
        total.0 += amount;
        total.1 += 1;
    }
    let mut healths = Vec::with_capacity(list.len());
    for client in list {
        let key = secrets::open(&mut tx, vault, client.id, SECRET_KEY).await?;
        let checklist = Checklist {
            kommo: kommo.get(&client.id).is_some_and(|(h, _)| h == crate::kommo::health::ACTIVE),
            keys: key.is_some(),
            trigger: client.settings.trigger.is_some(),
            flutterwave_webhook: heard.contains(&client.id),
        };
        healths.push(ClientHealth {
            checklist,
            id: client.id,
            kommo: kommo.get(&client.id).cloned(),
            flutterwave: key.map(|k| keys::secret_key_mode(k.expose()).unwrap_or(Mode::Live)),
            last_webhook_at: last.get(&client.id).copied(),
            open_links: open.get(&client.id).copied().unwrap_or(0),
            payments_this_month: paid
                .remove(&client.id)
                .unwrap_or_default()
                .into_iter()
                .map(|(currency, (total, count))| (currency, total, count))
                .collect(),
            failures: dead.get(&client.id).copied().unwrap_or(0),
            paused: paused.get(&client.id).cloned(),
            name: client.name,
        });
    }
    tx.commit().await?;
    Ok(healths)
}

#[cfg(test)]
mod tests {
    use super::{Checklist, Step, month_start};

    #[test]
    fn the_next_step_is_the_first_not_done_and_links_need_the_first_three() {
        let mut list = Checklist::default();
        assert_eq!(list.next(), Some(Step::ConnectKommo));
        list.kommo = true;
        list.keys = true;
        assert_eq!(list.next(), Some(Step::ChooseTrigger));
        assert!(!list.makes_links());
        list.trigger = true;
        assert!(list.makes_links());
        assert_eq!((list.next(), list.done()), (Some(Step::AwaitFlutterwaveWebhook), 3));
        list.flutterwave_webhook = true;
        assert_eq!(list.next(), None);
        list.keys = false;
        assert_eq!(list.next(), Some(Step::AddKeys), "a later step does not hide an earlier one");
    }

    #[test]
    fn a_month_starts_on_the_first_at_midnight_utc() {
        // 2026-11-29T22:05:00Z
        let now = 1_795_989_900_000;
        assert_eq!(month_start(now), 1_793_491_200_000); // 2026-11-01T00:00:00Z
    }
}
