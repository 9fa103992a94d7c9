//! Flutterwave: the v3 client and webhook handling, against the stateful fake Flutterwave.

mod client;
mod keys;
