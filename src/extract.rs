//! Request extractors every edge shares (the JSON API and the web app): the caller's IP and
//! their standing in the agency a path names.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::auth::{Access, Principal};
use crate::error::{Error, Result};
use crate::ids::{AgencyId, ClientId};
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

/// The caller and their standing in the agency an `/agencies/{agency}` path names. A stranger
/// (or another agency's API key) is turned away with 404 before the handler runs.
pub struct AgencyAccess {
    pub principal: Principal,
    pub access: Access,
}

/// As [`AgencyAccess`], for `/agencies/{agency}/clients/{client}` paths. Whether the client
/// account is the agency's is the services' question (they answer 404 too), asked with `access`.
pub struct ClientAccess {
    pub principal: Principal,
    pub access: Access,
    pub client: ClientId,
}

/// The principal, then the path, then the access check: the order the handlers used to take
/// them in, so an unauthenticated caller still hears 401 and a malformed id still 400.
async fn standing<P>(parts: &mut Parts, state: &AppState) -> Result<(Principal, P, Access), Response>
where
    P: DeserializeOwned + Send + AgencyOf,
{
    let principal = Principal::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
    let Path(path) =
        Path::<P>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
    let access = access(state, &principal, path.agency()).await.map_err(IntoResponse::into_response)?;
    Ok((principal, path, access))
}

/// The agency id in a path's parameters.
trait AgencyOf {
    fn agency(&self) -> AgencyId;
}

impl AgencyOf for AgencyId {
    fn agency(&self) -> AgencyId {
        *self
    }
}

impl AgencyOf for (AgencyId, ClientId) {
    fn agency(&self) -> AgencyId {
        self.0
    }
}

impl FromRequestParts<AppState> for AgencyAccess {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (principal, _, access) = standing::<AgencyId>(parts, state).await?;
        Ok(AgencyAccess { principal, access })
    }
}

impl FromRequestParts<AppState> for ClientAccess {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (principal, (_, client), access) = standing::<(AgencyId, ClientId)>(parts, state).await?;
        Ok(ClientAccess { principal, access, client })
    }
}
