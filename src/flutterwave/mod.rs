//! Flutterwave: key formats, the v3 API client, and webhook authenticity and normalisation.

pub mod client;
pub mod keys;
pub mod model;
pub mod webhook;
