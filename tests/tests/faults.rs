//! The fault suite (issue 14): adapters run as real processes (the binaries `cargo build
//! --workspace --bins` puts next to this test's directory) against real control planes on
//! loopback, and faults are injected for real: `kill -9` of adapters, the hub's apiserver or etcd
//! stopped, a member control plane gone, watch history lost, malformed input, a leader killed.
//! Every scenario asserts that nothing is lost or duplicated (the exact final state); recovery
//! times are printed as `MEASURED ...` lines, never asserted, except the one explicit
//! bound (a standby takes over within the lease duration).
//!
//! OCM's agents do not run here: where OCM would act, the test plays it (the registration agent
//! reporting a ManagedCluster's status; Cluster API writing a `<cluster>-kubeconfig` Secret).
//! Each scenario has control planes of its own, so the scenarios run concurrently.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "faults/common.rs"]
mod common;
#[path = "faults/member.rs"]
mod member;
#[path = "faults/ocm.rs"]
mod ocm;
