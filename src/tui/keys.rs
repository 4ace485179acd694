//! The key map as data: the help overlay lists exactly these, so the help can not drift
//! from what the keys do (the handling is in `app.rs`; a test checks both agree).

/// One help entry: the keys as shown, and what they do.
pub struct KeyHelp {
    pub keys: &'static str,
    pub what: &'static str,
}

/// A titled group of help entries.
pub struct Section {
    pub title: &'static str,
    pub keys: &'static [KeyHelp],
}

const fn k(keys: &'static str, what: &'static str) -> KeyHelp {
    KeyHelp { keys, what }
}

pub const HELP: &[Section] = &[
    Section {
        title: "Move",
        keys: &[
            k(
                "↑ k / ↓ j",
                "previous / next site (blocked group in the detail pane)",
            ),
            k("PgUp / PgDn", "one page up / down"),
            k("Home g / End G", "first / last row"),
            k(
                "Tab / Shift-Tab",
                "switch between site table and detail pane",
            ),
            k(
                "Enter",
                "open the selected site's detail / list its oldest tasks",
            ),
            k(
                "Esc",
                "back to the table; clear the filter; close this help",
            ),
        ],
    },
    Section {
        title: "Site table",
        keys: &[
            k("/", "filter by path or function (Enter keeps, Esc clears)"),
            k("s / S", "sort by the next column / reverse the order"),
            k(
                "1 … 7",
                "sort by: suspicion, site, live, Δ, send, recv, oldest",
            ),
        ],
    },
    Section {
        title: "Detail pane",
        keys: &[
            k(
                "f",
                "fold runtime frames / show all frames of the await chain",
            ),
            k("t", "show / hide the oldest tasks of the selected group"),
        ],
    },
    Section {
        title: "View",
        keys: &[
            k("p", "pause / resume the display (data keeps coming in)"),
            k(
                "b / B",
                "set a baseline now (growth since: +BASE) / clear it",
            ),
            k("+ / -", "refresh slower / faster"),
            k("r", "start / stop recording"),
            k("?", "this help"),
            k("q  Ctrl-C", "quit"),
        ],
    },
    Section {
        title: "Mouse",
        keys: &[
            k("wheel", "scroll the pane under the pointer"),
            k("click", "select a row; a column title sorts by it"),
        ],
    },
];

/// Extra keys while replaying a recording (the timeline is shown).
pub const TIMELINE_HELP: Section = Section {
    title: "Replay",
    keys: &[
        k("space  p", "play / pause"),
        k("← / →", "previous / next snapshot"),
        k("[ / ]", "half / double speed"),
        k("{ / }", "10 s back / forward"),
        k("g / G", "start / end of the recording"),
        k(":", "jump to a time (5m, 1m30s, 50%, -30s)"),
    ],
};

/// The footer's short list: key and label.
pub const FOOTER: &[(&str, &str)] = &[
    ("?", "Help"),
    ("/", "Filter"),
    ("s", "Sort"),
    ("Tab", "Pane"),
    ("p", "Pause"),
    ("b", "Baseline"),
    ("f", "Frames"),
    ("t", "Tasks"),
    ("q", "Quit"),
];
