//! Members of an agency and invitations to join it.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use url::Url;

use super::audit;
use crate::auth::{self, Access, Actor, Auth, NewSession, Principal, email, password, tokens};
use crate::clock::{ms_after, now_ms, rfc3339};
use crate::error::{Error, Result};
use crate::ids::{AgencyId, InvitationId, UserId};
use crate::roles::Role;
use crate::store::agencies::InvitationRow;
use crate::store::users::UserRow;
use crate::store::{self, Db};
use crate::vault::Secret;

pub const INVITATION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub joined_at: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InvitationView {
    pub id: InvitationId,
    pub email: String,
    pub role: Role,
    pub created_at: String,
    pub expires_at: String,
}

pub async fn list(db: &Db, access: &Access) -> Result<Vec<MemberView>> {
    let mut tx = db.read().await?;
    let members = store::agencies::members(&mut tx, access.agency).await?;
    tx.commit().await?;
    Ok(members
        .into_iter()
        .map(|m| MemberView {
            user_id: m.user_id,
            email: m.email,
            role: m.role,
            joined_at: rfc3339(m.joined_at),
        })
        .collect())
}

/// The actor is an owner as of now, under `lock_members`: `access` was read before the lock,
/// and another owner may have demoted them in between.
async fn owner_now(tx: &mut store::Tx, access: &Access) -> Result<()> {
    let me = access.require_person(Role::Owner)?;
    match store::agencies::role_of(tx, access.agency, me).await? {
        Some(Role::Owner) => Ok(()),
        _ => Err(Error::Forbidden("only an owner of the agency can do this")),
    }
}

/// Changes a member's role; the agency always keeps at least one owner.
pub async fn set_role(db: &Db, access: &Access, user: UserId, role: Role) -> Result<MemberView> {
    let mut tx = db.write().await?;
    store::agencies::lock_members(&mut tx, access.agency).await?;
    let current = store::agencies::role_of(&mut tx, access.agency, user).await?.ok_or(Error::NotFound)?;
    owner_now(&mut tx, access).await?;
    if current == Role::Owner
        && role != Role::Owner
        && store::agencies::count_owners(&mut tx, access.agency).await? <= 1
    {
        return Err(Error::conflict(
            "role",
            "The agency needs at least one owner; make someone else owner first.",
        ));
    }
    store::agencies::set_role(&mut tx, access.agency, user, role).await?;
    super::api_keys::follow_creator(&mut tx, access, user, Some(role)).await?;
    let member = store::agencies::members(&mut tx, access.agency)
        .await?
        .into_iter()
        .find(|m| m.user_id == user)
        .ok_or(Error::NotFound)?;
    let detail = json!({ "user": member.email, "from": current, "to": role });
    audit::record(&mut tx, access, None, "member.role_changed", detail).await?;
    tx.commit().await?;
    Ok(MemberView { user_id: user, email: member.email, role, joined_at: rfc3339(member.joined_at) })
}

/// Removes a member (an owner's power, or anyone leaving); never the last owner.
pub async fn remove(db: &Db, access: &Access, user: UserId) -> Result<()> {
    let mut tx = db.write().await?;
    store::agencies::lock_members(&mut tx, access.agency).await?;
    let current = store::agencies::role_of(&mut tx, access.agency, user).await?.ok_or(Error::NotFound)?;
    if access.user != Some(user) {
        owner_now(&mut tx, access).await?;
    }
    if current == Role::Owner && store::agencies::count_owners(&mut tx, access.agency).await? <= 1 {
        return Err(Error::conflict(
            "user_id",
            "The agency needs at least one owner; make someone else owner first.",
        ));
    }
    let email = store::users::by_id(&mut tx, user).await?.map(|u| u.email).unwrap_or_default();
    store::agencies::remove_member(&mut tx, access.agency, user).await?;
    super::api_keys::follow_creator(&mut tx, access, user, None).await?;
    audit::record(&mut tx, access, None, "member.removed", json!({ "user": email, "role": current })).await?;
    tx.commit().await?;
    Ok(())
}

/// Invites an email to the agency with a role. The link is single-use and expires in a week.
pub async fn invite(
    db: &Db,
    public_url: &Url,
    access: &Access,
    email: &str,
    role: Role,
) -> Result<(InvitationView, Secret, String)> {
    let inviter = access.require_person(Role::Owner)?;
    let email = email::normalise("email", email).map_err(|e| Error::Invalid(vec![e]))?;
    let mut tx = db.write().await?;
    let already =
        store::agencies::members(&mut tx, access.agency).await?.into_iter().any(|m| m.email == email);
    if already {
        return Err(Error::conflict("email", "This person is a member already."));
    }
    let (token, hash) = tokens::generate(tokens::INVITATION_PREFIX);
    let now = now_ms();
    let row = InvitationRow {
        id: InvitationId::new(),
        agency_id: access.agency,
        email: email.clone(),
        role: role.as_str().to_owned(),
        invited_by: Some(inviter),
        created_at: now,
        expires_at: ms_after(INVITATION_LIFETIME),
        accepted_at: None,
        revoked_at: None,
    };
    store::agencies::insert_invitation(&mut tx, &row, &hash).await?;
    audit::record(&mut tx, access, None, "member.invited", json!({ "email": email, "role": role })).await?;
    let link = format!("{}/join/{}", public_url.as_str().trim_end_matches('/'), token.expose());
    let agency = store::agencies::get(&mut tx, access.agency).await?.map(|a| a.name).unwrap_or_default();
    let body = format!(
        "{} invited you to join {agency} on pipepay as {role}.\n\nAccept within a week here:\n{link}\n\n\
         The link works once. If you did not expect it, ignore this mail.\n",
        access.actor.label
    );
    crate::outbox::mail(
        &mut tx,
        Some(access.agency),
        &email,
        &format!("Join {agency} on pipepay"),
        &body,
        true,
    )
    .await?;
    tx.commit().await?;
    crate::outbox::wake();
    Ok((invitation_view(&row, role), token, link))
}

fn invitation_view(row: &InvitationRow, role: Role) -> InvitationView {
    InvitationView {
        id: row.id,
        email: row.email.clone(),
        role,
        created_at: rfc3339(row.created_at),
        expires_at: rfc3339(row.expires_at),
    }
}

pub async fn pending(db: &Db, access: &Access) -> Result<Vec<InvitationView>> {
    let mut tx = db.read().await?;
    let rows = store::agencies::pending_invitations(&mut tx, access.agency, now_ms()).await?;
    tx.commit().await?;
    Ok(rows.iter().map(|r| invitation_view(r, r.role.parse().unwrap_or(Role::Member))).collect())
}

pub async fn revoke(db: &Db, access: &Access, id: InvitationId) -> Result<()> {
    let mut tx = db.write().await?;
    if !store::agencies::revoke_invitation(&mut tx, access.agency, id, now_ms()).await? {
        return Err(Error::NotFound);
    }
    // Existence first, so another agency's id is a 404 for everyone; the change rolls back
    // with the transaction if the caller may not make it.
    access.require_person(Role::Owner)?;
    audit::record(&mut tx, access, None, "member.invitation_revoked", json!({ "invitation": id })).await?;
    tx.commit().await?;
    Ok(())
}

/// What an invitation link offers, shown before it is accepted.
#[derive(Debug, Clone)]
pub struct InvitationPreview {
    pub agency_name: String,
    pub email: String,
    pub role: Role,
}

/// The invitation behind a link, if it can still be accepted. Knowing the link is the
/// credential: it shows only what the invited person is about to join.
pub async fn preview(db: &Db, token: &str) -> Result<Option<InvitationPreview>> {
    let mut tx = db.read().await?;
    let invitation = store::agencies::invitation_by_token(&mut tx, &tokens::hash(token.trim())).await?;
    let now = now_ms();
    let Some(invitation) =
        invitation.filter(|i| i.accepted_at.is_none() && i.revoked_at.is_none() && i.expires_at > now)
    else {
        return Ok(None);
    };
    let agency = store::agencies::get(&mut tx, invitation.agency_id).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(Some(InvitationPreview {
        agency_name: agency.name,
        role: invitation.role.parse().unwrap_or(Role::Member),
        email: invitation.email,
    }))
}

/// Accepts an invitation. A logged-in user whose email it names joins at once; someone without
/// an account creates one with `password` and is logged in.
pub async fn accept(
    db: &Db,
    auth_state: &Auth,
    ip: IpAddr,
    principal: Option<&Principal>,
    token: &str,
    new_password: Option<Secret>,
) -> Result<(AgencyId, Option<NewSession>)> {
    auth_state.limiter.attempt(ip, None)?;
    let mut tx = db.read().await?;
    let invitation = store::agencies::invitation_by_token(&mut tx, &tokens::hash(token.trim())).await?;
    tx.commit().await?;
    let now = now_ms();
    let invitation = invitation
        .filter(|i| i.accepted_at.is_none() && i.revoked_at.is_none() && i.expires_at > now)
        .ok_or(Error::NotFound)?;
    let role: Role = invitation.role.parse().map_err(|e: String| Error::Internal(anyhow::anyhow!(e)))?;

    let (user, new_user) = match principal {
        Some(Principal::User { user, email, .. }) => {
            if *email != invitation.email {
                return Err(Error::Forbidden("this invitation is for another email address"));
            }
            (*user, None)
        }
        Some(Principal::ApiKey { .. }) => return Err(Error::Forbidden("API keys cannot accept invitations")),
        None => {
            let password = new_password.ok_or_else(|| {
                Error::invalid("password", "Choose a password to create your account, or log in first.")
            })?;
            password::check_strength("password", &password, &[&invitation.email])
                .map_err(|e| Error::Invalid(vec![e]))?;
            let hash = password::hash(password).await?;
            let row = UserRow {
                id: UserId::new(),
                email: invitation.email.clone(),
                password_hash: hash,
                created_at: now,
                password_changed_at: now,
            };
            (row.id, Some(row))
        }
    };

    let mut tx = db.write().await?;
    if let Some(row) = &new_user
        && let Err(e) = store::users::insert(&mut tx, row).await
    {
        return Err(if e.is_unique_violation() {
            Error::conflict(
                "email",
                "An account with this email address exists; log in, then open the link again.",
            )
        } else {
            e.into()
        });
    }
    if let Some(row) = &new_user {
        // The invitation came by mail to this address: opening it proves the address.
        store::email_tokens::mark_verified(&mut tx, row.id, &row.email, now).await?;
    }
    if store::agencies::role_of(&mut tx, invitation.agency_id, user).await?.is_some() {
        return Err(Error::conflict("token", "You are a member of this agency already."));
    }
    if !store::agencies::accept_invitation(&mut tx, invitation.id, now).await? {
        // Someone used the link a moment ago.
        return Err(Error::NotFound);
    }
    store::agencies::add_member(&mut tx, invitation.agency_id, user, role, now).await?;
    let joiner = Access {
        agency: invitation.agency_id,
        role,
        actor: Actor { kind: "user", id: user.0, label: invitation.email.clone() },
        user: Some(user),
    };
    audit::record(
        &mut tx,
        &joiner,
        None,
        "member.joined",
        json!({ "email": invitation.email, "role": role }),
    )
    .await?;
    let session = match new_user {
        Some(_) => Some(auth::start_session(&mut tx, auth_state, user).await?),
        None => None,
    };
    tx.commit().await?;
    Ok((invitation.agency_id, session))
}
