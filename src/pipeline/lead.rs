//! `lead` jobs: a lead changed in Kommo. In a trigger stage it gets a payment link (once per
//! amount), lost it loses its open link, anywhere else nothing happens.

use rust_decimal::Decimal;
use serde_json::json;

use super::{Activity, JobContext, Pipeline, Step, Stop, read_tx, write_tx};
use crate::clock::now_ms;
use crate::flutterwave::client::{Customer, FlutterwaveError, PaymentRequest};
use crate::ids::TxRef;
use crate::kommo::model::Lead;
use crate::money::{self, Money};
use crate::queue::job::{DpSettings, LeadJob, LeadRequest};
use crate::store::activity::{ActivityKind as Kind, ActivityOutcome as Turned};
use crate::store::links::{self, Attempt, LinkRow, LinkState, Step as LinkStep};
use crate::tenants::notes::{NoteKind, render};
use crate::tenants::settings::{CURRENCIES, KOMMO_LOST};
use crate::vault::Secret;

/// What a new link will charge, and whom.
struct Charge {
    customer: Customer,
    price: Money,
}

impl Pipeline {
    pub(super) async fn lead(&self, cx: &JobContext, job: &LeadJob) -> Step {
        let lead_id = job.lead_id;
        let request = job.request.as_ref();
        let ignored =
            |detail: &str| Activity::new(cx, Kind::Ignored, Turned::Ignored).lead(lead_id).detail(detail);
        // A request from inside Kommo (Digital Pipeline, the deal card) acts whatever the
        // trigger stages say; an ordinary webhook job needs one.
        let trigger = cx.settings.trigger.clone();
        if trigger.is_none() && request.is_none() {
            ignored("no trigger stage is set in the client account's settings").record(&self.db).await;
            return Ok(());
        }
        // Trust nothing in the webhook: the lead as Kommo has it now decides.
        let Some(lead) = self.kommo.lead(&cx.kommo, lead_id).await? else {
            ignored("the lead no longer exists in Kommo").record(&self.db).await;
            return Ok(());
        };
        let existing = read_tx!(self.db, tx => links::for_lead(&mut tx, cx.client, lead_id).await?)?;
        if let Some(LeadRequest::Disable { user_id }) = request {
            let why = format!("disabled from the deal card by Kommo user {user_id}");
            return self.cancel_links(cx, &lead, &existing, &why).await;
        }
        if lead.status_id == KOMMO_LOST {
            return self.cancel_links(cx, &lead, &existing, "the lead was lost").await;
        }
        if let Some(trigger) = trigger.as_ref().filter(|_| request.is_none())
            && (lead.pipeline_id != trigger.pipeline_id || !trigger.stage_ids.contains(&lead.status_id))
        {
            let detail = format!("the lead is not in a trigger stage now (stage {})", lead.status_id);
            ignored(&detail).record(&self.db).await;
            return Ok(());
        }
        if existing.iter().any(|link| link.state == LinkState::Paid) {
            ignored("the lead is paid already").record(&self.db).await;
            return Ok(());
        }
        let dp = match request {
            Some(LeadRequest::DigitalPipeline(settings)) => Some(settings),
            _ => None,
        };
        // "Send the link again" from the deal card: a link whose note went out before is
        // re-used (same amount) and its note posted once more, once per request (job).
        let sent_before = matches!(request, Some(LeadRequest::Send { .. }))
            && existing.iter().any(|l| l.state == LinkState::Open && l.note_posted_at.is_some());
        self.create_link(cx, &lead, dp).await?;
        if sent_before {
            return self.send_again(cx, &lead).await;
        }
        Ok(())
    }

    /// The open link's note once more, keyed by this job so a retry does not post it twice.
    async fn send_again(&self, cx: &JobContext, lead: &Lead) -> Step {
        let existing = read_tx!(self.db, tx => links::for_lead(&mut tx, cx.client, lead.id).await?)?;
        let Some(link) = existing.iter().find(|l| l.state == LinkState::Open) else { return Ok(()) };
        let url = link.link.clone().unwrap_or_default();
        let amount = link.price.amount_text();
        let lead_id = lead.id.to_string();
        let text = render(
            cx.settings.notes.get(NoteKind::LinkCreated),
            &[
                ("link", &url),
                ("amount", &amount),
                ("currency", &link.price.currency),
                ("old_amount", ""),
                ("tx_ref", link.tx_ref.as_str()),
                ("lead_id", &lead_id),
            ],
        );
        let key = format!("resend:{}:{}", link.tx_ref, cx.job);
        self.notice_once(cx, lead.id, &key, &text).await
    }

    /// A link for the lead's price, unless its open link asks for it already; an open link for
    /// another amount is disabled first.
    async fn create_link(&self, cx: &JobContext, lead: &Lead, dp: Option<&DpSettings>) -> Step {
        let secret = cx.secret()?;
        let Some(charge) = self.charge(cx, lead, dp).await? else { return Ok(()) };
        // Read again, right before the new link is recorded: another job for the same lead may
        // have made one while the contacts were fetched, and the window between this read and
        // the insert is what two such jobs can race in.
        let existing = read_tx!(self.db, tx => links::for_lead(&mut tx, cx.client, lead.id).await?)?;
        let replaced = match self.retire(cx, lead, &existing, &charge.price, secret).await? {
            Retired::Reuse(link) => return self.finish_link(cx, lead, link, None, None, None).await,
            Retired::Replaced(replaced) => replaced,
        };
        let note = dp.and_then(|dp| dp.note.as_deref());
        let (link, attempted) = self.open_link(cx, lead, charge, secret, replaced, note).await?;
        self.finish_link(cx, lead, &link, replaced, note, Some(attempted)).await
    }

    /// Whom to charge how much; `None` when something is missing, after a note saying what.
    async fn charge(&self, cx: &JobContext, lead: &Lead, dp: Option<&DpSettings>) -> Step<Option<Charge>> {
        let (customer, mut missing) = self.customer(cx, lead).await?;
        // The Digital Pipeline action's currency and amount field stand in for the settings'.
        let currency = match dp.and_then(|dp| dp.currency.clone()) {
            Some(currency) => Ok(currency),
            None => self.currency(cx, lead),
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
            Ok(currency) => money::round(currency, amount(cx, price)),
            Err(_) => amount(cx, price),
        };
        if amount <= Decimal::ZERO && missing.is_empty() {
            missing.push("the lead has no price (the amount is 0)".to_owned());
        }
        let currency = currency.map_err(|problem| missing.push(problem)).ok();
        match (customer, currency, missing.is_empty()) {
            (Some(customer), Some(currency), true) => {
                Ok(Some(Charge { customer, price: Money::new(amount, currency) }))
            }
            _ => {
                self.missing_details(cx, lead, &missing).await?;
                Ok(None)
            }
        }
    }

    /// Settles the lead's earlier links before a new one: an attempt whose answer was lost
    /// becomes uncertain, an open link for the same price is reused, one for another price is
    /// disabled and superseded.
    async fn retire<'a>(
        &self,
        cx: &JobContext,
        lead: &Lead,
        existing: &'a [LinkRow],
        price: &Money,
        secret: &Secret,
    ) -> Step<Retired<'a>> {
        let mut replaced = None;
        for link in existing {
            match link.state {
                // An earlier attempt whose answer was lost: Flutterwave may have the link, so its
                // reference is never posted again; a payment on it would still close the deal.
                LinkState::Creating => {
                    write_tx!(self.db, tx => links::set_state(&mut tx, link.id, LinkState::Uncertain, now_ms()).await?)?;
                }
                LinkState::Open if replaced.is_none() => {
                    if &link.price == price {
                        return Ok(Retired::Reuse(link));
                    }
                    // A new amount: the old link must stop working before the new one exists.
                    if let Some(url) = &link.link {
                        self.flutterwave.disable_link(secret, url).await?;
                    }
                    let disabled = Activity::new(cx, Kind::LinkDisabled, Turned::Ok)
                        .lead(lead.id)
                        .tx_ref(&link.tx_ref)
                        .detail(format!("replaced: the amount changed from {} to {price}", link.price));
                    write_tx!(self.db, tx => {
                        links::set_state(&mut tx, link.id, LinkState::Superseded, now_ms()).await?;
                        disabled.record_in(&mut tx).await?;
                    })?;
                    replaced = Some(link);
                }
                _ => {}
            }
        }
        Ok(Retired::Replaced(replaced))
    }

    /// Creates the link at Flutterwave, its reference recorded first and its URL after, with
    /// its note's attempt (the note goes out next; see `finish_link`): the link row and what
    /// recording the attempt found.
    async fn open_link(
        &self,
        cx: &JobContext,
        lead: &Lead,
        charge: Charge,
        secret: &Secret,
        replaced: Option<&LinkRow>,
        note: Option<&str>,
    ) -> Step<(LinkRow, Option<Attempt>)> {
        let Charge { customer, price } = charge;
        // The reference is new for every link and recorded before Flutterwave hears of it.
        let tx_ref = TxRef::new();
        // The current span is the job's (steps have none of their own).
        tracing::Span::current().record("pipepay.tx_ref", tx_ref.as_str());
        let id = uuid::Uuid::now_v7();
        write_tx!(self.db, tx => links::insert_creating(
            &mut tx,
            id,
            cx.client,
            lead.id,
            lead.pipeline_id,
            &tx_ref,
            &price,
            now_ms(),
        )
        .await?)?;
        let checkout = &cx.settings.checkout;
        let request = PaymentRequest {
            tx_ref: tx_ref.0.clone(),
            amount: price.amount,
            currency: price.currency.clone(),
            redirect_url: checkout.redirect_url.clone(),
            customer,
            title: checkout.title.clone().or_else(|| Some(cx.settings.display_name.clone())),
            logo: checkout.logo_url.clone(),
            description: Some(lead.name.clone()).filter(|n| !n.is_empty()),
            meta: json!({ "client_account": cx.client, "lead_id": lead.id }),
            payment_options: checkout.payment_options.clone(),
            session_duration_minutes: checkout.session_duration_minutes,
            max_retry_attempt: None,
        };
        let link_url = match self.flutterwave.create_payment(secret, &request).await {
            Ok(url) => url,
            Err(error) => {
                // A refusal means nothing was created; anything else may have been.
                let after = match &error {
                    FlutterwaveError::Rejected { .. }
                    | FlutterwaveError::Invalid(_)
                    | FlutterwaveError::Unauthorized => LinkState::Failed,
                    _ => LinkState::Uncertain,
                };
                let marked = write_tx!(self.db, tx => links::set_state(&mut tx, id, after, now_ms()).await?);
                if let Err(store_error) = marked {
                    tracing::warn!(%store_error, "could not mark a link attempt");
                }
                return Err(error.into());
            }
        };
        let created = Activity::new(cx, Kind::LinkCreated, Turned::Ok)
            .lead(lead.id)
            .tx_ref(&tx_ref)
            .detail(price.to_string());
        // The note's attempt shares the link's commit: recorded before the note is sent, as
        // `link_note` would, one commit sooner.
        let row = write_tx!(self.db, tx => {
            links::opened(&mut tx, id, &link_url, now_ms()).await?;
            created.record_in(&mut tx).await?;
            match links::by_tx_ref(&mut tx, cx.client, &tx_ref).await? {
                Some(row) => {
                    let text = note_text(cx, lead, &row, replaced, note);
                    let earlier = links::attempt(&mut tx, row.id, LinkStep::Note, &text, now_ms()).await?;
                    Some((row, earlier))
                }
                None => None,
            }
        })?;
        row.ok_or_else(|| Stop::retry("the new link's record vanished"))
    }

    /// The once-only steps after a link exists: the note, then the lead's link field. Their
    /// stamps share one commit after both: a note sent but not yet stamped when the job stops is
    /// looked for on the lead before it is sent again (`post_note`), and writing the field is
    /// idempotent. `attempted`: the note's attempt was recorded already, finding this.
    async fn finish_link(
        &self,
        cx: &JobContext,
        lead: &Lead,
        link: &LinkRow,
        replaced: Option<&LinkRow>,
        note: Option<&str>,
        attempted: Option<Option<Attempt>>,
    ) -> Step {
        tracing::Span::current().record("pipepay.tx_ref", link.tx_ref.as_str());
        let url = link.link.clone().unwrap_or_default();
        let mut noted = None;
        if link.note_posted_at.is_none() {
            let text = note_text(cx, lead, link, replaced, note);
            let posted = Activity::new(cx, Kind::NotePosted, Turned::Ok)
                .lead(lead.id)
                .tx_ref(&link.tx_ref)
                .detail("payment link note");
            self.send_link_note(cx, link, LinkStep::Note, &text, attempted).await?;
            noted = Some(posted);
        } else if replaced.is_none() {
            Activity::new(cx, Kind::LinkReused, Turned::Ok)
                .lead(lead.id)
                .tx_ref(&link.tx_ref)
                .detail("the lead's open link already asks for this amount")
                .record(&self.db)
                .await;
        }
        let field = cx.settings.link_field_id.filter(|_| link.field_written_at.is_none());
        if let Some(field) = field
            && let Err(error) = self.kommo.set_lead_field(&cx.kommo, lead.id, field, &url).await
        {
            // The note went out: its stamp is not left to the next attempt's search.
            if let Some(posted) = noted {
                write_tx!(self.db, tx => {
                    links::mark(&mut tx, link.id, LinkStep::Note, now_ms()).await?;
                    posted.record_in(&mut tx).await?;
                })?;
            }
            return Err(error.into());
        }
        if noted.is_some() || field.is_some() {
            write_tx!(self.db, tx => {
                if let Some(posted) = noted {
                    links::mark(&mut tx, link.id, LinkStep::Note, now_ms()).await?;
                    posted.record_in(&mut tx).await?;
                }
                if field.is_some() {
                    links::mark(&mut tx, link.id, LinkStep::Field, now_ms()).await?;
                }
            })?;
        }
        Ok(())
    }

    /// The first contact with an email, and what is missing.
    async fn customer(&self, cx: &JobContext, lead: &Lead) -> Step<(Option<Customer>, Vec<String>)> {
        for contact_id in &lead.contact_ids {
            let Some(contact) = self.kommo.contact(&cx.kommo, *contact_id).await? else { continue };
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

    /// The lead's currency field, else the settings, else the Kommo account's; `Err(problem)`
    /// when there is none, or when the lead's field names something Flutterwave does not take
    /// (falling back would charge "1500" in the wrong currency).
    fn currency(&self, cx: &JobContext, lead: &Lead) -> Result<String, String> {
        let from_field = cx
            .settings
            .currency_field_id
            .and_then(|field| lead.field(field))
            .map(|value| value.trim().to_uppercase())
            .filter(|value| !value.is_empty());
        if let Some(value) = from_field {
            if CURRENCIES.contains(&value.as_str()) {
                return Ok(value);
            }
            let shown: String = value.chars().take(20).collect();
            return Err(format!(
                "the lead's currency field says \"{shown}\", which is not a currency code pipepay takes (such as KES, NGN, USD)"
            ));
        }
        if let Some(currency) = &cx.settings.currency {
            return Ok(currency.clone());
        }
        cx.kommo_currency
            .as_ref()
            .map(|c| c.to_uppercase())
            .filter(|c| CURRENCIES.contains(&c.as_str()))
            .ok_or_else(|| "no currency: set one in pipepay or in the lead's currency field".to_owned())
    }

    /// One note saying what to fix, once per set of problems.
    async fn missing_details(&self, cx: &JobContext, lead: &Lead, missing: &[String]) -> Step {
        let key = format!("missing:{}:{}", lead.id, missing.join("|"));
        let text = render(
            cx.settings.notes.get(NoteKind::MissingDetails),
            &[("missing", &missing.join("; ")), ("lead_id", &lead.id.to_string())],
        );
        let noticed = self.notice_once(cx, lead.id, &key, &text).await;
        Activity::new(cx, Kind::Ignored, Turned::Failed)
            .lead(lead.id)
            .detail(format!("no link: {}", missing.join("; ")))
            .record(&self.db)
            .await;
        noticed
    }

    /// A lost lead: its open links stop working.
    async fn cancel_links(&self, cx: &JobContext, lead: &Lead, existing: &[LinkRow], why: &str) -> Step {
        let open: Vec<&LinkRow> = existing.iter().filter(|l| l.state == LinkState::Open).collect();
        if open.is_empty() {
            Activity::new(cx, Kind::Ignored, Turned::Ignored)
                .lead(lead.id)
                .detail(format!("{why}; it had no open link"))
                .record(&self.db)
                .await;
            return Ok(());
        }
        let secret = cx.secret()?;
        for link in open {
            if let Some(url) = &link.link {
                self.flutterwave.disable_link(secret, url).await?;
            }
            let disabled = Activity::new(cx, Kind::LinkDisabled, Turned::Ok)
                .lead(lead.id)
                .tx_ref(&link.tx_ref)
                .detail(why);
            write_tx!(self.db, tx => {
                links::set_state(&mut tx, link.id, LinkState::Cancelled, now_ms()).await?;
                disabled.record_in(&mut tx).await?;
            })?;
        }
        Ok(())
    }
}

/// What became of the lead's earlier links.
enum Retired<'a> {
    /// Its open link asks for this price already.
    Reuse(&'a LinkRow),
    /// Go on with a new link; this open one was superseded for it.
    Replaced(Option<&'a LinkRow>),
}

/// The price, plus tax unless the price includes it (rounded by the caller).
fn amount(cx: &JobContext, price: Decimal) -> Decimal {
    let tax = &cx.settings.tax;
    let mut amount = price;
    if let Some(rate) = tax.rate_percent
        && !tax.included_in_price
    {
        amount += amount * rate / Decimal::ONE_HUNDRED;
    }
    amount
}

/// A link's note: the first link's (or the Digital Pipeline action's own `note`), or the one
/// that says the amount changed.
fn note_text(
    cx: &JobContext,
    lead: &Lead,
    link: &LinkRow,
    replaced: Option<&LinkRow>,
    note: Option<&str>,
) -> String {
    let (kind, old_amount) = match replaced {
        Some(old) => (NoteKind::LinkReplaced, old.price.to_string()),
        None => (NoteKind::LinkCreated, String::new()),
    };
    let template = match (kind, note) {
        (NoteKind::LinkCreated, Some(note)) => note,
        _ => cx.settings.notes.get(kind),
    };
    let url = link.link.clone().unwrap_or_default();
    render(
        template,
        &[
            ("link", &url),
            ("amount", &link.price.amount_text()),
            ("currency", &link.price.currency),
            ("old_amount", &old_amount),
            ("tx_ref", link.tx_ref.as_str()),
            ("lead_id", &lead.id.to_string()),
        ],
    )
}
