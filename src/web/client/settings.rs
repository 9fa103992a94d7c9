//! A client account's settings form: the trigger and won stages picked from the Kommo
//! account's real pipelines, currency, tax, the lead fields, note templates and checkout.

use std::str::FromStr;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{ClientHead, Opened, open, refused_or_again};
use crate::error::{Error, FieldError, Result};
use crate::kommo::model::{CustomField, Pipeline};
use crate::roles::Role;
use crate::state::AppState;
use crate::tenants::clients;
use crate::tenants::notes::NoteKind;
use crate::tenants::settings::{
    CURRENCIES, ClientSettings, KOMMO_LOST, KOMMO_WON, PAYMENT_OPTIONS, Tax, Trigger, payment_option_name,
};
use crate::web::Page;
use crate::web::access::{ClientPage, PostedTo};
use crate::web::view::{Chrome, Done, FormErrors, done, page as render};

/// The form exactly as typed, so a refused save shows it again unchanged. Field names are the
/// settings document's paths, so the service's field errors land next to their fields.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    pub display_name: String,
    /// `pipeline:stage` pairs.
    #[serde(default, rename = "trigger.stage_ids")]
    pub trigger: Vec<String>,
    #[serde(default)]
    pub won_stage_id: String,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub currency_field_id: String,
    #[serde(default)]
    pub link_field_id: String,
    #[serde(default, rename = "tax.rate_percent")]
    pub tax_rate: String,
    #[serde(default, rename = "tax.included_in_price")]
    pub tax_included: Option<String>,
    #[serde(default, rename = "checkout.payment_options")]
    pub payment_options: Vec<String>,
    #[serde(default, rename = "checkout.session_duration_minutes")]
    pub session_minutes: String,
    #[serde(default, rename = "checkout.redirect_url")]
    pub redirect_url: String,
    #[serde(default, rename = "checkout.title")]
    pub title: String,
    #[serde(default, rename = "checkout.logo_url")]
    pub logo_url: String,
    #[serde(default, rename = "notes.link_created")]
    pub link_created: String,
    #[serde(default, rename = "notes.link_replaced")]
    pub link_replaced: String,
    #[serde(default, rename = "notes.payment_received")]
    pub payment_received: String,
    #[serde(default, rename = "notes.payment_problem")]
    pub payment_problem: String,
    #[serde(default, rename = "notes.missing_details")]
    pub missing_details: String,
}

fn text<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

impl SettingsForm {
    fn note(&self, kind: NoteKind) -> &str {
        match kind {
            NoteKind::LinkCreated => &self.link_created,
            NoteKind::LinkReplaced => &self.link_replaced,
            NoteKind::PaymentReceived => &self.payment_received,
            NoteKind::PaymentProblem => &self.payment_problem,
            NoteKind::MissingDetails => &self.missing_details,
        }
    }

    /// The stored settings as the form shows them; a note without its own text shows the
    /// default, which is what Kommo will receive.
    fn from_settings(settings: &ClientSettings) -> SettingsForm {
        let checkout = &settings.checkout;
        SettingsForm {
            display_name: settings.display_name.clone(),
            trigger: settings
                .trigger
                .iter()
                .flat_map(|t| t.stage_ids.iter().map(move |s| format!("{}:{s}", t.pipeline_id)))
                .collect(),
            won_stage_id: text(settings.won_stage_id),
            currency: settings.currency.clone().unwrap_or_default(),
            currency_field_id: text(settings.currency_field_id),
            link_field_id: text(settings.link_field_id),
            tax_rate: text(settings.tax.rate_percent),
            tax_included: settings.tax.included_in_price.then(|| "on".to_owned()),
            payment_options: checkout.payment_options.clone(),
            session_minutes: text(checkout.session_duration_minutes),
            redirect_url: checkout.redirect_url.clone().unwrap_or_default(),
            title: checkout.title.clone().unwrap_or_default(),
            logo_url: checkout.logo_url.clone().unwrap_or_default(),
            link_created: settings.notes.get(NoteKind::LinkCreated).to_owned(),
            link_replaced: settings.notes.get(NoteKind::LinkReplaced).to_owned(),
            payment_received: settings.notes.get(NoteKind::PaymentReceived).to_owned(),
            payment_problem: settings.notes.get(NoteKind::PaymentProblem).to_owned(),
            missing_details: settings.notes.get(NoteKind::MissingDetails).to_owned(),
        }
    }

    /// The current settings with the form applied. What cannot even be read (a rate that is
    /// not a number) is returned as field errors, for the service's own errors to join.
    fn apply(&self, current: &ClientSettings) -> (ClientSettings, Vec<FieldError>) {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: &str| {
            errors.push(FieldError { field: field.to_owned(), message: message.to_owned() })
        };
        let mut settings = current.clone();
        settings.display_name = self.display_name.clone();

        let mut pairs = Vec::new();
        for value in &self.trigger {
            match value
                .split_once(':')
                .and_then(|(p, s)| Some((p.parse::<i64>().ok()?, s.parse::<i64>().ok()?)))
            {
                Some(pair) => pairs.push(pair),
                None => fail("trigger.stage_ids", "Choose the stages from the list."),
            }
        }
        settings.trigger = match pairs.first() {
            None => None,
            Some(&(pipeline_id, _)) => {
                if pairs.iter().any(|(p, _)| *p != pipeline_id) {
                    fail("trigger.stage_ids", "Choose stages from one pipeline only.");
                }
                Some(Trigger { pipeline_id, stage_ids: pairs.iter().map(|(_, s)| *s).collect() })
            }
        };

        let mut id = |field: &str, value: &str| -> Option<i64> {
            let value = value.trim();
            if value.is_empty() {
                return None;
            }
            value.parse().map_err(|_| fail(field, "Choose one from the list.")).ok()
        };
        settings.won_stage_id = id("won_stage_id", &self.won_stage_id);
        settings.currency_field_id = id("currency_field_id", &self.currency_field_id);
        settings.link_field_id = id("link_field_id", &self.link_field_id);
        settings.currency = Some(self.currency.trim().to_owned()).filter(|c| !c.is_empty());

        let rate = self.tax_rate.trim();
        let rate_percent = if rate.is_empty() {
            None
        } else {
            match Decimal::from_str(rate) {
                Ok(rate) => Some(rate),
                Err(_) => {
                    fail("tax.rate_percent", "Enter the tax rate as a number, such as 7.5.");
                    None
                }
            }
        };
        settings.tax = Tax { rate_percent, included_in_price: self.tax_included.is_some() };

        let minutes = self.session_minutes.trim();
        settings.checkout.session_duration_minutes = if minutes.is_empty() {
            None
        } else {
            match minutes.parse::<u32>() {
                Ok(minutes) => Some(minutes),
                Err(_) => {
                    fail(
                        "checkout.session_duration_minutes",
                        "Enter the minutes as a whole number, such as 60.",
                    );
                    None
                }
            }
        };
        let optional = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        settings.checkout.payment_options = self.payment_options.clone();
        settings.checkout.redirect_url = optional(&self.redirect_url);
        settings.checkout.title = optional(&self.title);
        settings.checkout.logo_url = optional(&self.logo_url);

        for kind in NoteKind::ALL {
            let value = self.note(kind);
            // Unchanged defaults stay unset, so they follow pipepay's wording if it improves.
            let custom = (!value.trim().is_empty() && value.trim() != kind.default_template())
                .then(|| value.to_owned());
            let notes = &mut settings.notes;
            match kind {
                NoteKind::LinkCreated => notes.link_created = custom,
                NoteKind::LinkReplaced => notes.link_replaced = custom,
                NoteKind::PaymentReceived => notes.payment_received = custom,
                NoteKind::PaymentProblem => notes.payment_problem = custom,
                NoteKind::MissingDetails => notes.missing_details = custom,
            }
        }
        (settings, errors)
    }
}

/// One `<option>` (or checkbox).
#[derive(Debug, Clone)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

impl Choice {
    /// The value as an element id (`pipeline:stage` has a colon, which CSS selectors dislike).
    pub fn dom_id(&self) -> String {
        self.value.replace(':', "-")
    }
}

/// One pipeline's stages: an `<optgroup>`, or a fieldset of checkboxes.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: String,
    pub options: Vec<Choice>,
}

/// A note template's textarea.
pub struct NoteField {
    pub name: String,
    pub label: &'static str,
    pub value: String,
    pub placeholders: String,
}

#[derive(Template)]
#[template(path = "client_settings.html")]
pub struct SettingsPage {
    chrome: Chrome,
    client: ClientHead,
    form: SettingsForm,
    errors: FormErrors,
    /// Why stages or fields cannot be listed (Kommo not connected, or not answering).
    kommo_problem: Option<String>,
    /// `None` when Kommo did not list them: the current values then ride along hidden.
    trigger_groups: Option<Vec<Group>>,
    won_default: Choice,
    won_groups: Vec<Group>,
    /// `None` when Kommo did not list the lead fields.
    currency_fields: Option<Vec<Choice>>,
    link_fields: Vec<Choice>,
    currencies: Vec<Choice>,
    payment_options: Vec<Choice>,
    notes: Vec<NoteField>,
}

/// Options for each pipeline's stages, minus Kommo's won and lost (they cannot trigger), and a
/// group for chosen ids Kommo no longer lists, so saving does not silently drop them.
fn stage_groups(pipelines: &[Pipeline], chosen: &[String], value: impl Fn(i64, i64) -> String) -> Vec<Group> {
    let mut seen = Vec::new();
    let mut groups: Vec<Group> = pipelines
        .iter()
        .map(|p| Group {
            label: p.name.clone(),
            options: p
                .stages
                .iter()
                .filter(|s| s.id != KOMMO_WON && s.id != KOMMO_LOST)
                .map(|s| {
                    let value = value(p.id, s.id);
                    seen.push(value.clone());
                    Choice { selected: chosen.contains(&value), label: s.name.clone(), value }
                })
                .collect(),
        })
        .collect();
    let missing: Vec<Choice> = chosen
        .iter()
        .filter(|c| !c.is_empty() && !seen.contains(c))
        .map(|c| Choice {
            value: c.clone(),
            label: format!("Stage {c} (no longer in Kommo)"),
            selected: true,
        })
        .collect();
    if !missing.is_empty() {
        groups.push(Group { label: "No longer in Kommo".into(), options: missing });
    }
    groups
}

fn field_choices(fields: &[CustomField], chosen: &str) -> Vec<Choice> {
    let mut choices =
        vec![Choice { value: String::new(), label: "None".into(), selected: chosen.is_empty() }];
    choices.extend(fields.iter().map(|f| Choice {
        value: f.id.to_string(),
        label: format!("{} ({})", f.name, f.field_type),
        selected: f.id.to_string() == chosen,
    }));
    if !chosen.is_empty() && !fields.iter().any(|f| f.id.to_string() == chosen) {
        choices.push(Choice {
            value: chosen.to_owned(),
            label: format!("Field {chosen} (no longer in Kommo)"),
            selected: true,
        });
    }
    choices
}

/// A Kommo failure the page can live with (it says so), or one it cannot.
fn kommo_problem(error: Error) -> Result<String> {
    match error {
        Error::Conflict { message, .. } | Error::Upstream { message, .. } => Ok(message),
        other => Err(other),
    }
}

async fn settings_page(
    state: &AppState,
    page: &ClientPage,
    done: Option<&str>,
    form: Option<SettingsForm>,
    errors: FormErrors,
) -> Result<SettingsPage> {
    let client = page.client;
    let Opened { chrome, client: view, head, .. } = open(state, page, "settings", done).await?;
    let form = form.unwrap_or_else(|| SettingsForm::from_settings(&view.settings));
    let mut problem = None;
    let pipelines = match state.kommo.pipelines(client).await {
        Ok(pipelines) => Some(pipelines),
        Err(error) => {
            problem = Some(kommo_problem(error.into())?);
            None
        }
    };
    let fields = match state.kommo.lead_fields(client).await {
        Ok(fields) => Some(fields),
        Err(error) => {
            problem = problem.or(Some(kommo_problem(error.into())?));
            None
        }
    };
    let won = std::slice::from_ref(&form.won_stage_id);
    let trigger_groups =
        pipelines.as_ref().map(|p| stage_groups(p, &form.trigger, |p, s| format!("{p}:{s}")));
    let won_groups =
        pipelines.as_ref().map(|p| stage_groups(p, won, |_, s| s.to_string())).unwrap_or_default();
    let won_default = Choice {
        value: String::new(),
        label: "Closed - won (Kommo's own won stage)".into(),
        selected: form.won_stage_id.is_empty(),
    };
    let currency_fields = fields.as_ref().map(|f| field_choices(f, &form.currency_field_id));
    let link_fields = fields.as_ref().map(|f| field_choices(f, &form.link_field_id)).unwrap_or_default();
    let mut currencies = vec![Choice {
        value: String::new(),
        label: "The Kommo account's currency".into(),
        selected: form.currency.is_empty(),
    }];
    currencies.extend(CURRENCIES.iter().map(|c| Choice {
        value: (*c).to_owned(),
        label: (*c).to_owned(),
        selected: form.currency.trim().eq_ignore_ascii_case(c),
    }));
    let payment_options = PAYMENT_OPTIONS
        .iter()
        .map(|o| Choice {
            value: (*o).to_owned(),
            label: payment_option_name(o).to_owned(),
            selected: form.payment_options.iter().any(|p| p == o),
        })
        .collect();
    let notes = NoteKind::ALL
        .iter()
        .map(|kind| NoteField {
            name: format!("notes.{}", kind.field()),
            label: note_label(*kind),
            value: form.note(*kind).to_owned(),
            placeholders: kind
                .placeholders()
                .iter()
                .map(|p| format!("{{{p}}}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    let problem = problem.map(|p| {
        if p.contains("no Kommo connection") {
            "Kommo is not connected. Connect it on the overview page: its pipelines, stages and lead fields \
             then become available here."
                .to_owned()
        } else {
            format!("Kommo did not list the pipelines and fields ({p}). The current choices are kept.")
        }
    });
    Ok(SettingsPage {
        chrome,
        client: head,
        form,
        errors,
        kommo_problem: problem,
        trigger_groups,
        won_default,
        won_groups,
        currency_fields,
        link_fields,
        currencies,
        payment_options,
        notes,
    })
}

fn note_label(kind: NoteKind) -> &'static str {
    match kind {
        NoteKind::LinkCreated => "When a payment link is created",
        NoteKind::LinkReplaced => "When the amount changed and a new link replaces the old one",
        NoteKind::PaymentReceived => "When the payment is received",
        NoteKind::PaymentProblem => "When a payment is not accepted (underpaid, wrong currency)",
        NoteKind::MissingDetails => "When a deal lacks what a link needs",
    }
}

pub async fn page(State(state): State<AppState>, page: ClientPage, Query(done): Query<Done>) -> Response {
    render(
        settings_page(&state, &page, done.done.as_deref(), None, FormErrors::none())
            .await
            .map(|p| Page::render(StatusCode::OK, &p)),
    )
}

pub async fn save(
    State(state): State<AppState>,
    PostedTo { page, form }: PostedTo<ClientPage, SettingsForm>,
) -> Response {
    let (access, agency, client) = (&page.access, page.agency, page.client);
    let saved = async {
        let current = clients::get(&state.db, access, client).await?;
        // Before reading the form, so a member learns nothing from its validation.
        access.require(Role::Admin)?;
        let (settings, mut unreadable) = form.apply(&current.settings);
        if !unreadable.is_empty() {
            if let Err(Error::Invalid(more)) = settings.validated() {
                let known: Vec<String> = unreadable.iter().map(|e| e.field.clone()).collect();
                unreadable.extend(more.into_iter().filter(|e| !known.contains(&e.field)));
            }
            return Err(Error::Invalid(unreadable));
        }
        crate::actions::update_settings(&state, access, client, settings).await
    };
    match saved.await {
        Ok(_) => done(&format!("/app/agencies/{agency}/clients/{client}/settings"), "settings-saved"),
        Err(error) => match settings_page(&state, &page, None, Some(form), FormErrors::none()).await {
            Ok(mut page) => refused_or_again(error, |status, errors| {
                page.errors = errors;
                Page::render(status, &page)
            }),
            Err(error) => crate::web::error_page(error).into_response(),
        },
    }
}
