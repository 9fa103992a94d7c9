//! A client account's settings: what triggers a link, how much it asks for, what it says.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::notes::NoteTemplates;
use crate::error::{Checks, Result};

/// Kommo's fixed stage ids, present in every pipeline: won and lost.
pub const KOMMO_WON: i64 = 142;
pub const KOMMO_LOST: i64 = 143;
pub const MAX_NAME: usize = 120;
const MAX_TRIGGER_STAGES: usize = 20;

/// Currencies Flutterwave's hosted checkout takes (its payment-method table and its support
/// page's list, combined).
pub const CURRENCIES: &[&str] = &[
    "CAD", "CLP", "COP", "EGP", "EUR", "GBP", "GHS", "GNF", "KES", "MAD", "MWK", "NGN", "RWF", "SLL", "STD",
    "TZS", "UGX", "USD", "XAF", "XOF", "ZAR", "ZMW",
];

/// Flutterwave's `payment_options` names.
pub const PAYMENT_OPTIONS: &[&str] = &[
    "card",
    "account",
    "banktransfer",
    "ussd",
    "mpesa",
    "mobilemoneyghana",
    "mobilemoneyuganda",
    "mobilemoneyrwanda",
    "mobilemoneyzambia",
    "mobilemoneytanzania",
    "mobilemoneyfranco",
    "barter",
    "nqr",
    "credit",
    "applepay",
    "googlepay",
    "opay",
    "enaira",
    "payattitude",
    "paga",
    "1voucher",
];

/// What people call a payment method (Flutterwave's own names for them in its documentation's
/// payment-method pages); the API keeps Flutterwave's codes.
pub fn payment_option_name(code: &str) -> &str {
    match code {
        "card" => "Cards",
        "account" => "Bank account (direct debit)",
        "banktransfer" => "Bank transfer",
        "ussd" => "USSD",
        "mpesa" => "M-Pesa",
        "mobilemoneyghana" => "MTN MoMo / mobile money Ghana",
        "mobilemoneyuganda" => "Mobile money Uganda",
        "mobilemoneyrwanda" => "Mobile money Rwanda",
        "mobilemoneyzambia" => "Mobile money Zambia",
        "mobilemoneytanzania" => "Mobile money Tanzania",
        "mobilemoneyfranco" => "Mobile money francophone Africa",
        "barter" => "Barter by Flutterwave",
        "nqr" => "NIBSS QR",
        "credit" => "Pay later (credit)",
        "applepay" => "Apple Pay",
        "googlepay" => "Google Pay",
        "opay" => "OPay",
        "enaira" => "eNaira",
        "payattitude" => "PayAttitude",
        "paga" => "Paga",
        "1voucher" => "1Voucher",
        other => other,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// The name the agency knows this client account by.
    pub display_name: String,
    /// Which Kommo stage(s) create a payment link. Without it, nothing triggers.
    #[serde(default)]
    pub trigger: Option<Trigger>,
    /// The stage a paid deal moves to; defaults to Kommo's closed-won (142) of the trigger pipeline.
    #[serde(default)]
    pub won_stage_id: Option<i64>,
    /// ISO 4217 code for links; defaults to the Kommo account's currency.
    #[serde(default)]
    pub currency: Option<String>,
    /// A lead custom field whose value, when set, overrides the currency for that deal.
    #[serde(default)]
    pub currency_field_id: Option<i64>,
    #[serde(default)]
    pub tax: Tax,
    /// A lead custom field (URL or text) that receives the payment link.
    #[serde(default)]
    pub link_field_id: Option<i64>,
    #[serde(default)]
    pub notes: NoteTemplates,
    #[serde(default)]
    pub checkout: Checkout,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub pipeline_id: i64,
    /// Moving a deal into any of these stages creates its link.
    pub stage_ids: Vec<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tax {
    /// Percentage added to the deal price, e.g. "7.5" for Nigeria's VAT. A string or a number;
    /// kept exact.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "7.5")]
    pub rate_percent: Option<Decimal>,
    /// The deal price already includes the tax: nothing is added.
    #[serde(default)]
    pub included_in_price: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkout {
    /// Flutterwave payment methods to offer, e.g. ["card", "mpesa"]; empty means the
    /// Flutterwave dashboard's choice.
    #[serde(default)]
    pub payment_options: Vec<String>,
    /// Minutes the checkout page stays open (1-1440).
    #[serde(default)]
    pub session_duration_minutes: Option<u32>,
    /// Where the customer lands after paying (https).
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// The checkout page's title.
    #[serde(default)]
    pub title: Option<String>,
    /// The checkout page's logo (https).
    #[serde(default)]
    pub logo_url: Option<String>,
}

impl ClientSettings {
    pub fn new(display_name: &str) -> Self {
        ClientSettings {
            display_name: display_name.to_owned(),
            trigger: None,
            won_stage_id: None,
            currency: None,
            currency_field_id: None,
            tax: Tax::default(),
            link_field_id: None,
            notes: NoteTemplates::default(),
            checkout: Checkout::default(),
        }
    }

    /// Trims what should be trimmed and checks everything, naming every bad field at once.
    pub fn validated(mut self) -> Result<Self> {
        let mut checks = Checks::new();
        self.display_name = self.display_name.trim().to_owned();
        check_name(&mut checks, "display_name", &self.display_name);
        if let Some(trigger) = &self.trigger {
            checks.check(trigger.pipeline_id > 0, "trigger.pipeline_id", "Choose a Kommo pipeline.");
            checks.check(!trigger.stage_ids.is_empty(), "trigger.stage_ids", "Choose at least one stage.");
            checks.check(
                trigger.stage_ids.len() <= MAX_TRIGGER_STAGES,
                "trigger.stage_ids",
                format!("Choose at most {MAX_TRIGGER_STAGES} stages."),
            );
            for (i, stage) in trigger.stage_ids.iter().enumerate() {
                let field = format!("trigger.stage_ids[{i}]");
                checks.check(*stage > 0, &field, "Choose a Kommo stage.");
                checks.check(
                    *stage != KOMMO_WON && *stage != KOMMO_LOST,
                    &field,
                    "Choose a stage other than Kommo's won (142) or lost (143) stage.",
                );
                checks.check(!trigger.stage_ids[..i].contains(stage), &field, "This stage is listed twice.");
            }
        }
        if let Some(won) = self.won_stage_id {
            checks.check(won > 0, "won_stage_id", "Choose a Kommo stage.");
            checks.check(won != KOMMO_LOST, "won_stage_id", "Choose a stage other than lost (143).");
            let in_trigger = self.trigger.as_ref().is_some_and(|t| t.stage_ids.contains(&won));
            checks.check(!in_trigger, "won_stage_id", "Choose a stage that does not also create links.");
        }
        if let Some(currency) = &mut self.currency {
            *currency = currency.trim().to_uppercase();
            checks.check(
                CURRENCIES.contains(&currency.as_str()),
                "currency",
                format!("Choose one of these currencies: {}.", CURRENCIES.join(", ")),
            );
        }
        for (field, id) in
            [("currency_field_id", self.currency_field_id), ("link_field_id", self.link_field_id)]
        {
            if let Some(id) = id {
                checks.check(id > 0, field, "Choose a Kommo lead field.");
            }
        }
        if let Some(rate) = self.tax.rate_percent {
            checks.check(
                rate > Decimal::ZERO && rate <= Decimal::ONE_HUNDRED,
                "tax.rate_percent",
                "Enter a rate above 0 and at most 100.",
            );
            checks.check(rate.scale() <= 4, "tax.rate_percent", "Use at most 4 decimal places.");
        }
        self.notes.validate(&mut checks);
        self.checkout.validate(&mut checks);
        checks.finish()?;
        Ok(self)
    }

    /// The stage a paid deal moves to.
    pub fn won_stage(&self) -> i64 {
        self.won_stage_id.unwrap_or(KOMMO_WON)
    }
}

pub fn check_name(checks: &mut Checks, field: &str, name: &str) {
    checks.check(!name.is_empty(), field, "Enter a name.");
    checks.check(name.chars().count() <= MAX_NAME, field, format!("Use at most {MAX_NAME} characters."));
    checks.check(
        !name.chars().any(char::is_control),
        field,
        "Remove the line breaks and control characters.",
    );
}

impl Checkout {
    fn validate(&mut self, checks: &mut Checks) {
        for (i, option) in self.payment_options.iter_mut().enumerate() {
            *option = option.trim().to_lowercase();
            checks.check(
                PAYMENT_OPTIONS.contains(&option.as_str()),
                format!("checkout.payment_options[{i}]"),
                format!("Choose payment methods from the list: {}.", PAYMENT_OPTIONS.join(", ")),
            );
        }
        let mut seen = self.payment_options.clone();
        seen.sort();
        seen.dedup();
        checks.check(
            seen.len() == self.payment_options.len(),
            "checkout.payment_options",
            "List each payment method once.",
        );
        if let Some(minutes) = self.session_duration_minutes {
            checks.check(
                (1..=1440).contains(&minutes),
                "checkout.session_duration_minutes",
                "Enter between 1 and 1440 minutes.",
            );
        }
        for (field, url) in
            [("checkout.redirect_url", &self.redirect_url), ("checkout.logo_url", &self.logo_url)]
        {
            if let Some(url) = url
                && let Err(message) = public_https_url(url)
            {
                checks.fail(field, message);
            }
        }
        if let Some(title) = &self.title {
            checks.check(title.chars().count() <= 100, "checkout.title", "Use at most 100 characters.");
        }
    }
}

fn public_https_url(value: &str) -> std::result::Result<(), String> {
    let url = url::Url::parse(value)
        .map_err(|_| "Enter a full address such as https://example.com/page.".to_owned())?;
    if url.scheme() != "https" {
        return Err("Use an address that starts with https://.".into());
    }
    if value.len() > 2048 {
        return Err("Use an address of at most 2048 characters.".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn errors(settings: ClientSettings) -> Vec<String> {
        match settings.validated() {
            Err(Error::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn a_full_valid_document_passes_and_is_normalised() {
        let json = serde_json::json!({
            "display_name": "  Acme Kenya ",
            "trigger": {"pipeline_id": 7001, "stage_ids": [7002, 7003]},
            "currency": "kes",
            "tax": {"rate_percent": 7.5},
            "checkout": {"payment_options": ["card", "MPESA"], "session_duration_minutes": 60,
                         "redirect_url": "https://acme.example/thanks"}
        });
        let settings: ClientSettings = serde_json::from_value(json).unwrap();
        let settings = settings.validated().unwrap();
        assert_eq!(settings.display_name, "Acme Kenya");
        assert_eq!(settings.currency.as_deref(), Some("KES"));
        assert_eq!(settings.tax.rate_percent, Some(Decimal::new(75, 1)));
        assert_eq!(settings.checkout.payment_options, ["card", "mpesa"]);
        assert_eq!(settings.won_stage(), KOMMO_WON);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut s = ClientSettings::new("");
        s.trigger = Some(Trigger { pipeline_id: 0, stage_ids: vec![142, 5, 5] });
        s.currency = Some("BTC".into());
        s.tax.rate_percent = Some(Decimal::new(150, 0));
        s.checkout.redirect_url = Some("http://acme.example".into());
        s.checkout.session_duration_minutes = Some(2000);
        let fields = errors(s);
        for expected in [
            "display_name",
            "trigger.pipeline_id",
            "trigger.stage_ids[0]",
            "trigger.stage_ids[2]",
            "currency",
            "tax.rate_percent",
            "checkout.redirect_url",
            "checkout.session_duration_minutes",
        ] {
            assert!(fields.iter().any(|f| f == expected), "{expected} missing from {fields:?}");
        }
    }
}
