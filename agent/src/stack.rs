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
    let mut n = 0;
    // The synchronized variant takes a global lock; captures are rare (once per key per
    // RESAMPLE_MS), so that costs nothing in the steady state and keeps this safe.
    backtrace::trace(|frame| {
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
    });
    n
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
}
