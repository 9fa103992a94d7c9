//! Members, their roles, and invitations. Only owners change any of it (the service says so);
//! everyone else reads.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Empty, ShownOnce, Time, parse_role, row_failure, when};
use crate::error::Result;
use crate::ids::{AgencyId, InvitationId, UserId};
use crate::roles::Role;
use crate::state::AppState;
use crate::tenants::members;
use crate::web::Page;
use crate::web::access::{AgencyPage, PostedTo};
use crate::web::session::PagePath;
use crate::web::view::{Chrome, Done, FormErrors, done, page as render, refused as refused_page};

pub struct MemberRow {
    pub id: String,
    pub email: String,
    pub role: &'static str,
    pub joined: Time,
    pub is_me: bool,
}

pub struct InvitationRow {
    pub id: String,
    pub email: String,
    pub role: &'static str,
    pub expires: Time,
}

#[derive(Template)]
#[template(path = "people_members.html")]
struct MembersPage {
    chrome: Chrome,
    /// Owners manage members and invitations.
    is_owner: bool,
    members: Vec<MemberRow>,
    invitations: Vec<InvitationRow>,
    roles: [&'static str; 3],
    /// The invite form's input.
    email: String,
    role: String,
    errors: FormErrors,
    /// Why a change from a table row (role, removal, revocation) was refused.
    action_error: Option<String>,
    once: Option<ShownOnce>,
}

async fn view(state: &AppState, page: &AgencyPage, done: Option<&str>) -> Result<MembersPage> {
    let AgencyPage { viewer, access, agency } = page;
    let agency = *agency;
    let chrome = Chrome::new(state, viewer, Some(agency), "members").await?.with_notice(done);
    let members = members::list(&state.db, access)
        .await?
        .into_iter()
        .map(|m| MemberRow {
            id: m.user_id.to_string(),
            email: m.email,
            role: m.role.as_str(),
            joined: when(&m.joined_at),
            is_me: m.user_id == viewer.user,
        })
        .collect();
    let invitations = members::pending(&state.db, access)
        .await?
        .into_iter()
        .map(|i| InvitationRow {
            id: i.id.to_string(),
            email: i.email,
            role: i.role.as_str(),
            expires: when(&i.expires_at),
        })
        .collect();
    Ok(MembersPage {
        chrome,
        is_owner: access.role == Role::Owner,
        members,
        invitations,
        roles: [Role::Member.as_str(), Role::Admin.as_str(), Role::Owner.as_str()],
        email: String::new(),
        role: Role::Member.as_str().to_owned(),
        errors: FormErrors::none(),
        action_error: None,
        once: None,
    })
}

fn path(agency: AgencyId) -> String {
    format!("/app/agencies/{agency}/members")
}

pub async fn page(State(state): State<AppState>, page: AgencyPage, Query(done): Query<Done>) -> Response {
    render(view(&state, &page, done.done.as_deref()).await.map(|p| Page::render(StatusCode::OK, &p)))
}

/// The members page again after a refused change, with `fill` placing the errors.
async fn refused(
    state: &AppState,
    page: &AgencyPage,
    error: crate::error::Error,
    fill: impl FnOnce(&mut MembersPage, FormErrors),
) -> Response {
    refused_page(view(state, page, None), error, fill).await
}

/// A row action's failure goes to the page's alert.
fn row_error(fields: &'static [&'static str]) -> impl FnOnce(&mut MembersPage, FormErrors) {
    move |page, errors| page.action_error = row_failure(errors, fields).summary
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

/// Answers with the page itself rather than a redirect: the accept link exists only in this
/// response (the database keeps its hash), so it is shown here, once.
pub async fn invite(
    State(state): State<AppState>,
    PostedTo { page, form }: PostedTo<AgencyPage, InviteForm>,
) -> Response {
    let invited = async {
        let role = parse_role("role", &form.role)?;
        members::invite(&state.db, &state.public_url, &page.access, &form.email, role).await
    };
    match invited.await {
        Ok((invitation, _token, link)) => render(view(&state, &page, Some("invited")).await.map(|mut p| {
            p.once = Some(ShownOnce {
                id: "invitation-link",
                label: "Invitation link",
                value: link,
                advice: format!(
                    "Send this link to {} yourself, privately: whoever opens it can join as {}. It works once, \
                     expires on {}, and is not shown again.",
                    invitation.email,
                    invitation.role,
                    when(&invitation.expires_at)
                ),
            });
            Page::render(StatusCode::OK, &p)
        })),
        Err(error) => {
            refused(&state, &page, error, |shown, errors| {
                shown.email = form.email;
                shown.role = form.role;
                shown.errors = errors;
            })
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

pub async fn set_role(
    State(state): State<AppState>,
    PagePath((_, user)): PagePath<(AgencyId, UserId)>,
    PostedTo { page, form }: PostedTo<AgencyPage, RoleForm>,
) -> Response {
    let changed = async {
        let role = parse_role("role", &form.role)?;
        members::set_role(&state.db, &page.access, user, role).await
    };
    match changed.await {
        Ok(_) => done(&path(page.agency), "member-updated"),
        Err(error) => refused(&state, &page, error, row_error(&["role"])).await,
    }
}

pub async fn remove(
    State(state): State<AppState>,
    PagePath((_, user)): PagePath<(AgencyId, UserId)>,
    PostedTo { page, .. }: PostedTo<AgencyPage, Empty>,
) -> Response {
    match members::remove(&state.db, &page.access, user).await {
        // Someone who left has no page in this agency any more.
        Ok(()) if user == page.viewer.user => Redirect::to("/app").into_response(),
        Ok(()) => done(&path(page.agency), "member-removed"),
        Err(error) => refused(&state, &page, error, row_error(&["user_id"])).await,
    }
}

pub async fn revoke(
    State(state): State<AppState>,
    PagePath((_, invitation)): PagePath<(AgencyId, InvitationId)>,
    PostedTo { page, .. }: PostedTo<AgencyPage, Empty>,
) -> Response {
    match members::revoke(&state.db, &page.access, invitation).await {
        Ok(()) => done(&path(page.agency), "invitation-revoked"),
        Err(error) => refused(&state, &page, error, row_error(&[])).await,
    }
}
