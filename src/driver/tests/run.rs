//! The event loop over a scripted source and scripted input, on a TestBackend.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossterm::event::Event as TermEvent;
use leaktop_agent::wire::{AgentHello, AgentMsg, ClientMsg};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::driver::view::{run, Options};
use crate::source::{Event, Source};
use crate::tui::tests::{key, stream};
use crate::tui::{App, Input};

/// Yields its events one by one, then `None`; records requests.
struct Script {
    hello: AgentHello,
    events: VecDeque<Event>,
    requests: Vec<ClientMsg>,
}

impl Script {
    fn new(events: Vec<Event>) -> Script {
        let AgentMsg::Hello(hello) = stream::hello() else {
            unreachable!()
        };
        Script {
            hello,
            events: events.into(),
            requests: Vec::new(),
        }
    }
}

impl Source for Script {
    fn hello(&self) -> &AgentHello {
        &self.hello
    }
    fn next(&mut self, _timeout: Duration) -> Option<Event> {
        self.events.pop_front()
    }
    fn request(&mut self, msg: ClientMsg) {
        self.requests.push(msg);
    }
}

/// Gives `None` `idle` times between keys, so the loop gets to draw.
struct Keys {
    keys: VecDeque<TermEvent>,
    idle: usize,
    waited: usize,
}

impl Input for Keys {
    fn next(&mut self, _timeout: Duration) -> std::io::Result<Option<TermEvent>> {
        if self.waited < self.idle {
            self.waited += 1;
            return Ok(None);
        }
        self.waited = 0;
        Ok(self.keys.pop_front())
    }
}

#[test]
fn loop_folds_draws_requests_and_quits() {
    let mut events = stream::leaky();
    events.push(Event::End("process 4242 exited".into()));
    let mut source = Script::new(events);
    let mut input = Keys {
        keys: "\tt+q".chars().map(key).collect(),
        idle: 2,
        waited: 0,
    };
    // '\t' is not Tab as a char key; use the real Tab.
    input.keys[0] = TermEvent::Key(crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Tab,
        crossterm::event::KeyModifiers::NONE,
    ));
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).expect("terminal");
    let mut app = App::new(Duration::from_secs(1));
    let options = Options {
        interval: Duration::from_secs(1),
        started: Instant::now(),
        record: None,
        thresholds: Default::default(),
    };
    let stats = run(&mut terminal, &mut source, &mut input, &mut app, &options).expect("run");
    assert!(app.quit);
    assert!(stats.first_frame.is_some());
    assert!(stats.frames >= 3, "{stats:?}");
    assert_eq!(
        source.requests,
        vec![
            ClientMsg::Tasks {
                site: stream::LEAK_SEND,
                group: app.selected_group().map(|g| g.key.clone()),
                limit: crate::tui::app::TASK_LIMIT,
            },
            ClientMsg::Subscribe { interval_ms: 2000 },
        ]
    );
    let screen = terminal.backend().to_string();
    assert!(screen.contains("EXITED"), "{screen}");
    assert!(screen.contains("process 4242 exited"), "{screen}");
    assert!(screen.contains("src/server/handler.rs:42:9"), "{screen}");
}

#[test]
fn keys_a_source_cannot_carry_out_say_so() {
    let mut source = Script::new(stream::leaky());
    let mut input = Keys {
        keys: "r".chars().map(key).collect(),
        idle: 1,
        waited: 0,
    };
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    let mut app = App::new(Duration::from_secs(1));
    // Ctrl-C quits and leaves the status as it was.
    input.keys.push_back(crate::tui::tests::ctrl('c'));
    run(
        &mut terminal,
        &mut source,
        &mut input,
        &mut app,
        &Options::new(Duration::from_secs(1)),
    )
    .expect("run");
    assert_eq!(
        app.status.as_deref(),
        Some("this view cannot record; use `leaktop record`")
    );
    let screen = terminal.backend().to_string();
    assert!(!screen.contains("● REC"), "{screen}");
}
