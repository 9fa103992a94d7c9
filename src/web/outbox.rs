//! The development outbox: with no SMTP server configured and `PIPEPAY_ENV=development`, every
//! mail pipepay would have sent (reset and confirmation links included) is listed at
//! `/dev/outbox`, so a local trial can follow its links. Anywhere else the page does not exist.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::people::alerts::MessageRow;
use super::{Page, error_page};
use crate::config::Environment;
use crate::error::Error;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/dev/outbox", get(page))
}

#[derive(Template)]
#[template(path = "outbox.html")]
struct OutboxPage {
    intro: &'static str,
    messages: Vec<MessageRow>,
}

async fn page(State(state): State<AppState>) -> Response {
    if state.config.environment != Environment::Development || state.config.smtp_url.is_some() {
        return error_page(Error::NotFound).into_response();
    }
    let listed = async {
        let mut tx = state.db.read().await?;
        let rows = crate::store::outbox::recent(&mut tx, 100).await?;
        tx.commit().await?;
        Ok::<_, Error>(rows)
    };
    match listed.await {
        Ok(rows) => Page::render(
            StatusCode::OK,
            &OutboxPage {
                intro: "Development only: mail is not configured (PIPEPAY_SMTP_URL), so nothing was mailed. \
                        This is what would have been sent, newest first.",
                messages: rows.into_iter().map(MessageRow::from).collect(),
            },
        )
        .into_response(),
        Err(error) => error_page(error).into_response(),
    }
}
