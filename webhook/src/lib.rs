//! vault-secrets-webhook: the admission side of Strongroom.
//!
//! The decision ([`mutate`]) is a function of the review, the operator config, the image
//! resolver and the referenced Secrets/ConfigMaps; the server ([`server`]) and the offline
//! `inject` command ([`inject`]) are thin shells around it.

pub mod admission;
pub mod annotations;
pub mod bench;
pub mod config;
pub mod deadlines;
pub mod handler;
pub mod image;
pub mod inject;
pub mod mutate;
pub mod objects;
pub mod policy;
pub mod registry;
pub mod selfcert;
pub mod server;
pub mod telemetry;
pub mod tls;
