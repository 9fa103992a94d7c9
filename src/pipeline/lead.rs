//! `lead` jobs: a lead changed in Kommo. In a trigger stage it gets a payment link (once per
//! amount), lost it loses its open link, anywhere else nothing happens.

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::request::{self, DpSettings, LeadRequest};
use super::{Activity, Pipeline, Tenant, flutterwave_outcome, kommo_outcome};
use crate::clock::now_ms;
use crate::flutterwave::client::{Customer, PaymentRequest};
use crate::kommo::model::Lead;
use crate::money;
use crate::queue::Outcome;
use crate::store::links::{self, LinkRow, Step, state};
use crate::store::{self, StoreError};
use crate::tenants::notes::{NoteKind, render};
use crate::tenants::settings::{CURRENCIES, KOMMO_LOST};

impl Pipeline {
    pub(super) async fn lead(&self, tenant: &Tenant, payload: &Value) -> Outcome {
        let Some(lead_id) = payload["lead_id"].as_i64() else {
            return Outcome::Dead { error: "the job names no lead".into() };
        };
        // A request from inside Kommo (Digital Pipeline, the deal card) acts whatever the
        // trigger stages say; an ordinary webhook job needs one.
        let request = match request::of(payload) {
            Ok(request) => request,
            Err(error) => return Outcome::Dead { error },
        };
        let trigger = tenant.settings.trigger.clone();
        if trigger.is_none() && request.is_none() {
            Activity::new(tenant, "ignored", "ignored")
                .lead(lead_id)
                .detail("no trigger stage is set in the client account's settings")
                .record(&self.db)
                .await;
            return Outcome::Done;
        }
        // Trust nothing in the webhook: the lead as Kommo has it now decides.
        let lead = match self.kommo.lead(tenant.id, lead_id).await {
            Ok(Some(lead)) => lead,
            Ok(None) => {
                Activity::new(tenant, "ignored", "ignored")
                    .lead(lead_id)
                    .detail("the lead no longer exists in Kommo")
                    .record(&self.db)
                    .await;
                return Outcome::Done;
            }
            Err(error) => return kommo_outcome(error),
        };
        if let Some(LeadRequest::Disable { user_id }) = &request {
            let why = format!("disabled from the deal card by Kommo user {user_id}");
            return self.cancel_links(tenant, &lead, &why).await;
        }
        if lead.status_id == KOMMO_LOST {
            return self.cancel_links(tenant, &lead, "the lead was lost").await;
        }
        if let Some(trigger) = trigger.as_ref().filter(|_| request.is_none())
            && (lead.pipeline_id != trigger.pipeline_id || !trigger.stage_ids.contains(&lead.status_id))
        {
            Activity::new(tenant, "ignored", "ignored")
                .lead(lead_id)
                .detail(format!("the lead is not in a trigger stage now (stage {})", lead.status_id))
                .record(&self.db)
                .await;
            return Outcome::Done;
        }
        match self.paid(tenant, lead_id).await {
            Ok(true) => {
                Activity::new(tenant, "ignored", "ignored")
                    .lead(lead_id)
                    .detail("the lead is paid already")
                    .record(&self.db)
                    .await;
                return Outcome::Done;
            }
            Ok(false) => {}
            Err(error) => return Outcome::Retry { error: error.to_string(), after: None },
        }
        let dp = match &request {
            Some(LeadRequest::DigitalPipeline(settings)) => Some(settings),
            _ => None,
        };
        // "Send the link again" from the deal card: a link whose note went out before is
        // re-used (same amount) and its note posted once more, once per request (job).
        let sent_before = match &request {
            Some(LeadRequest::Send { .. }) => match self.links_of(tenant, lead_id).await {
                Ok(links) => links.iter().any(|l| l.state == state::OPEN && l.note_posted_at.is_some()),
                Err(error) => return Outcome::Retry { error: error.to_string(), after: None },
            },
            _ => false,
        };
        let outcome = self.create_link(tenant, &lead, dp).await;
        if sent_before && matches!(outcome, Outcome::Done) {
            return self.send_again(tenant, &lead).await;
        }
        outcome
    }

    async fn send_again(&self, tenant: &Tenant, lead: &Lead) -> Outcome {
        let links = match self.links_of(tenant, lead.id).await {
            Ok(links) => links,
            Err(error) => return Outcome::Retry { error: error.to_string(), after: None },
        };
        let Some(link) = links.iter().find(|l| l.state == state::OPEN) else { return Outcome::Done };
        let url = link.link.clone().unwrap_or_default();
        let amount = money::format_text(&link.currency, &link.amount);
        let lead_id = lead.id.to_string();
        let text = render(
            tenant.settings.notes.get(NoteKind::LinkCreated),
            &[
                ("link", &url),
                ("amount", &amount),
                ("currency", &link.currency),
                ("old_amount", ""),
                ("tx_ref", &link.tx_ref),
                ("lead_id", &lead_id),
            ],
        );
        let key = format!("resend:{}:{}", link.tx_ref, tenant.job);
        self.notice_once(tenant, lead.id, &key, &text).await
    }

    async fn paid(&self, tenant: &Tenant, lead_id: i64) -> Result<bool, StoreError> {
        let mut tx = self.db.read().await?;
        let paid = links::lead_is_paid(&mut tx, tenant.id, lead_id).await?;
        tx.commit().await?;
        Ok(paid)
    }

    async fn create_link(&self, tenant: &Tenant, lead: &Lead, dp: Option<&DpSettings>) -> Outcome {
        let secret = match self.secret_key(tenant).await {
            Ok(secret) => secret,
            Err(outcome) => return outcome,
        };
        let (customer, mut missing) = match self.customer(tenant, lead).await {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        let currency = match dp.and_then(|dp| dp.currency.clone()) {
            Some(currency) => Ok(currency),
            None => match self.currency(tenant, lead).await {
                Ok(found) => found,
                Err(outcome) => return outcome,
            },
        };
        let price = match dp.map(|dp| dp.amount(lead)) {
            Some(Ok(Some(amount))) => amount,
            Some(Err(problem)) => {
                missing.push(problem);
                lead.price
            }
            _ => lead.price,
        };
        // Checked after rounding: 0.004 USD is no price either, and Flutterwave would refuse it.
        let amount = match &currency {
            Ok(currency) => money::round(currency, self.amount(tenant, price)),
            Err(_) => self.amount(tenant, price),
        };
        if amount <= Decimal::ZERO && missing.is_empty() {
            missing.push("the lead has no price (the amount is 0)".to_owned());
        }
        let currency = currency.map_err(|problem| missing.push(problem)).ok();
        let (Some(customer), Some(currency), true) = (customer, currency, missing.is_empty()) else {
            return self.missing_details(tenant, lead, &missing).await;
        };

        let existing = match self.links_of(tenant, lead.id).await {
            Ok(existing) => existing,
            Err(error) => return Outcome::Retry { error: error.to_string(), after: None },
        };
        let mut replaced = None;
        for link in &existing {
            match link.state.as_str() {
                // An earlier attempt whose answer was lost: Flutterwave may have the link, so its
                // reference is never posted again; a payment on it would still close the deal.
                state::CREATING => {
                    if let Err(error) = self.set_state(link.id, state::UNCERTAIN).await {
                        return Outcome::Retry { error: error.to_string(), after: None };
                    }
                }
                state::OPEN if replaced.is_none() => {
                    let same =
                        link.currency == currency && link.amount.parse::<Decimal>().ok() == Some(amount);
                    if same {
                        return self.finish_link(tenant, lead, link, None, None).await;
                    }
                    // A new amount: the old link must stop working before the new one exists.
                    if let Some(url) = &link.link
                        && let Err(error) = self.flutterwave.disable_link(&secret, url).await
                    {
                        return flutterwave_outcome(error);
                    }
                    if let Err(error) = self.set_state(link.id, state::SUPERSEDED).await {
                        return Outcome::Retry { error: error.to_string(), after: None };
                    }
                    Activity::new(tenant, "link_disabled", "ok")
                        .lead(lead.id)
                        .tx_ref(&link.tx_ref)
                        .detail(format!(
                            "replaced: the amount changed from {} {} to {} {currency}",
                            money::format_text(&link.currency, &link.amount),
                            link.currency,
                            money::format(&currency, amount),
                        ))
                        .record(&self.db)
                        .await;
                    replaced = Some(link.clone());
                }
                _ => {}
            }
        }

        // The reference is new for every link and recorded before Flutterwave hears of it.
        let tx_ref = format!("pp-{}", uuid::Uuid::now_v7().simple());
        // The current span is the job's (steps have none of their own).
        tracing::Span::current().record("pipepay.tx_ref", tx_ref.as_str());
        let id = uuid::Uuid::now_v7();
        let recorded = async {
            let mut tx = self.db.write().await?;
            links::insert_creating(
                &mut tx,
                id,
                tenant.id,
                lead.id,
                lead.pipeline_id,
                &tx_ref,
                &money::format(&currency, amount),
                &currency,
                now_ms(),
            )
            .await?;
            tx.commit().await
        };
        if let Err(error) = recorded.await {
            return Outcome::Retry { error: error.to_string(), after: None };
        }
        let checkout = &tenant.settings.checkout;
        let request = PaymentRequest {
            tx_ref: tx_ref.clone(),
            amount,
            currency: currency.clone(),
            redirect_url: checkout.redirect_url.clone(),
            customer,
            title: checkout.title.clone().or_else(|| Some(tenant.settings.display_name.clone())),
            logo: checkout.logo_url.clone(),
            description: Some(lead.name.clone()).filter(|n| !n.is_empty()),
            meta: json!({ "client_account": tenant.id, "lead_id": lead.id }),
            payment_options: checkout.payment_options.clone(),
            session_duration_minutes: checkout.session_duration_minutes,
            max_retry_attempt: None,
        };
        let link_url = match self.flutterwave.create_payment(&secret, &request).await {
            Ok(url) => url,
            Err(error) => {
                // A refusal means nothing was created; anything else may have been.
                let after = match &error {
                    crate::flutterwave::client::FlutterwaveError::Rejected { .. }
                    | crate::flutterwave::client::FlutterwaveError::Invalid(_)
                    | crate::flutterwave::client::FlutterwaveError::Unauthorized => state::FAILED,
                    _ => state::UNCERTAIN,
                };
                if let Err(store_error) = self.set_state(id, after).await {
                    tracing::warn!(%store_error, "could not mark a link attempt");
                }
                return flutterwave_outcome(error);
            }
        };
        let opened = async {
            let mut tx = self.db.write().await?;
            links::opened(&mut tx, id, &link_url, now_ms()).await?;
            let row = links::by_tx_ref(&mut tx, tenant.id, &tx_ref).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(row)
        };
        let row = match opened.await {
            Ok(Some(row)) => row,
            Ok(None) => {
                return Outcome::Retry { error: "the new link's record vanished".into(), after: None };
            }
            Err(error) => return Outcome::Retry { error: error.to_string(), after: None },
        };
        Activity::new(tenant, "link_created", "ok")
            .lead(lead.id)
            .tx_ref(&tx_ref)
            .detail(format!("{} {currency}", money::format(&currency, amount)))
            .record(&self.db)
            .await;
        self.finish_link(tenant, lead, &row, replaced.as_ref(), dp.and_then(|dp| dp.note.as_deref())).await
    }

    /// The once-only steps after a link exists: the note, then the lead's link field.
    async fn finish_link(
        &self,
        tenant: &Tenant,
        lead: &Lead,
        link: &LinkRow,
        replaced: Option<&LinkRow>,
        note: Option<&str>,
    ) -> Outcome {
        tracing::Span::current().record("pipepay.tx_ref", link.tx_ref.as_str());
        let url = link.link.clone().unwrap_or_default();
        if link.note_posted_at.is_none() {
            let (kind, old_amount) = match replaced {
                Some(old) => (
                    NoteKind::LinkReplaced,
                    format!("{} {}", money::format_text(&old.currency, &old.amount), old.currency),
                ),
                None => (NoteKind::LinkCreated, String::new()),
            };
            let lead_id = lead.id.to_string();
            let amount = money::format_text(&link.currency, &link.amount);
            // The Digital Pipeline action's own note text stands in for the first link's note.
            let template = match (kind, note) {
                (NoteKind::LinkCreated, Some(note)) => note,
                _ => tenant.settings.notes.get(kind),
            };
            let text = render(
                template,
                &[
                    ("link", &url),
                    ("amount", &amount),
                    ("currency", &link.currency),
                    ("old_amount", &old_amount),
                    ("tx_ref", &link.tx_ref),
                    ("lead_id", &lead_id),
                ],
            );
            let earlier = match self.attempt(link, Step::Note, &text).await {
                Ok(earlier) => earlier,
                Err(outcome) => return outcome,
            };
            if let Err(outcome) = self.post_note(tenant, lead.id, &text, earlier).await {
                return outcome;
            }
            if let Err(error) = self.mark(link, Step::Note).await {
                return Outcome::Retry { error: error.to_string(), after: None };
            }
            Activity::new(tenant, "note_posted", "ok")
                .lead(lead.id)
                .tx_ref(&link.tx_ref)
                .detail("payment link note")
                .record(&self.db)
                .await;
        } else if replaced.is_none() {
            Activity::new(tenant, "link_reused", "ok")
                .lead(lead.id)
                .tx_ref(&link.tx_ref)
                .detail("the lead's open link already asks for this amount")
                .record(&self.db)
                .await;
        }
        if let Some(field) = tenant.settings.link_field_id
            && link.field_written_at.is_none()
        {
            if let Err(error) = self.kommo.set_lead_field(tenant.id, lead.id, field, &url).await {
                return kommo_outcome(error);
            }
            if let Err(error) = self.mark(link, Step::Field).await {
                return Outcome::Retry { error: error.to_string(), after: None };
            }
        }
        Outcome::Done
    }

    /// The first contact with an email, and what is missing.
    async fn customer(
        &self,
        tenant: &Tenant,
        lead: &Lead,
    ) -> Result<(Option<Customer>, Vec<String>), Outcome> {
        for contact_id in &lead.contact_ids {
            let contact = match self.kommo.contact(tenant.id, *contact_id).await {
                Ok(Some(contact)) => contact,
                Ok(None) => continue,
                Err(error) => return Err(kommo_outcome(error)),
            };
            if let Some(email) = contact.emails.first() {
                let customer = Customer {
                    email: email.clone(),
                    phone: contact.phones.first().cloned(),
                    name: Some(contact.name.clone()).filter(|n| !n.is_empty()),
                };
                return Ok((Some(customer), Vec::new()));
            }
        }
        let why = if lead.contact_ids.is_empty() {
            "the lead has no contact with an email address"
        } else {
            "the lead's contact has no email address"
        };
        Ok((None, vec![why.to_owned()]))
    }

    /// The price, plus tax unless the price includes it (rounded by the caller).
    fn amount(&self, tenant: &Tenant, price: Decimal) -> Decimal {
        let tax = &tenant.settings.tax;
        let mut amount = price;
        if let Some(rate) = tax.rate_percent
            && !tax.included_in_price
        {
            amount += amount * rate / Decimal::ONE_HUNDRED;
        }
        amount
    }

    /// The lead's currency field, else the settings, else the Kommo account's; `Err(problem)`
    /// when there is none, or when the lead's field names something Flutterwave does not take
    /// (falling back would charge "1500" in the wrong currency).
    async fn currency(&self, tenant: &Tenant, lead: &Lead) -> Result<Result<String, String>, Outcome> {
        let from_field = tenant
            .settings
            .currency_field_id
            .and_then(|field| lead.field(field))
            .map(|value| value.trim().to_uppercase())
            .filter(|value| !value.is_empty());
        if let Some(value) = from_field {
            if CURRENCIES.contains(&value.as_str()) {
                return Ok(Ok(value));
            }
            let shown: String = value.chars().take(20).collect();
            return Ok(Err(format!(
                "the lead's currency field says \"{shown}\", which is not a currency code pipepay takes (such as KES, NGN, USD)"
            )));
        }
        if let Some(currency) = &tenant.settings.currency {
            return Ok(Ok(currency.clone()));
        }
        let connection = async {
            let mut tx = self.db.read().await?;
            let row = store::kommo::connection(&mut tx, tenant.id).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(row.and_then(|r| r.currency))
        };
        match connection.await {
            Ok(currency) => Ok(currency
                .map(|c| c.to_uppercase())
                .filter(|c| CURRENCIES.contains(&c.as_str()))
                .ok_or_else(|| "no currency: set one in pipepay or in the lead's currency field".to_owned())),
            Err(error) => Err(Outcome::Retry { error: error.to_string(), after: None }),
        }
    }

    /// One note saying what to fix, once per set of problems.
    async fn missing_details(&self, tenant: &Tenant, lead: &Lead, missing: &[String]) -> Outcome {
        let key = format!("missing:{}:{}", lead.id, missing.join("|"));
        let text = render(
            tenant.settings.notes.get(NoteKind::MissingDetails),
            &[("missing", &missing.join("; ")), ("lead_id", &lead.id.to_string())],
        );
        let outcome = self.notice_once(tenant, lead.id, &key, &text).await;
        Activity::new(tenant, "ignored", "failed")
            .lead(lead.id)
            .detail(format!("no link: {}", missing.join("; ")))
            .record(&self.db)
            .await;
        outcome
    }

    /// Posts a note keyed by `key` at most once, even across crashes and repeats.
    pub(super) async fn notice_once(&self, tenant: &Tenant, lead_id: i64, key: &str, text: &str) -> Outcome {
        // Claimed before sending: a claim still pending on a later attempt may have been sent.
        let claim = async {
            let mut tx = self.db.write().await?;
            let fresh = links::claim_notice(&mut tx, tenant.id, key).await?;
            let pending = fresh || links::notice_pending(&mut tx, tenant.id, key).await?;
            let earlier = if pending {
                links::notice_attempt(&mut tx, tenant.id, key, text, now_ms()).await?
            } else {
                None
            };
            tx.commit().await?;
            Ok::<_, StoreError>((pending, earlier))
        };
        let earlier = match claim.await {
            Ok((true, earlier)) => earlier,
            Ok((false, _)) => return Outcome::Done,
            Err(error) => return Outcome::Retry { error: error.to_string(), after: None },
        };
        if let Err(outcome) = self.post_note(tenant, lead_id, text, earlier).await {
            return outcome;
        }
        let posted = async {
            let mut tx = self.db.write().await?;
            links::notice_posted(&mut tx, tenant.id, key, now_ms()).await?;
            tx.commit().await
        };
        if let Err(error) = posted.await {
            return Outcome::Retry { error: error.to_string(), after: None };
        }
        Activity::new(tenant, "note_posted", "ok")
            .lead(lead_id)
            .detail(key.split(':').next().unwrap_or(key).to_owned())
            .record(&self.db)
            .await;
        Outcome::Done
    }

    /// A lost lead: its open links stop working.
    async fn cancel_links(&self, tenant: &Tenant, lead: &Lead, why: &str) -> Outcome {
        let existing = match self.links_of(tenant, lead.id).await {
            Ok(existing) => existing,
            Err(error) => return Outcome::Retry { error: error.to_string(), after: None },
        };
        let open: Vec<&LinkRow> = existing.iter().filter(|l| l.state == state::OPEN).collect();
        if open.is_empty() {
            Activity::new(tenant, "ignored", "ignored")
                .lead(lead.id)
                .detail(format!("{why}; it had no open link"))
                .record(&self.db)
                .await;
            return Outcome::Done;
        }
        let secret = match self.secret_key(tenant).await {
            Ok(secret) => secret,
            Err(outcome) => return outcome,
        };
        for link in open {
            if let Some(url) = &link.link
                && let Err(error) = self.flutterwave.disable_link(&secret, url).await
            {
                return flutterwave_outcome(error);
            }
            if let Err(error) = self.set_state(link.id, state::CANCELLED).await {
                return Outcome::Retry { error: error.to_string(), after: None };
            }
            Activity::new(tenant, "link_disabled", "ok")
                .lead(lead.id)
                .tx_ref(&link.tx_ref)
                .detail(why)
                .record(&self.db)
                .await;
        }
        Outcome::Done
    }

    async fn links_of(&self, tenant: &Tenant, lead_id: i64) -> Result<Vec<LinkRow>, StoreError> {
        let mut tx = self.db.read().await?;
        let rows = links::for_lead(&mut tx, tenant.id, lead_id).await?;
        tx.commit().await?;
        Ok(rows)
    }

    pub(super) async fn set_state(&self, link: uuid::Uuid, to: &str) -> Result<(), StoreError> {
        let mut tx = self.db.write().await?;
        links::set_state(&mut tx, link, to, now_ms()).await?;
        tx.commit().await
    }

    pub(super) async fn mark(&self, link: &LinkRow, step: Step) -> Result<(), StoreError> {
        let mut tx = self.db.write().await?;
        links::mark(&mut tx, link.id, step, now_ms()).await?;
        tx.commit().await
    }
}
