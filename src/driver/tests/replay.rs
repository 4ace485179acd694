//! The TUI over a real recording file: the replay keys move through time and the screen
//! follows; the recorded await chains reach the detail pane without any binary.

use std::collections::VecDeque;
use std::time::Duration;

use crossterm::event::{Event as TermEvent, KeyCode};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::driver::view::{run, Options};
use crate::record::tests::{script, write};
use crate::record::RecordingSource;
use crate::tui::tests::{code, ctrl, key};
use crate::tui::{App, Input};

/// Keys one by one, with idle ticks between them so the loop draws.
struct Keys(VecDeque<Option<TermEvent>>);

impl Keys {
    fn of(keys: Vec<TermEvent>) -> Keys {
        Keys(
            keys.into_iter()
                .flat_map(|k| [None, None, Some(k)])
                .chain([Some(ctrl('c'))])
                .collect(),
        )
    }
}

impl Input for Keys {
    fn next(&mut self, _timeout: Duration) -> std::io::Result<Option<TermEvent>> {
        Ok(self.0.pop_front().flatten())
    }
}

fn text(keys: &str) -> Vec<TermEvent> {
    keys.chars().map(key).collect()
}

#[test]
fn replay_keys_move_through_time_and_the_screen_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ltrec");
    write(&path, &script(20, 5));
    let mut source = RecordingSource::open(&path).unwrap();
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let mut app = App::new(Duration::from_secs(1));
    let options = Options::new(Duration::from_secs(1));
    source.start_at(5_000, 4.0, false);
    let mut go = |keys: Vec<TermEvent>, app: &mut App, options: &Options| {
        app.quit = false;
        run(
            &mut terminal,
            &mut source,
            &mut Keys::of(keys),
            app,
            options,
        )
        .expect("run");
    };

    // Starts where asked, paused, at the speed asked.
    go(vec![], &mut app, &options);
    let t = app.timeline.clone().expect("timeline");
    assert_eq!(
        (t.pos_ms, t.end_ms, t.playing, t.speed),
        (5_000, 20_500, false, 4.0)
    );
    assert_eq!(app.view().seq, 5);
    // The recorded symbols reached the session the detail pane shows.
    assert_eq!(
        app.view().symbols.get(&1).map(|f| f[0].function.as_ref()),
        Some("app::worker::{{closure}}")
    );

    // G: the end, with the recording's end reason.
    go(text("G"), &mut app, &options);
    assert_eq!(app.timeline.as_ref().unwrap().pos_ms, 20_500);
    assert_eq!(app.view().seq, 20);
    assert_eq!(app.view().ended.as_deref(), Some("process 4242 exited"));

    // g then →: the first snapshot; ← at the start stays there.
    go(vec![key('g'), code(KeyCode::Right)], &mut app, &options);
    assert_eq!(app.timeline.as_ref().unwrap().pos_ms, 1_000);
    assert_eq!(app.view().seq, 1);
    assert!(app.view().ended.is_none());

    // : 12s Enter, then { (10 s back), then ] (faster) and space (play).
    let mut keys = text(":12s");
    keys.push(code(KeyCode::Enter));
    go(keys, &mut app, &options);
    assert_eq!(app.timeline.as_ref().unwrap().pos_ms, 12_000);
    assert_eq!(app.view().seq, 12);
    go(text("{"), &mut app, &options);
    assert_eq!(app.view().seq, 2);
    go(text("] "), &mut app, &options);
    let t = app.timeline.clone().unwrap();
    assert!(t.playing);
    assert_eq!(t.speed, 8.0);

    // A bad time says what is accepted.
    let mut keys = text(":soon");
    keys.push(code(KeyCode::Enter));
    go(keys, &mut app, &options);
    assert!(
        app.status
            .as_deref()
            .is_some_and(|s| s.contains("invalid time")),
        "{:?}",
        app.status
    );

    // The screen says it is a replay, with the bar.
    let screen = format!("{:?}", terminal.backend().buffer());
    assert!(screen.contains("REPLAY"), "{screen}");
}
