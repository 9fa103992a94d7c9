//! Alerts to an agency when one of its client accounts needs a person: Kommo needs
//! re-authorising or was uninstalled, Flutterwave refused the secret key, jobs died, no
//! Flutterwave webhook for days while links are open, a payment was too small.
//!
//! A duty (under the background lease) reads the conditions from stored state every minute and
//! keeps one `incidents` row per client account and kind open while its condition holds. Opening
//! and closing write the alert (mail to the owners, the agency's webhook) into the outbox in the
//! same transaction, so each incident is announced once, and its recovery once, even across
//! crashes and instances: the unique open incident decides who announces.

pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::background::{Lease, every};
use crate::clock::now_ms;
use crate::ids::{AgencyId, ClientId};
use crate::outbox;
use crate::store::alerts::{self as rows, IncidentRow};
use crate::store::pauses::PauseCause;
use crate::store::{Db, StoreError, Tx};

/// What an incident is about (`incidents.kind`).
pub mod kinds {
    pub const KOMMO: &str = "kommo";
    pub const FLUTTERWAVE_KEY: &str = "flutterwave_key";
    pub const DEAD_JOBS: &str = "dead_jobs";
    pub const QUIET_FLUTTERWAVE: &str = "quiet_flutterwave";
    pub const UNDERPAID: &str = "underpaid";
}

/// A condition that holds now for one client account.
#[derive(Debug, Clone)]
struct Condition {
    agency: AgencyId,
    client_name: String,
    detail: String,
}

/// What one evaluation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    pub opened: usize,
    pub closed: usize,
}

/// Evaluates the conditions every `every` while this instance holds the background lease.
pub async fn run(db: Db, quiet: Duration, period: Duration, lease: Arc<Lease>, stop: CancellationToken) {
    every(lease, Duration::from_secs(5).min(period), period, stop, || async {
        if let Err(error) = evaluate(&db, quiet).await {
            tracing::warn!(error = %crate::error_chain(&error), "cannot evaluate the alert conditions");
        }
    })
    .await;
}

/// Reads what holds now, opens an incident for each new condition and closes those that no
/// longer hold, writing their alerts into the outbox.
pub async fn evaluate(db: &Db, quiet: Duration) -> Result<Evaluation, StoreError> {
    let now = now_ms();
    let since = now.saturating_sub(i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX));
    let quiet_days = quiet.as_secs() / 86_400;
    let mut holds: HashMap<(ClientId, &'static str), Condition> = HashMap::new();
    let mut tx = db.read().await?;
    for (client, agency, client_name, health) in rows::kommo_needs_person(&mut tx).await? {
        let detail = if health == "revoked" {
            "the pipepay integration was uninstalled from Kommo; install it again from the client account's page"
        } else {
            "Kommo asks for pipepay to be authorised again; connect Kommo again from the client account's page"
        };
        holds.insert((client, kinds::KOMMO), Condition { agency, client_name, detail: detail.into() });
    }
    for (client, agency, client_name, reason) in
        rows::paused_for(&mut tx, PauseCause::FlutterwaveKeyRefused).await?
    {
        holds.insert((client, kinds::FLUTTERWAVE_KEY), Condition { agency, client_name, detail: reason });
    }
    for (client, agency, client_name, count) in rows::dead_jobs(&mut tx).await? {
        let detail =
            format!("{count} job(s) failed for good; see the activity page and replay them once fixed");
        holds.insert((client, kinds::DEAD_JOBS), Condition { agency, client_name, detail });
    }
    for (client, agency, client_name, count) in rows::quiet_flutterwave(&mut tx, since).await? {
        let detail = format!(
            "no Flutterwave webhook for {quiet_days} day(s) while {count} payment link(s) are open; check the \
             webhook URL and secret hash in the Flutterwave dashboard"
        );
        holds.insert((client, kinds::QUIET_FLUTTERWAVE), Condition { agency, client_name, detail });
    }
    for (client, agency, client_name, count) in rows::underpaid(&mut tx).await? {
        let detail = format!("{count} payment(s) were less than their link asked; the deals were not won");
        holds.insert((client, kinds::UNDERPAID), Condition { agency, client_name, detail });
    }
    tx.commit().await?;

    let mut result = Evaluation::default();
    let mut tx = db.write().await?;
    let open = rows::open_incidents(&mut tx).await?;
    for incident in &open {
        let still =
            holds.keys().any(|(client, kind)| *client == incident.client_id && *kind == incident.kind);
        if !still && rows::close(&mut tx, incident.id, now).await? {
            announce(&mut tx, incident, None, false).await?;
            result.closed += 1;
        }
    }
    for ((client, kind), condition) in &holds {
        if open.iter().any(|i| i.client_id == *client && i.kind == *kind) {
            continue;
        }
        let row = IncidentRow {
            id: uuid::Uuid::now_v7(),
            agency_id: condition.agency,
            client_id: *client,
            kind: (*kind).to_owned(),
            detail: condition.detail.clone(),
            opened_at: now,
            closed_at: None,
        };
        if rows::open(&mut tx, &row).await? {
            announce(&mut tx, &row, Some(&condition.client_name), true).await?;
            result.opened += 1;
        }
    }
    tx.commit().await?;
    if result != Evaluation::default() {
        outbox::wake();
        tracing::info!(opened = result.opened, closed = result.closed, "alert incidents changed");
    }
    Ok(result)
}

/// A short title for each kind.
fn title(kind: &str, opened: bool) -> &'static str {
    match (kind, opened) {
        (kinds::KOMMO, true) => "Kommo needs you",
        (kinds::KOMMO, false) => "Kommo is connected again",
        (kinds::FLUTTERWAVE_KEY, true) => "Flutterwave refused the secret key",
        (kinds::FLUTTERWAVE_KEY, false) => "Flutterwave accepts the keys again",
        (kinds::DEAD_JOBS, true) => "Jobs failed for good",
        (kinds::DEAD_JOBS, false) => "No failed jobs left",
        (kinds::QUIET_FLUTTERWAVE, true) => "No Flutterwave webhooks",
        (kinds::QUIET_FLUTTERWAVE, false) => "Flutterwave webhooks arrive again",
        (kinds::UNDERPAID, true) => "A payment was too small",
        (kinds::UNDERPAID, false) => "No underpaid link left open",
        (_, true) => "Something needs you",
        (_, false) => "Resolved",
    }
}

/// Writes an incident's alert (or its recovery) into the outbox: mail to each owner unless the
/// agency turned that off, and the agency's webhook if it has one.
async fn announce(
    tx: &mut Tx,
    incident: &IncidentRow,
    name: Option<&str>,
    opened: bool,
) -> Result<(), StoreError> {
    let name = match name {
        Some(name) => name.to_owned(),
        None => {
            crate::store::clients::by_id(tx, incident.client_id).await?.map(|c| c.name).unwrap_or_default()
        }
    };
    let title = title(&incident.kind, opened);
    let subject = format!("[pipepay] {name}: {title}");
    let text = if opened {
        format!("{name}: {title}. {}.", incident.detail)
    } else {
        format!("{name}: {title} (resolved). It was: {}.", incident.detail)
    };
    let settings = rows::settings(tx, incident.agency_id).await?;
    if settings.as_ref().is_none_or(|s| s.email_owners != 0) {
        for owner in rows::owner_emails(tx, incident.agency_id).await? {
            let body = format!("{text}\n\nClient account: {name}\nIncident: {}\n", incident.id);
            outbox::mail(tx, Some(incident.agency_id), &owner, &subject, &body, false).await?;
        }
    }
    if let Some(url) = settings.and_then(|s| s.webhook_url) {
        let body = json!({
            "text": text,
            "event": if opened { "incident.opened" } else { "incident.resolved" },
            "incident": {
                "id": incident.id,
                "kind": incident.kind,
                "detail": incident.detail,
                "client_id": incident.client_id,
                "client_name": name,
                "agency_id": incident.agency_id,
                "opened_at": crate::clock::rfc3339(incident.opened_at),
            },
        });
        outbox::webhook(tx, incident.agency_id, &url, &subject, &body).await?;
    }
    Ok(())
}
