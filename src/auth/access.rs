//! What a principal may do in one agency. Every agency-scoped request starts here, so a
//! stranger's request for an agency is "not found" before any other question is asked.

use uuid::Uuid;

use super::Principal;
use crate::error::{Error, Result};
use crate::ids::{AgencyId, UserId};
use crate::roles::Role;
use crate::store::{self, Tx};

/// Who did something, as the audit log records it.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `user` or `api_key`.
    pub kind: &'static str,
    pub id: Uuid,
    /// The user's email or the key's name.
    pub label: String,
}

/// A principal's standing in one agency.
#[derive(Debug, Clone)]
pub struct Access {
    pub agency: AgencyId,
    pub role: Role,
    pub actor: Actor,
    /// The person, when it is one (not an API key).
    pub user: Option<UserId>,
}

/// Resolves the principal's role in `agency`; not a member (or another agency's key) is 404.
pub async fn access(tx: &mut Tx, principal: &Principal, agency: AgencyId) -> Result<Access> {
    match principal {
        Principal::User { user, email, .. } => {
            let role = store::agencies::role_of(tx, agency, *user).await?.ok_or(Error::NotFound)?;
            Ok(Access {
                agency,
                role,
                actor: Actor { kind: "user", id: user.0, label: email.clone() },
                user: Some(*user),
            })
        }
        Principal::ApiKey { key, agency: own, role, name } => {
            if *own != agency {
                return Err(Error::NotFound);
            }
            Ok(Access {
                agency,
                role: *role,
                actor: Actor { kind: "api_key", id: key.0, label: name.clone() },
                user: None,
            })
        }
    }
}

impl Access {
    /// At least `role`, or 403.
    pub fn require(&self, role: Role) -> Result<()> {
        if self.role >= role {
            Ok(())
        } else {
            Err(Error::Forbidden(match role {
                Role::Owner => "only an owner of the agency can do this",
                Role::Admin => "this needs the admin or owner role",
                Role::Member => "this needs membership of the agency",
            }))
        }
    }

    /// A person with at least `role`: API keys cannot manage members or other API keys.
    pub fn require_person(&self, role: Role) -> Result<UserId> {
        self.require(role)?;
        self.user.ok_or(Error::Forbidden("API keys cannot manage members or API keys; log in instead"))
    }
}
