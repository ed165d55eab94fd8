//! ocm-source: OCM ManagedClusters become ClusterProfiles.
//!
//! Thin by design: the OCM types it reads ([`types`]), the pure mapping ([`project`]), the
//! bootstrap grant for sinks ([`bootstrap`]), its flags ([`args`]) and [`OcmSource`], which hands
//! them to the shared source engine (`adapters::source`). Watching, applying, garbage collection,
//! Events and metrics are the engine's.

pub mod args;
pub mod bootstrap;
pub mod project;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use adapters::cache::{Cache, watch_config};
use adapters::runtime::Metrics;
use adapters::source::{Observed, Problem, Projection, Source};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use kube::{Api, Client};

pub use project::{ClusterProxy, Config, Observations, Placement};
use types::{ManagedCluster, ManagedClusterSet, ManagedClusterSetBinding};

/// Adapter name: field manager, `inventory-bridge.io/source` value, Event reporter.
pub const NAME: &str = "ocm-source";

/// How long `observe` waits for the hub caches at start before giving up (and retrying).
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The OCM source: [`Config`] plus the hub caches the mapping reads.
pub struct OcmSource {
    config: Config,
    sets: Option<Cache<ManagedClusterSet>>,
    bindings: Option<Cache<ManagedClusterSetBinding>>,
    proxy_ca: Option<Cache<Secret>>,
}

impl OcmSource {
    /// A source for `config`; starts no I/O until the engine drives it.
    pub fn new(client: Client, config: Config) -> Self {
        let (sets, bindings) = match config.placement {
            Placement::ClusterSetBindings => (
                Some(Cache::new(
                    "ManagedClusterSet",
                    Api::all(client.clone()),
                    watch_config(),
                )),
                Some(Cache::new(
                    "ManagedClusterSetBinding",
                    Api::all(client.clone()),
                    watch_config(),
                )),
            ),
            Placement::Inventory(_) => (None, None),
        };
        let proxy_ca = config.cluster_proxy.as_ref().map(|proxy| {
            // One Secret, by name; only its certificate is kept in memory (never the key, nor a
            // last-applied annotation that would repeat it).
            Cache::with_modify(
                "cluster-proxy CA Secret",
                Api::namespaced(client.clone(), &proxy.namespace),
                watcher::Config::default().fields(&format!("metadata.name={}", proxy.ca_secret)),
                |secret: &mut Secret| {
                    secret.metadata.annotations = None;
                    secret.string_data = None;
                    if let Some(data) = secret.data.as_mut() {
                        data.retain(|key, _| key == ClusterProxy::CA_KEY);
                    }
                },
            )
        });
        Self {
            config,
            sets,
            bindings,
            proxy_ca,
        }
    }
}

impl Source for OcmSource {
    type Native = ManagedCluster;
    type Extra = Observations;

    fn name(&self) -> &'static str {
        NAME
    }

    fn cluster_manager(&self) -> &str {
        &self.config.cluster_manager
    }

    fn companion_kinds(&self) -> Vec<kube::core::ApiResource> {
        // Only when configured: watching kinds whose CRDs a hub may not have would stall the sweep.
        match self.config.bootstrap {
            Some(_) => vec![
                bootstrap::managed_service_account_resource(),
                bootstrap::manifest_work_resource(),
            ],
            None => Vec::new(),
        }
    }

    async fn observe(&self, _: &Client, _: &ManagedCluster) -> Result<Observations, Problem> {
        let mut observations = Observations::default();
        // Projecting before the caches hold a full list would delete profiles in every
        // namespace whose binding is not cached yet.
        if let (Some(sets), Some(bindings)) = (&self.sets, &self.bindings) {
            sets.ready(CACHE_SYNC_TIMEOUT).await?;
            bindings.ready(CACHE_SYNC_TIMEOUT).await?;
            observations.sets = sets.state();
            observations.bindings = bindings.state();
        }
        if let (Some(cache), Some(proxy)) = (&self.proxy_ca, &self.config.cluster_proxy) {
            cache.ready(CACHE_SYNC_TIMEOUT).await?;
            observations.proxy_ca = cache
                .get(&proxy.ca_secret, Some(&proxy.namespace))
                .and_then(|secret| secret.data.clone())
                .and_then(|mut data| data.remove(ClusterProxy::CA_KEY))
                .map(|ByteString(bytes)| bytes);
        }
        Ok(observations)
    }

    fn trim(&self, cluster: &mut ManagedCluster) {
        project::trim(cluster);
    }

    fn project(
        &self,
        native: &ManagedCluster,
        observed: &Observed<'_, Observations>,
    ) -> Result<Projection, Problem> {
        Ok(project::project(
            native,
            &self.config,
            &observed.extra,
            &|namespace, name| observed.existing_status(namespace, name),
            &observed.now,
        ))
    }

    fn watches(
        &self,
        controller: Controller<ManagedCluster>,
        _: &Arc<Metrics>,
    ) -> Controller<ManagedCluster> {
        // A set, binding or CA change can move any cluster: re-project them all (writes are
        // skipped where nothing changed, so this costs no API writes).
        let triggers: Vec<_> = [
            self.sets.as_ref().and_then(Cache::take_trigger),
            self.bindings.as_ref().and_then(Cache::take_trigger),
            self.proxy_ca.as_ref().and_then(Cache::take_trigger),
        ]
        .into_iter()
        .flatten()
        .collect();
        if triggers.is_empty() {
            return controller;
        }
        controller.reconcile_all_on(futures::stream::select_all(triggers))
    }
}
