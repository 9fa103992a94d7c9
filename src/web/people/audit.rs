//! The audit log as people read it: who did what, to which client account, newest first.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{Time, when};
use crate::error::{Error, Result};
use crate::ids::{AuditId, ClientId};
use crate::state::AppState;
use crate::tenants::{audit, clients};
use crate::vault::mask;
use crate::web::Page;
use crate::web::access::AgencyPage;
use crate::web::view::{Chrome, page as render};

const PAGE_SIZE: u32 = 50;

pub struct EntryRow {
    pub at: Time,
    pub who: String,
    pub who_kind: &'static str,
    pub action: String,
    pub code: String,
    pub client: String,
    /// (label, value) pairs of the entry's detail.
    pub details: Vec<(String, String)>,
}

pub struct ClientChoice {
    pub id: String,
    pub name: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "people_audit.html")]
struct AuditPage {
    chrome: Chrome,
    entries: Vec<EntryRow>,
    clients: Vec<ClientChoice>,
    filtered: bool,
    /// The first page's address (with the filter), shown on older pages.
    newest: Option<String>,
    older: Option<String>,
}

#[derive(Deserialize)]
pub struct AuditQuery {
    client_id: Option<String>,
    before: Option<String>,
}

/// An empty parameter is what the filter form sends for "all client accounts".
fn parse_id<T: std::str::FromStr>(value: Option<&str>, invalid: Error) -> Result<Option<T>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| invalid),
    }
}

pub async fn page(
    State(state): State<AppState>,
    page: AgencyPage,
    Query(query): Query<AuditQuery>,
) -> Response {
    render(view(&state, &page, query).await.map(|p| Page::render(StatusCode::OK, &p)))
}

async fn view(state: &AppState, page: &AgencyPage, query: AuditQuery) -> Result<AuditPage> {
    let AgencyPage { viewer, access, agency } = page;
    let agency = *agency;
    let chrome = Chrome::new(state, viewer, Some(agency), "audit").await?;
    let client: Option<ClientId> = parse_id(query.client_id.as_deref(), Error::NotFound)?;
    let before: Option<AuditId> =
        parse_id(query.before.as_deref(), Error::Malformed("`before` is not an audit entry id".into()))?;
    let accounts = clients::list(&state.db, access).await?;
    // Another agency's client account is as unknown here as anywhere.
    if client.is_some_and(|c| !accounts.iter().any(|a| a.id == c)) {
        return Err(Error::NotFound);
    }
    let names: HashMap<ClientId, String> = accounts.iter().map(|a| (a.id, a.name.clone())).collect();
    // One more than a page tells whether older entries exist.
    let mut entries = audit::list(&state.db, access, client, before, PAGE_SIZE + 1).await?;
    let more = entries.len() > PAGE_SIZE as usize;
    entries.truncate(PAGE_SIZE as usize);

    let base = format!("/app/agencies/{agency}/audit");
    let filter = client.map(|c| format!("client_id={c}"));
    let link = |extra: Option<String>| {
        let query: Vec<String> = filter.iter().cloned().chain(extra).collect();
        if query.is_empty() { base.clone() } else { format!("{base}?{}", query.join("&")) }
    };
    let older = match entries.last() {
        Some(last) if more => Some(link(Some(format!("before={}", last.id)))),
        _ => None,
    };
    Ok(AuditPage {
        chrome,
        entries: entries.into_iter().map(|e| row(e, &names)).collect(),
        clients: accounts
            .into_iter()
            .map(|a| ClientChoice { id: a.id.to_string(), selected: client == Some(a.id), name: a.name })
            .collect(),
        filtered: client.is_some(),
        newest: before.map(|_| link(None)),
        older,
    })
}

fn row(entry: audit::AuditEntry, names: &HashMap<ClientId, String>) -> EntryRow {
    EntryRow {
        at: when(&entry.at),
        who_kind: match entry.actor_kind.as_str() {
            "user" => "person",
            "api_key" => "API key",
            "kommo" => "Kommo",
            _ => "system",
        },
        who: entry.actor,
        action: action_label(&entry.action).map_or_else(|| entry.action.clone(), str::to_owned),
        code: entry.action,
        client: match entry.client_id {
            None => String::new(),
            Some(id) => names.get(&id).cloned().unwrap_or_else(|| "A deleted client account".to_owned()),
        },
        details: details(&entry.detail),
    }
}

fn action_label(action: &str) -> Option<&'static str> {
    Some(match action {
        "member.invited" => "Invited someone",
        "member.invitation_revoked" => "Revoked an invitation",
        "member.joined" => "Joined the agency",
        "member.role_changed" => "Changed a member's role",
        "member.removed" => "Removed a member",
        "api_key.created" => "Created an API key",
        "api_key.revoked" => "Revoked an API key",
        "api_key.role_lowered" => "Lowered an API key to member",
        "agency.telemetry_set" => "Set the telemetry export",
        "agency.telemetry_removed" => "Removed the telemetry export",
        "client.created" => "Created a client account",
        "client.settings_changed" => "Changed settings",
        "client.ingress_token_rotated" => "Issued new webhook URLs",
        "client.deleted" => "Deleted a client account",
        "client.flutterwave_keys_set" => "Added Flutterwave keys",
        "client.flutterwave_keys_replaced" => "Replaced Flutterwave keys",
        "kommo.connected" => "Connected Kommo",
        "kommo.disconnected" => "Disconnected Kommo",
        "kommo.uninstalled" => "Kommo access revoked",
        "job.replayed" => "Replayed a failed job",
        "event.replayed" => "Ran an event's job again",
        "client.test_event_sent" => "Sent a test event",
        _ => return None,
    })
}

/// The detail object as label/value pairs. Services record only masked values; a value under a
/// secret-sounding name that is not masked is masked here too, so a slip there never reaches a
/// page.
fn details(detail: &Value) -> Vec<(String, String)> {
    match detail {
        Value::Object(fields) => fields
            .iter()
            .map(|(name, value)| {
                let text = text(value);
                let secret = ["secret", "token", "password", "hash"].iter().any(|s| name.contains(s));
                let text = if secret && !text.starts_with('•') { mask(&text) } else { text };
                (name.replace('_', " "), text)
            })
            .collect(),
        Value::Null => Vec::new(),
        other => vec![("detail".to_owned(), text(other))],
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "—".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "none".to_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| format!("{}: {}", k.replace('_', " "), text(v)))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::details;

    #[test]
    fn details_read_as_text_and_hide_secrets() {
        let shown = details(&json!({
            "user": "a@b.example", "from": "member", "fields": ["tax", "currency"],
            "secret_key": "••••abcd", "webhook_hash": "plain-hash-value-1234"
        }));
        assert!(shown.contains(&("user".into(), "a@b.example".into())));
        assert!(shown.contains(&("fields".into(), "tax, currency".into())));
        assert!(shown.contains(&("secret key".into(), "••••abcd".into())));
        assert!(shown.contains(&("webhook hash".into(), "••••1234".into())));
        assert!(details(&json!({})).is_empty());
    }
}
