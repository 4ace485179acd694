//! The key map as data: one table of commands drives the key handling (`App::on_key`
//! looks keys up here), the footer and the help overlay, so none of them can drift from
//! the others.

use crossterm::event::KeyCode;

/// What a key asks of the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Quit,
    Help,
    Filter,
    SwitchPane,
    /// Enter: open the selected site's detail, or list its oldest tasks.
    Open,
    /// Esc: back to the table, or clear the filter.
    Back,
    Down,
    Up,
    PageDown,
    PageUp,
    First,
    Last,
    NextSort,
    ReverseSort,
    /// Sort by the table's n-th sort key (`1` … `7`).
    SortBy(usize),
    AllFrames,
    Tasks,
    Pause,
    Baseline,
    ClearBaseline,
    Slower,
    Faster,
    Record,
    // Replay.
    PlayPause,
    StepBack,
    StepForward,
    HalfSpeed,
    DoubleSpeed,
    Back10s,
    Forward10s,
    SeekStart,
    SeekEnd,
    Goto,
}

/// One help entry: the keys as shown, what they do, and the keys themselves.
pub struct Entry {
    pub keys: &'static str,
    pub what: &'static str,
    pub binds: &'static [(KeyCode, Command)],
}

/// A titled group of entries.
pub struct Section {
    pub title: &'static str,
    pub entries: &'static [Entry],
}

const fn e(keys: &'static str, what: &'static str, binds: &'static [(KeyCode, Command)]) -> Entry {
    Entry { keys, what, binds }
}

use Command as C;
use KeyCode::{
    BackTab, Char as K, Down, End, Enter, Esc, Home, Left, PageDown, PageUp, Right, Tab, Up, F,
};

/// Every key of the view, in the order the help lists them.
pub const HELP: &[Section] = &[
    Section {
        title: "Move",
        entries: &[
            e(
                "↑ k / ↓ j",
                "previous / next site (blocked group in the detail pane)",
                &[
                    (Up, C::Up),
                    (K('k'), C::Up),
                    (Down, C::Down),
                    (K('j'), C::Down),
                ],
            ),
            e(
                "PgUp / PgDn",
                "one page up / down",
                &[(PageUp, C::PageUp), (PageDown, C::PageDown)],
            ),
            e(
                "Home g / End G",
                "first / last row",
                &[
                    (Home, C::First),
                    (K('g'), C::First),
                    (End, C::Last),
                    (K('G'), C::Last),
                ],
            ),
            e(
                "Tab / Shift-Tab",
                "switch between site table and detail pane",
                &[(Tab, C::SwitchPane), (BackTab, C::SwitchPane)],
            ),
            e(
                "Enter",
                "open the selected site's detail / list its oldest tasks",
                &[(Enter, C::Open)],
            ),
            e(
                "Esc",
                "back to the table; clear the filter; close this help",
                &[(Esc, C::Back)],
            ),
        ],
    },
    Section {
        title: "Site table",
        entries: &[
            e(
                "/",
                "filter by path or function (Enter keeps, Esc clears)",
                &[(K('/'), C::Filter)],
            ),
            e(
                "s / S",
                "sort by the next column / reverse the order",
                &[(K('s'), C::NextSort), (K('S'), C::ReverseSort)],
            ),
            e(
                "1 … 7",
                "sort by: suspicion, site, live, Δ, send, recv, oldest",
                &[
                    (K('1'), C::SortBy(0)),
                    (K('2'), C::SortBy(1)),
                    (K('3'), C::SortBy(2)),
                    (K('4'), C::SortBy(3)),
                    (K('5'), C::SortBy(4)),
                    (K('6'), C::SortBy(5)),
                    (K('7'), C::SortBy(6)),
                ],
            ),
        ],
    },
    Section {
        title: "Detail pane",
        entries: &[
            e(
                "f",
                "fold runtime frames / show all frames of the await chain",
                &[(K('f'), C::AllFrames)],
            ),
            e(
                "t",
                "show / hide the oldest tasks of the selected group",
                &[(K('t'), C::Tasks)],
            ),
        ],
    },
    Section {
        title: "View",
        entries: &[
            e(
                "p",
                "pause / resume the display (data keeps coming in)",
                &[(K('p'), C::Pause), (K(' '), C::Pause)],
            ),
            e(
                "b / B",
                "set a baseline now (growth since: +BASE) / clear it",
                &[(K('b'), C::Baseline), (K('B'), C::ClearBaseline)],
            ),
            e(
                "+ / -",
                "refresh slower / faster",
                &[
                    (K('+'), C::Slower),
                    (K('='), C::Slower),
                    (K('-'), C::Faster),
                    (K('_'), C::Faster),
                ],
            ),
            e("r", "start / stop recording", &[(K('r'), C::Record)]),
            e("?", "this help", &[(K('?'), C::Help), (F(1), C::Help)]),
            e("q  Ctrl-C", "quit", &[(K('q'), C::Quit)]),
        ],
    },
    Section {
        title: "Mouse",
        entries: &[
            e("wheel", "scroll the pane under the pointer", &[]),
            e("click", "select a row; a column title sorts by it", &[]),
        ],
    },
];

/// Extra keys while replaying a recording (the timeline is shown); they take precedence
/// over the same keys in [`HELP`] (`g`/`G` move in time, Home/End still move in the
/// table).
pub const TIMELINE_HELP: Section = Section {
    title: "Replay",
    entries: &[
        e(
            "space  p",
            "play / pause",
            &[(K(' '), C::PlayPause), (K('p'), C::PlayPause)],
        ),
        e(
            "← / →",
            "previous / next snapshot",
            &[(Left, C::StepBack), (Right, C::StepForward)],
        ),
        e(
            "[ / ]",
            "half / double speed",
            &[(K('['), C::HalfSpeed), (K(']'), C::DoubleSpeed)],
        ),
        e(
            "{ / }",
            "10 s back / forward",
            &[(K('{'), C::Back10s), (K('}'), C::Forward10s)],
        ),
        e(
            "g / G",
            "start / end of the recording",
            &[(K('g'), C::SeekStart), (K('G'), C::SeekEnd)],
        ),
        e(
            ":",
            "jump to a time (5m, 1m30s, 50%, -30s)",
            &[(K(':'), C::Goto)],
        ),
    ],
};

/// The footer's short list: key, label and the command it names (bound in [`HELP`]).
pub const FOOTER: &[(&str, &str, Command)] = &[
    ("?", "Help", C::Help),
    ("/", "Filter", C::Filter),
    ("s", "Sort", C::NextSort),
    ("Tab", "Pane", C::SwitchPane),
    ("p", "Pause", C::Pause),
    ("b", "Baseline", C::Baseline),
    ("f", "Frames", C::AllFrames),
    ("t", "Tasks", C::Tasks),
    ("q", "Quit", C::Quit),
];

/// The command of a key: the replay's keys first while replaying, then the view's.
pub fn command(code: KeyCode, replay: bool) -> Option<Command> {
    let replay = replay.then_some(&TIMELINE_HELP);
    replay
        .into_iter()
        .chain(HELP)
        .flat_map(|s| s.entries)
        .flat_map(|e| e.binds)
        .find(|(k, _)| *k == code)
        .map(|(_, c)| *c)
}
