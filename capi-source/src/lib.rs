//! capi-source: Cluster API `Cluster`s become SIG-Multicluster `ClusterProfile`s.
//!
//! Thin by design: the Cluster types it reads ([`cluster`]), one pure mapping ([`project`]), its
//! flags and the glue to the shared source engine ([`controller`]). Watching, applying, deleting,
//! Events, metrics, member-read caching and kubeconfig checking live in `adapters`.

pub mod cluster;
pub mod controller;
pub mod project;

pub use controller::{CapiArgs, CapiMetrics, NAME, run};
