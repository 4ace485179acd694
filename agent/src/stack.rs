//! Raw await-chain capture: return addresses of the current thread's stack, taken inside
//! a leaf channel future's `poll` at the moment it returns Pending (then the chain of
//! async-fn polls that led there is on the stack). Addresses are interned into dense
//! [`StackId`]s and never symbolized here: `leaktop` does that out of process.
//!
//! Unwinding costs microseconds, so callers capture once per (spawn site, blocking call
//! site) and re-sample rarely ([`RESAMPLE_MS`]); the steady state is a cache lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::registry::lock;
use crate::wire::StackId;

/// Most frames kept per stack (innermost first).
pub const MAX_FRAMES: usize = 64;
/// A cached stack of a key is re-captured at most this often.
pub const RESAMPLE_MS: u64 = 5_000;
/// Most distinct stacks interned; past it, new captures reuse no id (the group has none).
pub const MAX_STACKS: usize = 1 << 16;

/// Captures the current thread's return addresses, innermost first, at most
/// [`MAX_FRAMES`]. With a `boundary` (an address inside the frame of the task's
/// `Instrumented::poll`, see `task::poll_frame`), the walk ends with the first frame at or
/// above it: the one that holds the task's poll (into which, in optimised builds, the
/// whole await chain may be inlined). What called the task (the runtime's scheduler,
/// which differs from poll to poll) is left out. No allocation.
#[inline(never)]
pub fn capture(out: &mut [u64; MAX_FRAMES], boundary: usize) -> usize {
    // One capture per thread at a time: a capture interrupted by a signal handler that
    // captures again (a profiler linking the agent) returns an empty stack instead of
    // re-entering the unwinder.
    let Ok(Some(_in_capture)) = IN_CAPTURE.try_with(CaptureGuard::enter) else {
        return 0;
    };
    let mut n = 0;
    let mut keep = |frame: &backtrace::Frame| {
        let ip = frame.ip() as usize as u64;
        if n == MAX_FRAMES || ip == 0 {
            return false;
        }
        out[n] = ip;
        n += 1;
        // The first frame whose stack address is above the boundary is the last one
        // kept: with libgcc (`sp()` is that frame's own stack pointer) it is the one that
        // called the task's poll (a fixed return address in the runtime); with an unwinder
        // reporting canonical frame addresses it is the task's poll frame itself. Either
        // way the frame holding an inlined await chain is kept and nothing that varies
        // with the runtime's path is.
        boundary == 0 || (frame.sp() as usize) < boundary
    };
    // `backtrace::trace` takes the crate's process-wide lock, shared with every other
    // user of the crate in the host (an error reporter symbolizing a panic holds it for
    // seconds; a panic under it poisons it, and then `trace` panics on the host's thread
    // that polled a channel). The lock exists for Windows' dbghelp, which is not
    // thread-safe; std's own backtraces skip it too.
    #[cfg(unix)]
    // SAFETY: on Unix `backtrace` walks the stack with the platform unwinder
    // (`_Unwind_Backtrace`), which is thread-safe (its FDE caches have their own locks and
    // `dl_iterate_phdr` takes the loader's); nothing of the crate's shared symbolization
    // state is touched by a trace. The two remaining hazards are handled here: re-entry on
    // this thread (the guard above), and a panicking callback (`keep` cannot panic: it
    // checks `n` before writing `out[n]`).
    unsafe {
        backtrace::trace_unsynchronized(&mut keep)
    };
    #[cfg(not(unix))]
    backtrace::trace(&mut keep);
    n
}

thread_local! {
    static IN_CAPTURE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as capturing while it lives.
struct CaptureGuard(&'static std::thread::LocalKey<std::cell::Cell<bool>>);

impl CaptureGuard {
    /// None when this thread is already capturing.
    fn enter(flag: &std::cell::Cell<bool>) -> Option<CaptureGuard> {
        if flag.replace(true) {
            return None;
        }
        Some(CaptureGuard(&IN_CAPTURE))
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        let _ = self.0.try_with(|f| f.set(false));
    }
}

/// Interned stacks: one id per distinct address list, for the life of the process.
#[derive(Default)]
pub(crate) struct Stacks {
    ids: HashMap<Arc<[u64]>, StackId>,
    defs: Vec<Arc<[u64]>>,
}

pub(crate) struct StackTable {
    inner: Mutex<Stacks>,
}

impl StackTable {
    pub fn new() -> StackTable {
        StackTable {
            inner: Mutex::new(Stacks::default()),
        }
    }

    /// The id of `frames`, interning it if new; None past [`MAX_STACKS`] or for an empty
    /// capture.
    pub fn intern(&self, frames: &[u64]) -> Option<StackId> {
        if frames.is_empty() {
            return None;
        }
        let mut t = lock(&self.inner);
        if let Some(id) = t.ids.get(frames) {
            return Some(*id);
        }
        if t.defs.len() >= MAX_STACKS {
            return None;
        }
        let id = t.defs.len() as StackId;
        let def: Arc<[u64]> = Arc::from(frames);
        t.defs.push(def.clone());
        t.ids.insert(def, id);
        Some(id)
    }

    /// Number of interned stacks (ids are `0..count`).
    pub fn count(&self) -> usize {
        lock(&self.inner).defs.len()
    }

    /// The addresses of stack `id`.
    pub fn get(&self, id: StackId) -> Option<Vec<u64>> {
        lock(&self.inner).defs.get(id as usize).map(|d| d.to_vec())
    }

    /// Captures the current stack (up to the current task's poll) and interns it.
    #[inline(never)]
    pub fn capture(&self) -> Option<StackId> {
        let mut buf = [0u64; MAX_FRAMES];
        let n = capture(&mut buf, crate::instrumented::poll_frame());
        self.intern(&buf[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn here(t: &StackTable) -> Option<StackId> {
        t.capture()
    }

    #[test]
    fn same_path_interns_to_one_id_and_addresses_are_returned() {
        let t = StackTable::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(here(&t));
        }
        let id = ids[0].expect("a stack");
        assert!(ids.iter().all(|i| *i == Some(id)), "{ids:?}");
        let frames = t.get(id).unwrap();
        assert!(frames.len() > 3 && frames.len() <= MAX_FRAMES);
        assert!(frames.iter().all(|ip| *ip != 0));
        assert_eq!(t.count(), 1);
        assert_eq!(t.intern(&[]), None);
    }

    /// Regression: capture took `backtrace`'s process-wide lock, so a host thread polling
    /// a channel waited for as long as anyone else in the process held it (an error
    /// reporter symbolizing a panic). Here another thread holds it (inside its own
    /// `backtrace::trace`) until our capture is done; before the fix the capture waited
    /// for ever.
    #[test]
    fn capture_does_not_wait_for_another_users_backtrace_lock() {
        use std::sync::mpsc;
        let (inside_tx, inside_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            backtrace::trace(|_| {
                let _ = inside_tx.send(());
                let _ = release_rx.recv();
                false
            });
        });
        inside_rx.recv().expect("the other thread holds the lock");
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u64; MAX_FRAMES];
            let _ = done_tx.send(capture(&mut buf, 0));
        });
        let captured = done_rx.recv_timeout(std::time::Duration::from_secs(10));
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        let n = captured.expect("capture blocked on backtrace's global lock");
        assert!(n > 2, "{n} frames");
    }

    #[test]
    fn a_nested_capture_on_one_thread_returns_nothing() {
        let mut buf = [0u64; MAX_FRAMES];
        let guard = IN_CAPTURE.with(CaptureGuard::enter).unwrap();
        assert_eq!(capture(&mut buf, 0), 0);
        drop(guard);
        assert!(capture(&mut buf, 0) > 2);
    }
}
