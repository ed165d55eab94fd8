//! What the bench observes: the apiservers' own request counters, an adapter process's figures
//! from `/proc`, and a watch that timestamps when each object reaches the state the bench expects.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::Notify;

use crate::Result;
use crate::apiserver_metrics::{RequestKind, WRITE_VERBS, breakdown_delta, request_breakdown};

/// Resources whose `POST` persists nothing (reviews): not counted as writes.
const REVIEWS: &[&str] = &[
    "selfsubjectreviews",
    "selfsubjectaccessreviews",
    "selfsubjectrulesreviews",
    "subjectaccessreviews",
    "localsubjectaccessreviews",
    "tokenreviews",
];

/// Housekeeping writes not counted as the adapter's work: the apiserver renews its own identity
/// Lease every few seconds, and a leader renews its election Lease; both are there at rest by
/// design.
const HOUSEKEEPING: &[&str] = &["leases"];

/// Whether a request of `kind` changes stored state (and is not housekeeping).
pub fn is_write(kind: &RequestKind) -> bool {
    WRITE_VERBS.contains(&kind.0.as_str())
        && !REVIEWS.contains(&kind.1.as_str())
        && !HOUSEKEEPING.contains(&kind.1.as_str())
}

/// The request counters of a hub and its members.
#[derive(Clone)]
pub struct Counters {
    hub: kube::Client,
    members: Vec<kube::Client>,
}

/// Counters at one moment: the hub's, then each member's.
#[derive(Clone, Debug)]
pub struct Snapshot {
    hub: BTreeMap<RequestKind, u64>,
    members: Vec<BTreeMap<RequestKind, u64>>,
}

/// Requests served between two snapshots, by kind: on the hub and summed over the members.
#[derive(Clone, Debug, Default)]
pub struct Requests {
    /// On the hub.
    pub hub: BTreeMap<RequestKind, u64>,
    /// On all members together.
    pub members: BTreeMap<RequestKind, u64>,
}

impl Counters {
    /// Counters of `hub` and `members` (admin clients).
    pub fn new(hub: kube::Client, members: Vec<kube::Client>) -> Self {
        Self { hub, members }
    }

    /// Read every control plane's counters now.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let hub = request_breakdown(&self.hub).await?;
        let mut members = Vec::new();
        for member in &self.members {
            members.push(request_breakdown(member).await?);
        }
        Ok(Snapshot { hub, members })
    }

    /// Requests since `before`.
    pub async fn since(&self, before: &Snapshot) -> Result<Requests> {
        Ok(before.delta(&self.snapshot().await?))
    }
}

impl Snapshot {
    /// Requests from `self` to `later`.
    pub fn delta(&self, later: &Snapshot) -> Requests {
        let mut members = BTreeMap::new();
        for (before, after) in self.members.iter().zip(&later.members) {
            for (kind, count) in breakdown_delta(before, after) {
                *members.entry(kind).or_insert(0) += count;
            }
        }
        Requests {
            hub: breakdown_delta(&self.hub, &later.hub),
            members,
        }
    }
}

impl Requests {
    /// Writes (see [`is_write`]) on the hub and the members.
    pub fn writes(&self) -> u64 {
        self.hub
            .iter()
            .chain(&self.members)
            .filter(|(kind, _)| is_write(kind))
            .map(|(_, count)| count)
            .sum()
    }

    /// Writes by `"<where> <VERB> <resource>"`.
    pub fn writes_by_kind(&self) -> BTreeMap<String, u64> {
        self.labelled()
            .into_iter()
            .filter(|((_, kind), _)| is_write(kind))
            .map(|((place, kind), count)| (format!("{place} {} {}", kind.0, kind.1), count))
            .collect()
    }

    /// Every request by `"<where> <VERB> <resource>"`, without housekeeping.
    pub fn by_kind(&self) -> BTreeMap<String, u64> {
        self.labelled()
            .into_iter()
            .filter(|((_, kind), _)| !HOUSEKEEPING.contains(&kind.1.as_str()))
            .map(|((place, kind), count)| (format!("{place} {} {}", kind.0, kind.1), count))
            .collect()
    }

    /// Requests of `verb` on `resource` on the members.
    pub fn member_count(&self, verb: &str, resource: &str) -> u64 {
        self.members
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests without housekeeping, everywhere.
    pub fn total(&self) -> u64 {
        self.by_kind().values().sum()
    }

    fn labelled(&self) -> Vec<((&'static str, RequestKind), u64)> {
        self.hub
            .iter()
            .map(|(kind, count)| (("hub", kind.clone()), *count))
            .chain(
                self.members
                    .iter()
                    .map(|(kind, count)| (("members", kind.clone()), *count)),
            )
            .collect()
    }
}

/// A process's figures from `/proc`.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcStats {
    /// Peak resident set (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// User + system CPU, seconds.
    pub cpu_seconds: f64,
}

/// Linux reports `/proc/<pid>/stat` times in USER_HZ, fixed at 100 for the userspace ABI.
const USER_HZ: f64 = 100.0;

/// Peak RSS and CPU time of `pid` now.
pub fn proc_stats(pid: u32) -> Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak_kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or("no VmHWM in /proc/<pid>/status")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> Result<f64> {
        Ok(fields
            .get(index)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or("malformed /proc/<pid>/stat")?)
    };
    Ok(ProcStats {
        peak_rss_mib: peak_kib / 1024.0,
        cpu_seconds: (ticks(11)? + ticks(12)?) / USER_HZ,
    })
}

/// A state an object is expected to reach.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// `metadata.labels[key] == value`.
    Label(String, String),
    /// The condition of this type in `status.conditions` has this status.
    Condition(String, String),
}

impl Expect {
    /// Whether `object` is in this state.
    pub fn met_by(&self, object: &Value) -> bool {
        match self {
            Expect::Label(key, value) => {
                object["metadata"]["labels"][key].as_str() == Some(value.as_str())
            }
            Expect::Condition(type_, status) => object["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == type_.as_str() && c["status"] == status.as_str()),
        }
    }
}

/// Decides whether an object is exactly what the bench expects at cold convergence.
pub type Check = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

#[derive(Default)]
struct TrackerState {
    good: HashSet<String>,
    target: usize,
    converged_at: Option<Instant>,
    first_good_at: Option<Instant>,
    pending: HashMap<String, (Expect, Instant)>,
    delays: Vec<Duration>,
    superseded: u64,
    synced: bool,
}

/// Watches one resource in one namespace: counts objects passing a [`Check`] (cold convergence)
/// and timestamps expected changes (churn).
pub struct Tracker {
    state: Arc<Mutex<TrackerState>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Tracker {
    /// Start watching `resource` in `namespace`; `check` decides convergence per object.
    pub fn start(
        client: kube::Client,
        resource: &ApiResource,
        namespace: &str,
        check: Check,
    ) -> Self {
        let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, resource);
        let state = Arc::new(Mutex::new(TrackerState::default()));
        let notify = Arc::new(Notify::new());
        let task = {
            let state = state.clone();
            let notify = notify.clone();
            tokio::spawn(async move {
                let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
                while let Some(event) = events.next().await {
                    let now = Instant::now();
                    let (object, deleted) = match event {
                        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
                        Ok(watcher::Event::Delete(o)) => (o, true),
                        Ok(watcher::Event::InitDone) => {
                            if let Ok(mut s) = state.lock() {
                                s.synced = true;
                            }
                            notify.notify_waiters();
                            continue;
                        }
                        _ => continue,
                    };
                    let Some(name) = object.metadata.name.clone() else {
                        continue;
                    };
                    let Ok(value) = serde_json::to_value(&object) else {
                        continue;
                    };
                    let Ok(mut s) = state.lock() else { return };
                    if deleted || !check(&value) {
                        s.good.remove(&name);
                    } else {
                        s.good.insert(name.clone());
                        if s.first_good_at.is_none() && s.target > 0 {
                            s.first_good_at = Some(now);
                        }
                        if s.converged_at.is_none() && s.target > 0 && s.good.len() >= s.target {
                            s.converged_at = Some(now);
                        }
                    }
                    if let Some((expect, since)) = s.pending.get(&name).cloned()
                        && !deleted
                        && expect.met_by(&value)
                    {
                        s.pending.remove(&name);
                        s.delays.push(now.saturating_duration_since(since));
                    }
                    drop(s);
                    notify.notify_waiters();
                }
            })
        };
        Self {
            state,
            notify,
            task,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut TrackerState) -> T) -> Result<T> {
        let mut state = self.state.lock().map_err(|_| "tracker poisoned")?;
        Ok(f(&mut state))
    }

    /// Wait until `target` objects pass the check; returns when the last one did. Fails after
    /// `timeout` saying how many did.
    pub async fn converged(&self, target: usize, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        self.with(|s| {
            s.target = target;
            if s.converged_at.is_none() && s.good.len() >= target {
                s.converged_at = Some(Instant::now());
            }
        })?;
        loop {
            let notified = self.notify.notified();
            let (done, good) = self.with(|s| (s.converged_at, s.good.len()))?;
            if let Some(at) = done {
                return Ok(at);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {good} of {target} objects converged within {timeout:?}"
                )
                .into());
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
        }
    }

    /// When the first object passed the check after [`Tracker::converged`] was first called.
    pub fn first_converged_at(&self) -> Option<Instant> {
        self.with(|s| s.first_good_at).ok().flatten()
    }

    /// Wait until the watch has listed what exists (so its list is not counted as the
    /// adapter's).
    pub async fn synced(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if self.with(|s| s.synced)? {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the bench's watch did not sync within {timeout:?}").into());
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// Objects passing the check now.
    pub fn good(&self) -> Result<usize> {
        self.with(|s| s.good.len())
    }

    /// From now on, time how long `name` takes to meet `expect`.
    pub fn expect(&self, name: &str, expect: Expect) -> Result<()> {
        self.with(|s| {
            if s.pending
                .insert(name.to_string(), (expect, Instant::now()))
                .is_some()
            {
                s.superseded += 1;
            }
        })
    }

    /// Wait until no expectation is pending or `timeout` passed; returns (delays, still
    /// pending + superseded).
    pub async fn drain(&self, timeout: Duration) -> Result<(Vec<Duration>, u64)> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if self.with(|s| s.pending.is_empty())? || Instant::now() > deadline {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
        }
        self.with(|s| {
            let missed = s.pending.len() as u64 + s.superseded;
            s.pending.clear();
            s.superseded = 0;
            (std::mem::take(&mut s.delays), missed)
        })
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `q`-quantile (0..=1) of `delays` in milliseconds (nearest rank); 0 when empty.
pub fn quantile_ms(delays: &[Duration], q: f64) -> f64 {
    if delays.is_empty() {
        return 0.0;
    }
    let mut sorted: Vec<Duration> = delays.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}
