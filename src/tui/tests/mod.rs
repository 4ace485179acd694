//! Tests of the TUI: whole-screen snapshots (TestBackend + insta), key sequences and the
//! event loop, all over synthetic message streams.

mod input;
mod screens;
pub mod stream;

use std::time::Duration;

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::App;
use crate::source::Event;

/// An app at `w`×`h` that has folded `events`.
pub fn app_with(events: &[Event], w: u16, h: u16) -> App {
    let mut app = App::new(Duration::from_secs(1));
    app.resize(w, h);
    for ev in events {
        app.on_event(ev);
    }
    app
}

/// The screen `app` draws at its size.
pub fn screen(app: &App) -> String {
    let mut term =
        Terminal::new(TestBackend::new(app.size.width, app.size.height)).expect("test terminal");
    term.draw(|f| f.render_widget(app, f.area())).expect("draw");
    term.backend().to_string()
}

pub fn key(c: char) -> TermEvent {
    TermEvent::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

pub fn code(code: KeyCode) -> TermEvent {
    TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub fn ctrl(c: char) -> TermEvent {
    TermEvent::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

/// Presses `keys` (one char each) and returns every action they produced.
pub fn type_keys(app: &mut App, keys: &str) -> Vec<super::Action> {
    keys.chars().flat_map(|c| app.on_input(&key(c))).collect()
}
