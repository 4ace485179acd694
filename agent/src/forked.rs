//! What a `fork()` of the host does to the agent, and the cleanup in the child.
//!
//! `fork` copies only the calling thread: in the child the agent's thread does not exist,
//! but its memory does, including every descriptor it owns (the listening socket, the
//! clients, the wake pipe). A `pthread_atfork` child handler closes those descriptors
//! and stops the cached clock (no thread ticks it any more); the agent handle notices the
//! new pid (`start`, `shutdown`, the exit handler compare it) and leaves the parent's
//! socket alone. The handler runs between `fork` and the child's return from it, so it
//! may only do async-signal-safe things: atomic loads and stores and `close`.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};
use std::sync::Once;

/// Descriptors the agent may own at once: listener, wake pipe (two ends) and clients.
const SLOTS: usize = 3 + crate::server::MAX_CLIENTS;

static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

/// A registered descriptor; unregister it before closing the descriptor.
#[derive(Debug)]
pub(crate) struct Slot(usize);

/// Records `fd` as the agent's, to be closed in a forked child. `None` when every slot
/// is taken (the descriptor then stays open in a child, as any other would).
pub(crate) fn register(fd: RawFd) -> Option<Slot> {
    FDS.iter()
        .position(|s| s.compare_exchange(-1, fd, SeqCst, SeqCst).is_ok())
        .map(Slot)
}

/// Forgets the descriptor of `slot` (it is about to be closed).
pub(crate) fn unregister(slot: Slot) {
    if let Some(s) = FDS.get(slot.0) {
        s.store(-1, SeqCst);
    }
}

/// Installs the child handler, once per process.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a plain extern "C" function with no captured state; it is
        // async-signal-safe (see `in_child`).
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
}

extern "C" fn in_child() {
    for s in &FDS {
        let fd = s.swap(-1, SeqCst);
        if fd >= 0 {
            // SAFETY: `fd` was the agent's in the parent at the moment of the fork (slots
            // are cleared before their descriptor is closed), so in the child it is that
            // same open description, which nothing in the child knows of.
            unsafe {
                libc::close(fd);
            }
        }
    }
    crate::clock::stop_ticking();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_bounded() {
        let a = register(1000).expect("a slot");
        let b = register(1001).expect("a slot");
        assert_ne!(a.0, b.0);
        let (ai, bi) = (a.0, b.0);
        unregister(a);
        assert_eq!(FDS[ai].load(SeqCst), -1);
        assert_eq!(FDS[bi].load(SeqCst), 1001);
        unregister(b);
    }
}
