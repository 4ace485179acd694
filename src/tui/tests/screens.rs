//! Whole-screen snapshots at 80×24 and 120×40. The streams are synthetic, so ages and
//! counts are fixed; the pid and the exe path are redacted all the same, so a snapshot
//! never depends on them.

use crossterm::event::KeyCode;

use super::stream::{self, LEAK_SEND};
use super::{app_with, code, screen, type_keys};
use crate::source::Event;
use crate::tui::app::{App, Focus};

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

fn check(name: &str, make: impl Fn(u16, u16) -> App) {
    for (w, h) in SIZES {
        let app = make(w, h);
        let text = screen(&app);
        insta::with_settings!({
            filters => vec![
                (r"pid \d+", "pid [PID]"),
                (r"/srv/orders/bin/orders-api", "[EXE]"),
            ],
            prepend_module_to_snapshot => false,
        }, {
            insta::assert_snapshot!(format!("{name}_{w}x{h}"), text);
        });
    }
}

#[test]
fn empty_process() {
    check("empty_process", |w, h| app_with(&stream::empty(), w, h));
}

#[test]
fn leaking_site_selected() {
    check("leaking_site_selected", |w, h| {
        let mut app = app_with(&stream::leaky(), w, h);
        app.on_input(&code(KeyCode::Enter));
        assert_eq!(app.focus, Focus::Detail);
        assert_eq!(app.selected_row().map(|r| r.site), Some(LEAK_SEND));
        app
    });
}

#[test]
fn leaking_site_with_all_frames_and_tasks() {
    use leaktop_agent::wire::{AgentMsg, TaskInfo, TaskList, TaskState};
    check("all_frames_and_tasks", |w, h| {
        let mut app = app_with(&stream::leaky(), w, h);
        let group = app.selected_group().map(|g| g.key.clone());
        app.on_input(&code(KeyCode::Enter));
        type_keys(&mut app, "ft");
        app.on_event(&Event::Msg(AgentMsg::Tasks(TaskList {
            site: LEAK_SEND,
            group: group.clone(),
            tasks: (0..3)
                .map(|i| TaskInfo {
                    id: 100 + i,
                    spawned_ms: i * 1000,
                    state: TaskState::Blocked,
                    blocked_since_ms: Some(i * 1000 + 50),
                    group: group.clone(),
                })
                .collect(),
        })));
        app.on_input(&code(KeyCode::End));
        app
    });
}

#[test]
fn symbolized_await_chain() {
    use crate::frame::{Frame, FrameClass};
    let frame = |function: &str, location: Option<(&str, u32)>, class, inlined| Frame {
        function: function.into(),
        file: location.map(|l| l.0.into()),
        line: location.map(|l| l.1),
        column: None,
        inlined,
        class,
        module: stream::EXE.into(),
        addr: 0,
    };
    let chain = vec![
        frame(
            "leaktop_agent::sync::mpsc::Send::poll",
            Some(("/src/agent/src/sync/mpsc.rs", 310)),
            FrameClass::Agent,
            true,
        ),
        frame(
            "orders::search::forward_result::{{closure}}",
            Some(("src/server/search.rs", 17)),
            FrameClass::User,
            true,
        ),
        frame(
            "orders::handler::handle::{{closure}}",
            Some(("src/server/handler.rs", 44)),
            FrameClass::User,
            false,
        ),
        frame(
            "tokio::runtime::task::core::Core<T,S>::poll",
            None,
            FrameClass::Runtime,
            false,
        ),
        frame(
            "tokio::runtime::task::harness::poll_future",
            None,
            FrameClass::Runtime,
            false,
        ),
    ];
    check("symbolized_await_chain", |w, h| {
        let mut app = app_with(&stream::leaky(), w, h);
        app.on_event(&Event::Symbols {
            stack: 11,
            frames: chain.clone(),
        });
        app.on_input(&code(KeyCode::Enter));
        app.on_input(&code(KeyCode::End));
        app
    });
}

#[test]
fn help_overlay() {
    check("help_overlay", |w, h| {
        let mut app = app_with(&stream::leaky(), w, h);
        type_keys(&mut app, "?");
        app
    });
}

#[test]
fn filter_active() {
    check("filter_active", |w, h| {
        let mut app = app_with(&stream::leaky(), w, h);
        type_keys(&mut app, "/ws/");
        assert_eq!(app.mode, crate::tui::app::Mode::Filter);
        app
    });
}

#[test]
fn process_exited() {
    check("process_exited", |w, h| {
        let mut events = stream::leaky();
        events.push(Event::End(format!(
            "process {} exited (its agent closed the connection)",
            stream::PID
        )));
        app_with(&events, w, h)
    });
}

#[test]
fn paused_with_baseline() {
    check("paused_with_baseline", |w, h| {
        let mut app = app_with(&stream::leaky(), w, h);
        type_keys(&mut app, "b");
        app.on_event(&stream::leaky_next());
        type_keys(&mut app, "p");
        app.on_event(&stream::leaky_next());
        app
    });
}

#[test]
fn tiny_terminal() {
    for (w, h) in [(30u16, 8u16), (49, 9)] {
        let app = app_with(&stream::leaky(), w, h);
        insta::with_settings!({prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(format!("tiny_terminal_{w}x{h}"), screen(&app));
        });
    }
}

/// Rendering must never panic, whatever the size and state.
#[test]
fn no_size_panics_in_any_state() {
    let base = app_with(&stream::leaky(), 80, 24);
    let mut states = vec![base.clone()];
    for keys in ["?", "/ws", "\n", "\nft", "b"] {
        let mut a = base.clone();
        for c in keys.chars() {
            if c == '\n' {
                a.on_input(&code(KeyCode::Enter));
            } else {
                type_keys(&mut a, &c.to_string());
            }
        }
        states.push(a);
    }
    states.push(app_with(&stream::empty(), 80, 24));
    for state in &states {
        // Degenerate sizes, both sides of the minimum, and common ones.
        for w in [0u16, 1, 17, 49, 50, 69, 80, 140] {
            for h in [0u16, 1, 5, 9, 10, 11, 24, 40] {
                let mut a = state.clone();
                a.resize(w, h);
                // Keys that depend on the size must not panic either.
                for k in [KeyCode::PageDown, KeyCode::End, KeyCode::PageUp] {
                    a.on_input(&code(k));
                }
                // Into a buffer that does not start at the origin, to catch offset bugs.
                let area = ratatui::layout::Rect::new(3, 2, w, h);
                let mut buf = ratatui::buffer::Buffer::empty(area);
                ratatui::widgets::Widget::render(&a, area, &mut buf);
            }
        }
    }
}
