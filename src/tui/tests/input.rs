//! Key (and mouse) sequences produce the expected state changes and requests.

use std::time::Duration;

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use leaktop_agent::wire::ClientMsg;

use super::stream::{self, HEALTHY, IDLE_GROWING, LEAK_RECV, LEAK_SEND, UNINSTRUMENTED};
use super::{app_with, code, ctrl, key, type_keys};
use crate::model::Verdict;
use crate::tui::app::{Action, App, Focus, Mode};
use crate::tui::keys::HELP;
use crate::tui::layout::Areas;
use crate::tui::rows::SortKey;

fn leaky() -> App {
    app_with(&stream::leaky(), 120, 40)
}

fn sites(app: &App) -> Vec<u32> {
    app.rows.iter().map(|r| r.site).collect()
}

fn selected(app: &App) -> Option<u32> {
    app.selected_row().map(|r| r.site)
}

#[test]
fn default_order_puts_the_leaks_first() {
    let app = leaky();
    assert_eq!(
        sites(&app),
        vec![LEAK_SEND, LEAK_RECV, IDLE_GROWING, HEALTHY, UNINSTRUMENTED]
    );
    assert_eq!(app.rows[0].verdict, Verdict::Leak);
    assert_eq!(app.rows[1].verdict, Verdict::Leak);
    assert_eq!(app.rows[2].verdict, Verdict::Growing);
    assert_eq!(app.rows[3].verdict, Verdict::None);
}

#[test]
fn j_k_g_and_arrows_move_the_selection_within_bounds() {
    let mut app = leaky();
    assert_eq!(selected(&app), Some(LEAK_SEND));
    type_keys(&mut app, "k");
    assert_eq!(app.selected, 0, "k at the top stays");
    type_keys(&mut app, "jj");
    assert_eq!(selected(&app), Some(IDLE_GROWING));
    app.on_input(&code(KeyCode::Up));
    assert_eq!(selected(&app), Some(LEAK_RECV));
    type_keys(&mut app, "G");
    assert_eq!(selected(&app), Some(UNINSTRUMENTED));
    type_keys(&mut app, "j");
    assert_eq!(
        selected(&app),
        Some(UNINSTRUMENTED),
        "j at the bottom stays"
    );
    app.on_input(&code(KeyCode::Home));
    assert_eq!(app.selected, 0);
    app.on_input(&code(KeyCode::PageDown));
    assert_eq!(app.selected, 4, "a page is longer than the five rows");
    app.on_input(&code(KeyCode::PageUp));
    assert_eq!(app.selected, 0);
}

#[test]
fn selection_follows_its_site_across_a_resort() {
    let mut app = leaky();
    type_keys(&mut app, "jjj");
    assert_eq!(selected(&app), Some(HEALTHY));
    type_keys(&mut app, "2"); // by site, A→Z
    assert_eq!(selected(&app), Some(HEALTHY));
    assert_eq!(app.sort.key, SortKey::Site);
}

/// Regression: the first site to appear kept the selection after the leak overtook it
/// in the order, so the detail pane opened on a healthy site. Until the user picks a row
/// the selection is the top row, the most suspicious site.
#[test]
fn selection_stays_on_the_top_row_until_the_user_picks_one() {
    use crate::source::Event;
    use leaktop_agent::wire::AgentMsg;
    let mut events = stream::leaky();
    // First a snapshot in which only the healthy pool has tasks, so it is the first
    // site on screen and the leak overtakes it when the full snapshot comes.
    let Some(Event::Msg(AgentMsg::Snapshot(full))) = events.last().cloned() else {
        unreachable!("leaky() ends with a snapshot")
    };
    let mut early = full.clone();
    early.seq -= 1;
    early.sites.retain(|s| s.site == HEALTHY);
    early.groups.clear();
    early.channels.clear();
    events.insert(events.len() - 1, Event::Msg(AgentMsg::Snapshot(early)));
    let mut app = App::new(Duration::from_secs(1));
    app.resize(120, 40);
    let mut seen = Vec::new();
    for ev in events {
        app.on_event(&ev);
        assert_eq!(app.selected, 0);
        assert_eq!(selected(&app), app.rows.first().map(|r| r.site));
        seen.extend(selected(&app));
    }
    assert!(
        seen.contains(&HEALTHY),
        "the healthy site was selected first"
    );
    assert_eq!(selected(&app), Some(LEAK_SEND));
    type_keys(&mut app, "jj");
    assert_eq!(selected(&app), Some(IDLE_GROWING));
    app.on_event(&stream::leaky_next());
    assert_eq!(
        selected(&app),
        Some(IDLE_GROWING),
        "a picked row stays picked"
    );
}

#[test]
fn filter_narrows_rows_and_esc_clears_it() {
    let mut app = leaky();
    type_keys(&mut app, "/");
    assert_eq!(app.mode, Mode::Filter);
    type_keys(&mut app, "WS/");
    assert_eq!(sites(&app), vec![LEAK_RECV], "case-insensitive substring");
    // While typing, letters are filter text, not commands.
    assert!(!app.quit);
    type_keys(&mut app, "q");
    assert!(!app.quit);
    assert_eq!(app.filter, "WS/q");
    assert!(app.rows.is_empty());
    app.on_input(&code(KeyCode::Backspace));
    app.on_input(&code(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.filter, "WS/");
    assert_eq!(sites(&app), vec![LEAK_RECV]);
    app.on_input(&code(KeyCode::Esc));
    assert_eq!(app.filter, "");
    assert_eq!(app.rows.len(), 5);
    // Esc while typing clears too; the filter matches function-free paths of deps.
    type_keys(&mut app, "/hyper");
    assert_eq!(sites(&app), vec![IDLE_GROWING]);
    app.on_input(&code(KeyCode::Esc));
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.rows.len(), 5);
}

#[test]
fn sort_keys_cycle_reverse_and_pick_columns() {
    let mut app = leaky();
    type_keys(&mut app, "s");
    assert_eq!(app.sort.key, SortKey::Site);
    type_keys(&mut app, "s");
    assert_eq!(app.sort.key, SortKey::Live);
    assert_eq!(sites(&app)[0], LEAK_SEND);
    type_keys(&mut app, "S");
    assert!(app.sort.reverse);
    assert_eq!(sites(&app)[0], UNINSTRUMENTED, "fewest live first");
    type_keys(&mut app, "6");
    assert_eq!(app.sort.key, SortKey::BlockedRecv);
    assert!(!app.sort.reverse);
    assert_eq!(sites(&app)[0], LEAK_RECV);
    type_keys(&mut app, "6");
    assert!(app.sort.reverse, "the same column again reverses");
    type_keys(&mut app, "7");
    assert_eq!(app.sort.key, SortKey::OldestBlock);
    assert_eq!(sites(&app)[0], LEAK_SEND);
    type_keys(&mut app, "1");
    assert_eq!(app.sort.key, SortKey::Suspicion);
}

#[test]
fn enter_tab_esc_move_the_focus_and_t_asks_for_tasks() {
    let mut app = leaky();
    app.on_input(&code(KeyCode::Enter));
    assert_eq!(app.focus, Focus::Detail);
    // Two groups at the send leak: j picks the second.
    assert_eq!(app.detail.group, 0);
    type_keys(&mut app, "j");
    assert_eq!(app.detail.group, 1);
    assert_eq!(
        selected(&app),
        Some(LEAK_SEND),
        "j moves in the pane, not the table"
    );
    let group = app.selected_group().map(|g| g.key.clone());
    assert_eq!(
        group.as_ref().map(|g| g.op),
        Some(leaktop_agent::wire::Op::Reserve)
    );
    let actions = app.on_input(&code(KeyCode::Enter));
    assert_eq!(
        actions,
        vec![Action::Request(ClientMsg::Tasks {
            site: LEAK_SEND,
            group,
            limit: crate::tui::app::TASK_LIMIT
        })]
    );
    assert!(app.detail.tasks);
    assert!(type_keys(&mut app, "t").is_empty(), "t again hides them");
    assert!(!app.detail.tasks);
    app.on_input(&code(KeyCode::Esc));
    assert_eq!(app.focus, Focus::Sites);
    app.on_input(&code(KeyCode::Tab));
    assert_eq!(app.focus, Focus::Detail);
    app.on_input(&code(KeyCode::BackTab));
    assert_eq!(app.focus, Focus::Sites);
    // Another site resets the pane.
    type_keys(&mut app, "j");
    assert_eq!(app.detail.group, 0);
}

#[test]
fn f_toggles_all_frames() {
    let mut app = leaky();
    assert!(!app.detail.all_frames);
    type_keys(&mut app, "f");
    assert!(app.detail.all_frames);
    type_keys(&mut app, "f");
    assert!(!app.detail.all_frames);
}

#[test]
fn pause_freezes_the_view_while_data_keeps_coming() {
    let mut app = leaky();
    type_keys(&mut app, "p");
    assert!(app.paused());
    app.on_event(&stream::leaky_next());
    assert_eq!(app.rows[0].live, 4_212, "the view stays frozen");
    assert_eq!(app.view().seq, 7);
    assert_eq!(app.live_session().seq, 8, "the session keeps folding");
    type_keys(&mut app, " "); // space resumes too
    assert!(!app.paused());
    assert_eq!(app.rows[0].live, 4_225);
}

#[test]
fn baseline_counts_growth_since_it() {
    let mut app = leaky();
    type_keys(&mut app, "b");
    assert_eq!(app.rows[0].since_baseline, Some(0));
    app.on_event(&stream::leaky_next());
    assert_eq!(app.rows[0].since_baseline, Some(13));
    type_keys(&mut app, "B");
    assert!(app.baseline().is_none());
    assert_eq!(app.rows[0].since_baseline, None);
}

#[test]
fn help_opens_scrolls_and_closes_without_quitting() {
    let mut app = leaky();
    type_keys(&mut app, "?");
    assert_eq!(app.mode, Mode::Help(0));
    type_keys(&mut app, "jj");
    assert_eq!(app.mode, Mode::Help(2));
    assert_eq!(selected(&app), Some(LEAK_SEND), "keys go to the help");
    type_keys(&mut app, "q");
    assert_eq!(app.mode, Mode::Normal);
    assert!(!app.quit, "q closes the help first");
    type_keys(&mut app, "?");
    app.on_input(&code(KeyCode::Esc));
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn q_and_ctrl_c_quit() {
    let mut app = leaky();
    type_keys(&mut app, "q");
    assert!(app.quit);
    let mut app = leaky();
    type_keys(&mut app, "/ab");
    app.on_input(&ctrl('c'));
    assert!(app.quit, "Ctrl-C quits even while typing a filter");
}

#[test]
fn r_and_interval_keys_ask_the_loop() {
    let mut app = leaky();
    assert_eq!(type_keys(&mut app, "r"), vec![Action::ToggleRecord]);
    assert_eq!(
        type_keys(&mut app, "+"),
        vec![Action::Request(ClientMsg::Subscribe { interval_ms: 2000 })]
    );
    assert_eq!(app.interval, Duration::from_secs(2));
    type_keys(&mut app, "--");
    assert_eq!(app.interval, Duration::from_millis(500));
    type_keys(&mut app, "----");
    assert_eq!(
        app.interval,
        Duration::from_millis(250),
        "stops at the fastest"
    );
    // Seek keys exist only with a timeline.
    assert!(type_keys(&mut app, "]").is_empty());
    app.timeline = Some(crate::tui::app::Timeline {
        start_ms: 0,
        end_ms: 10_000,
        pos_ms: 5_000,
        playing: false,
        speed: 1.0,
    });
    use crate::tui::app::ReplayCmd;
    assert_eq!(
        type_keys(&mut app, "]{ gG"),
        vec![
            Action::Replay(ReplayCmd::Speed { faster: true }),
            Action::Replay(ReplayCmd::SeekBy(-10_000)),
            Action::Replay(ReplayCmd::PlayPause),
            Action::Replay(ReplayCmd::SeekStart),
            Action::Replay(ReplayCmd::SeekEnd),
        ]
    );
    // `:` opens the time prompt; Enter hands over what was typed.
    assert!(type_keys(&mut app, ":5m").is_empty());
    assert!(app.status.as_deref().is_some_and(|s| s.ends_with("5m")));
    let enter = crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Enter,
        crossterm::event::KeyModifiers::NONE,
    );
    assert_eq!(
        app.on_key(enter),
        vec![Action::Replay(ReplayCmd::Goto("5m".into()))]
    );
    assert_eq!(app.mode, Mode::Normal);
}

fn click(col: u16, row: u16) -> TermEvent {
    TermEvent::Mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: col,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

fn wheel(down: bool, col: u16, row: u16) -> TermEvent {
    TermEvent::Mouse(MouseEvent {
        kind: if down {
            MouseEventKind::ScrollDown
        } else {
            MouseEventKind::ScrollUp
        },
        column: col,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

#[test]
fn mouse_clicks_select_rows_and_sort_and_the_wheel_scrolls() {
    let mut app = leaky();
    let a = Areas::of(app.size, &app);
    app.on_input(&click(10, a.table.y + 2));
    assert_eq!(app.selected, 2);
    app.on_input(&wheel(true, 10, a.table.y));
    assert_eq!(app.selected, 4, "three down, stopped at the last row");
    app.on_input(&wheel(false, 10, a.table.y));
    assert_eq!(app.selected, 1);
    // A click on the LIVE title sorts by live.
    let cols = crate::tui::layout::columns(a.table_header.width, false);
    let live = cols
        .iter()
        .find(|c| c.title == "LIVE")
        .expect("live column");
    app.on_input(&click(live.x + 1, a.table_header.y));
    assert_eq!(app.sort.key, SortKey::Live);
    // A click in the detail pane gives it the focus.
    app.on_input(&click(5, a.detail.y + 3));
    assert_eq!(app.focus, Focus::Detail);
}

#[test]
fn every_key_in_the_help_does_something() {
    // Each single-character key the help lists changes the state or asks the loop.
    let chars: Vec<char> = HELP
        .iter()
        .flat_map(|s| s.entries.iter())
        .flat_map(|k| k.keys.split([' ', '/']))
        .filter(|w| w.chars().count() == 1)
        .flat_map(|w| w.chars())
        .filter(|c| c.is_ascii_graphic() && !c.is_ascii_digit() && *c != '…')
        .collect();
    assert!(chars.len() >= 12, "{chars:?}");
    for c in chars {
        let mut app = leaky();
        // Move off the first row so g/k have something to do.
        type_keys(&mut app, "jj");
        let before = format!("{app:?}");
        let actions = app.on_input(&key(c));
        let after = format!("{app:?}");
        assert!(
            !actions.is_empty() || before != after,
            "key {c:?} is in the help but did nothing"
        );
    }
}

#[test]
fn the_footer_and_the_help_name_only_bound_keys() {
    use crate::tui::keys::{command, FOOTER, TIMELINE_HELP};
    // Every footer entry names a command some key runs.
    for (key, _, cmd) in FOOTER {
        let bound = HELP
            .iter()
            .flat_map(|s| s.entries)
            .flat_map(|e| e.binds)
            .any(|(_, c)| c == cmd);
        assert!(bound, "footer key {key} runs an unbound command");
    }
    // Every binding is reachable: no earlier entry takes its key.
    for (replay, sections) in [
        (false, HELP.iter().collect::<Vec<_>>()),
        (true, vec![&TIMELINE_HELP]),
    ] {
        for (code, cmd) in sections
            .iter()
            .flat_map(|s| s.entries)
            .flat_map(|e| e.binds)
        {
            assert_eq!(command(*code, replay), Some(*cmd), "{code:?}");
        }
    }
}
