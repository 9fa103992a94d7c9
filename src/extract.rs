//! Request extractors every edge shares (the JSON API and the web app): the caller's IP and
//! their standing in the agency a path names.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::auth::{Access, Principal};
use crate::error::{Error, Result};
use crate::ids::AgencyId;
use crate::state::AppState;

/// The TCP peer's address. Behind a reverse proxy this is the proxy; see the README.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(ClientIp(ip))
    }
}

/// The caller's standing in `agency`, or 404.
pub async fn access(state: &AppState, principal: &Principal, agency: AgencyId) -> Result<Access> {
    let mut tx = state.db.read().await?;
    let access = crate::auth::access(&mut tx, principal, agency).await?;
    tx.commit().await?;
    Ok(access)
}
