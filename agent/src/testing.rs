//! Leak checks for tests: the Rust `goleak`.
//!
//! At the end of a test, check that every task the test spawned through the agent
//! ([`crate::spawn`], [`crate::spawn_local`], [`crate::instrument`]) has finished:
//!
//! ```
//! #[tokio::test(flavor = "multi_thread")]
//! # async fn _t() {}
//! async fn no_task_outlives_the_test() {
//!     let _guard = leaktop_agent::testing::guard(); // checks when dropped
//!     let (tx, mut rx) = leaktop_agent::sync::mpsc::channel::<u32>(1);
//!     leaktop_agent::spawn(async move { tx.send(1).await.unwrap() });
//!     assert_eq!(rx.recv().await, Some(1));
//! }
//! ```
//!
//! A check waits, retrying with backoff, up to a deadline (default
//! [`DEFAULT_DEADLINE`], like goleak's) for the tasks to finish, then fails listing each
//! leaked task: its spawn site, state, the blocking call site and channel it waits on,
//! its age, and (symbolized in the test process) the functions that spawned it and its
//! await chain.
//!
//! # Whose tasks
//!
//! Tests of one binary run in parallel threads, so a check looks only at the test's own
//! tasks: a guard opens a *scope* on the thread that creates it (for `#[tokio::test]` the
//! test body runs on that thread). A task spawned from that thread outside any task, or
//! spawned by a task of the scope, belongs to the scope. Tasks spawned from other threads
//! by code that is not itself a task of the scope (a thread the test started, a
//! `spawn_blocking` closure, a plain `tokio::spawn` task) do not: check those with
//! [`Options::all_tasks`] (every instrumented task of the process: right under
//! `cargo nextest`, which runs each test in its own process).
//!
//! A guard created inside an instrumented task scopes that task's later children instead
//! of the thread, and never counts the task itself.
//!
//! # `#[tokio::test]` and the current-thread runtime
//!
//! The default `#[tokio::test]` runs every task on the test thread. A guard dropped at the
//! end of such a test runs inside that runtime and cannot wait for tasks to finish
//! (waiting would block the only thread that runs them), so it checks once, at once. To
//! give tasks the usual grace period there, end the test with
//! `guard.finish().await` (or [`Options::verify_async`]), or use
//! `#[tokio::test(flavor = "multi_thread")]`.
//!
//! # With the `tokio-hooks` feature
//!
//! Tasks spawned with plain `tokio::spawn` on a runtime built with
//! `hooks::BuilderExt::leaktop_hooks` are checked too (scoped the same way when
//! spawned from the test thread or from a task of the scope); their state is unknown.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::blocked;
use crate::instrumented as task;
use crate::registry::{lock, registry, Site, TaskCell, STATE_BLOCKED};
use crate::stack::{self, MAX_FRAMES};
use crate::wire::{SiteKind, StackId};

/// How long a check waits for tasks to finish by default: goleak's retries add up to about
/// half a second.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(500);
/// Longest pause between two looks.
const MAX_PAUSE: Duration = Duration::from_millis(50);
/// Leaked tasks listed one by one; the rest are summed up per spawn site.
const MAX_LISTED: usize = 50;

thread_local! {
    /// The scope a guard installed on this thread (0: none).
    static THREAD_SCOPE: Cell<u32> = const { Cell::new(0) };
}

/// Scope ids are u32 to keep `TaskCell` small (4 billion leak checks per process).
static NEXT_SCOPE: AtomicU32 = AtomicU32::new(1);

/// The scope a task spawned right now belongs to: its spawning task's, else the thread's.
#[inline]
pub(crate) fn inherited_scope() -> u32 {
    if let Some(s) = task::with_current(|c| c.map(|c| c.scope.load(Relaxed))) {
        return s;
    }
    THREAD_SCOPE.try_with(Cell::get).unwrap_or(0)
}

/// The stack at a spawn inside a scope (tests only), as StackId + 1 (0: none).
#[cold]
#[inline(never)]
pub(crate) fn spawn_stack() -> u32 {
    let mut buf = [0u64; MAX_FRAMES];
    let n = stack::capture(&mut buf, task::poll_frame());
    registry().stacks().intern(&buf[..n]).map_or(0, |id| id + 1)
}

/// Starts a guard with default options: see [`Options::guard`].
pub fn guard() -> LeakGuard {
    Options::new().guard()
}

/// Checks now, with default options, that no instrumented task is left: the tasks of the
/// current scope (a guard's) if there is one, else every instrumented task of the process.
/// Waits up to [`DEFAULT_DEADLINE`] for them to finish.
pub fn verify_none() -> Result<(), Leaks> {
    Options::new().verify()
}

/// [`verify_none`], panicking with the list of leaked tasks.
#[track_caller]
pub fn assert_no_leaks() {
    if let Err(leaks) = verify_none() {
        panic!("{leaks}");
    }
}

/// What a check looks at and how long it waits.
#[derive(Clone, Debug)]
pub struct Options {
    deadline: Duration,
    ignore_current: bool,
    ignore_sites: Vec<String>,
    ignore_functions: Vec<String>,
    all_tasks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    pub fn new() -> Options {
        Options {
            deadline: DEFAULT_DEADLINE,
            ignore_current: false,
            ignore_sites: Vec::new(),
            ignore_functions: Vec::new(),
            all_tasks: false,
        }
    }

    /// How long to wait for tasks to finish before calling them leaked.
    pub fn deadline(mut self, wait: Duration) -> Options {
        self.deadline = wait;
        self
    }

    /// Ignores the tasks already alive when the guard is created (goleak's
    /// `IgnoreCurrent`): useful with [`Options::all_tasks`], or for a guard opened in the
    /// middle of a scope.
    pub fn ignore_current(mut self) -> Options {
        self.ignore_current = true;
        self
    }

    /// Ignores tasks whose spawn site (`file:line:column`) contains `pattern`.
    pub fn ignore_site(mut self, pattern: impl Into<String>) -> Options {
        self.ignore_sites.push(pattern.into());
        self
    }

    /// Ignores tasks with a function whose name contains `pattern` among the functions
    /// that spawned them or in their await chain (known for tasks blocked on an
    /// instrumented channel). Names are demangled paths such as `my_crate::server::run`.
    pub fn ignore_function(mut self, pattern: impl Into<String>) -> Options {
        self.ignore_functions.push(pattern.into());
        self
    }

    /// Checks every instrumented task of the process instead of the scope's.
    pub fn all_tasks(mut self) -> Options {
        self.all_tasks = true;
        self
    }

    /// Opens a scope on this thread (or joins the one it is in) and checks it when the
    /// guard is dropped (or by [`LeakGuard::verify`] / [`LeakGuard::finish`]). A failed
    /// check in drop panics, unless the thread is already panicking.
    pub fn guard(self) -> LeakGuard {
        LeakGuard::new(self)
    }

    /// Checks now, waiting (blocking this thread) up to the deadline. Looks at the
    /// current scope if there is one, else at every instrumented task of the process.
    pub fn verify(&self) -> Result<(), Leaks> {
        let check = Check::now(
            self,
            current_scope_or_all(self.all_tasks),
            Baseline::empty(),
        );
        check.run_blocking()
    }

    /// [`Options::verify`] for async tests: waits with `tokio::time::sleep`, so tasks on a
    /// current-thread runtime keep running meanwhile.
    pub async fn verify_async(&self) -> Result<(), Leaks> {
        let check = Check::now(
            self,
            current_scope_or_all(self.all_tasks),
            Baseline::empty(),
        );
        check.run_async().await
    }
}

fn current_scope_or_all(all: bool) -> Target {
    match inherited_scope() {
        s if s != 0 && !all => Target::Scope(s),
        _ => Target::All,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Scope(u32),
    All,
}

/// Tasks to leave out of a check: alive at the guard's creation, or the checker itself.
#[derive(Clone, Debug, Default)]
struct Baseline {
    tasks: HashSet<u64>,
    #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
    hooked: HashSet<tokio::task::Id>,
}

impl Baseline {
    fn empty() -> Baseline {
        Baseline::default()
    }
}

/// Where the guard installed its scope, to restore on drop.
enum Installed {
    /// Joined a scope that was already in force: nothing to restore.
    Nothing,
    Thread {
        thread: std::thread::ThreadId,
        prev: u32,
    },
    Task {
        cell: Arc<TaskCell>,
        prev: u32,
    },
}

/// Checks, when dropped, that every task of its scope has finished. See the module docs.
#[must_use = "the guard checks when it is dropped; bind it: `let _guard = ...`"]
pub struct LeakGuard {
    options: Options,
    target: Target,
    baseline: Baseline,
    installed: Installed,
    armed: bool,
}

impl fmt::Debug for LeakGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakGuard")
            .field("target", &self.target)
            .field("armed", &self.armed)
            .finish()
    }
}

impl LeakGuard {
    fn new(options: Options) -> LeakGuard {
        let current = task::with_current(|c| c.cloned());
        let in_force = inherited_scope();
        let (scope, installed) = if in_force != 0 {
            (in_force, Installed::Nothing)
        } else {
            let scope = NEXT_SCOPE.fetch_add(1, Relaxed);
            match &current {
                Some(cell) => {
                    let prev = cell.scope.swap(scope, Relaxed);
                    (
                        scope,
                        Installed::Task {
                            cell: cell.clone(),
                            prev,
                        },
                    )
                }
                None => {
                    let prev = THREAD_SCOPE.try_with(|s| s.replace(scope)).unwrap_or(0);
                    (
                        scope,
                        Installed::Thread {
                            thread: std::thread::current().id(),
                            prev,
                        },
                    )
                }
            }
        };
        let target = if options.all_tasks {
            Target::All
        } else {
            Target::Scope(scope)
        };
        let mut baseline = Baseline::empty();
        if options.ignore_current {
            baseline = alive_now(target);
        }
        if let Some(cell) = &current {
            baseline.tasks.insert(cell.id);
        }
        LeakGuard {
            options,
            target,
            baseline,
            installed,
            armed: true,
        }
    }

    /// The scope's tasks as a check would see them now, without waiting.
    pub fn leaked_now(&self) -> Vec<LeakedTask> {
        Check::now(&self.options, self.target, self.baseline.clone()).report()
    }

    /// Checks now, waiting (blocking this thread) up to the deadline, and closes the
    /// guard without a further check.
    pub fn verify(mut self) -> Result<(), Leaks> {
        self.armed = false;
        self.restore();
        Check::now(&self.options, self.target, self.baseline.clone()).run_blocking()
    }

    /// Checks now, waiting with `tokio::time::sleep` (so a current-thread runtime keeps
    /// running the tasks) up to the deadline, and closes the guard.
    pub async fn verify_async(mut self) -> Result<(), Leaks> {
        self.armed = false;
        self.restore();
        Check::now(&self.options, self.target, self.baseline.clone())
            .run_async()
            .await
    }

    /// [`LeakGuard::verify_async`], panicking with the list of leaked tasks: the last line
    /// of an async test.
    pub async fn finish(self) {
        if let Err(leaks) = self.verify_async().await {
            panic!("{leaks}");
        }
    }

    /// Closes the guard without checking.
    pub fn disarm(mut self) {
        self.armed = false;
        self.restore();
    }

    fn restore(&mut self) {
        match std::mem::replace(&mut self.installed, Installed::Nothing) {
            Installed::Nothing => {}
            Installed::Thread { thread, prev } => {
                if std::thread::current().id() == thread {
                    let _ = THREAD_SCOPE.try_with(|s| s.set(prev));
                }
            }
            Installed::Task { cell, prev } => cell.scope.store(prev, Relaxed),
        }
    }
}

impl Drop for LeakGuard {
    fn drop(&mut self) {
        self.restore();
        if !self.armed || std::thread::panicking() {
            return;
        }
        self.armed = false;
        let check = Check::now(&self.options, self.target, self.baseline.clone());
        let in_current_thread_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        let result = if in_current_thread_runtime {
            check.run_once(Some(
                "checked once without waiting: the guard was dropped inside a current-thread \
                 runtime, which cannot run tasks while the guard waits. End the test with \
                 `guard.finish().await`, or use #[tokio::test(flavor = \"multi_thread\")], to \
                 give tasks time to finish",
            ))
        } else {
            check.run_blocking()
        };
        if let Err(leaks) = result {
            panic!("{leaks}");
        }
    }
}

/// Instrumented (and hooked) tasks of `target` alive now.
fn alive_now(target: Target) -> Baseline {
    let mut b = Baseline::empty();
    for site in registry().sites() {
        let inner = lock(&site.inner);
        for cell in inner.tasks.iter() {
            if in_target(cell.scope.load(Relaxed), target) {
                b.tasks.insert(cell.id);
            }
        }
        #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
        for (id, (_, scope)) in &inner.hooked {
            if in_target(*scope, target) {
                b.hooked.insert(*id);
            }
        }
    }
    b
}

fn in_target(scope: u32, target: Target) -> bool {
    match target {
        Target::All => true,
        Target::Scope(s) => scope == s,
    }
}

/// One check: what to look at, and the caches of one run.
struct Check<'a> {
    options: &'a Options,
    target: Target,
    baseline: Baseline,
    started: Instant,
    /// Per site: ignored by spawn site?
    site_ignored: HashMap<usize, bool>,
    /// Per stack: ignored by function?
    stack_ignored: HashMap<StackId, bool>,
    symbols: Symbols,
}

impl<'a> Check<'a> {
    fn now(options: &'a Options, target: Target, baseline: Baseline) -> Check<'a> {
        Check {
            options,
            target,
            baseline,
            started: Instant::now(),
            site_ignored: HashMap::new(),
            stack_ignored: HashMap::new(),
            symbols: Symbols::default(),
        }
    }

    fn run_blocking(mut self) -> Result<(), Leaks> {
        let deadline = self.started + self.options.deadline;
        let mut pause = Duration::from_micros(200);
        loop {
            if self.count() == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return self.fail(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    async fn run_async(mut self) -> Result<(), Leaks> {
        let deadline = self.started + self.options.deadline;
        let mut pause = Duration::from_micros(200);
        loop {
            // Let ready tasks run first (on a current-thread runtime, they run only now).
            tokio::task::yield_now().await;
            if self.count() == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return self.fail(None);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    fn run_once(mut self, note: Option<&str>) -> Result<(), Leaks> {
        if self.count() == 0 {
            return Ok(());
        }
        self.fail(note)
    }

    fn fail(mut self, note: Option<&str>) -> Result<(), Leaks> {
        let waited = self.started.elapsed();
        let tasks = self.leaked();
        if tasks.is_empty() {
            // Finished between the last count and now.
            return Ok(());
        }
        Err(Leaks {
            tasks,
            waited,
            note: note.map(str::to_string),
        })
    }

    fn report(mut self) -> Vec<LeakedTask> {
        self.leaked()
    }

    fn site_ignored(&mut self, site: &Site) -> bool {
        if self.options.ignore_sites.is_empty() {
            return false;
        }
        let key = site as *const Site as usize;
        if let Some(v) = self.site_ignored.get(&key) {
            return *v;
        }
        let text = site_text(site);
        let v = self
            .options
            .ignore_sites
            .iter()
            .any(|p| text.contains(p.as_str()));
        self.site_ignored.insert(key, v);
        v
    }

    fn stack_ignored(&mut self, stack: Option<StackId>) -> bool {
        let Some(id) = stack else { return false };
        if self.options.ignore_functions.is_empty() {
            return false;
        }
        if let Some(v) = self.stack_ignored.get(&id) {
            return *v;
        }
        let frames = self.symbols.functions(id);
        let v = frames.iter().any(|f| {
            self.options
                .ignore_functions
                .iter()
                .any(|p| f.name.contains(p.as_str()))
        });
        self.stack_ignored.insert(id, v);
        v
    }

    /// Whether an instrumented task counts: in the target, not in the baseline, not
    /// ignored by its spawn stack (its await chain is looked at when reporting).
    fn counts(&mut self, site: &Site, cell: &TaskCell) -> bool {
        in_target(cell.scope.load(Relaxed), self.target)
            && !self.baseline.tasks.contains(&cell.id)
            && !self.site_ignored(site)
            && !self.stack_ignored(cell.spawn_stack.load(Relaxed).checked_sub(1))
    }

    /// Number of tasks that count, without details. No promotion, no symbolization
    /// unless function filters ask for it.
    fn count(&mut self) -> usize {
        let mut n = 0;
        for site in registry().sites() {
            if !self.options.ignore_functions.is_empty() {
                // Await chains of waits that began since the agent last looked.
                blocked::promote(site);
            }
            let cells: Vec<Arc<TaskCell>> = lock(&site.inner).tasks.iter().cloned().collect();
            for cell in cells {
                if self.counts(site, &cell) && !self.await_chain_ignored(site, &cell) {
                    n += 1;
                }
            }
            #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
            {
                n += self.hooked_of(site).len();
            }
        }
        n
    }

    /// Whether the task's current await chain (if it waits on a channel) names an
    /// ignored function.
    fn await_chain_ignored(&mut self, site: &Site, cell: &TaskCell) -> bool {
        if self.options.ignore_functions.is_empty() {
            return false;
        }
        let wait = blocked_on(site, cell);
        self.stack_ignored(wait.and_then(|w| w.1.stack))
    }

    #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
    fn hooked_of(&mut self, site: &Site) -> Vec<(tokio::task::Id, u64)> {
        let live: Vec<(tokio::task::Id, u64, u32)> = lock(&site.inner)
            .hooked
            .iter()
            .map(|(id, (ms, scope))| (*id, *ms, *scope))
            .collect();
        if live.is_empty() || self.site_ignored(site) {
            return Vec::new();
        }
        live.into_iter()
            .filter(|(id, _, scope)| {
                in_target(*scope, self.target) && !self.baseline.hooked.contains(id)
            })
            .map(|(id, ms, _)| (id, ms))
            .collect()
    }

    /// The tasks that count, with their details, oldest first.
    fn leaked(&mut self) -> Vec<LeakedTask> {
        let now = crate::clock::now_ms();
        let reg = registry();
        let mut out = Vec::new();
        for site in reg.sites() {
            // Waits that began since the agent last looked become visible.
            blocked::promote(site);
            let cells: Vec<Arc<TaskCell>> = lock(&site.inner).tasks.iter().cloned().collect();
            for cell in cells {
                if !self.counts(site, &cell) {
                    continue;
                }
                let wait = blocked_on(site, &cell);
                let chain = wait.as_ref().and_then(|w| w.1.stack);
                if self.stack_ignored(chain) {
                    continue;
                }
                let state = match cell.state.load(Relaxed) {
                    STATE_BLOCKED => TaskState::Blocked,
                    _ if wait.is_some() => TaskState::Blocked,
                    _ if crate::instrumented::is_polled(&cell) => TaskState::Running,
                    _ => TaskState::Idle,
                };
                let blocked = wait.map(|(since, key)| BlockedOn {
                    op: key.op.name(),
                    call_site: location_text(key.call_site),
                    channel: reg
                        .chan_sites()
                        .by_loc(key.channel_site)
                        .map_or("channel", |c| c.kind.name()),
                    channel_site: location_text(key.channel_site),
                    waiting: Duration::from_millis(now.saturating_sub(since)),
                });
                let spawned_by = cell
                    .spawn_stack
                    .load(Relaxed)
                    .checked_sub(1)
                    .map(|id| self.symbols.functions(id))
                    .unwrap_or_default();
                let await_chain = chain
                    .map(|id| self.symbols.functions(id))
                    .unwrap_or_default();
                out.push(LeakedTask {
                    id: cell.id.to_string(),
                    spawn_site: site_text(site),
                    state,
                    blocked,
                    age: Duration::from_millis(now.saturating_sub(cell.spawned_ms)),
                    spawned_by,
                    await_chain,
                    spawned_ms: cell.spawned_ms,
                });
            }
            #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
            for (id, ms) in self.hooked_of(site) {
                out.push(LeakedTask {
                    id: format!("tokio:{id}"),
                    spawn_site: site_text(site),
                    state: TaskState::Unknown,
                    blocked: None,
                    age: Duration::from_millis(now.saturating_sub(ms)),
                    spawned_by: Vec::new(),
                    await_chain: Vec::new(),
                    spawned_ms: ms,
                });
            }
        }
        out.sort_by_key(|t| t.spawned_ms);
        out
    }
}

/// Since when and in which group `cell` waits (its first wait), if known.
fn blocked_on(site: &Site, cell: &TaskCell) -> Option<(u64, crate::wire::GroupKey)> {
    let slot = cell.blocked_slot.load(Relaxed).checked_sub(1)?;
    lock(&site.inner).blocked.waiter(slot)
}

fn location_text(id: crate::wire::LocId) -> String {
    registry()
        .location(id)
        .map_or_else(|| "<unknown location>".to_string(), |l| l.to_string())
}

fn site_text(site: &Site) -> String {
    match site.kind {
        SiteKind::Spawn | SiteKind::Blocking => location_text(site.loc),
        SiteKind::Uninstrumented => "<uninstrumented task>".to_string(),
        SiteKind::Other => "<other sites, past the site cap>".to_string(),
    }
}

/// What a leaked task was doing when the check gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Being polled right now.
    Running,
    /// Waiting on something the agent does not see (a socket, a timer, a lock, a future
    /// that is never woken).
    Idle,
    /// Waiting on an instrumented channel.
    Blocked,
    /// Counted by runtime hooks only: no state is known.
    Unknown,
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Idle => "idle",
            TaskState::Blocked => "blocked",
            TaskState::Unknown => "state unknown (plain tokio::spawn)",
        }
    }
}

/// The channel wait of a leaked task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedOn {
    /// `chan send`, `chan recv`, `watch changed`, …
    pub op: &'static str,
    /// Where the task called the blocking operation.
    pub call_site: String,
    /// Kind of channel: `mpsc`, `oneshot`, …
    pub channel: &'static str,
    /// Where the channel was created.
    pub channel_site: String,
    /// How long the task has waited there.
    pub waiting: Duration,
}

/// A function of a symbolized stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub name: String,
    /// `file:line`, when debuginfo has it.
    pub location: Option<String>,
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{} ({l})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One task left behind.
#[derive(Clone, Debug)]
pub struct LeakedTask {
    /// The agent's task id (`tokio:<id>` for tasks seen by runtime hooks only).
    pub id: String,
    /// `file:line:column` of the spawn.
    pub spawn_site: String,
    pub state: TaskState,
    /// The channel it waits on, if it waits on an instrumented one.
    pub blocked: Option<BlockedOn>,
    /// Time since the spawn.
    pub age: Duration,
    /// Functions on the stack at the spawn, innermost first (runtime, std and agent frames
    /// left out).
    pub spawned_by: Vec<Frame>,
    /// The await chain of its channel wait, innermost first (same filtering).
    pub await_chain: Vec<Frame>,
    spawned_ms: u64,
}

impl fmt::Display for LeakedTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} spawned at {}, {}",
            self.id,
            self.spawn_site,
            self.state.name()
        )?;
        if let Some(b) = &self.blocked {
            write!(
                f,
                " in {} at {} on a {} channel created at {} for {}",
                b.op,
                b.call_site,
                b.channel,
                b.channel_site,
                ms(b.waiting)
            )?;
        }
        write!(f, ", age {}", ms(self.age))?;
        if let Some(top) = self.spawned_by.first() {
            write!(f, "\n      spawned by {top}")?;
            for frame in self.spawned_by.iter().skip(1).take(3) {
                write!(f, "\n               <- {frame}")?;
            }
        }
        if !self.await_chain.is_empty() {
            write!(f, "\n      await chain:")?;
            for frame in self.await_chain.iter().take(8) {
                write!(f, "\n        {frame}")?;
            }
        }
        Ok(())
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 10_000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A failed check: the tasks still alive at the deadline.
#[derive(Clone, Debug)]
pub struct Leaks {
    /// Oldest first.
    pub tasks: Vec<LeakedTask>,
    /// How long the check waited.
    pub waited: Duration,
    /// Why the check did not wait, if it did not.
    pub note: Option<String>,
}

impl fmt::Display for Leaks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.tasks.len();
        write!(
            f,
            "leaktop: {n} leaked task{} still alive after waiting {}:",
            if n == 1 { "" } else { "s" },
            ms(self.waited)
        )?;
        for t in self.tasks.iter().take(MAX_LISTED) {
            write!(f, "\n  {t}")?;
        }
        if n > MAX_LISTED {
            let mut rest: Vec<(&str, usize)> = Vec::new();
            for t in &self.tasks[MAX_LISTED..] {
                match rest.iter_mut().find(|(s, _)| *s == t.spawn_site) {
                    Some((_, c)) => *c += 1,
                    None => rest.push((&t.spawn_site, 1)),
                }
            }
            write!(f, "\n  … and {} more:", n - MAX_LISTED)?;
            for (site, c) in rest {
                write!(f, "\n    {c} spawned at {site}")?;
            }
        }
        if let Some(note) = &self.note {
            write!(f, "\n  note: {note}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Leaks {}

/// In-process symbolization of the few stacks a check reports (tests only: the agent
/// never symbolizes in production).
#[derive(Default)]
struct Symbols {
    cache: HashMap<StackId, Vec<Frame>>,
}

impl Symbols {
    fn functions(&mut self, id: StackId) -> Vec<Frame> {
        if let Some(f) = self.cache.get(&id) {
            return f.clone();
        }
        let ips = registry().stacks().get(id).unwrap_or_default();
        let mut out: Vec<Frame> = Vec::new();
        for ip in ips {
            // Return addresses point after the call.
            let addr = (ip as usize).saturating_sub(1) as *mut std::ffi::c_void;
            backtrace::resolve(addr, |sym| {
                let Some(name) = sym.name().map(|n| format!("{n:#}")) else {
                    return;
                };
                if is_plumbing(&name) {
                    return;
                }
                let location = match (sym.filename(), sym.lineno()) {
                    (Some(file), Some(line)) => Some(format!("{}:{line}", file.display())),
                    _ => None,
                };
                let name = name
                    .trim_end_matches("::{{closure}}")
                    .trim_end_matches("::{{closure}}")
                    .to_string();
                if out.last().is_some_and(|l| l.name == name) {
                    return;
                }
                out.push(Frame { name, location });
            });
        }
        self.cache.insert(id, out.clone());
        out
    }
}

/// Frames of the runtime, std, the agent and the test harness.
fn is_plumbing(name: &str) -> bool {
    let name = name.trim_start_matches('<');
    const PREFIXES: &[&str] = &[
        "leaktop_agent::",
        "backtrace::",
        "tokio::",
        "std::",
        "core::",
        "alloc::",
        "test::",
        "__rust",
        "__libc",
        "_start",
        "start_thread",
        "clone",
        "pin_project_lite::",
        "fn(",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}
