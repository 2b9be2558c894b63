//! Strongroom ebpf-guard: the BPF LSM guard's agent library.
//!
//! The kernel side (`bpf/guard.bpf.c`) denies exec sessions access to injected workloads;
//! this crate loads and pins it ([`loader`]), tells it which binaries and tokens to protect
//! ([`kubelet`]), learns names and per-pod modes of the node's pods from the API server
//! ([`pods`]), turns its events into audit records ([`event`], [`cgroup`]) and Kubernetes
//! Events ([`recorder`]), and serves health and metrics ([`server`], [`metrics`]).
pub mod abi;
pub mod backfill;
pub mod cgroup;
pub mod config;
pub mod event;
pub mod kubelet;
pub mod loader;
pub mod metrics;
pub mod pods;
pub mod protect;
pub mod recorder;
pub mod server;
