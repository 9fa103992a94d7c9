//! Note templates: the text pipepay posts on a lead, with `{placeholders}` filled in.

use serde::{Deserialize, Serialize};

use crate::error::Checks;

pub const MAX_LEN: usize = 2000;

/// The notes pipepay writes, each with the placeholders it can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    LinkCreated,
    LinkReplaced,
    PaymentReceived,
    PaymentProblem,
    MissingDetails,
}

impl NoteKind {
    pub const ALL: [NoteKind; 5] = [
        NoteKind::LinkCreated,
        NoteKind::LinkReplaced,
        NoteKind::PaymentReceived,
        NoteKind::PaymentProblem,
        NoteKind::MissingDetails,
    ];

    pub fn field(self) -> &'static str {
        match self {
            NoteKind::LinkCreated => "link_created",
            NoteKind::LinkReplaced => "link_replaced",
            NoteKind::PaymentReceived => "payment_received",
            NoteKind::PaymentProblem => "payment_problem",
            NoteKind::MissingDetails => "missing_details",
        }
    }

    pub fn placeholders(self) -> &'static [&'static str] {
        match self {
            NoteKind::LinkCreated => &["link", "amount", "currency", "tx_ref", "lead_id"],
            NoteKind::LinkReplaced => &["link", "amount", "currency", "old_amount", "tx_ref", "lead_id"],
            NoteKind::PaymentReceived => &["amount", "currency", "method", "reference", "tx_ref", "lead_id"],
            NoteKind::PaymentProblem => &[
                "reason",
                "amount",
                "currency",
                "expected_amount",
                "expected_currency",
                "reference",
                "tx_ref",
            ],
            NoteKind::MissingDetails => &["missing", "lead_id"],
        }
    }

    /// Placeholders a template of this kind must contain to be useful.
    fn required(self) -> &'static [&'static str] {
        match self {
            NoteKind::LinkCreated | NoteKind::LinkReplaced => &["link"],
            NoteKind::PaymentProblem => &["reason"],
            NoteKind::MissingDetails => &["missing"],
            NoteKind::PaymentReceived => &[],
        }
    }

    pub fn default_template(self) -> &'static str {
        match self {
            NoteKind::LinkCreated => "Payment link for {amount} {currency}: {link}",
            NoteKind::LinkReplaced => {
                "The amount changed from {old_amount} to {amount} {currency}. The old link no longer works; \
                 the new payment link is: {link}"
            }
            NoteKind::PaymentReceived => {
                "Payment received: {amount} {currency} by {method}. Flutterwave reference {reference}."
            }
            NoteKind::PaymentProblem => "Payment not accepted: {reason}. Reference {reference}.",
            NoteKind::MissingDetails => "pipepay could not create a payment link: {missing}",
        }
    }
}

/// Custom templates; a missing one uses the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteTemplates {
    /// Posted with a new payment link. Placeholders: {link} (required), {amount}, {currency}, {tx_ref}, {lead_id}.
    #[serde(default)]
    pub link_created: Option<String>,
    /// Posted when the amount changed and a new link replaces the old. Adds {old_amount}.
    #[serde(default)]
    pub link_replaced: Option<String>,
    /// Posted when the deal is won. Placeholders: {amount}, {currency}, {method}, {reference}, {tx_ref}, {lead_id}.
    #[serde(default)]
    pub payment_received: Option<String>,
    /// Posted for an underpayment or a wrong currency. Placeholders: {reason} (required), {amount},
    /// {currency}, {expected_amount}, {expected_currency}, {reference}, {tx_ref}.
    #[serde(default)]
    pub payment_problem: Option<String>,
    /// Posted when a lead lacks what a link needs. Placeholders: {missing} (required), {lead_id}.
    #[serde(default)]
    pub missing_details: Option<String>,
}

impl NoteTemplates {
    pub fn get(&self, kind: NoteKind) -> &str {
        let custom = match kind {
            NoteKind::LinkCreated => &self.link_created,
            NoteKind::LinkReplaced => &self.link_replaced,
            NoteKind::PaymentReceived => &self.payment_received,
            NoteKind::PaymentProblem => &self.payment_problem,
            NoteKind::MissingDetails => &self.missing_details,
        };
        custom.as_deref().unwrap_or(kind.default_template())
    }

    pub fn validate(&self, checks: &mut Checks) {
        for kind in NoteKind::ALL {
            let field = format!("notes.{}", kind.field());
            let template = self.get(kind);
            if template.trim().is_empty() {
                checks.fail(&field, "Enter the note's text.");
                continue;
            }
            if template.chars().count() > MAX_LEN {
                checks.fail(&field, format!("Use at most {MAX_LEN} characters."));
            }
            let used = placeholders(template);
            for name in &used {
                if !kind.placeholders().contains(&name.as_str()) {
                    checks.fail(
                        &field,
                        format!(
                            "Remove {{{name}}}: this note has no such placeholder. It knows {}.",
                            list(kind.placeholders())
                        ),
                    );
                }
            }
            for required in kind.required() {
                if !used.iter().any(|u| u == required) {
                    checks.fail(&field, format!("Include {{{required}}}: this note needs it."));
                }
            }
        }
    }
}

fn list(names: &[&str]) -> String {
    names.iter().map(|n| format!("{{{n}}}")).collect::<Vec<_>>().join(", ")
}

/// The `{name}` placeholders a template uses, in order.
fn placeholders(template: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) if after[..end].chars().all(|c| c.is_ascii_lowercase() || c == '_') && end > 0 => {
                found.push(after[..end].to_owned());
                rest = &after[end + 1..];
            }
            _ => rest = after,
        }
    }
    found
}

/// Fills a template. Values are inserted as given; unknown placeholders cannot occur because
/// templates are validated when saved.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_render() {
        let mut checks = Checks::new();
        NoteTemplates::default().validate(&mut checks);
        checks.finish().unwrap();
        let text = render(
            NoteTemplates::default().get(NoteKind::LinkCreated),
            &[("amount", "1234.56"), ("currency", "KES"), ("link", "https://pay.example/x")],
        );
        assert_eq!(text, "Payment link for 1234.56 KES: https://pay.example/x");
    }

    #[test]
    fn unknown_and_missing_placeholders_are_named() {
        let templates = NoteTemplates { link_created: Some("Pay {amout} here".into()), ..Default::default() };
        let mut checks = Checks::new();
        templates.validate(&mut checks);
        let crate::error::Error::Invalid(errors) = checks.finish().unwrap_err() else { panic!() };
        assert!(errors.iter().all(|e| e.field == "notes.link_created"));
        assert!(errors.iter().any(|e| e.message.contains("{amout}")));
        assert!(errors.iter().any(|e| e.message == "Include {link}: this note needs it."));
    }
}
