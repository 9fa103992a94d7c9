//! pipepay's stories, told over real HTTP against the real server on both databases.
// A failed unwrap is how a test says what went wrong; the crate lints are for src/.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod alerts;
mod background;
mod cli;
mod connections;
mod demo;
mod fakes;
mod fleet;
mod flutterwave;
mod foundation;
mod kommo;
mod mail;
mod pipeline;
mod retention;
mod schema;
mod storage;
mod telemetry;
mod tenancy;
mod web;
