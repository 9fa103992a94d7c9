//! A client account's pages: overview (Kommo, Flutterwave keys, webhook URLs), settings and
//! activity.

use axum::Router;

use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
