//! Watches, caches and their indexes, the controller and the orphan sweeper.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use kube::Resource;
use kube::api::{Api, DynamicObject, ObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{info, warn};

use super::resync::paced_resync;
use super::*;
use crate::cache::watch_config;
use crate::error::Error;
use crate::index::Index;
use crate::profile::{ClusterProfile, GROUP};

/// kubectl's copy of the whole object as last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Run the source engine until `leader.stop` fires.
pub async fn run_source<S: Source>(
    source: S,
    settings: SourceSettings,
    metrics: SourceMetrics,
    leader: LeaderContext,
) -> crate::Result<()> {
    let source = Arc::new(source);
    let client = leader.client.clone();
    let name = source.name();
    check_cluster_manager("the cluster manager name", source.cluster_manager())
        .map_err(Error::Config)?;
    let Some(version) = ProfileVersion::discover_for_writing(&client, &leader.stop).await else {
        return Ok(());
    };
    info!(adapter = name, version = %version, "writing ClusterProfiles as {GROUP}/{version}");
    let profile_api = ProfileApi::new(client.clone(), version);

    let mut native_config = watch_config();
    if let Some(selector) = &settings.args.cluster_selector {
        native_config = native_config.labels(selector);
    }
    let trimmer = source.clone();
    let natives_api = source.native_api(client.clone(), settings.watch_namespace.as_deref());
    let (natives, native_writer) = reflector::store();
    let (deleted_tx, mut deleted_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let profile_deleted_tx = deleted_tx.clone();
    let progress = leader.metrics.clone();
    let native_stream = watcher(natives_api, native_config)
        .default_backoff()
        .modify(move |native: &mut S::Native| {
            // Never read, and each can be as large as the object itself.
            let meta = native.meta_mut();
            meta.managed_fields = None;
            // Never read either (the watcher has taken the resource version already); the
            // store's key would keep a second copy of the version.
            meta.resource_version = None;
            meta.creation_timestamp = None;
            meta.generation = None;
            if let Some(annotations) = meta.annotations.as_mut() {
                annotations.remove(LAST_APPLIED);
            }
            trimmer.trim(native);
        })
        .reflect(native_writer)
        .inspect(move |event| {
            // A deleted or deselected object is never reconciled again (it is gone from the
            // store), so its profiles are swept here, at once.
            if let Ok(watcher::Event::Delete(native)) = event {
                let _ = deleted_tx.send(source_key(native));
            }
            // Any event (a relist included) shows the watch works: it ends an error streak.
            if event.is_ok() {
                progress.watch_progress();
            }
        })
        .touched_objects();

    let ours = watch_config().labels(&format!("{LABEL_SOURCE}={name}"));
    // The profiles the source may meet, not only ours: a profile absent from a listed book is
    // then known to be absent on the hub, so a new cluster's profile is applied without a GET.
    let manager = leader.applier.field_manager().to_string();
    let profiles = Arc::new(ProfileBook::new(
        name,
        &manager,
        profile_api.version(),
        source.inventory_namespace(),
    ));
    let profile_stream = profiles
        .watch(&profile_api)
        .inspect(move |event| {
            // A profile really gone (finalizers done) may release its source's companions.
            if let Ok(watcher::Event::Delete(profile)) = event
                && let Some(key) = source_object_of(&profile.metadata)
            {
                let _ = profile_deleted_tx.send(key.to_string());
            }
        })
        .touched_objects();

    let resync = Duration::from_secs(settings.args.resync_seconds);
    let mut controller = Controller::for_stream(native_stream, natives.clone())
        .with_config(
            ControllerConfig::default()
                .concurrency(settings.args.concurrency)
                .debounce(Duration::from_millis(100)),
        )
        .reconcile_on(related_triggers(profile_stream, leader.metrics.clone(), {
            let natives = natives.clone();
            move |profile: ClusterProfile| {
                let native = object_ref_from_key::<S::Native>(source_object_of(&profile.metadata)?);
                // Another source's profiles name objects of its own kind: the controller
                // would drop them (not in our cache), but only after queueing each one.
                natives.get(&native).is_some().then_some(native)
            }
        }));

    let mut companions = Vec::new();
    for resource in source.companion_kinds() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let by_source = Index::new(resource.clone(), move |o: &DynamicObject| {
            source_keys(&o.metadata, name)
        });
        let index = by_source.clone();
        let companion_manager = manager.clone();
        let stream = watcher(api, ours.clone())
            .default_backoff()
            .modify(move |object: &mut DynamicObject| trim_companion(object, &companion_manager))
            .reflect(writer)
            .inspect(move |event| index.observe(event))
            .touched_objects();
        controller = controller.reconcile_on(related_triggers(
            stream,
            leader.metrics.clone(),
            |companion: DynamicObject| {
                source_object_of(&companion.metadata).map(object_ref_from_key::<S::Native>)
            },
        ));
        companions.push(CompanionStore {
            resource,
            store,
            by_source,
        });
    }
    let controller = source
        .watches(controller, &leader.metrics)
        .reconcile_on(paced_resync(natives.clone(), resync));

    let engine = Arc::new(Engine {
        source,
        leader: leader.clone(),
        metrics,
        natives,
        profiles,
        profile_api,
        companions,
        resync,
        retries: Retries::new(MAX_RETRY),
        reported: Mutex::default(),
    });

    let stop = leader.stop.clone();
    let observer = leader.metrics.clone();
    let ended = leader.metrics.clone();
    let stopping = leader.stop.clone();
    let controller_run = controller
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile::<S>, error_policy::<S>, engine.clone())
        .for_each(move |result| {
            // Watch errors: warned, counted, and fed to /healthz.
            observer.observe_controller_event(&result);
            futures::future::ready(())
        })
        .map(move |()| {
            // The controller only ends when told to; otherwise nothing reconciles any more.
            if !stopping.is_cancelled() {
                ended.controller_ended("source");
            }
        });

    let sweeper_engine = engine.clone();
    let stop = leader.stop.clone();
    let sweeper = async move {
        let engine = sweeper_engine;
        // Sweeping before both caches hold a full list would delete everything.
        if engine.natives.wait_until_ready().await.is_err() {
            return;
        }
        engine.profiles.wait_until_ready().await;
        for companion in &engine.companions {
            if companion.store.wait_until_ready().await.is_err() {
                return;
            }
        }
        engine.sweep_orphans().await;
        engine.leader.readiness.mark_synced();
        info!(
            adapter = engine.source.name(),
            "caches synced; sweeping orphans every resync"
        );
        let mut resync = tokio::time::interval(engine.resync);
        resync.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(key) = deleted_rx.recv() => engine.sweep_key(&key).await,
                _ = resync.tick() => engine.sweep_orphans().await,
            }
        }
    };
    tokio::join!(controller_run, sweeper);
    Ok(())
}

async fn reconcile<S: Source>(
    native: Arc<S::Native>,
    engine: Arc<Engine<S>>,
) -> Result<Action, Error> {
    // Until the inventory's profiles are listed, "no published profile" is only a guess: the
    // projection would lose what the profile already says (condition and property timestamps)
    // and rewrite it at every start. Wait for the list instead.
    if !engine.profiles.is_ready() {
        return Ok(Action::requeue(Duration::from_millis(250)));
    }
    let started = Instant::now();
    let key = source_key(native.as_ref());
    let outcome = engine.reconcile_one(native.as_ref(), &key).await;
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(requeue) => {
            engine.leader.metrics.observe_reconcile(Ok(()), seconds);
            // The periodic re-check comes from the paced resync (see `resync`), not from here.
            Ok(requeue.map_or_else(Action::await_change, Action::requeue))
        }
        Err(err) => {
            engine
                .leader
                .metrics
                .observe_reconcile(Err(err.category()), seconds);
            Err(err)
        }
    }
}

fn error_policy<S: Source>(native: Arc<S::Native>, err: &Error, engine: Arc<Engine<S>>) -> Action {
    let key = source_key(native.as_ref());
    // 2s, 4s, ... capped at 5 minutes, with jitter: never a hot loop, never a long stall after a blip.
    let delay = engine.retries.failed(&key);
    warn!(object = %key, category = %err.category(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

impl<S: Source> Engine<S> {
    pub(super) fn our_profiles_of(&self, key: &str) -> Vec<ClusterProfile> {
        self.profiles.ours_of(key)
    }

    pub(super) fn is_ours(&self, meta: &ObjectMeta) -> bool {
        is_ours(meta, self.source.name())
    }

    pub(super) fn publish_profile_count(&self) {
        self.metrics
            .profiles
            .set(i64::try_from(self.profiles.ours_count()).unwrap_or(i64::MAX));
    }
}
