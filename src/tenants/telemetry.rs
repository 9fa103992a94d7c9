//! An agency's own OpenTelemetry export: the OTLP/HTTP endpoint its client accounts' spans go
//! to, and the headers (its vendor's API key) sealed in the vault.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit;
use crate::auth::Access;
use crate::clock::{now_ms, rfc3339};
use crate::error::{Checks, Error, Result};
use crate::roles::Role;
use crate::store::telemetry::TelemetryRow;
use crate::store::{self, Db};
use crate::telemetry::agency::{AgencyRoutes, Delivery};
use crate::telemetry::targets::is_global;
use crate::vault::{Secret, Slot, Vault, mask};

const HEADERS: Slot = Slot { table: "agency_telemetry", field: "headers" };
const MAX_HEADERS: usize = 20;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryInput {
    /// The OTLP/HTTP base URL, e.g. `https://otlp.example.com` (`/v1/traces` is added).
    pub endpoint: String,
    /// Headers sent with every export, e.g. your vendor's API key. Sealed; shown masked.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TelemetryView {
    pub endpoint: String,
    /// Header names with their values masked.
    #[schema(value_type = Object)]
    pub headers: BTreeMap<String, String>,
    pub updated_at: String,
    /// How export has gone since this instance started; absent when telemetry is off here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
}

/// Checks an endpoint. pipepay makes requests to it, so unless the operator allows private
/// targets (`PIPEPAY_TELEMETRY_ALLOW_PRIVATE`), it must be https to a public host (a global
/// unicast address, or a name; names are checked again on every export, when resolved): an
/// agency must not be able to point pipepay at the operator's internal network.
fn check_endpoint(checks: &mut Checks, endpoint: &str, allow_private: bool) {
    let Ok(url) = url::Url::parse(endpoint) else {
        checks.fail("endpoint", "Enter a full address such as https://otlp.example.com.");
        return;
    };
    let private = match url.host() {
        Some(url::Host::Ipv4(ip)) => !is_global(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_global(IpAddr::V6(ip)),
        Some(url::Host::Domain(domain)) => {
            domain == "localhost" || domain.ends_with(".localhost") || domain.ends_with(".internal")
        }
        None => true,
    };
    if allow_private {
        checks.check(
            matches!(url.scheme(), "http" | "https"),
            "endpoint",
            "Use an address that starts with http:// or https://.",
        );
    } else {
        checks.check(url.scheme() == "https", "endpoint", "Use an address that starts with https://.");
        checks.check(!private, "endpoint", "Use a public host, not a private or local one.");
    }
    checks.check(
        url.query().is_none() && url.fragment().is_none(),
        "endpoint",
        "Remove the query (?...) and fragment (#...).",
    );
    // Credentials belong in the sealed headers; in the URL they would be shown and audited.
    checks.check(
        url.username().is_empty() && url.password().is_none(),
        "endpoint",
        "Remove the user name and password from the address; put credentials in the headers.",
    );
    checks.check(endpoint.len() <= 2048, "endpoint", "Use an address of at most 2048 characters.");
}

pub async fn set(
    db: &Db,
    vault: &Vault,
    access: &Access,
    input: TelemetryInput,
    allow_private: bool,
) -> Result<TelemetryView> {
    access.require(Role::Admin)?;
    let mut checks = Checks::new();
    let endpoint = input.endpoint.trim().trim_end_matches('/').to_owned();
    check_endpoint(&mut checks, &endpoint, allow_private);
    checks.check(
        input.headers.len() <= MAX_HEADERS,
        "headers",
        format!("Use at most {MAX_HEADERS} headers."),
    );
    for (name, value) in &input.headers {
        let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && reqwest::header::HeaderValue::from_str(value).is_ok();
        checks.check(
            valid && value.len() <= 4096,
            format!("headers.{name}"),
            "This is not a valid HTTP header.",
        );
    }
    checks.finish()?;
    let headers = if input.headers.is_empty() {
        None
    } else {
        let plain = Secret::new(serde_json::to_string(&input.headers).map_err(anyhow::Error::from)?);
        Some(vault.seal_for_agency(access.agency, HEADERS, &plain)?)
    };
    let row =
        TelemetryRow { agency_id: access.agency, endpoint: endpoint.clone(), headers, updated_at: now_ms() };
    let mut tx = db.write().await?;
    store::telemetry::put(&mut tx, &row).await?;
    let names: Vec<&String> = input.headers.keys().collect();
    audit::record(
        &mut tx,
        access,
        None,
        "agency.telemetry_set",
        json!({ "endpoint": endpoint, "headers": names }),
    )
    .await?;
    tx.commit().await?;
    Ok(view(&row, &input.headers))
}

fn view(row: &TelemetryRow, headers: &BTreeMap<String, String>) -> TelemetryView {
    TelemetryView {
        endpoint: row.endpoint.clone(),
        headers: headers.iter().map(|(k, v)| (k.clone(), mask(v))).collect(),
        updated_at: rfc3339(row.updated_at),
        delivery: None,
    }
}

fn open_headers(vault: &Vault, row: &TelemetryRow) -> Result<BTreeMap<String, String>> {
    match &row.headers {
        None => Ok(BTreeMap::new()),
        Some(sealed) => {
            let plain = vault.open_for_agency(row.agency_id, HEADERS, sealed)?;
            serde_json::from_str(plain.expose())
                .map_err(|e| Error::Internal(anyhow::anyhow!("telemetry headers: {e}")))
        }
    }
}

pub async fn get(db: &Db, vault: &Vault, access: &Access) -> Result<TelemetryView> {
    let mut tx = db.read().await?;
    let row = store::telemetry::get(&mut tx, access.agency).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    let mut view = view(&row, &open_headers(vault, &row)?);
    view.delivery =
        crate::telemetry::agency_routes().and_then(|routes| routes.delivery(&access.agency.to_string()));
    Ok(view)
}

pub async fn delete(db: &Db, access: &Access) -> Result<()> {
    access.require(Role::Admin)?;
    let mut tx = db.write().await?;
    if !store::telemetry::delete(&mut tx, access.agency).await? {
        return Err(Error::NotFound);
    }
    audit::record(&mut tx, access, None, "agency.telemetry_removed", json!({})).await?;
    tx.commit().await?;
    Ok(())
}

/// Points this process's agency exporters at what the database holds.
pub async fn sync(db: &Db, vault: &Vault, routes: &AgencyRoutes) -> Result<usize> {
    let mut tx = db.read().await?;
    let rows = store::telemetry::all(&mut tx).await?;
    tx.commit().await?;
    let mut configured = Vec::new();
    for row in &rows {
        match open_headers(vault, row) {
            Ok(headers) => {
                let headers: HashMap<String, String> = headers.into_iter().collect();
                let agency = row.agency_id.to_string();
                routes.configure(&agency, &row.endpoint, &headers);
                configured.push(agency);
            }
            Err(error) => {
                tracing::warn!(agency = %row.agency_id, %error, "cannot open an agency's telemetry headers")
            }
        }
    }
    routes.retain(&configured);
    Ok(configured.len())
}

/// Re-seals every agency's headers under the active master key (part of `keys rotate`).
/// Returns (re-sealed, already current).
pub async fn reseal(db: &Db, vault: &Vault) -> Result<(u64, u64)> {
    let mut tx = db.read().await?;
    let rows = store::telemetry::all(&mut tx).await?;
    tx.commit().await?;
    let (mut moved, mut current) = (0, 0);
    for row in rows {
        let Some(sealed) = &row.headers else { continue };
        if vault.is_current_for_agency(sealed) {
            current += 1;
            continue;
        }
        let plain = vault.open_for_agency(row.agency_id, HEADERS, sealed)?;
        let resealed = vault.seal_for_agency(row.agency_id, HEADERS, &plain)?;
        let mut tx = db.write().await?;
        store::telemetry::set_headers(&mut tx, row.agency_id, &resealed).await?;
        tx.commit().await?;
        moved += 1;
    }
    Ok((moved, current))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(endpoint: &str, allow_private: bool) -> bool {
        let mut checks = Checks::new();
        check_endpoint(&mut checks, endpoint, allow_private);
        checks.finish().is_err()
    }

    #[test]
    fn credentials_go_in_headers_not_in_the_endpoint() {
        assert!(refused("https://user:secret@otlp.example.com", false));
        assert!(refused("https://token@otlp.example.com", false));
    }

    #[test]
    fn endpoints_cannot_reach_the_operators_network() {
        assert!(!refused("https://otlp.grafana.example", false));
        for bad in [
            "http://otlp.example",
            "https://127.0.0.1:4318",
            "https://10.0.0.5",
            "https://localhost",
            "https://[::1]",
            "ftp://x.example",
            "nope",
        ] {
            assert!(refused(bad, false), "{bad}");
        }
        assert!(!refused("http://127.0.0.1:4318", true), "tests and private deployments may allow it");
    }
}
