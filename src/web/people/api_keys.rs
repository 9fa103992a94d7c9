//! The agency's API keys for automation. Only people with the admin role create or revoke them
//! (the service decides); the key itself exists only in the response that created it.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{Empty, ShownOnce, Time, parse_role, row_failure, when};
use crate::error::{Error, Result};
use crate::ids::{AgencyId, ApiKeyId};
use crate::roles::Role;
use crate::state::AppState;
use crate::tenants::api_keys;
use crate::web::Page;
use crate::web::access::{AgencyPage, PostedTo};
use crate::web::session::PagePath;
use crate::web::view::{Chrome, Done, FormErrors, done, page as render, refused as refused_page};

pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub role: &'static str,
    /// The key's first characters, so people can tell which key a script uses.
    pub prefix: String,
    /// Whose power the key borrows: it follows that person's role, and dies when they leave.
    pub created_by: String,
    pub created: Time,
    pub last_used: Option<Time>,
    pub revoked: Option<Time>,
}

#[derive(Template)]
#[template(path = "people_api_keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    roles: [&'static str; 2],
    name: String,
    role: String,
    errors: FormErrors,
    action_error: Option<String>,
    once: Option<ShownOnce>,
}

async fn view(state: &AppState, page: &AgencyPage, done: Option<&str>) -> Result<KeysPage> {
    let chrome = Chrome::new(state, &page.viewer, Some(page.agency), "api-keys").await?.with_notice(done);
    let keys = api_keys::list(&state.db, &page.access)
        .await?
        .into_iter()
        .map(|k| KeyRow {
            id: k.id.to_string(),
            name: k.name,
            role: k.role.as_str(),
            prefix: k.prefix,
            created_by: k.created_by.unwrap_or_else(|| "A deleted account".to_owned()),
            created: when(&k.created_at),
            last_used: k.last_used_at.as_deref().map(when),
            revoked: k.revoked_at.as_deref().map(when),
        })
        .collect();
    Ok(KeysPage {
        chrome,
        keys,
        roles: [Role::Member.as_str(), Role::Admin.as_str()],
        name: String::new(),
        role: Role::Member.as_str().to_owned(),
        errors: FormErrors::none(),
        action_error: None,
        once: None,
    })
}

pub async fn page(State(state): State<AppState>, page: AgencyPage, Query(done): Query<Done>) -> Response {
    render(view(&state, &page, done.done.as_deref()).await.map(|p| Page::render(StatusCode::OK, &p)))
}

async fn refused(
    state: &AppState,
    page: &AgencyPage,
    error: Error,
    fill: impl FnOnce(&mut KeysPage, FormErrors),
) -> Response {
    refused_page(view(state, page, None), error, fill).await
}

#[derive(Deserialize)]
pub struct NewKey {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

/// Answers with the page itself: only a hash of the key is stored, so this response is the one
/// chance to copy it.
pub async fn create(
    State(state): State<AppState>,
    PostedTo { page, form }: PostedTo<AgencyPage, NewKey>,
) -> Response {
    let created = async {
        let role = parse_role("role", &form.role)?;
        api_keys::create(&state.db, &page.access, &form.name, role).await
    };
    match created.await {
        Ok((key, secret)) => render(view(&state, &page, None).await.map(|mut p| {
            p.once = Some(ShownOnce {
                id: "new-api-key",
                label: "New API key",
                value: secret.expose().to_owned(),
                advice: format!(
                    "The key \u{201c}{}\u{201d} ({} role) is ready. Copy it now into your automation's secret \
                     store: pipepay keeps only a fingerprint of it and will not show it again. Send it as \
                     Authorization: Bearer followed by the key.",
                    key.name, key.role
                ),
            });
            Page::render(StatusCode::OK, &p)
        })),
        Err(error) => {
            refused(&state, &page, error, |shown, errors| {
                shown.name = form.name;
                shown.role = form.role;
                shown.errors = errors;
            })
            .await
        }
    }
}

pub async fn revoke(
    State(state): State<AppState>,
    PagePath((_, key)): PagePath<(AgencyId, ApiKeyId)>,
    PostedTo { page, .. }: PostedTo<AgencyPage, Empty>,
) -> Response {
    match api_keys::revoke(&state.db, &page.access, key).await {
        Ok(()) => done(&format!("/app/agencies/{}/api-keys", page.agency), "key-revoked"),
        Err(error) => {
            refused(&state, &page, error, |shown, errors| {
                shown.action_error = row_failure(errors, &[]).summary;
            })
            .await
        }
    }
}
