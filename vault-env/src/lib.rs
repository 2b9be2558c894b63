//! vault-env: resolves `vault:` references in a process environment and execs the app.
//!
//! The library half is shared with the webhook, so both sides agree on what a reference is.

pub mod auth;
pub mod client;
pub mod config;
pub mod copy_self;
pub mod daemon;
pub mod exec;
pub mod hygiene;
pub mod reference;
pub mod resolve;
pub mod secret;
pub mod template;
