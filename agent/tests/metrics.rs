//! The `metrics` feature: per-site series reach whatever recorder the application
//! installed, on demand and from the agent thread at every sample.

use std::collections::BTreeMap;
use std::future::pending;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use leaktop_agent::sync::mpsc;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

/// A recorder that keeps the last value of every series, keyed
/// `name{label="value",…}` (labels in the order given).
#[derive(Default, Clone)]
struct Store(Arc<Mutex<BTreeMap<String, f64>>>);

struct Slot {
    store: Store,
    key: String,
}

impl Slot {
    fn update(&self, f: impl FnOnce(f64) -> f64) {
        let mut map = self.store.0.lock().unwrap();
        let v = map.entry(self.key.clone()).or_insert(0.0);
        *v = f(*v);
    }
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        self.update(|v| v + value as f64);
    }
    fn absolute(&self, value: u64) {
        self.update(|v| v.max(value as f64));
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

impl Store {
    fn slot(&self, key: &Key) -> Arc<Slot> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
            .collect();
        let key = if labels.is_empty() {
            key.name().to_string()
        } else {
            format!("{}{{{}}}", key.name(), labels.join(","))
        };
        Arc::new(Slot {
            store: self.clone(),
            key,
        })
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.0.lock().unwrap().get(key).copied()
    }

    fn dump(&self) -> String {
        format!("{:#?}", self.0.lock().unwrap())
    }
}

impl Recorder for Store {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[track_caller]
fn here() -> String {
    let l = std::panic::Location::caller();
    format!("{}:{}:{}", l.file(), l.line(), l.column())
}

#[track_caller]
fn spawn_idle(n: usize) -> String {
    let site = here();
    for _ in 0..n {
        spawn_at_caller();
    }
    site
}

#[track_caller]
fn spawn_at_caller() {
    leaktop_agent::spawn(pending::<()>());
}

/// Polls `f` until it holds, for at most 10 s.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn publish_sends_per_site_series_to_the_current_recorder() {
    let rt = rt();
    let _enter = rt.enter();
    let idle = spawn_idle(3);
    let (tx, rx) = mpsc::channel::<u32>(1);
    let mut sites = Vec::new();
    for _ in 0..2 {
        sites.push(spawn_sender(tx.clone()));
    }
    let blocked_site = sites[0].clone();
    let (done, h) = spawn_done();
    rt.block_on(h).unwrap();
    // Both senders block (one fills the channel's only slot first).
    let store = Store::default();
    let ok = eventually(|| {
        metrics::with_local_recorder(&store, leaktop_agent::metrics::publish);
        store.get(&format!(
            "leaktop_site_blocked{{site=\"{blocked_site}\",op=\"send\"}}"
        )) == Some(2.0)
    });
    assert!(ok, "{}", store.dump());

    let g = |name: &str, site: &str| {
        store
            .get(&format!("{name}{{site=\"{site}\"}}"))
            .unwrap_or_else(|| panic!("{name} of {site} missing: {}", store.dump()))
    };
    assert_eq!(g("leaktop_site_live", &idle), 3.0);
    assert_eq!(g("leaktop_site_spawned_total", &idle), 3.0);
    assert_eq!(g("leaktop_site_completed_total", &idle), 0.0);
    assert_eq!(
        store.get(&format!(
            "leaktop_site_blocked{{site=\"{idle}\",op=\"send\"}}"
        )),
        Some(0.0)
    );
    assert_eq!(g("leaktop_site_live", &blocked_site), 2.0);
    assert_eq!(
        store.get(&format!(
            "leaktop_site_blocked{{site=\"{blocked_site}\",op=\"recv\"}}"
        )),
        Some(0.0)
    );
    assert_eq!(g("leaktop_site_live", &done), 0.0);
    assert_eq!(g("leaktop_site_spawned_total", &done), 1.0);
    assert_eq!(g("leaktop_site_completed_total", &done), 1.0);
    assert_eq!(g("leaktop_site_oldest_live_seconds", &done), 0.0);
    assert!(g("leaktop_site_oldest_live_seconds", &idle) >= 0.0);
    // Nobody receives: the senders' channel has made no progress since they blocked,
    // and the stall the agent reports grows past a second.
    assert!(
        eventually(|| {
            metrics::with_local_recorder(&store, leaktop_agent::metrics::publish);
            g("leaktop_site_stalled_seconds", &blocked_site) >= 1.0
        }),
        "{}",
        store.dump()
    );
    assert_eq!(g("leaktop_site_stalled_seconds", &idle), 0.0);
    assert!(store.get("leaktop_sites_seen").unwrap_or(0.0) >= 3.0);
    drop(rx);
}

/// `series::AGENT` is the list dashboards and alerting rules are checked against
/// (tests/export.rs): it must be exactly what `publish` sends, names and label keys.
#[test]
fn publish_sends_exactly_the_series_listed_in_series_agent() {
    let rt = rt();
    let _enter = rt.enter();
    let (tx, rx) = mpsc::channel::<u32>(1);
    spawn_sender(tx);
    let store = Store::default();
    metrics::with_local_recorder(&store, leaktop_agent::metrics::publish);
    let mut published: Vec<(String, Vec<String>)> = store
        .0
        .lock()
        .unwrap()
        .keys()
        .map(|key| {
            let (name, labels) = key.split_once('{').unwrap_or((key, "}"));
            let labels = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| l.split('=').next().unwrap_or(l).to_string())
                .collect();
            (name.to_string(), labels)
        })
        .collect();
    published.sort();
    published.dedup();
    let mut listed: Vec<(String, Vec<String>)> = leaktop_agent::series::AGENT
        .iter()
        .map(|s| {
            let labels = s.labels.iter().map(|l| l.to_string()).collect();
            (s.name.to_string(), labels)
        })
        .collect();
    listed.sort();
    assert_eq!(published, listed, "{}", store.dump());
    drop(rx);
}

#[track_caller]
fn spawn_sender(tx: mpsc::Sender<u32>) -> String {
    let site = here();
    leaktop_agent::spawn(async move {
        let _ = tx.send(1).await;
        let _ = tx.send(2).await;
    });
    site
}

#[track_caller]
fn spawn_done() -> (String, leaktop_agent::task::JoinHandle<()>) {
    (here(), leaktop_agent::spawn(async {}))
}

#[test]
fn the_agent_thread_publishes_to_the_global_recorder() {
    static STORE: OnceLock<Store> = OnceLock::new();
    let store = STORE.get_or_init(Store::default).clone();
    metrics::set_global_recorder(store.clone()).expect("no other global recorder");
    let dir = std::env::temp_dir().join(format!("leaktop-metrics-{}", std::process::id()));
    let _agent = leaktop_agent::Builder::new()
        .socket_dir(&dir)
        .sample_interval(Duration::from_millis(50))
        .start()
        .expect("agent");
    let rt = rt();
    let _enter = rt.enter();
    let site = spawn_idle(4);
    let key = format!("leaktop_site_live{{site=\"{site}\"}}");
    assert!(
        eventually(|| store.get(&key) == Some(4.0)),
        "{}",
        store.dump()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
