//! Reads from member clusters (the About API `ClusterProperty` objects, and the `kube-system`
//! namespace UID when no `id.k8s.io` property names the cluster), cached per source object and
//! retried with backoff.
//!
//! A reconcile may run many times a minute (every watch event re-runs it); the member is asked at
//! most once per refresh interval while healthy, and after a failure only when the backoff has
//! elapsed — so an unreachable member costs a handful of connection attempts, never a hot loop —
//! while the last values read stay available to publish. A rotated kubeconfig (new fingerprint)
//! is read at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::debug;

use crate::error::Category;
use crate::interned::Interned;
use crate::kubeconfig_secret::{KubeconfigSecretError, SecretKubeconfig};
use crate::profile::PROPERTY_CLUSTER_ID;
use crate::runtime::Metrics;

/// The About API (KEP-2149) `ClusterProperty` kind: cluster-scoped, `spec.value`.
pub fn cluster_property_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("about.k8s.io", "v1alpha1", "ClusterProperty"),
        "clusterproperties",
    )
}

/// What was read from a member: kept per cluster between reads, so kept small (names shared,
/// no spare capacity).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberFacts {
    /// The member's `ClusterProperty` objects as (name, `spec.value`), sorted by name.
    pub cluster_properties: Box<[(Interned, Box<str>)]>,
    /// UID of the member's `kube-system` namespace; read only when no `id.k8s.io` property
    /// names the cluster (KEP-2149 suggests that UID as the id, so it would be read twice).
    pub kube_system_uid: Option<Box<str>>,
}

impl MemberFacts {
    /// The member's cluster id: its `id.k8s.io` property, else its `kube-system` UID.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_properties
            .iter()
            .find(|(name, _)| *name == PROPERTY_CLUSTER_ID)
            .map(|(_, value)| &**value)
            .or(self.kube_system_uid.as_deref())
    }
}

/// Why the last read of a member failed, in words that are stable across retries (so a
/// persistent failure does not change the published status or repeat Events) and carry no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberReadFailure {
    /// Bounded category.
    pub category: Category,
    /// Stable explanation.
    pub message: String,
}

impl MemberReadFailure {
    /// The kubeconfig itself cannot be used.
    pub fn kubeconfig(err: &KubeconfigSecretError) -> Self {
        Self {
            category: err.category(),
            message: format!("the kubeconfig {err}"),
        }
    }
}

/// The outcome of [`MemberReader::read`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberRead {
    /// The last values read successfully (possibly before the current failure).
    pub facts: Option<Arc<MemberFacts>>,
    /// The latest attempt's failure, if it failed.
    pub failure: Option<MemberReadFailure>,
    /// When to look again.
    pub retry_in: Duration,
}

/// Timing of member reads.
#[derive(Clone, Copy, Debug)]
pub struct MemberReadSettings {
    /// Re-read a healthy member this often; also the cap of the failure backoff.
    pub refresh: Duration,
    /// Connect and read timeout per request.
    pub timeout: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    result: &'static str,
}

/// What is remembered of one member. Not its client: a client holds a TLS configuration and an
/// idle connection pool (tens of KiB each), and a member is read once per refresh interval, so
/// keeping a thousand of them idle would cost more memory than everything else the source keeps.
/// One per cluster, so boxed where rare (a failure) and shared where handed out (the facts).
struct Entry {
    fingerprint: Box<str>,
    facts: Option<Arc<MemberFacts>>,
    failure: Option<Box<MemberReadFailure>>,
    failures: u32,
    next_read: Instant,
    last_used: Instant,
}

/// The counter of member reads, registered once per process (before the runtime starts) and
/// shared by every [`MemberReader`] built while leading.
#[derive(Clone, Debug, Default)]
pub struct MemberReadMetrics {
    reads: Family<ReadLabels, Counter>,
}

impl MemberReadMetrics {
    /// Register `inventory_bridge_member_reads_total{result}` in `metrics`.
    pub fn register(metrics: &mut Metrics) -> Self {
        let this = Self::default();
        metrics.registry_mut().register(
            "member_reads",
            "Reads of member clusters (kube-system UID and ClusterProperty objects) by result",
            this.reads.clone(),
        );
        this
    }
}

/// Cached, backoff-retrying member reads, keyed by the source object.
pub struct MemberReader {
    settings: MemberReadSettings,
    entries: Mutex<HashMap<Box<str>, Entry>>,
    metrics: MemberReadMetrics,
}

/// Entries not asked for this long belong to source objects that are gone.
const EVICT_AFTER: Duration = Duration::from_secs(3600);

impl MemberReader {
    /// A reader counting its reads in `metrics`.
    pub fn new(settings: MemberReadSettings, metrics: MemberReadMetrics) -> Self {
        Self {
            settings,
            entries: Mutex::default(),
            metrics,
        }
    }

    /// Drop what is cached for `key` (its kubeconfig is gone).
    pub fn forget(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }

    /// The member facts for `key`, reading the member only when the cache is stale, the backoff
    /// after a failure has elapsed, or the kubeconfig's `fingerprint` changed. Only then is the
    /// kubeconfig itself `load`ed: callers keep its summary, not its credentials.
    pub async fn read<Load, Loading>(&self, key: &str, fingerprint: &str, load: Load) -> MemberRead
    where
        Load: FnOnce() -> Loading,
        Loading: Future<Output = Result<SecretKubeconfig, MemberReadFailure>>,
    {
        let now = Instant::now();
        let failures = {
            let Ok(mut entries) = self.entries.lock() else {
                return MemberRead::default();
            };
            entries.retain(|_, e| now.duration_since(e.last_used) < EVICT_AFTER);
            if !entries.contains_key(key) {
                entries.insert(
                    key.into(),
                    Entry {
                        fingerprint: Box::default(),
                        facts: None,
                        failure: None,
                        failures: 0,
                        next_read: now,
                        last_used: now,
                    },
                );
            }
            let Some(entry) = entries.get_mut(key) else {
                return MemberRead::default();
            };
            entry.last_used = now;
            if *entry.fingerprint != *fingerprint {
                // Rotated (or new): read now. Facts stay until the new read says otherwise, so a
                // rotation does not blank the profile.
                entry.fingerprint = fingerprint.into();
                entry.failures = 0;
                entry.next_read = now;
            }
            if now < entry.next_read {
                return MemberRead {
                    facts: entry.facts.clone(),
                    failure: entry.failure.as_deref().cloned(),
                    retry_in: entry.next_read - now,
                };
            }
            entry.failures
        };

        let outcome = async {
            let client = load()
                .await?
                .client(self.settings.timeout)
                .await
                .map_err(|err| MemberReadFailure::kubeconfig(&err))?;
            read_member(&client).await
        }
        .await;
        self.metrics
            .reads
            .get_or_create(&ReadLabels {
                result: if outcome.is_ok() { "success" } else { "error" },
            })
            .inc();

        let Ok(mut entries) = self.entries.lock() else {
            return MemberRead::default();
        };
        let Some(entry) = entries.get_mut(key) else {
            return MemberRead::default();
        };
        let now = Instant::now();
        match outcome {
            Ok(facts) => {
                // The same values again keep the old copy (a fresh one would only fragment).
                if entry.facts.as_deref() != Some(&facts) {
                    entry.facts = Some(Arc::new(facts));
                }
                entry.failure = None;
                entry.failures = 0;
                entry.next_read = now + self.settings.refresh;
            }
            Err(failure) => {
                // entry.facts stays: the last known values outlive a failure.
                entry.failure = Some(Box::new(failure));
                entry.failures = failures.saturating_add(1);
                entry.next_read = now + backoff(entry.failures, self.settings.refresh);
            }
        }
        MemberRead {
            facts: entry.facts.clone(),
            failure: entry.failure.as_deref().cloned(),
            retry_in: entry.next_read.saturating_duration_since(now),
        }
    }
}

/// 2 s, 4 s, 8 s ... capped at `cap` (at least 1 s).
fn backoff(failures: u32, cap: Duration) -> Duration {
    Duration::from_secs(1u64 << failures.clamp(1, 16)).min(cap.max(Duration::from_secs(1)))
}

async fn read_member(client: &kube::Client) -> Result<MemberFacts, MemberReadFailure> {
    let properties: Api<DynamicObject> =
        Api::all_with(client.clone(), &cluster_property_resource());
    let cluster_properties = match properties.list(&ListParams::default()).await {
        Ok(list) => {
            let mut found: Vec<(Interned, Box<str>)> = list
                .items
                .iter()
                .filter_map(|p| {
                    let value = p.data.pointer("/spec/value")?.as_str()?;
                    Some((Interned::new(p.metadata.name.as_deref()?), value.into()))
                })
                .collect();
            found.sort();
            found.into_boxed_slice()
        }
        // The About API is optional on a member.
        Err(kube::Error::Api(status)) if status.code == 404 => Box::default(),
        Err(err) => return Err(classify(&err)),
    };
    let mut facts = MemberFacts {
        cluster_properties,
        kube_system_uid: None,
    };
    if facts.cluster_id().is_none() {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let kube_system = namespaces
            .get_opt("kube-system")
            .await
            .map_err(|err| classify(&err))?;
        facts.kube_system_uid = kube_system.and_then(|ns| ns.metadata.uid.map(Into::into));
    }
    Ok(facts)
}

/// A stable, secret-free description of a failed member request.
pub fn classify(err: &kube::Error) -> MemberReadFailure {
    debug!(error = %err, "member read failed");
    if let kube::Error::Api(status) = err {
        let (category, message) = match status.code {
            401 => (
                Category::InvalidInput,
                "the member's API server rejected the kubeconfig's credentials (401 Unauthorized)"
                    .to_string(),
            ),
            403 => (
                Category::Forbidden,
                "the kubeconfig's identity may not read the kube-system namespace or ClusterProperty objects on the member (403 Forbidden)".to_string(),
            ),
            code => (
                Category::KubeApi,
                format!("the member's API server answered {code}"),
            ),
        };
        return MemberReadFailure { category, message };
    }
    let mut chain = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(current) = source {
        chain.push(format!("{current:?} {current}").to_ascii_lowercase());
        source = current.source();
    }
    let chain = chain.join(" ");
    if chain.contains("certificate") || chain.contains("unknownissuer") {
        MemberReadFailure {
            category: Category::InvalidInput,
            message: "TLS verification of the member's API server failed: the kubeconfig's certificate-authority-data does not match the server".to_string(),
        }
    } else if chain.contains("timed out") || chain.contains("elapsed") || chain.contains("timeout")
    {
        MemberReadFailure {
            category: Category::KubeApi,
            message: "the member's API server did not answer in time".to_string(),
        }
    } else {
        MemberReadFailure {
            category: Category::KubeApi,
            message: "cannot connect to the member's API server".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_kubeconfig_is_loaded_only_when_a_read_is_due() {
        let reader = MemberReader::new(
            MemberReadSettings {
                refresh: Duration::from_secs(300),
                timeout: Duration::from_secs(1),
            },
            MemberReadMetrics::default(),
        );
        let loads = std::sync::atomic::AtomicUsize::new(0);
        // A failing load (the Secret went away between the watch event and the read).
        let read = |fingerprint: &'static str| {
            reader.read("ns/web", fingerprint, || async {
                loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(MemberReadFailure {
                    category: Category::NotFound,
                    message: "the kubeconfig Secret is gone".to_string(),
                })
            })
        };
        let loaded = || loads.load(std::sync::atomic::Ordering::SeqCst);

        let first = read("a").await;
        assert_eq!(loaded(), 1, "a new member is read at once");
        assert_eq!(first.failure.map(|f| f.category), Some(Category::NotFound));
        assert!(first.retry_in > Duration::ZERO);

        let again = read("a").await;
        assert_eq!(loaded(), 1, "within the backoff nothing is loaded");
        assert_eq!(again.failure.map(|f| f.category), Some(Category::NotFound));

        read("b").await;
        assert_eq!(loaded(), 2, "a rotated kubeconfig is read at once");

        reader.forget("ns/web");
        read("b").await;
        assert_eq!(loaded(), 3, "a forgotten member is read afresh");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(1, cap), Duration::from_secs(2));
        assert_eq!(backoff(2, cap), Duration::from_secs(4));
        assert_eq!(backoff(5, cap), Duration::from_secs(32));
        assert_eq!(backoff(6, cap), cap);
        assert_eq!(backoff(40, cap), cap);
        assert_eq!(backoff(3, Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn api_statuses_are_classified_without_their_text() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "token s3cr3t".into(),
                ..Default::default()
            }))
        };
        assert_eq!(classify(&api(401)).category, Category::InvalidInput);
        assert_eq!(classify(&api(403)).category, Category::Forbidden);
        assert_eq!(classify(&api(500)).category, Category::KubeApi);
        for code in [401, 403, 500] {
            assert!(!classify(&api(code)).message.contains("s3cr3t"));
        }
    }
}
