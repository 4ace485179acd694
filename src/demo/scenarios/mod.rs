//! The seven acceptance scenarios of DESIGN.md, each a Rust twin of a leak from the seeds.
//! Every scenario marks its leaking spawn with `// leak-site: <name>` and the call its
//! tasks block in with `// block-site: <name>`, so the end-to-end tests can find the
//! exact locations leaktop must report.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

mod conn_pair;
mod fan_out;
mod forgotten_sender;
mod pending_map;
mod sent_twice;
mod slow_call;
mod watcher;

/// How fast a scenario runs: one request (or job, or connection) per `tick`; `deadline`
/// is how long a caller waits where the scenario has a deadline.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub tick: Duration,
    pub deadline: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace::with_tick(Duration::from_millis(500))
    }
}

impl Pace {
    pub fn with_tick(tick: Duration) -> Pace {
        Pace {
            tick,
            deadline: tick / 5,
        }
    }
}

type RunFn = fn(bool, Pace) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// One scenario: its name on the command line, the story, the seed it comes from, the fix
/// of its twin, and the program.
pub struct Scenario {
    pub name: &'static str,
    pub story: &'static str,
    pub seed: &'static str,
    pub fix: &'static str,
    /// Source file, for the tests that look up the marked lines.
    pub file: &'static str,
    pub run: RunFn,
}

macro_rules! scenario {
    ($module:ident, $name:literal, $story:literal, $seed:literal, $fix:literal) => {
        Scenario {
            name: $name,
            story: $story,
            seed: $seed,
            fix: $fix,
            file: concat!("src/demo/scenarios/", stringify!($module), ".rs"),
            run: |fixed, pace| Box::pin($module::run(fixed, pace)),
        }
    };
}

pub static SCENARIOS: &[Scenario] = &[
    scenario!(
        forgotten_sender,
        "forgotten-sender",
        "a search task blocks on send: the handler timed out and parked the receiver, unread",
        "000 \"The Forgotten Sender\"",
        "a channel buffered for every value sent"
    ),
    scenario!(
        sent_twice,
        "sent-twice",
        "two replicas answer each request, one answer is read: losers block on send",
        "001 fetchAll (sent twice, received once)",
        "select the send against the request's cancellation"
    ),
    scenario!(
        slow_call,
        "slow-call",
        "an analytics call to a server that never answers, with no timeout: tasks pile up idle",
        "001 http.Get without timeout / 004 scenario 1",
        "a timeout around the call"
    ),
    scenario!(
        watcher,
        "watcher",
        "a cleanup helper per job waits for a parent signal that never comes",
        "003 LeakyAsync",
        "a cancellation token cancelled when the job returns (ContextAsync)"
    ),
    scenario!(
        fan_out,
        "fan-out",
        "a task per message, each blocked on a full downstream channel",
        "004 scenario 2 (event processing pipeline)",
        "a bounded pool of workers"
    ),
    scenario!(
        pending_map,
        "pending-map",
        "RPC callers await replies whose senders sit in a map nobody drains after a hang-up",
        "004 scenario 3 (microservice with RPC calls)",
        "drain the pending map when the connection ends"
    ),
    scenario!(
        conn_pair,
        "conn-pair",
        "per-connection writer blocks on recv: a registry still holds its sender after the peer left",
        "004 scenario 4 (WebSocket connection handler)",
        "remove the registry entry when the reader ends"
    ),
];
