//! Flutterwave: key formats (and, with the pipeline, the API client and webhook handling).

pub mod keys;
