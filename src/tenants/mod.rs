//! Agencies and their client accounts: the services the JSON API and the web app share.
//! Every function takes the caller's [`Access`](crate::auth::Access), checks the role it needs,
//! and writes its audit entry in the same transaction as the change.

pub mod activity;
pub mod api_keys;
pub mod audit;
pub mod clients;
pub mod entry;
pub mod flutterwave_keys;
pub mod members;
pub mod notes;
pub mod overview;
pub mod payments;
pub mod secrets;
pub mod settings;
pub mod telemetry;
pub mod test_event;

pub use self::settings::ClientSettings;
