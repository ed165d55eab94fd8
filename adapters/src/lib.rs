//! The shared core of inventory-bridge: the ClusterProfile API, the apply helper, errors with
//! bounded categories and the runtime every adapter binary runs.

pub mod apply;
pub mod ca_bundle;
pub mod cache;
pub mod crd;
pub mod error;
pub mod index;
pub mod interned;
pub mod kubeconfig_secret;
pub mod member_reads;
pub mod names;
pub mod profile;
pub mod profile_api;
pub mod retry;
pub mod runtime;
pub mod served_versions;
pub mod source;
pub mod status;

pub use error::{Categorized, Category, Error, Result};
pub mod access;
pub mod kubeconfig;
pub mod member;
pub mod sensitive;
pub mod sink;
