//! The periodic resync: every cached native object re-projected once per period, spread evenly
//! over it.
//!
//! Why not a requeue per reconcile: each kept a scheduler entry per object for the whole period
//! (two copies of its reference and the timer's bookkeeping), and after a cold start the whole
//! fleet's resyncs fell due within the minute the start took, once per period. Here a round takes the store's names when it starts and hands
//! the controller an equal share every second; the controller looks each one up in its store, so
//! an object deleted meanwhile is skipped and one updated meanwhile is read as it is now.

use std::time::Duration;

use futures::Stream;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// How often a share of the round is handed over.
const TICK: Duration = Duration::from_secs(1);

struct Pacer<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    ticker: Interval,
    ticks_per_round: u32,
    ticks_into_round: u32,
    pending: Vec<ObjectRef<K>>,
    share: usize,
    share_left: usize,
}

/// A stream for `Controller::reconcile_on`: the first round starts one `period` from now (a
/// start reconciles everything anyway), then one round every `period`.
pub(super) fn paced_resync<K>(
    store: Store<K>,
    period: Duration,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let mut ticker = tokio::time::interval_at(Instant::now() + period, TICK);
    // A slow consumer delays the rest of the round rather than receiving it in a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ticks_per_round = u32::try_from(period.as_secs()).unwrap_or(u32::MAX).max(1);
    let pacer = Pacer {
        store,
        ticker,
        ticks_per_round,
        ticks_into_round: 0,
        pending: Vec::new(),
        share: 0,
        share_left: 0,
    };
    futures::stream::unfold(pacer, |mut pacer| async move {
        loop {
            if pacer.share_left > 0
                && let Some(next) = pacer.pending.pop()
            {
                pacer.share_left -= 1;
                return Some((next, pacer));
            }
            pacer.ticker.tick().await;
            if pacer.ticks_into_round == 0 {
                // Names only: holding the objects would keep replaced versions alive.
                pacer.pending = pacer
                    .store
                    .state()
                    .iter()
                    .map(|object| name_only_ref(object.as_ref()))
                    .collect();
                pacer.share = pacer.pending.len().div_ceil(pacer.ticks_per_round as usize);
            }
            pacer.ticks_into_round = (pacer.ticks_into_round + 1) % pacer.ticks_per_round;
            pacer.share_left = pacer.share;
        }
    })
}

/// The store finds objects by kind, namespace and name; uid and resourceVersion are not needed.
fn name_only_ref<K: Resource<DynamicType = ()>>(object: &K) -> ObjectRef<K> {
    let meta = object.meta();
    let reference = ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    match meta.namespace.as_deref() {
        Some(namespace) => reference.within(namespace),
        None => reference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use std::collections::BTreeSet;

    fn config_map(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("fleet".to_string()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_object_once_per_period_in_equal_shares() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        writer.apply_watcher_event(&Event::Init);
        for index in 0..25 {
            writer.apply_watcher_event(&Event::InitApply(config_map(&format!("c{index}"))));
        }
        writer.apply_watcher_event(&Event::InitDone);
        let period = Duration::from_secs(10);
        let started = Instant::now();
        let mut stream = Box::pin(paced_resync(store, period));

        let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
        let mut seen = BTreeSet::new();
        for _ in 0..25 {
            let Some(reference) = stream.next().await else {
                panic!("the resync stream ended");
            };
            assert_eq!(reference.namespace.as_deref(), Some("fleet"));
            assert!(
                seen.insert(reference.name.clone()),
                "{} twice",
                reference.name
            );
            *per_second.entry(started.elapsed().as_secs()).or_default() += 1;
        }
        // Nothing before the first period; 25 over 10 ticks is 3 per second, in 9 seconds.
        assert_eq!(per_second.keys().next(), Some(&10));
        assert!(
            per_second.values().all(|count| *count <= 3),
            "{per_second:?}"
        );
        assert!(started.elapsed() < 2 * period, "{:?}", started.elapsed());

        // The next round starts one period after the first and sees the store as it is then.
        let Some(reference) = stream.next().await else {
            panic!("the resync stream ended");
        };
        assert_eq!(started.elapsed().as_secs(), 20);
        assert!(seen.contains(&reference.name));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_store_yields_nothing_and_a_later_object_is_resynced() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        let started = Instant::now();
        let mut stream = Box::pin(paced_resync(store, Duration::from_secs(10)));
        let first = tokio::spawn(async move { stream.next().await.map(|r| r.name) });
        tokio::time::sleep(Duration::from_secs(15)).await;
        writer.apply_watcher_event(&Event::Apply(config_map("late")));
        let Ok(name) = first.await else {
            panic!("the resync task failed");
        };
        assert_eq!(name.as_deref(), Some("late"));
        assert_eq!(started.elapsed().as_secs(), 20);
    }
}
