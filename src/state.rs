//! The composition root's product: what every handler can reach, built once by `app`.

use std::sync::Arc;

use url::Url;

use crate::auth::Auth;
use crate::config::Config;
use crate::connections::installs::InstallLimits;
use crate::flutterwave::client::Flutterwave;
use crate::ingress::Ingress;
use crate::kommo::Kommo;
use crate::queue::Queue;
use crate::store::Db;
use crate::vault::Vault;

/// What every handler can reach. Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    /// Where the outside world reaches us; resolved after binding when not configured.
    pub public_url: Arc<Url>,
    pub vault: Vault,
    pub auth: Arc<Auth>,
    pub kommo: Arc<Kommo>,
    /// Admission of anonymous marketplace installs (per IP and per host, in this process).
    pub installs: Arc<InstallLimits>,
    pub flutterwave: Arc<Flutterwave>,
    pub queue: Queue,
    pub ingress: Arc<Ingress>,
}
