//! Request extractors every edge shares (the JSON API and the web app): the caller's IP and
//! their standing in the agency a path names.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::auth::{Access, Principal};
use crate::error::{Error, Result};
use crate::ids::{AgencyId, ClientId, UserId};
use crate::roles::Role;
use crate::state::AppState;
use crate::store;

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

/// As [`AgencyAccess`], for `/agencies/{agency}/members/{user}` paths. Whether the person is
/// a member is the services' question (404 when not), asked with `access`.
pub struct MemberAccess {
    pub principal: Principal,
    pub access: Access,
    pub user: UserId,
}

/// A standing already resolved by an extractor, for the role checks wrapped around it.
pub trait Standing {
    fn access(&self) -> &Access;
    /// The client account the path names, if it names one.
    fn client(&self) -> Option<ClientId> {
        None
    }
    /// The member the path names, if it names one.
    fn member(&self) -> Option<UserId> {
        None
    }
}

impl Standing for AgencyAccess {
    fn access(&self) -> &Access {
        &self.access
    }
}

impl Standing for ClientAccess {
    fn access(&self) -> &Access {
        &self.access
    }
    fn client(&self) -> Option<ClientId> {
        Some(self.client)
    }
}

impl Standing for MemberAccess {
    fn access(&self) -> &Access {
        &self.access
    }
    fn member(&self) -> Option<UserId> {
        Some(self.user)
    }
}

macro_rules! role_check {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        pub struct $name<A>(pub A);

        impl<A: Standing> Standing for $name<A> {
            fn access(&self) -> &Access {
                self.0.access()
            }
            fn client(&self) -> Option<ClientId> {
                self.0.client()
            }
            fn member(&self) -> Option<UserId> {
                self.0.member()
            }
        }

        impl<A> FromRequestParts<AppState> for $name<A>
        where
            A: FromRequestParts<AppState, Rejection = Response> + Standing + Send,
        {
            type Rejection = Response;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
                let inner = A::from_request_parts(parts, state).await?;
                // Existence before permission, as the services ask it: a member probing ids
                // learns nothing from a 403.
                if let Some(client) = inner.client() {
                    client_of(state, inner.access(), client).await.map_err(IntoResponse::into_response)?;
                }
                if let Some(user) = inner.member() {
                    member_of(state, inner.access(), user).await.map_err(IntoResponse::into_response)?;
                }
                inner.access().require($role).map_err(IntoResponse::into_response)?;
                Ok($name(inner))
            }
        }
    };
}

role_check!(
    /// `A` (an [`AgencyAccess`] or [`ClientAccess`]) with the admin or owner role, or 403, checked
    /// before the handler and so before its body is read: a route's answer to too little role is
    /// the same whatever the body says. The services check it again.
    Admin,
    Role::Admin
);
role_check!(
    /// As [`Admin`], for owners.
    Owner,
    Role::Owner
);

/// `A` (a role check) as a person, not an API key: people and keys are managed by people.
pub struct Person<A>(pub A);

impl<A> FromRequestParts<AppState> for Person<A>
where
    A: FromRequestParts<AppState, Rejection = Response> + Standing + Send,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let inner = A::from_request_parts(parts, state).await?;
        let access = inner.access();
        // The role was the wrapped check's to ask; this asks only for a person, in the words
        // the services use.
        access.require_person(access.role).map_err(IntoResponse::into_response)?;
        Ok(Person(inner))
    }
}

/// The ids of the agency a path names, read by name, so a path may carry more ids after them
/// (a member, a job) for the handler to read.
#[derive(Deserialize)]
pub struct AgencyIds {
    pub agency: AgencyId,
}

/// As [`AgencyIds`], with the client account.
#[derive(Deserialize)]
pub struct ClientIds {
    pub agency: AgencyId,
    pub client: ClientId,
}

/// As [`AgencyIds`], with a member.
#[derive(Deserialize)]
pub struct MemberIds {
    pub agency: AgencyId,
    pub user: UserId,
}

/// The agency id in a path's parameters.
pub trait AgencyOf {
    fn agency(&self) -> AgencyId;
}

impl AgencyOf for AgencyIds {
    fn agency(&self) -> AgencyId {
        self.agency
    }
}

impl AgencyOf for ClientIds {
    fn agency(&self) -> AgencyId {
        self.agency
    }
}

impl AgencyOf for MemberIds {
    fn agency(&self) -> AgencyId {
        self.agency
    }
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

/// Whether `client` is the agency's: 404 when not, asked before a role is (a member probing
/// ids learns nothing from a 403).
pub async fn client_of(state: &AppState, access: &Access, client: ClientId) -> Result<()> {
    let mut tx = state.db.read().await?;
    let found = store::clients::get(&mut tx, access.agency, client).await?;
    tx.commit().await?;
    found.map(drop).ok_or(Error::NotFound)
}

/// Whether `user` is a member of the agency: 404 when not, asked before a role is.
pub async fn member_of(state: &AppState, access: &Access, user: UserId) -> Result<()> {
    let mut tx = state.db.read().await?;
    let found = store::agencies::role_of(&mut tx, access.agency, user).await?;
    tx.commit().await?;
    found.map(drop).ok_or(Error::NotFound)
}

impl FromRequestParts<AppState> for AgencyAccess {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (principal, _, access) = standing::<AgencyIds>(parts, state).await?;
        Ok(AgencyAccess { principal, access })
    }
}

impl FromRequestParts<AppState> for ClientAccess {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (principal, ClientIds { client, .. }, access) = standing::<ClientIds>(parts, state).await?;
        Ok(ClientAccess { principal, access, client })
    }
}

impl FromRequestParts<AppState> for MemberAccess {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (principal, MemberIds { user, .. }, access) = standing::<MemberIds>(parts, state).await?;
        Ok(MemberAccess { principal, access, user })
    }
}
