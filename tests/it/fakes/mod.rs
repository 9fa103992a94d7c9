//! Stateful fakes of the services pipepay talks to, behaving as `shared/reference` says the real
//! ones do. Only Kommo and Flutterwave are faked; everything of ours is real.
#![allow(dead_code)]

pub mod flutterwave;
pub mod kommo;
pub mod smtp;
