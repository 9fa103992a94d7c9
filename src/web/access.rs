//! The agency (and client account) a page's address names, and the viewer's standing there,
//! resolved before the handler runs: a stranger sees the HTML 404 whatever they asked or
//! posted. Too little role is still the services' 403, on the page the handler renders.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::error_page;
use super::session::{PagePath, Viewer, decode_form, read_posted};
use crate::auth::Access;
use crate::extract::{AgencyIds, AgencyOf, ClientIds};
use crate::ids::{AgencyId, ClientId};
use crate::state::AppState;

/// A page of an agency (`/app/agencies/{agency}/..`).
pub struct AgencyPage {
    pub viewer: Viewer,
    pub access: Access,
    pub agency: AgencyId,
}

/// A page of a client account (`/app/agencies/{agency}/clients/{client}/..`). Whether the
/// client account is the agency's is asked by the page itself, which shows it (a 404 too).
pub struct ClientPage {
    pub viewer: Viewer,
    pub access: Access,
    pub agency: AgencyId,
    pub client: ClientId,
}

/// What a page is about, from the ids in its address (read by name, so more may follow).
pub trait Scope: Sized + Send {
    type Ids: DeserializeOwned + AgencyOf + Send;
    fn of(viewer: Viewer, access: Access, ids: Self::Ids) -> Self;
}

impl Scope for AgencyPage {
    type Ids = AgencyIds;
    fn of(viewer: Viewer, access: Access, ids: AgencyIds) -> Self {
        AgencyPage { viewer, access, agency: ids.agency }
    }
}

impl Scope for ClientPage {
    type Ids = ClientIds;
    fn of(viewer: Viewer, access: Access, ids: ClientIds) -> Self {
        ClientPage { viewer, access, agency: ids.agency, client: ids.client }
    }
}

/// The viewer's standing in the agency `ids` name, or the error page (404 for a stranger).
async fn resolve<P: Scope>(state: &AppState, viewer: Viewer, ids: P::Ids) -> Result<P, Response> {
    match crate::extract::access(state, &viewer.principal, ids.agency()).await {
        Ok(access) => Ok(P::of(viewer, access, ids)),
        Err(error) => Err(error_page(error).into_response()),
    }
}

/// The viewer (or the log-in page), then the ids (an address whose id is no id is the HTML
/// 404), then the access check: the order the pages took them in.
async fn page<P: Scope>(parts: &mut Parts, state: &AppState) -> Result<P, Response> {
    let viewer = Viewer::from_request_parts(parts, state).await?;
    let PagePath(ids) = PagePath::<P::Ids>::from_request_parts(parts, state).await?;
    resolve(state, viewer, ids).await
}

impl FromRequestParts<AppState> for AgencyPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        page(parts, state).await
    }
}

impl FromRequestParts<AppState> for ClientPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        page(parts, state).await
    }
}

/// A form posted to a page of `P`: as [`super::session::Posted`] (a session ended while it was
/// open is kept through the log-in; the CSRF token is checked first), then the access check,
/// then the form itself, so a stranger's post is a 404 whatever it holds.
pub struct PostedTo<P, T> {
    pub page: P,
    pub form: T,
}

impl<P: Scope, T: DeserializeOwned> FromRequest<AppState> for PostedTo<P, T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        // The ids first, as when the handlers read them before the form: an address with no
        // id in it is a 404 even when logged out.
        let PagePath(ids) = PagePath::<P::Ids>::from_request_parts(&mut parts, state).await?;
        let (viewer, bytes): (Viewer, Bytes) = read_posted(Request::from_parts(parts, body), state).await?;
        let page = resolve::<P>(state, viewer, ids).await?;
        let form = decode_form(&bytes).map_err(|e| error_page(e).into_response())?;
        Ok(PostedTo { page, form })
    }
}
