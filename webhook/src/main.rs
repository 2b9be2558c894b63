//! The `vault-secrets-webhook` binary.
fn main() {}
