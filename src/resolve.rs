//! Symbols for the session's raw stacks, resolved out of process while the target is alive
//! (or read from a recording). The one place that turns `AgentMsg::Stack` addresses into
//! the await chains every renderer shows.

use crate::model::Session;
use crate::symbolize::{self, ProcessMaps, SharedSymbolizer};

/// Resolves the stacks of one live process.
pub struct StackResolver {
    symbolizer: SharedSymbolizer,
    maps: Option<ProcessMaps>,
    maps_error: Option<String>,
}

impl StackResolver {
    /// A resolver for the process the session's hello names (its maps read now).
    pub fn for_session(session: &Session) -> StackResolver {
        Self::for_session_with(session, symbolize::shared())
    }

    /// The same with a symbolizer shared with someone else (a recorder's symbol thread).
    pub fn for_session_with(session: &Session, symbolizer: SharedSymbolizer) -> StackResolver {
        let mut r = StackResolver {
            symbolizer,
            maps: None,
            maps_error: None,
        };
        if let Some(h) = &session.hello {
            match ProcessMaps::read(h.pid) {
                Ok(m) => {
                    r.maps = Some(
                        m.with_pid(h.pid)
                            .with_exe(h.exe.clone(), h.build_id.clone()),
                    )
                }
                Err(e) => {
                    // The process may be gone: the agent's own module list still lets us
                    // resolve against files that are still on disk (build id checked).
                    r.maps_error = Some(e.to_string());
                    if !session.modules.is_empty() {
                        r.maps = Some(
                            ProcessMaps::from_mappings(session.modules.clone())
                                .with_exe(h.exe.clone(), h.build_id.clone()),
                        );
                    }
                }
            }
        }
        r
    }

    /// Resolves every stack of `session` that has no symbols yet.
    pub fn resolve_new(&mut self, session: &mut Session) {
        let Some(maps) = &self.maps else {
            if let Some(e) = self.maps_error.take() {
                session.symbol_notes.push(format!("cannot symbolize: {e}"));
            }
            return;
        };
        let mut todo: Vec<_> = session
            .stacks
            .iter()
            .filter(|(id, _)| !session.symbols.contains_key(id))
            .map(|(id, addrs)| (*id, addrs.clone()))
            .collect();
        todo.sort_by_key(|(id, _)| *id);
        // A panic elsewhere while holding it leaves nothing half-done that matters here:
        // the caches are filled entry by entry.
        let mut symbolizer = self
            .symbolizer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (id, addrs) in todo {
            let resolved = symbolizer.resolve(maps, &addrs);
            session.symbols.insert(id, symbolize::flatten(&resolved));
        }
        for note in symbolizer.take_notes() {
            let note = note.to_string();
            if !session.symbol_notes.contains(&note) {
                session.symbol_notes.push(note);
            }
        }
    }
}
