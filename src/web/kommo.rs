//! Kommo's browser-facing and server-facing addresses: the OAuth redirect, the uninstall hook,
//! and the page where a marketplace install is claimed.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::session::{Posted, Viewer};
use super::{Message, Page, error_page};
use crate::auth::Principal;
use crate::connections::{self, CallbackOutcome, CallbackParams, UninstallParams};
use crate::error::Error;
use crate::extract::ClientIp;
use crate::ids::{AgencyId, ClientId};
use crate::roles::Role;
use crate::state::AppState;
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth/kommo/callback", get(callback))
        .route("/oauth/kommo/uninstall", get(uninstall))
        .route("/kommo/claim", get(claim_page).post(claim))
}

async fn callback(
    State(state): State<AppState>,
    principal: Option<Principal>,
    ClientIp(ip): ClientIp,
    Query(params): Query<CallbackParams>,
) -> Response {
    let session = match &principal {
        Some(Principal::User { session, .. }) => Some(*session),
        _ => None,
    };
    match connections::callback(&state.kommo, &state.installs, params, session, Some(ip)).await {
        Ok(CallbackOutcome::Connected { account, webhook, client, agency }) => {
            let mut message = format!("The Kommo account {} is connected.", account.subdomain);
            if webhook == connections::webhook::MANUAL {
                message.push_str(
                    " Kommo did not let pipepay subscribe to its webhooks automatically; \
                     the client account's page shows how to add the webhook by hand.",
                );
            }
            Page::render(
                StatusCode::OK,
                &Message::ok("Kommo connected", message)
                    .with_link(format!("/app/agencies/{agency}/clients/{client}"), "Open the client account"),
            )
            .into_response()
        }
        Ok(CallbackOutcome::Declined) => Page::render(
            StatusCode::OK,
            &Message::ok(
                "Nothing was connected",
                "You declined access in Kommo, so pipepay was not connected. You can start again at any time.",
            ),
        )
        .into_response(),
        // Kommo's servers make this call and never look at the answer beyond its speed.
        Ok(CallbackOutcome::Installed { .. }) => (StatusCode::OK, "installed").into_response(),
        Err(error) => error_page(error).into_response(),
    }
}

async fn uninstall(State(state): State<AppState>, Query(params): Query<UninstallParams>) -> Response {
    match connections::uninstall(&state.kommo, params).await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(error) => crate::problem::Problem::from(error).into_response(),
    }
}

#[derive(askama::Template)]
#[template(path = "kommo_claim.html")]
struct ClaimPage {
    /// (agency id, client id, label) of the client accounts the user administers.
    choices: Vec<(AgencyId, ClientId, String)>,
    csrf: String,
}

/// Where a Kommo admin lands from the widget to finish a marketplace install. Nothing about an
/// install is shown here: the widget cannot carry a secret of pipepay's (it is one static file
/// for every account, and Kommo's install call reaches pipepay's server, not the widget), and
/// a Kommo account id is no secret. The install is only bound to a client account after the
/// consent in Kommo, which only that account's administrators can give.
async fn claim_page(State(state): State<AppState>, Viewer { user, csrf, .. }: Viewer) -> Response {
    if !connections::configured(&state.kommo) {
        return error_page(connections::not_configured()).into_response();
    }
    let page = async {
        let mut tx = state.db.read().await?;
        let mut choices = Vec::new();
        for (agency, role) in store::agencies::of_user(&mut tx, user).await? {
            if role < Role::Admin {
                continue;
            }
            for client in store::clients::list(&mut tx, agency.id).await? {
                choices.push((agency.id, client.id, format!("{} — {}", agency.name, client.name)));
            }
        }
        tx.commit().await?;
        Ok::<_, Error>(ClaimPage { choices, csrf })
    };
    match page.await {
        Ok(page) => Page::render(StatusCode::OK, &page)
            .allow_form_target(&state.kommo.settings.auth_url.origin().ascii_serialization())
            .into_response(),
        Err(error) => error_page(error).into_response(),
    }
}

#[derive(Deserialize)]
struct ClaimForm {
    /// `agency|client`
    client: String,
}

/// Starts the consent that proves the claimer administers the Kommo account.
///
/// The one agency form whose agency is not in its address: the page offers every client
/// account the viewer administers in one list, so the agency and client account come in the
/// body, and the access check (`connections::start`: a stranger 404, too little role 403) can
/// only follow reading it. The session and CSRF token are checked first, as for every form.
async fn claim(State(state): State<AppState>, Posted { viewer, form }: Posted<ClaimForm>) -> Response {
    let result = async {
        let (agency, client) = form
            .client
            .split_once('|')
            .and_then(|(a, c)| Some((a.parse::<AgencyId>().ok()?, c.parse::<ClientId>().ok()?)))
            .ok_or_else(|| Error::invalid("client", "Choose a client account."))?;
        let access = crate::extract::access(&state, &viewer.principal, agency).await?;
        connections::start(&state.kommo, &access, viewer.session, client).await
    };
    match result.await {
        Ok(consent) => {
            let mut headers = HeaderMap::new();
            if let Ok(value) = consent.as_str().parse() {
                headers.insert(header::LOCATION, value);
            }
            (StatusCode::SEE_OTHER, headers).into_response()
        }
        Err(error) => error_page(error).into_response(),
    }
}
