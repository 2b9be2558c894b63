//! The `ebpf-guard` agent.
fn main() {}
