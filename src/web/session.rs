//! Who is looking at a page, and the forms they post: a logged-in person (API keys have no
//! pages), their agencies for the navigation, and the session's CSRF token every form carries.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::error_page;
use crate::auth::{FormPrincipal, Principal, SessionCsrf};
use crate::error::{Error, Result};
use crate::ids::{AgencyId, SessionId, UserId};
use crate::roles::Role;
use crate::state::AppState;
use crate::store;

/// A logged-in person. Extracting it on a page sends anyone else to the log-in page, which
/// brings them back here afterwards.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user: UserId,
    pub email: String,
    pub session: SessionId,
    pub csrf: String,
    pub principal: Principal,
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let FormPrincipal(principal) =
            FormPrincipal::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        let csrf = parts.extensions.get::<SessionCsrf>().map(|c| c.0.clone());
        match (principal, csrf) {
            (Some(principal @ Principal::User { .. }), Some(csrf)) => {
                let Principal::User { user, ref email, session, .. } = principal else {
                    return Err(login_redirect(parts));
                };
                Ok(Viewer { user, email: email.clone(), session, csrf, principal })
            }
            _ => Err(login_redirect(parts)),
        }
    }
}

/// `/login?next=<this page>`. A form posted while logged out comes back through
/// [`super::stash`] instead (see [`Posted`]).
fn login_redirect(parts: &Parts) -> Response {
    let here = if parts.method == axum::http::Method::GET {
        parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/app".into())
    } else {
        "/app".into()
    };
    let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

/// Where to go after logging in: only a path on this site, never another origin. The value is
/// read the way a browser will read the redirect (which drops tabs and newlines and treats `\`
/// as `/`), and what goes out is the parsed path, so nothing the browser would read differently
/// is ever sent.
pub fn safe_next(next: Option<&str>) -> String {
    const HOME: &str = "/app";
    let Some(path) = next.filter(|p| p.starts_with('/')) else {
        return HOME.to_owned();
    };
    let Ok(base) = url::Url::parse("http://pipepay.invalid/") else {
        return HOME.to_owned();
    };
    match base.join(path) {
        Ok(url) if url.origin() == base.origin() && url.username().is_empty() && url.password().is_none() => {
            let mut here = url.path().to_owned();
            if let Some(query) = url.query() {
                here.push('?');
                here.push_str(query);
            }
            // `/..//evil.example` normalises to a path that a Location header would read as
            // another host.
            if here.starts_with("//") { HOME.to_owned() } else { here }
        }
        _ => HOME.to_owned(),
    }
}

/// One of the viewer's agencies, for the navigation.
#[derive(Debug, Clone)]
pub struct AgencyLink {
    pub id: AgencyId,
    pub name: String,
    pub role: Role,
}

impl Viewer {
    pub async fn agencies(&self, state: &AppState) -> Result<Vec<AgencyLink>> {
        let mut tx = state.db.read().await?;
        let rows = store::agencies::of_user(&mut tx, self.user).await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|(a, role)| AgencyLink { id: a.id, name: a.name, role }).collect())
    }
}

/// A posted form whose `csrf` field matched the session's token. The body is decoded with
/// serde_html_form, so repeated fields (checkboxes, multi-selects) become lists.
pub struct Posted<T> {
    pub viewer: Viewer,
    pub form: T,
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (viewer, bytes) = read_posted(request, state).await?;
        let form = decode_form(&bytes).map_err(|e| error_page(e).into_response())?;
        Ok(Posted { viewer, form })
    }
}

/// The viewer and the posted body, its CSRF token checked. A form posted after the session
/// ended is kept through the log-in instead.
pub(super) async fn read_posted(request: Request, state: &AppState) -> Result<(Viewer, Bytes), Response> {
    let (mut parts, body) = request.into_parts();
    let viewer = Viewer::from_request_parts(&mut parts, state).await;
    let keep = parts.clone();
    let request = Request::from_parts(parts, body);
    let bytes = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
    // The session ended while the form was open: keep what was typed through the log-in.
    let viewer = viewer.map_err(|_| super::stash::keep(state, &keep, &bytes))?;
    let field: CsrfField = serde_html_form::from_bytes(&bytes).unwrap_or(CsrfField { csrf: String::new() });
    if !bool::from(field.csrf.as_bytes().ct_eq(viewer.csrf.as_bytes())) {
        return Err(error_page(Error::Forbidden("this form has expired; reload the page and try again"))
            .into_response());
    }
    Ok((viewer, bytes))
}

/// The form's fields; one that cannot be read is a 400 (shown as a page by the caller).
pub(super) fn decode_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_html_form::from_bytes(bytes)
        .map_err(|e| Error::Malformed(format!("the form could not be read: {e}")))
}

/// A form posted by someone not logged in (sign-up, log-in, accepting an invitation). The
/// same-origin layer already refuses posts from other sites.
pub struct PublicForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for PublicForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        serde_html_form::from_bytes(&bytes).map(PublicForm).map_err(|e| {
            error_page(Error::Malformed(format!("the form could not be read: {e}"))).into_response()
        })
    }
}

/// The ids in a page's address. An address whose id is not an id names no page: it gets the
/// same HTML 404 as any other unknown address, not the 400 meant for programs.
pub struct PagePath<T>(pub T);

impl<T, S> FromRequestParts<S> for PagePath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PagePath(value)),
            Err(_) => Err(error_page(Error::NotFound).into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/app/agencies/x")), "/app/agencies/x");
        assert_eq!(safe_next(Some("//evil.example/x")), "/app");
        assert_eq!(safe_next(Some("https://evil.example")), "/app");
        assert_eq!(safe_next(Some("/\\evil.example")), "/app");
        assert_eq!(safe_next(None), "/app");
        assert_eq!(safe_next(Some("/app/agencies/x?kind=dead")), "/app/agencies/x?kind=dead");
        // Browsers drop tabs and newlines from URLs: these read as `//evil.example`.
        for sneaky in [
            "/..//evil.example",
            "/.//evil.example/x",
            "/a/..//evil.example",
            "/%2e%2e//evil.example",
            "/./\\evil.example",
        ] {
            assert_eq!(safe_next(Some(sneaky)), "/app", "{sneaky:?}");
        }
        for sneaky in ["/\t/evil.example/x", "/\n/evil.example", "/\r\n/evil.example", "/\t\\evil.example"] {
            assert_eq!(safe_next(Some(sneaky)), "/app", "{sneaky:?}");
        }
        // Nothing a header cannot carry goes out.
        assert_eq!(safe_next(Some("/x\r\nSet-Cookie: a=b")), "/xSet-Cookie:%20a=b");
    }
}
