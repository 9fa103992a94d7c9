//! Being someone: sign up, log in, log out, join an agency by invitation, change password,
//! reset a forgotten one by a mailed link, confirm an address.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::session::{PagePath, Posted, PublicForm, Viewer, safe_next};
use super::view::{Chrome, Done, Failure, FormErrors, again, page};
use super::{Message, Page, error_page};
use crate::auth::recovery;
use crate::auth::{self, FormPrincipal, NewSession, Principal, SessionCookies, SessionCsrf, SignUp};
use crate::error::{Error, Result};
use crate::extract::ClientIp;
use crate::state::AppState;
use crate::tenants::members;
use crate::vault::Secret;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signup", get(signup_page).post(signup))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/join/{token}", get(join_page).post(join))
        .route("/app/account", get(account_page))
        .route("/app/account/password", post(change_password))
        .route("/forgot", get(forgot_page).post(forgot))
        .route("/reset/{token}", get(reset_page).post(reset))
        .route("/verify/{token}", get(verify))
        .route("/app/account/verify", post(resend_verification))
}

/// A redirect that also sets the new session's cookies.
fn logged_in(state: &AppState, session: &NewSession, to: &str) -> Response {
    let mut headers = HeaderMap::new();
    SessionCookies::set(&mut headers, session, state.auth.secure_cookies);
    (headers, Redirect::to(to)).into_response()
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    agency_name: String,
    email: String,
    errors: FormErrors,
}

async fn signup_page() -> Page {
    Page::render(
        StatusCode::OK,
        &SignupPage { agency_name: String::new(), email: String::new(), errors: FormErrors::none() },
    )
}

#[derive(Deserialize)]
struct SignupForm {
    #[serde(default)]
    agency_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    PublicForm(form): PublicForm<SignupForm>,
) -> Response {
    let input = SignUp {
        email: form.email.clone(),
        password: Secret::new(form.password),
        agency_name: form.agency_name.clone(),
    };
    match auth::sign_up(&state.db, &state.auth, ip, input).await {
        Ok((user, agency, session)) => {
            recovery::after_sign_up(&state.db, &state.public_url, user.id, &user.email).await;
            logged_in(&state, &session, &format!("/app/agencies/{}", agency.id))
        }
        Err(error) => again(error, |status, errors| {
            Page::render(status, &SignupPage { agency_name: form.agency_name, email: form.email, errors })
        }),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    email: String,
    next: String,
    errors: FormErrors,
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(principal: FormPrincipal, Query(query): Query<NextQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    if let FormPrincipal(Some(Principal::User { .. })) = principal {
        return Redirect::to(&next).into_response();
    }
    Page::render(StatusCode::OK, &LoginPage { email: String::new(), next, errors: FormErrors::none() })
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    PublicForm(form): PublicForm<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    match auth::log_in(&state.db, &state.auth, ip, &form.email, Secret::new(form.password)).await {
        Ok((_, session)) => logged_in(&state, &session, &next),
        Err(error) => again(error, |status, errors| {
            Page::render(status, &LoginPage { email: form.email, next, errors })
        }),
    }
}

#[derive(Deserialize)]
struct Empty {}

async fn logout(State(state): State<AppState>, posted: Posted<Empty>) -> Response {
    if let Err(error) = auth::log_out(&state.db, posted.viewer.session).await {
        return error_page(error).into_response();
    }
    let mut headers = HeaderMap::new();
    SessionCookies::clear(&mut headers, state.auth.secure_cookies);
    (headers, Redirect::to("/login")).into_response()
}

#[derive(Template)]
#[template(path = "join.html")]
struct JoinPage {
    token: String,
    agency_name: String,
    email: String,
    role: String,
    /// The logged-in person's CSRF token; `None` when nobody is logged in.
    csrf: Option<String>,
    signed_in_as: Option<String>,
    errors: FormErrors,
}

async fn join_view(
    state: &AppState,
    principal: &Option<Principal>,
    csrf: Option<String>,
    token: &str,
    errors: FormErrors,
) -> Result<JoinPage> {
    let invitation = members::preview(&state.db, token).await?.ok_or(Error::NotFound)?;
    let signed_in_as = match principal {
        Some(Principal::User { email, .. }) => Some(email.clone()),
        _ => None,
    };
    Ok(JoinPage {
        token: token.to_owned(),
        agency_name: invitation.agency_name,
        email: invitation.email,
        role: invitation.role.to_string(),
        csrf: signed_in_as.as_ref().and(csrf),
        signed_in_as,
        errors,
    })
}

async fn join_page(
    State(state): State<AppState>,
    FormPrincipal(principal): FormPrincipal,
    csrf: Option<Extension<SessionCsrf>>,
    PagePath(token): PagePath<String>,
) -> Response {
    let csrf = csrf.map(|Extension(SessionCsrf(c))| c);
    page(
        join_view(&state, &principal, csrf, &token, FormErrors::none())
            .await
            .map(|p| Page::render(StatusCode::OK, &p)),
    )
}

#[derive(Deserialize)]
struct JoinForm {
    csrf: Option<String>,
    password: Option<String>,
}

async fn join(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    FormPrincipal(principal): FormPrincipal,
    csrf: Option<Extension<SessionCsrf>>,
    PagePath(token): PagePath<String>,
    PublicForm(form): PublicForm<JoinForm>,
) -> Response {
    let csrf = csrf.map(|Extension(SessionCsrf(c))| c);
    let person = principal.as_ref().filter(|p| matches!(p, Principal::User { .. }));
    if person.is_some() {
        let sent = form.csrf.clone().unwrap_or_default();
        let expected = csrf.clone().unwrap_or_default();
        if expected.is_empty() || !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
            return error_page(Error::Forbidden("this form has expired; reload the page and try again"))
                .into_response();
        }
    }
    let password = form.password.filter(|p| !p.is_empty()).map(Secret::new);
    match members::accept(&state.db, &state.auth, ip, person, &token, password).await {
        Ok((agency, session)) => {
            let to = format!("/app/agencies/{agency}?done=joined");
            match session {
                Some(session) => logged_in(&state, &session, &to),
                None => Redirect::to(&to).into_response(),
            }
        }
        Err(error) => match Failure::from(error) {
            Failure::Page(page) => page.into_response(),
            Failure::Form(status, errors) => page(
                join_view(&state, &principal, csrf, &token, errors)
                    .await
                    .map(|view| Page::render(status, &view)),
            ),
        },
    }
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    errors: FormErrors,
}

async fn account_page(State(state): State<AppState>, viewer: Viewer, Query(done): Query<Done>) -> Response {
    page(
        async {
            let chrome =
                Chrome::new(&state, &viewer, None, "account").await?.with_notice(done.done.as_deref());
            Ok(Page::render(StatusCode::OK, &AccountPage { chrome, errors: FormErrors::none() }))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    posted: Posted<PasswordForm>,
) -> Response {
    let Posted { viewer, form } = posted;
    let changed = auth::change_password(
        &state.db,
        &state.auth,
        ip,
        viewer.user,
        Secret::new(form.current_password),
        Secret::new(form.new_password),
    )
    .await;
    match changed {
        Ok(session) => logged_in(&state, &session, "/app/account?done=password-changed"),
        Err(error) => match Chrome::new(&state, &viewer, None, "account").await {
            Ok(chrome) => {
                again(error, |status, errors| Page::render(status, &AccountPage { chrome, errors }))
            }
            Err(error) => error_page(error).into_response(),
        },
    }
}

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    email: String,
    errors: FormErrors,
}

async fn forgot_page() -> Page {
    Page::render(StatusCode::OK, &ForgotPage { email: String::new(), errors: FormErrors::none() })
}

#[derive(Deserialize)]
struct ForgotForm {
    #[serde(default)]
    email: String,
}

async fn forgot(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    PublicForm(form): PublicForm<ForgotForm>,
) -> Response {
    match recovery::request_reset(&state.db, &state.auth, &state.public_url, ip, &form.email).await {
        // The same answer whether or not the address has an account.
        Ok(()) => Page::render(
            StatusCode::OK,
            &Message::ok(
                "Check your mail",
                "If an account uses that address, we have mailed it a link to choose a new password. \
                 The link works once, within an hour.",
            )
            .with_link("/login", "Back to log in"),
        )
        .into_response(),
        Err(error) => {
            again(error, |status, errors| Page::render(status, &ForgotPage { email: form.email, errors }))
        }
    }
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    token: String,
    email: String,
    errors: FormErrors,
}

fn link_unusable() -> Page {
    Page::render(
        StatusCode::NOT_FOUND,
        &Message {
            title: "This link no longer works".into(),
            message: "Reset links work once, within an hour, and only the newest one. Ask for a new one."
                .into(),
            tone: "error",
            link: Some(("/forgot".into(), "Ask for a new link".into())),
        },
    )
}

async fn reset_view(state: &AppState, status: StatusCode, token: &str, errors: FormErrors) -> Response {
    match recovery::reset_preview(&state.db, token).await {
        Ok(Some(email)) => {
            Page::render(status, &ResetPage { token: token.to_owned(), email, errors }).into_response()
        }
        Ok(None) => link_unusable().into_response(),
        Err(error) => error_page(error).into_response(),
    }
}

async fn reset_page(State(state): State<AppState>, PagePath(token): PagePath<String>) -> Response {
    reset_view(&state, StatusCode::OK, &token, FormErrors::none()).await
}

#[derive(Deserialize)]
struct ResetForm {
    #[serde(default)]
    password: String,
}

async fn reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    PagePath(token): PagePath<String>,
    PublicForm(form): PublicForm<ResetForm>,
) -> Response {
    match recovery::reset_password(&state.db, &state.auth, ip, &token, Secret::new(form.password)).await {
        Ok(session) => logged_in(&state, &session, "/app/account?done=password-reset"),
        Err(Error::NotFound) => link_unusable().into_response(),
        Err(error) => match Failure::from(error) {
            Failure::Page(page) => page.into_response(),
            Failure::Form(status, errors) => reset_view(&state, status, &token, errors).await,
        },
    }
}

async fn verify(State(state): State<AppState>, PagePath(token): PagePath<String>) -> Response {
    match recovery::verify(&state.db, &token).await {
        Ok(()) => Page::render(
            StatusCode::OK,
            &Message::ok("Address confirmed", "Thank you: your email address is confirmed.")
                .with_link("/app", "Go to pipepay"),
        )
        .into_response(),
        Err(Error::NotFound) => Page::render(
            StatusCode::NOT_FOUND,
            &Message {
                title: "This link no longer works".into(),
                message: "Confirmation links work once, within a week. Log in to have a new one sent.".into(),
                tone: "error",
                link: Some(("/app".into(), "Go to pipepay".into())),
            },
        )
        .into_response(),
        Err(error) => error_page(error).into_response(),
    }
}

async fn resend_verification(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    posted: Posted<Empty>,
) -> Response {
    match recovery::resend_verification(&state.db, &state.auth, &state.public_url, ip, posted.viewer.user)
        .await
    {
        Ok(()) => super::view::done("/app/account", "verification-sent"),
        Err(error) => error_page(error).into_response(),
    }
}
