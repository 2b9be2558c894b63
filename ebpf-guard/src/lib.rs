//! Strongroom ebpf-guard: the BPF LSM guard's agent library.
//!
//! The kernel side (`bpf/guard.bpf.c`) denies exec sessions access to injected workloads;
//! this crate loads and pins it ([`loader`]), tells it which binaries and tokens to protect
//! ([`kubelet`]), turns its events into audit records ([`event`], [`cgroup`]) and serves
//! health and metrics ([`server`], [`metrics`]).
pub mod abi;
pub mod backfill;
pub mod cgroup;
pub mod config;
pub mod event;
pub mod kubelet;
pub mod loader;
pub mod metrics;
pub mod protect;
pub mod server;
