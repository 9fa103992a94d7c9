//! Agencies, people, client accounts, API keys and the vault (issue #3).

mod access_first;
mod accounts;
mod api_keys;
mod clients;
mod isolation;
mod members;
mod secrets;
mod validation;
mod vault;
