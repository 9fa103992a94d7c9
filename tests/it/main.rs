//! pipepay's stories, told over real HTTP against the real server on both databases.

mod support;

mod background;
mod cli;
mod connections;
mod fakes;
mod flutterwave;
mod foundation;
mod kommo;
mod pipeline;
mod schema;
mod storage;
mod telemetry;
mod tenancy;
mod web;
