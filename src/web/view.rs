//! What every page shares: the layout's data (who is logged in, their agencies, the section,
//! a notice after a change), and form errors shown next to their fields.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{AgencyLink, Viewer};
use super::{Page, error_page};
use crate::error::{Error, Result};
use crate::ids::AgencyId;
use crate::problem::Problem;
use crate::roles::Role;
use crate::state::AppState;

/// The layout's data: the header, the agency navigation and the notice line.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub email: String,
    pub csrf: String,
    pub agencies: Vec<AgencyLink>,
    /// The agency the page belongs to, with the viewer's role in it.
    pub current: Option<AgencyLink>,
    /// Which navigation entry is this page's (`clients`, `members`, `api-keys`, `audit`,
    /// `telemetry`, `account`), for `aria-current`.
    pub section: &'static str,
    pub notice: Option<&'static str>,
    /// The viewer has not confirmed their address yet: the layout offers to mail the link again.
    pub unverified: bool,
}

impl Chrome {
    /// The layout for a page of `agency` (or of no agency). A stranger's agency is a 404.
    pub async fn new(
        state: &AppState,
        viewer: &Viewer,
        agency: Option<AgencyId>,
        section: &'static str,
    ) -> Result<Chrome> {
        let agencies = viewer.agencies(state).await?;
        let unverified = !crate::auth::recovery::is_verified(&state.db, viewer.user).await?;
        let current = match agency {
            Some(id) => Some(agencies.iter().find(|a| a.id == id).cloned().ok_or(Error::NotFound)?),
            None => None,
        };
        Ok(Chrome {
            email: viewer.email.clone(),
            csrf: viewer.csrf.clone(),
            agencies,
            current,
            section,
            notice: None,
            unverified,
        })
    }

    /// Adds the notice a redirect after a change asked for (`?done=<key>`).
    pub fn with_notice(mut self, done: Option<&str>) -> Chrome {
        self.notice = done.and_then(notice);
        self
    }

    /// Whether the viewer may make admin changes in the current agency (templates hide the
    /// forms otherwise; the services refuse them either way).
    pub fn is_admin(&self) -> bool {
        self.current.as_ref().is_some_and(|a| a.role >= Role::Admin)
    }

    /// `aria-current="page"` for the navigation entry of this page.
    pub fn current_for(&self, section: &str) -> &'static str {
        if self.section == section { "page" } else { "false" }
    }

    /// The current agency's pages start here.
    pub fn base(&self) -> String {
        self.current.as_ref().map(|a| format!("/app/agencies/{}", a.id)).unwrap_or_else(|| "/app".into())
    }
}

/// The `?done=` query every page accepts.
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    pub done: Option<String>,
}

/// Notices are a fixed list, so a crafted link cannot make a page say anything else.
fn notice(key: &str) -> Option<&'static str> {
    Some(match key {
        "client-created" => "Client account created.",
        "client-deleted" => "Client account deleted.",
        "settings-saved" => "Settings saved.",
        "keys-saved" => "Flutterwave keys saved and checked with Flutterwave.",
        "token-rotated" => {
            "New webhook URLs issued. The old ones stopped working; update Flutterwave's dashboard."
        }
        "kommo-disconnected" => "Kommo disconnected.",
        "job-replayed" => "The job will run again shortly.",
        "invited" => "Invitation created.",
        "invitation-revoked" => "Invitation revoked.",
        "member-updated" => "Role changed.",
        "member-removed" => "Member removed.",
        "key-revoked" => "API key revoked.",
        "telemetry-saved" => "Telemetry export saved.",
        "telemetry-removed" => "Telemetry export removed.",
        "password-changed" => "Password changed. Your other sessions were logged out.",
        "joined" => "Welcome: you joined the agency.",
        "password-reset" => "Password changed. Every other session of yours was logged out.",
        "verification-sent" => "We mailed you a new link to confirm your address.",
        "alerts-saved" => "Alert settings saved.",
        _ => return None,
    })
}

/// Where a change sends the browser afterwards (303, so a reload does not post again).
pub fn done(path: &str, key: &str) -> Response {
    let separator = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{separator}done={key}")).into_response()
}

/// What a form got wrong: messages by field name, and one for the whole form.
#[derive(Debug, Default, Clone)]
pub struct FormErrors {
    /// Every message about a field, joined: a field wrong in two ways says both.
    fields: BTreeMap<String, String>,
    /// Every message in the service's order, for the summary at the top of the form.
    pub list: Vec<ErrorLink>,
    pub summary: Option<String>,
}

/// One line of the error summary, linking to the field it is about.
#[derive(Debug, Clone)]
pub struct ErrorLink {
    /// The field's element id: its name without a list index (`trigger.stage_ids[1]` is about
    /// the `trigger.stage_ids` group).
    pub id: String,
    pub message: String,
}

impl FormErrors {
    pub fn none() -> FormErrors {
        FormErrors::default()
    }

    /// Adds a message about `field`; a second one about the same field is appended to it.
    pub fn add(&mut self, field: &str, message: &str) {
        let joined = self.fields.entry(field.to_owned()).or_default();
        if joined.contains(message) {
            return;
        }
        if !joined.is_empty() {
            joined.push(' ');
        }
        joined.push_str(message);
        let id = field.split('[').next().unwrap_or(field).to_owned();
        self.list.push(ErrorLink { id, message: message.to_owned() });
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    /// `aria-invalid` for a field.
    pub fn invalid(&self, field: &str) -> &'static str {
        if self.fields.contains_key(field) { "true" } else { "false" }
    }

    /// Every message for a list field and its items (`field`, `field[2]`): a form shows a
    /// group of checkboxes' errors in one place.
    pub fn get_any(&self, field: &str) -> Option<String> {
        let mut messages: Vec<&str> = Vec::new();
        for (name, message) in &self.fields {
            if (name == field || name.strip_prefix(field).is_some_and(|r| r.starts_with('[')))
                && !messages.contains(&message.as_str())
            {
                messages.push(message);
            }
        }
        (!messages.is_empty()).then(|| messages.join(" "))
    }
}

/// A failed change: shown on the page that was posted (with the input kept) when the person can
/// fix it; a missing page, or our own failure, is an error page.
pub enum Failure {
    Form(StatusCode, FormErrors),
    Page(Page),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let problem = Problem::from(error);
        let status = problem.status_code();
        // A dependency's failure about one field (Flutterwave could not check a key) is
        // something to show next to that field; any other server error is an error page.
        if status == StatusCode::NOT_FOUND || (status.is_server_error() && problem.errors.is_empty()) {
            return Failure::Page(error_page_from(problem));
        }
        let mut errors = FormErrors::none();
        for field in &problem.errors {
            errors.add(&field.field, &field.message);
        }
        if problem.errors.is_empty() {
            errors.summary = Some(problem.detail.clone().unwrap_or_else(|| problem.title.clone()));
        } else {
            errors.summary = Some(match errors.list.len() {
                1 => "One thing needs another look before this can be saved:".into(),
                n => format!("{n} things need another look before this can be saved:"),
            });
        }
        Failure::Form(status, errors)
    }
}

fn error_page_from(problem: Problem) -> Page {
    super::problem_page(problem)
}

/// Shows the posted form again after a failure the person can fix (`form` gets the status and
/// the errors, and keeps the input); anything else is an error page.
pub fn again(error: Error, form: impl FnOnce(StatusCode, FormErrors) -> Page) -> Response {
    match Failure::from(error) {
        Failure::Form(status, errors) => form(status, errors).into_response(),
        Failure::Page(page) => page.into_response(),
    }
}

/// The page again after a refused change: `view` rebuilds it as it is now, `fill` puts the
/// errors (and any input worth keeping) on it.
pub async fn refused<T: askama::Template>(
    view: impl std::future::Future<Output = Result<T>>,
    error: Error,
    fill: impl FnOnce(&mut T, FormErrors),
) -> Response {
    match view.await {
        Ok(mut page) => again(error, |status, errors| {
            fill(&mut page, errors);
            Page::render(status, &page)
        }),
        Err(error) => error_page(error).into_response(),
    }
}

/// Renders a page's result: the page, or the error page.
pub fn page(result: Result<Page>) -> Response {
    match result {
        Ok(page) => page.into_response(),
        Err(error) => error_page(error).into_response(),
    }
}

/// A stored time (ms) as people read it, in UTC.
pub fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// A moment shown on a page: as text it reads in UTC (what works without JavaScript, and in
/// an attribute); `{{ t.html() }}` is a `<time>` element that `app.js` rewrites into the
/// viewer's own time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Time(Option<chrono::DateTime<chrono::Utc>>);

impl Time {
    /// A stored time in ms.
    pub fn from_ms(ms: i64) -> Time {
        Time(chrono::DateTime::from_timestamp_millis(ms))
    }

    /// A time from a service view; text that is no time shows as nothing rather than a guess.
    pub fn from_rfc3339(at: &str) -> Time {
        Time(chrono::DateTime::parse_from_rfc3339(at).ok().map(|t| t.with_timezone(&chrono::Utc)))
    }

    /// `<time datetime="2026-12-03T04:07:00Z">2026-12-03 04:07 UTC</time>`.
    pub fn html(&self) -> askama::filters::HtmlSafeOutput<String> {
        // Both parts are formatted from a parsed time: digits, dashes, colons, `T`, `Z`, `UTC`
        // only, so nothing needs escaping.
        askama::filters::HtmlSafeOutput(match self.0 {
            Some(t) => format!(
                "<time datetime=\"{}\">{self}</time>",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => String::new(),
        })
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M UTC")),
            None => Ok(()),
        }
    }
}

/// An amount as the web app shows it: the currency's decimals (`crate::money::format`) with
/// thousands separators, then the code: `1,234,567.50 KES`, `-1,500,000 UGX`. Exact: the digits
/// come from the decimal's own text, never through a float. Only pages use this; notes, the API
/// and Flutterwave keep the plain `1234567.50`, which reads the same in every language.
pub fn money(currency: &str, amount: rust_decimal::Decimal) -> String {
    format!("{} {currency}", amount_of(currency, amount))
}

/// [`money`] without the code, for a page that writes the code itself: `1,234,567.50`.
pub fn amount_of(currency: &str, amount: rust_decimal::Decimal) -> String {
    grouped(&crate::money::format(currency, amount))
}

/// Exact decimal text with thousands separators: `1234567.50` is `1,234,567.50`. Only the
/// whole part is grouped; anything that is not a plain decimal is shown as it is.
pub fn grouped(amount: &str) -> String {
    let (sign, rest) = amount.strip_prefix('-').map_or(("", amount), |r| ("-", r));
    let (whole, fraction) = rest.split_once('.').map_or((rest, None), |(w, f)| (w, Some(f)));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return amount.to_owned();
    }
    let mut out = String::with_capacity(amount.len() + whole.len() / 3);
    out.push_str(sign);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if let Some(fraction) = fraction {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use rust_decimal::Decimal;

    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn money_has_thousands_separators_and_the_currency_decimals() {
        assert_eq!(money("KES", d("1234567.5")), "1,234,567.50 KES");
        assert_eq!(money("NGN", d("999.99")), "999.99 NGN");
        assert_eq!(money("NGN", d("1000")), "1,000.00 NGN");
        assert_eq!(money("USD", d("0")), "0.00 USD");
        assert_eq!(money("USD", d("0.5")), "0.50 USD");
    }

    #[test]
    fn negative_amounts_keep_their_sign_before_the_digits() {
        assert_eq!(money("KES", d("-1234.5")), "-1,234.50 KES");
        assert_eq!(money("KES", d("-100")), "-100.00 KES");
        assert_eq!(money("GHS", d("-100000")), "-100,000.00 GHS");
    }

    #[test]
    fn zero_and_three_decimal_currencies() {
        assert_eq!(money("UGX", d("1500000")), "1,500,000 UGX");
        assert_eq!(money("RWF", d("25000")), "25,000 RWF");
        assert_eq!(money("XOF", d("999")), "999 XOF");
        assert_eq!(money("KWD", d("1234.5")), "1,234.500 KWD");
        assert_eq!(money("BHD", d("-12345678.125")), "-12,345,678.125 BHD");
    }

    #[test]
    fn exact_beyond_what_a_float_holds() {
        // 2^53 + 1 has no f64; the digits come through untouched.
        assert_eq!(money("NGN", d("9007199254740993.01")), "9,007,199,254,740,993.01 NGN");
        // A reported amount with more decimals than the currency is shown, not rounded away.
        assert_eq!(money("UGX", d("1000.5")), "1,000.5 UGX");
    }

    #[test]
    fn times_are_utc_text_inside_a_time_element() {
        let t = Time::from_rfc3339("2025-12-03T04:27:00Z");
        assert_eq!(t.to_string(), "2025-12-03 04:27 UTC");
        assert_eq!(
            t.html().to_string(),
            "<time datetime=\"2025-12-03T04:27:00Z\">2025-12-03 04:27 UTC</time>"
        );
        assert_eq!(Time::from_rfc3339("2025-12-03T06:27:00+02:00"), t);
        assert_eq!(Time::from_rfc3339("not a time").html().to_string(), "");
    }
}
