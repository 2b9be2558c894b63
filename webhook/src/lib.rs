//! vault-secrets-webhook: the admission side of Strongroom.

pub mod image;
