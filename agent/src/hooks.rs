//! Plain `tokio::spawn` coverage through tokio's runtime task hooks (feature
//! `tokio-hooks`; needs `RUSTFLAGS="--cfg tokio_unstable"`).
//!
//! ```
//! use leaktop_agent::hooks::BuilderExt;
//!
//! fn main() -> std::io::Result<()> {
//!     let runtime = tokio::runtime::Builder::new_multi_thread()
//!         .enable_all()
//!         .leaktop_hooks() // on_task_spawn + on_task_terminate
//!         .build()?;
//!     runtime.block_on(async {
//!         if let Err(e) = leaktop_agent::start() {
//!             eprintln!("leaktop agent not started: {e}");
//!         }
//!         let guard = leaktop_agent::testing::guard();
//!         let (tx, rx) = tokio::sync::oneshot::channel::<()>();
//!         let task = tokio::spawn(async move {
//!             let _ = rx.await; // plain tokio::spawn: counted under this line by the hooks
//!         });
//!         assert_eq!(guard.leaked_now().len(), 1);
//!         drop(tx);
//!         task.await.unwrap();
//!         guard.finish().await;
//!     });
//!     Ok(())
//! }
//! ```
//!
//! This module, and so its example, exists only with the feature and
//! `--cfg tokio_unstable`: `scripts/test.sh` runs the example that way (the default doctest
//! run cannot: it has no `tokio_unstable` build of tokio).
//!
//! Every task spawned on that runtime (by the program or by any library it uses) is then
//! counted under its spawn site (`file:line:column`, from `TaskMeta::spawned_at`): live,
//! spawned and completed, with its spawn time for the oldest-task age. These tasks have
//! no running or blocked state (the hooks see only spawn and termination) unless they use
//! the agent's instrumented channels, and no await chain. Tasks spawned with
//! [`crate::spawn`] are counted once, by the agent, not again by the hooks.
//!
//! A runtime has one spawn hook and one terminate hook: to keep your own, call
//! [`on_task_spawn`] and [`on_task_terminate`] from them instead of using
//! [`BuilderExt::leaktop_hooks`].
//!
//! Cost: every spawn and every termination on the runtime takes a site lookup (a
//! thread-local cache hit in spawn loops) and a short lock of that site's table. See
//! `docs/hooks.md` for the trade-off against [`crate::spawn`].

#[cfg(not(tokio_unstable))]
compile_error!(
    "the `tokio-hooks` feature of leaktop-agent uses tokio's unstable runtime hooks: build with \
     RUSTFLAGS=\"--cfg tokio_unstable\" (or put `rustflags = [\"--cfg\", \"tokio_unstable\"]` \
     under [build] in .cargo/config.toml), or turn the feature off"
);

use std::cell::Cell;
use std::sync::atomic::Ordering::Relaxed;

use tokio::runtime::TaskMeta;

use crate::clock;
use crate::registry::{lock, registry};

thread_local! {
    /// Set while the agent itself spawns an instrumented task on this thread.
    static SKIP: Cell<bool> = const { Cell::new(false) };
}

/// Marks the spawns on this thread, while alive, as the agent's own (already counted).
pub(crate) struct SkipHook(bool);

impl SkipHook {
    pub(crate) fn new() -> SkipHook {
        SkipHook(SKIP.try_with(|s| s.replace(true)).unwrap_or(false))
    }
}

impl Drop for SkipHook {
    fn drop(&mut self) {
        let _ = SKIP.try_with(|s| s.set(self.0));
    }
}

/// Installs leaktop's task hooks on a runtime builder.
pub trait BuilderExt {
    /// Counts every task spawned on the runtime under its spawn site. Replaces any
    /// `on_task_spawn` / `on_task_terminate` callback set before (a runtime has one of
    /// each).
    fn leaktop_hooks(&mut self) -> &mut Self;
}

impl BuilderExt for tokio::runtime::Builder {
    fn leaktop_hooks(&mut self) -> &mut Self {
        self.on_task_spawn(on_task_spawn)
            .on_task_terminate(on_task_terminate)
    }
}

/// The spawn hook: call it from your own `on_task_spawn` callback to combine both.
pub fn on_task_spawn(meta: &TaskMeta<'_>) {
    if SKIP.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    let reg = registry();
    let site = reg.site(meta.spawned_at());
    let scope = crate::testing::inherited_scope();
    let now = clock::coarse_now_ms();
    lock(&site.inner).hooked.insert(meta.id(), (now, scope));
    site.spawned.fetch_add(1, Relaxed);
    site.live.fetch_add(1, Relaxed);
}

/// The terminate hook: call it from your own `on_task_terminate` callback to combine both.
pub fn on_task_terminate(meta: &TaskMeta<'_>) {
    // Tasks the spawn hook never counted (the agent's own, `spawn_blocking` ones) are
    // not in any table: nothing to do.
    let Some(site) = registry().existing_site(meta.spawned_at()) else {
        return;
    };
    if lock(&site.inner).hooked.remove(&meta.id()).is_some() {
        site.live.fetch_sub(1, Relaxed);
        site.completed.fetch_add(1, Relaxed);
    }
}
