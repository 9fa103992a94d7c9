//! Connecting a client account to Kommo: consent from the app, marketplace installs and their
//! claim, disconnecting, Kommo's uninstall hook, webhook subscription and the status the
//! agency sees.

pub mod installs;

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use url::Url;

use self::installs::InstallLimits;
use crate::auth::{Access, Actor, tokens};
use crate::clock::{ms_after, now_ms, rfc3339};
use crate::error::{Error, Result};
use crate::ids::{AgencyId, ClientId, SessionId};
use crate::kommo::client::EVENTS;
use crate::kommo::model::Account;
use crate::kommo::tokens::{ACCESS_TOKEN, REFRESH_TOKEN};
use crate::kommo::{Kommo, KommoError, health, oauth};
use crate::roles::Role;
use crate::store::kommo::ConnectionRow;
use crate::store::{self};
use crate::tenants::{audit, clients, secrets};

/// How long a consent started from the app may take.
pub const STATE_LIFETIME: Duration = Duration::from_secs(10 * 60);

pub mod webhook {
    pub const SUBSCRIBED: &str = "subscribed";
    pub const MANUAL: &str = "manual";
}

/// The settings an operator sets to let agencies connect Kommo.
pub const KOMMO_SETTINGS: [&str; 2] = ["PIPEPAY_KOMMO_CLIENT_ID", "PIPEPAY_KOMMO_CLIENT_SECRET"];

/// Why Kommo cannot be connected on this instance, in words for its operator.
pub const NOT_CONFIGURED: &str = "This pipepay has no Kommo integration configured, so no client account can \
     connect Kommo. Its operator must set PIPEPAY_KOMMO_CLIENT_ID and PIPEPAY_KOMMO_CLIENT_SECRET (from Kommo: \
     Settings > Integrations > the pipepay integration > Keys and scopes) and restart it. To try pipepay \
     locally without Kommo, start it with `pipepay serve --demo`.";

/// Whether agencies can connect Kommo here (the operator set the integration's credentials).
pub fn configured(kommo: &Kommo) -> bool {
    kommo.settings.credentials().is_ok()
}

/// The 503 that tells the operator what to set (`urn:pipepay:problem:kommo-not-configured`).
pub fn not_configured() -> Error {
    Error::NotConfigured {
        problem: "kommo-not-configured",
        title: "Kommo is not configured",
        detail: NOT_CONFIGURED.into(),
    }
}

/// The integration's credentials, or why there are none.
fn integration(kommo: &Kommo) -> Result<(&str, &crate::vault::Secret)> {
    kommo.settings.credentials().map_err(|_| not_configured())
}

/// Starts connecting: a single-use state, bound to this session and client account, that
/// expires within minutes. Returns Kommo's consent URL.
pub async fn start(kommo: &Kommo, access: &Access, session: SessionId, client: ClientId) -> Result<Url> {
    let (client_id, _) = integration(kommo)?;
    let mut tx = kommo.db.write().await?;
    store::clients::get(&mut tx, access.agency, client).await?.ok_or(Error::NotFound)?;
    access.require(Role::Admin)?;
    let (state, hash) = tokens::generate("");
    store::kommo::insert_state(&mut tx, &hash, client, session.0, now_ms(), ms_after(STATE_LIFETIME)).await?;
    tx.commit().await?;
    Ok(oauth::consent_url(&kommo.settings.auth_url, client_id, state.expose())?)
}

/// What Kommo's redirect (or its marketplace install call) carries.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub referer: Option<String>,
    pub client_id: Option<String>,
    pub error: Option<String>,
    pub from_widget: Option<String>,
    // Kommo adds `platform`, undocumented; accepted and ignored.
    pub platform: Option<String>,
}

#[derive(Debug)]
pub enum CallbackOutcome {
    Connected { client: ClientId, agency: AgencyId, account: Account, webhook: String },
    Declined,
    Installed { host: String },
}

/// Handles the OAuth redirect: from the app (with a state), or a marketplace install (Kommo's
/// server calls with `from_widget` and no state).
pub async fn callback(
    kommo: &Kommo,
    installs: &InstallLimits,
    params: CallbackParams,
    session: Option<SessionId>,
    ip: Option<std::net::IpAddr>,
) -> Result<CallbackOutcome> {
    if params.state.is_none() && params.from_widget.is_some() {
        return install(kommo, installs, params, ip).await;
    }
    let state = params.state.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
        Error::invalid("state", "the link from Kommo is incomplete; start connecting again from pipepay")
    })?;
    let mut tx = kommo.db.write().await?;
    let taken = store::kommo::take_state(&mut tx, &tokens::hash(state), now_ms()).await?;
    tx.commit().await?;
    let taken = taken.ok_or(Error::Forbidden(
        "this Kommo link was already used or has expired; start connecting again from pipepay",
    ))?;
    if session.map(|s| s.0) != Some(taken.session_id) {
        return Err(Error::Forbidden(
            "this connection was started in another browser session; start it again here",
        ));
    }
    if params.error.as_deref() == Some("access_denied") {
        return Ok(CallbackOutcome::Declined);
    }
    if let Some(error) = params.error.as_deref() {
        return Err(Error::Upstream { field: None, message: format!("Kommo answered with error {error:?}") });
    }
    let host = allowed_host(kommo, params.referer.as_deref())?;
    let (our_id, secret) = integration(kommo)?;
    if params.client_id.as_deref().is_some_and(|c| c != our_id) {
        return Err(Error::Forbidden("this answer from Kommo is for another integration"));
    }
    let code =
        params.code.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| {
            Error::invalid("code", "Kommo sent no authorisation code; start connecting again")
        })?;
    let base = kommo.settings.api_base(&host);
    let pair =
        oauth::exchange_code(&kommo.http, &base, our_id, secret, &kommo.settings.redirect_uri, code).await?;
    let account = kommo.account_of(&host, &pair.access).await?;
    // That call counts against the account's limit like any other, though its id was unknown
    // until it answered.
    drop(kommo.limits.acquire(account.id).await?);
    let expires_in = i64::try_from(pair.expires_in.as_millis()).unwrap_or(86_400_000);

    let now = now_ms();
    let mut tx = kommo.db.write().await?;
    let client = store::clients::by_id(&mut tx, taken.client_id).await?.ok_or(Error::NotFound)?;
    let row = ConnectionRow {
        client_id: client.id,
        account_id: account.id,
        host: host.clone(),
        subdomain: account.subdomain.clone(),
        account_name: account.name.clone(),
        currency: account.currency.clone(),
        access_token: Some(kommo.vault.seal(&mut tx, client.id, ACCESS_TOKEN, &pair.access).await?),
        refresh_token: Some(kommo.vault.seal(&mut tx, client.id, REFRESH_TOKEN, &pair.refresh).await?),
        access_expires_at: Some(now + expires_in),
        token_version: 0,
        refresh_owner: None,
        refresh_until: None,
        refreshed_at: now,
        health: health::ACTIVE.into(),
        health_reason: None,
        health_changed_at: now,
        webhook_status: webhook::MANUAL.into(),
        webhook_detail: Some("not subscribed yet".into()),
        connected_at: now,
        updated_at: now,
    };
    if let Err(e) = store::kommo::upsert_connection(&mut tx, &row).await {
        return Err(if e.is_unique_violation() {
            Error::conflict(
                "kommo",
                format!(
                    "The Kommo account {} ({host}) is already connected to another client account. \
                     Disconnect it there first.",
                    account.subdomain
                ),
            )
        } else {
            e.into()
        });
    }
    store::kommo::claim_installs(&mut tx, account.id, client.id, now).await?;
    // Jobs parked while Kommo was disconnected or revoked can run again.
    crate::queue::resume(&mut tx, client.id).await?;
    let actor = match session {
        Some(s) => store::users::session_user(&mut tx, s, now).await?,
        None => None,
    };
    let (user, label) = actor.ok_or(Error::Unauthenticated("log in again, then connect Kommo"))?;
    let access = Access {
        agency: client.agency_id,
        role: Role::Admin,
        actor: Actor { kind: "user", id: user.0, label },
        user: Some(user),
    };
    let detail = json!({ "account_id": account.id, "subdomain": account.subdomain, "host": host });
    audit::record(&mut tx, &access, Some(client.id), "kommo.connected", detail).await?;
    tx.commit().await?;
    tracing::info!(client = %client.id, account = account.id, "Kommo connected");

    let webhook = subscribe(kommo, client.id).await;
    Ok(CallbackOutcome::Connected { client: client.id, agency: client.agency_id, account, webhook })
}

fn allowed_host(kommo: &Kommo, referer: Option<&str>) -> Result<String> {
    let referer = referer.unwrap_or_default();
    kommo.settings.allowed_hosts.check(referer).ok_or_else(|| {
        tracing::warn!(referer = %referer.chars().take(100).collect::<String>(), "Kommo referer outside the allowed hosts");
        Error::Forbidden("the Kommo account host in this link is not a Kommo host pipepay accepts")
    })
}

/// A marketplace install: answer Kommo within its 3 seconds, exchange the code afterwards.
/// Anyone can make this call, so it is limited, and the same code is exchanged only once.
async fn install(
    kommo: &Kommo,
    installs: &InstallLimits,
    params: CallbackParams,
    ip: Option<std::net::IpAddr>,
) -> Result<CallbackOutcome> {
    let host = allowed_host(kommo, params.referer.as_deref())?;
    let (our_id, _) = integration(kommo)?;
    if params.client_id.as_deref().is_some_and(|c| c != our_id) {
        return Err(Error::Forbidden("this install is for another integration"));
    }
    let code = params.code.filter(|c| !c.is_empty()).ok_or_else(|| Error::invalid("code", "no code"))?;
    installs.admit(ip, &host)?;
    let id = uuid::Uuid::now_v7();
    let now = now_ms();
    let ttl = i64::try_from(installs.ttl.as_millis()).unwrap_or(i64::MAX);
    let mut tx = kommo.db.write().await?;
    // Expired here rather than on a timer: installs only ever arrive through this call, so the
    // table stays bounded by what the limits let in during one lifetime.
    store::kommo::expire_installs(&mut tx, now.saturating_sub(ttl)).await?;
    let fresh = store::kommo::insert_install(&mut tx, id, &host, &tokens::hash(&code), now).await?;
    tx.commit().await?;
    if !fresh {
        tracing::info!(%host, "Kommo marketplace install repeated; its code was exchanged already");
        return Ok(CallbackOutcome::Installed { host });
    }
    let (http, settings, db) = (kommo.http.clone(), kommo.settings.clone(), kommo.db.clone());
    let task_host = host.clone();
    tokio::spawn(async move {
        let outcome = exchange_install(&http, &settings, &task_host, &code).await;
        let (status, account, detail) = match outcome {
            Ok(account) => ("ready", Some(account), None),
            Err(error) => ("failed", None, Some(error.to_string())),
        };
        match record_install(&db, id, status, account, detail).await {
            Err(error) => tracing::error!(%error, "could not record a Kommo install"),
            Ok(()) => tracing::info!(status, "Kommo marketplace install recorded"),
        }
    });
    Ok(CallbackOutcome::Installed { host })
}

/// Exchanges an install's code and reads the account. The tokens are not kept: a claim proves
/// who the installer is with a consent of its own, so nobody can take over an install by
/// guessing its account id.
async fn exchange_install(
    http: &reqwest::Client,
    settings: &crate::kommo::Settings,
    host: &str,
    code: &str,
) -> Result<Account, KommoError> {
    let (client_id, secret) = settings.credentials()?;
    let base = settings.api_base(host);
    let pair = oauth::exchange_code(http, &base, client_id, secret, &settings.redirect_uri, code).await?;
    http.get(format!("{base}/api/v4/account"))
        .bearer_auth(pair.access.expose())
        .send()
        .await
        .map_err(KommoError::from_transport)?
        .error_for_status()
        .map_err(KommoError::from_transport)?
        .json()
        .await
        .map_err(KommoError::from_transport)
}

async fn record_install(
    db: &crate::store::Db,
    id: uuid::Uuid,
    status: &str,
    account: Option<Account>,
    detail: Option<String>,
) -> Result<(), crate::store::StoreError> {
    let mut tx = db.write().await?;
    let (account_id, subdomain, name) = match &account {
        Some(a) => (Some(a.id), Some(a.subdomain.as_str()), Some(a.name.as_str())),
        None => (None, None, None),
    };
    store::kommo::update_install(
        &mut tx,
        id,
        status,
        account_id,
        subdomain,
        name,
        detail.as_deref(),
        now_ms(),
    )
    .await?;
    tx.commit().await
}

/// Subscribes the client's Kommo ingress URL; where Kommo refuses, records why so the agency
/// can set the webhook up by hand. Returns the resulting webhook status.
pub async fn subscribe(kommo: &Kommo, client: ClientId) -> String {
    let destination = match kommo_url(kommo, client).await {
        Ok(url) => url,
        Err(error) => return record_webhook(kommo, client, webhook::MANUAL, Some(&error.to_string())).await,
    };
    // Re-subscribing the same destination would double every delivery; clear it first.
    let _ = kommo.unsubscribe(client, &destination).await;
    match kommo.subscribe(client, &destination).await {
        Ok(()) => {
            prune_other_destinations(kommo, client, &destination).await;
            record_webhook(kommo, client, webhook::SUBSCRIBED, None).await
        }
        Err(error) => {
            let why = match &error {
                KommoError::Rejected { status, detail } => format!("Kommo refused ({status}): {detail}"),
                KommoError::PaymentRequired => {
                    "the Kommo plan does not allow webhooks through the API".into()
                }
                other => other.to_string(),
            };
            tracing::warn!(%client, reason = %why, "Kommo webhook subscription refused; manual setup needed");
            record_webhook(kommo, client, webhook::MANUAL, Some(&why)).await
        }
    }
}

async fn record_webhook(kommo: &Kommo, client: ClientId, status: &str, detail: Option<&str>) -> String {
    if let Err(error) = write_webhook(kommo, client, status, detail).await {
        tracing::error!(%client, %error, "could not record the Kommo webhook status");
    }
    status.to_owned()
}

async fn write_webhook(
    kommo: &Kommo,
    client: ClientId,
    status: &str,
    detail: Option<&str>,
) -> Result<(), crate::store::StoreError> {
    let mut tx = kommo.db.write().await?;
    store::kommo::set_webhook(&mut tx, client, status, detail, now_ms()).await?;
    tx.commit().await
}

async fn kommo_url(kommo: &Kommo, client: ClientId) -> Result<String> {
    let mut tx = kommo.db.read().await?;
    let token =
        secrets::open(&mut tx, &kommo.vault, client, clients::INGRESS_TOKEN).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(clients::webhook_urls(&kommo.public_url, &token).kommo)
}

impl Kommo {
    /// After an ingress token rotation: point Kommo's subscription at the new URL.
    pub async fn move_subscription(&self, client: ClientId, old: &str, new: &str) {
        if !matches!(self.is_subscribed(client).await, Ok(true)) {
            return;
        }
        let _ = self.unsubscribe(client, old).await;
        if let Err(error) = self.subscribe(client, new).await {
            record_webhook(
                self,
                client,
                webhook::MANUAL,
                Some(&format!("could not move the subscription: {error}")),
            )
            .await;
        }
    }
}

impl Kommo {
    async fn is_subscribed(&self, client: ClientId) -> Result<bool, crate::store::StoreError> {
        let mut tx = self.db.read().await?;
        let row = store::kommo::connection(&mut tx, client).await?;
        tx.commit().await?;
        Ok(row.is_some_and(|r| r.webhook_status == webhook::SUBSCRIBED))
    }
}

/// Disconnects: removes the webhook subscription from Kommo, then forgets the tokens. When Kommo
/// cannot take the subscription off, nothing changes unless `force` says to go ahead anyway.
pub async fn disconnect(kommo: &Kommo, access: &Access, client: ClientId, force: bool) -> Result<()> {
    let mut tx = kommo.db.read().await?;
    store::clients::get(&mut tx, access.agency, client).await?.ok_or(Error::NotFound)?;
    let row = store::kommo::connection(&mut tx, client).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    access.require(Role::Admin)?;
    let removed = unsubscribe_before_removal(kommo, client, force).await?;
    let mut tx = kommo.db.write().await?;
    store::kommo::delete_connection(&mut tx, client).await?;
    let detail = json!({ "account_id": row.account_id, "subdomain": row.subdomain, "webhook": removed });
    audit::record(&mut tx, access, Some(client), "kommo.disconnected", detail).await?;
    tx.commit().await?;
    Ok(())
}

/// The form field and query parameter that let a removal go ahead when Kommo could not take
/// the webhook off. An `Error::Upstream` naming it is a refusal that `force` overrides.
pub const FORCE: &str = "force";

/// Takes the client's webhook off Kommo before its connection, or the whole client account, is
/// removed: afterwards the URL (and the data key that opens its token) is gone, and Kommo would
/// keep posting to a dead address. Must run while the ingress token can still be opened.
/// Returns what happened to the webhook, for the audit log.
pub async fn unsubscribe_before_removal(
    kommo: &Kommo,
    client: ClientId,
    force: bool,
) -> Result<&'static str> {
    let mut tx = kommo.db.read().await?;
    let row = store::kommo::connection(&mut tx, client).await?;
    tx.commit().await?;
    let Some(row) = row else { return Ok("none") };
    // `manual`: pipepay never subscribed (Kommo refused its API), so it cannot unsubscribe
    // either. `revoked`: the tokens are erased; an uninstall ends the integration's access.
    if row.webhook_status != webhook::SUBSCRIBED || row.health == health::REVOKED {
        return Ok("none");
    }
    let outcome = match kommo_url(kommo, client).await {
        Ok(url) => kommo.unsubscribe(client, &url).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(()) => Ok("removed"),
        Err(error) if force => {
            tracing::warn!(%client, %error, "Kommo webhook left subscribed: removal forced");
            Ok("left")
        }
        Err(error) => Err(Error::Upstream {
            field: Some(FORCE),
            message: format!(
                "pipepay could not remove this client account's webhook from Kommo ({error}), so \
                 nothing was changed. Try again in a moment, or go ahead anyway with force=true \
                 and then delete the webhook in Kommo (Settings > Integrations > Web hooks) by hand."
            ),
        }),
    }
}

/// After subscribing: removes every other pipepay ingress URL subscribed in this Kommo account.
/// They belong to client accounts that were deleted or disconnected while Kommo could not be
/// reached, or to an older ingress token; left there, each event would arrive twice, once at a
/// dead address. Webhooks of other services are never touched.
async fn prune_other_destinations(kommo: &Kommo, client: ClientId, own: &str) {
    let ours = format!("{}/hooks/", kommo.public_url.as_str().trim_end_matches('/'));
    let listed = match kommo.call(client, reqwest::Method::GET, "/api/v4/webhooks", None).await {
        Ok(listed) => listed,
        Err(error) => {
            tracing::warn!(%client, %error, "could not list the Kommo account's webhooks");
            return;
        }
    };
    let hooks =
        listed.as_ref().and_then(|l| l["_embedded"]["webhooks"].as_array()).cloned().unwrap_or_default();
    let stale = hooks
        .iter()
        .filter_map(|h| h["destination"].as_str())
        .filter(|d| *d != own && is_pipepay_kommo_url(d, &ours));
    for destination in stale {
        match kommo.unsubscribe(client, destination).await {
            Ok(()) => tracing::info!(%client, "removed another pipepay webhook from the Kommo account"),
            Err(error) => tracing::warn!(%client, %error, "could not remove a stale pipepay webhook"),
        }
    }
}

/// `{public_url}/hooks/{token}/kommo`, with a token of pipepay's alphabet and nothing else.
fn is_pipepay_kommo_url(destination: &str, hooks_prefix: &str) -> bool {
    destination.strip_prefix(hooks_prefix).and_then(|rest| rest.strip_suffix("/kommo")).is_some_and(|token| {
        !token.is_empty() && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// What Kommo's uninstall notification carries.
#[derive(Debug, Default, Deserialize)]
pub struct UninstallParams {
    pub client_uuid: Option<String>,
    pub account_id: Option<String>,
    pub signature: Option<String>,
}

/// Kommo's "access revoked" hook: verified, idempotent, and confirmed with Kommo (a replayed
/// notification while Kommo still accepts the tokens changes nothing). The connection is
/// revoked, its tokens erased, and the reason recorded where the agency sees it.
pub async fn uninstall(kommo: &Kommo, params: UninstallParams) -> Result<()> {
    let (our_id, secret) = integration(kommo)?;
    let refused = Error::Forbidden("not a valid Kommo uninstall notification");
    if params.client_uuid.as_deref() != Some(our_id) {
        return Err(refused);
    }
    let account_id: i64 = params.account_id.as_deref().and_then(|a| a.trim().parse().ok()).ok_or(refused)?;
    let signature = params.signature.as_deref().and_then(|s| hex::decode(s.trim()).ok());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .map_err(|e| Error::Internal(anyhow::anyhow!("HMAC key: {e}")))?;
    mac.update(format!("{our_id}|{account_id}").as_bytes());
    // verify_slice compares in constant time.
    if signature.is_none_or(|s| mac.verify_slice(&s).is_err()) {
        return Err(Error::Forbidden("not a valid Kommo uninstall notification"));
    }
    let mut tx = kommo.db.read().await?;
    let seen = store::kommo::connection_by_account(&mut tx, account_id).await?;
    tx.commit().await?;
    let Some(seen) = seen.filter(|b| b.health != health::REVOKED) else { return Ok(()) };
    // The signature never changes, so a captured notification can be replayed at any time:
    // only Kommo refusing the current tokens proves this one is about the current connection.
    match still_authorised(kommo, seen.client_id).await {
        Ok(false) => {}
        Ok(true) => {
            tracing::warn!(account = account_id, client = %seen.client_id,
                "Kommo uninstall notification ignored: Kommo still accepts the connection's tokens");
            return Ok(());
        }
        Err(error) => {
            tracing::warn!(account = account_id, %error, "could not confirm a Kommo uninstall");
            return Err(Error::Upstream {
                field: None,
                message: "pipepay could not confirm the uninstall with Kommo; send it again later".into(),
            });
        }
    }
    let now = now_ms();
    let reason = format!(
        "Kommo reported that the integration was uninstalled or its access revoked ({})",
        rfc3339(now)
    );
    let mut tx = kommo.db.write().await?;
    let before = store::kommo::connection_by_account(&mut tx, account_id).await?;
    // Fenced on what was confirmed: a reconnect meanwhile brought tokens Kommo was not asked about.
    let confirmed =
        |b: &ConnectionRow| b.client_id == seen.client_id && b.token_version == seen.token_version;
    if let Some(before) = before.filter(|b| b.health != health::REVOKED && confirmed(b)) {
        store::kommo::revoke(&mut tx, account_id, &reason, now).await?;
        if let Some(client) = store::clients::by_id(&mut tx, before.client_id).await? {
            let kommo_actor = Access {
                agency: client.agency_id,
                role: Role::Member,
                actor: Actor { kind: "kommo", id: uuid::Uuid::nil(), label: "Kommo".into() },
                user: None,
            };
            audit::record(
                &mut tx,
                &kommo_actor,
                Some(client.id),
                "kommo.uninstalled",
                json!({ "account_id": account_id }),
            )
            .await?;
        }
        tracing::info!(account = account_id, "Kommo access revoked by uninstall");
    }
    tx.commit().await?;
    Ok(())
}

/// Asks Kommo with the connection's current tokens (refreshed once if refused): `false` only
/// when Kommo refuses both the access token and the refresh, which is what an uninstall leaves.
async fn still_authorised(kommo: &Kommo, client: ClientId) -> Result<bool, KommoError> {
    match kommo.call(client, reqwest::Method::GET, "/api/v4/account", None).await {
        // 402: the token was accepted; only the account's subscription ended.
        Ok(_) | Err(KommoError::PaymentRequired) => Ok(true),
        Err(KommoError::NeedsReauth(_) | KommoError::Revoked | KommoError::NotConnected) => Ok(false),
        Err(other) => Err(other),
    }
}

/// The connection as an agency sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub account_id: i64,
    pub subdomain: String,
    pub host: String,
    pub account_name: String,
    pub currency: Option<String>,
    /// `active`, `needs_reauth`, `revoked`, `payment_required` or `blocked`.
    pub health: String,
    pub health_reason: Option<String>,
    pub health_changed_at: String,
    pub webhook: WebhookView,
    pub connected_at: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// `subscribed`, or `manual` when Kommo refused and the webhook must be set up by hand.
    pub status: String,
    pub detail: Option<String>,
    /// For `manual`: what to do in Kommo (the URL is shown to admins only; it holds the token).
    pub manual_setup: Option<ManualSetup>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ManualSetup {
    pub steps: Vec<String>,
    pub url: Option<String>,
    pub events: Vec<String>,
}

pub async fn status(kommo: &Kommo, access: &Access, client: ClientId) -> Result<ConnectionView> {
    let mut tx = kommo.db.read().await?;
    store::clients::get(&mut tx, access.agency, client).await?.ok_or(Error::NotFound)?;
    let row = store::kommo::connection(&mut tx, client).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    let manual_setup = if row.webhook_status == webhook::MANUAL {
        let url = if access.role >= Role::Admin { kommo_url(kommo, client).await.ok() } else { None };
        Some(ManualSetup {
            steps: vec![
                format!("In Kommo ({}), open Settings > Integrations > Web hooks.", row.host),
                "Add a webhook with the URL below.".into(),
                "Tick the events \"Lead status changed\", \"Lead added\" and \"Lead edited\", then save."
                    .into(),
            ],
            url,
            events: EVENTS.iter().map(|e| (*e).to_owned()).collect(),
        })
    } else {
        None
    };
    Ok(ConnectionView {
        account_id: row.account_id,
        subdomain: row.subdomain,
        host: row.host,
        account_name: row.account_name,
        currency: row.currency,
        health: row.health,
        health_reason: row.health_reason,
        health_changed_at: rfc3339(row.health_changed_at),
        webhook: WebhookView { status: row.webhook_status, detail: row.webhook_detail, manual_setup },
        connected_at: rfc3339(row.connected_at),
    })
}
