//! The TUI's state and its input handling: events in, state changes (and requests for the
//! source) out. Nothing here draws; the widgets read this state.

use std::time::Duration;

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent,
    MouseEventKind,
};
use ratatui::layout::{Position, Rect};

use leaktop_agent::wire::{AgentMsg, BlockedGroup, ClientMsg, GroupKey, LocId};

use super::keys::{self, Command};
use super::layout::{self, Areas};
use super::rows::{self, Row, Sort, SortKey, Verdicts};
use crate::model::{Baseline, Session, Thresholds};
use crate::source::Event;

/// What has the keyboard: the panes (one of them focused), a prompt, or an overlay.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Normal,
    /// The filter prompt (`/`): keys edit [`App::filter`].
    Filter,
    /// The replay's "jump to" prompt (`:`), with what was typed.
    Goto(String),
    /// The help overlay, scrolled by this many lines.
    Help(u16),
}

/// Which pane has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    #[default]
    Sites,
    Detail,
}

/// What the event loop must do on the app's behalf.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this request to the source (the agent).
    Request(ClientMsg),
    /// `r`: start or stop recording (the loop asks the source's recorder).
    ToggleRecord,
    /// A replay control (the loop asks the source's timeline).
    Replay(ReplayCmd),
}

/// What a key asks of a replay.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayCmd {
    /// Space (or `p`): play / pause.
    PlayPause,
    /// ← / →: to the previous / next snapshot (pauses).
    Step {
        forward: bool,
    },
    /// `[` / `]`: half / double speed.
    Speed {
        faster: bool,
    },
    /// `{` / `}`: this many ms back (negative) or forward.
    SeekBy(i64),
    /// `g`: the start; `G`: the end.
    SeekStart,
    SeekEnd,
    /// `:` and a time typed by the user (`5m`, `50%`, `-30s`).
    Goto(String),
}

/// Replay position, shown as a bar when set (the loop fills it in from the source).
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// Recording ms of the first and last frame, and of the position shown.
    pub start_ms: u64,
    pub end_ms: u64,
    pub pos_ms: u64,
    pub playing: bool,
    /// Playback speed (1.0: real time).
    pub speed: f64,
}

/// State of the detail pane.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Detail {
    /// Selected blocked group (index into [`App::site_groups`]).
    pub group: usize,
    /// First line shown.
    pub scroll: u16,
    /// Show every frame of the await chain instead of folding runtime and agent frames.
    pub all_frames: bool,
    /// Show the oldest tasks of the selected group (requested from the agent).
    pub tasks: bool,
}

/// What the `:` prompt says before what the user types.
pub const GOTO_PROMPT: &str = "jump to (5m, 1m30s, 50%, -30s; Enter / Esc): ";

/// Oldest tasks asked for with `t`.
pub const TASK_LIMIT: u32 = 20;

/// Refresh intervals `+` / `-` step through.
pub const INTERVALS_MS: [u64; 7] = [250, 500, 1000, 2000, 5000, 10_000, 30_000];

/// Everything the TUI shows, and how the user has arranged it.
#[derive(Debug, Clone)]
pub struct App {
    /// Folded from every message, also while paused.
    session: Session,
    /// The state on screen while paused.
    frozen: Option<Session>,
    /// Snapshot interval asked of the agent.
    pub interval: Duration,
    pub focus: Focus,
    pub sort: Sort,
    pub filter: String,
    /// What has the keyboard.
    pub mode: Mode,
    /// Table rows: sorted, filtered; recomputed when the data or the view changes.
    pub rows: Vec<Row>,
    /// Selected row (index into `rows`) and its site, kept across re-sorts.
    pub selected: usize,
    selected_site: Option<LocId>,
    /// The user picked a row (keys, mouse): the selection stays on its site from then
    /// on. Until then it stays on the top row, the most suspicious site, however the
    /// order changes as the leak shows itself.
    chosen: bool,
    /// First table row on screen.
    pub table_offset: usize,
    pub detail: Detail,
    /// What the verdicts count as a leak.
    pub thresholds: Thresholds,
    /// The verdicts behind the rows' marks and order.
    pub verdicts: Verdicts,
    /// Where the session is being recorded, when it is.
    pub recording: Option<String>,
    /// Replay position; `None` for a live process.
    pub timeline: Option<Timeline>,
    /// A one-line message for the footer, cleared by the next key.
    pub status: Option<String>,
    /// Terminal size, for paging and mouse hit-tests.
    pub size: Rect,
    pub quit: bool,
    errors_seen: usize,
}

impl App {
    pub fn new(interval: Duration) -> App {
        App {
            session: Session::new(),
            frozen: None,
            interval,
            focus: Focus::Sites,
            sort: Sort::default(),
            filter: String::new(),
            mode: Mode::Normal,
            rows: Vec::new(),
            selected: 0,
            selected_site: None,
            chosen: false,
            table_offset: 0,
            detail: Detail::default(),
            thresholds: Thresholds::default(),
            verdicts: Verdicts::default(),
            recording: None,
            timeline: None,
            status: None,
            size: Rect::new(0, 0, 80, 24),
            quit: false,
            errors_seen: 0,
        }
    }

    /// The session on screen: the frozen one while paused.
    pub fn view(&self) -> &Session {
        self.frozen.as_ref().unwrap_or(&self.session)
    }

    /// The session as folded so far (newer than [`App::view`] while paused).
    pub fn live_session(&self) -> &Session {
        &self.session
    }

    /// Lets a replay move the session to another time (`f` seeks the source and refolds
    /// the session), then shows it.
    pub fn rewind(&mut self, f: impl FnOnce(&mut Session)) {
        let baseline = self.session.baseline.as_ref().map(|b| b.t_ms);
        f(&mut self.session);
        // A refold from the start forgets the baseline: mark it again where it was, if
        // that time is still in the shown past.
        if let Some(t) = baseline {
            if self.session.baseline.is_none() && t <= self.session.now_ms {
                self.session.mark_baseline_at(t);
            }
        }
        self.frozen = None;
        self.errors_seen = self.session.errors.len();
        self.refresh_rows();
    }

    /// The baseline of the shown state (`b`).
    pub fn baseline(&self) -> Option<&Baseline> {
        self.view().baseline.as_ref()
    }

    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    /// The selected row.
    pub fn selected_row(&self) -> Option<&Row> {
        self.rows.get(self.selected)
    }

    /// Blocked groups of a site in the shown state, largest first.
    pub fn site_groups(&self, site: LocId) -> Vec<&BlockedGroup> {
        self.view().groups_of(site)
    }

    /// The selected blocked group of the selected site.
    pub fn selected_group(&self) -> Option<&BlockedGroup> {
        let row = self.selected_row()?;
        let groups = self.site_groups(row.site);
        groups
            .get(self.detail.group.min(groups.len().saturating_sub(1)))
            .copied()
    }

    // ---- source events -------------------------------------------------------------

    /// Folds one source event.
    pub fn on_event(&mut self, ev: &Event) {
        self.session.apply(ev);
        match ev {
            Event::Msg(msg) => {
                if self.session.errors.len() != self.errors_seen {
                    self.errors_seen = self.session.errors.len();
                    if let Some(e) = self.session.errors.last() {
                        self.status = Some(format!("agent: {e}"));
                    }
                }
                let shown = matches!(
                    msg,
                    AgentMsg::Snapshot(_) | AgentMsg::History(_) | AgentMsg::Hello(_)
                );
                if shown && !self.paused() {
                    self.refresh_rows();
                }
            }
            // Symbols and the end are facts about the shown state too.
            Event::Symbols { .. } | Event::SymbolNote(_) | Event::End(_) => {
                if let Some(f) = &mut self.frozen {
                    f.apply(ev);
                }
                if matches!(ev, Event::End(_)) {
                    self.refresh_rows();
                }
            }
        }
    }

    /// Recomputes the rows from the shown session and keeps the selection on its site.
    pub fn refresh_rows(&mut self) {
        let view = self.frozen.as_ref().unwrap_or(&self.session);
        self.verdicts.refresh(view, &self.thresholds);
        if let Some(site) = self.selected_site {
            self.verdicts.reassess(view, &self.thresholds, site);
        }
        let rows = rows::rows(view, self.sort, &self.filter, &self.verdicts);
        self.rows = rows;
        let idx = if self.chosen {
            self.selected_site
                .and_then(|s| self.rows.iter().position(|r| r.site == s))
                .unwrap_or(self.selected.min(self.rows.len().saturating_sub(1)))
        } else {
            0
        };
        self.select(idx);
    }

    /// The user selects row `idx`.
    fn choose(&mut self, idx: usize) {
        self.chosen = true;
        self.select(idx);
    }

    fn select(&mut self, idx: usize) {
        let idx = idx.min(self.rows.len().saturating_sub(1));
        let site = self.rows.get(idx).map(|r| r.site);
        if site != self.selected_site {
            self.detail.group = 0;
            self.detail.scroll = 0;
            self.detail.tasks = false;
        }
        if site != self.selected_site {
            if let Some(s) = site {
                let view = self.frozen.as_ref().unwrap_or(&self.session);
                self.verdicts.reassess(view, &self.thresholds, s);
                if let Some(r) = self.rows.get_mut(idx) {
                    if let Some(v) = self.verdicts.by_site.get(&s) {
                        r.verdict = v.verdict;
                    }
                }
            }
        }
        self.selected = idx;
        self.selected_site = site;
        self.ensure_visible();
    }

    fn areas(&self) -> Areas {
        Areas::of(self.size, self)
    }

    fn table_height(&self) -> usize {
        (self.areas().table.height as usize).max(1)
    }

    fn ensure_visible(&mut self) {
        let h = self.table_height();
        if self.selected < self.table_offset {
            self.table_offset = self.selected;
        } else if self.selected >= self.table_offset + h {
            self.table_offset = self.selected + 1 - h;
        }
        self.table_offset = self.table_offset.min(self.rows.len().saturating_sub(h));
    }

    /// The terminal was resized (or measured).
    pub fn resize(&mut self, width: u16, height: u16) {
        self.size = Rect::new(0, 0, width, height);
        self.ensure_visible();
    }

    // ---- input ---------------------------------------------------------------------

    /// Handles one terminal event; returns what the loop must do.
    pub fn on_input(&mut self, ev: &TermEvent) -> Vec<Action> {
        match ev {
            TermEvent::Key(k) if k.kind != KeyEventKind::Release => self.on_key(*k),
            TermEvent::Mouse(m) => {
                self.on_mouse(*m);
                Vec::new()
            }
            TermEvent::Resize(w, h) => {
                self.resize(*w, *h);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Handles one key: by the mode, then by the command table ([`keys::command`]).
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            self.quit = true;
            return Vec::new();
        }
        self.status = None;
        match &self.mode {
            Mode::Filter => {
                self.on_filter_key(key, ctrl);
                Vec::new()
            }
            Mode::Goto(_) => self.on_goto_key(key, ctrl),
            Mode::Help(scroll) => {
                self.on_help_key(key, *scroll);
                Vec::new()
            }
            Mode::Normal => match keys::command(key.code, self.timeline.is_some()) {
                Some(command) => self.run(command),
                None => Vec::new(),
            },
        }
    }

    fn on_help_key(&mut self, key: KeyEvent, scroll: u16) {
        self.mode = match key.code {
            KeyCode::Esc | KeyCode::Char('?' | 'q') | KeyCode::Enter => Mode::Normal,
            KeyCode::Down | KeyCode::Char('j') => Mode::Help(scroll.saturating_add(1)),
            KeyCode::Up | KeyCode::Char('k') => Mode::Help(scroll.saturating_sub(1)),
            KeyCode::PageDown => Mode::Help(scroll.saturating_add(10)),
            KeyCode::PageUp => Mode::Help(scroll.saturating_sub(10)),
            KeyCode::Home | KeyCode::Char('g') => Mode::Help(0),
            _ => Mode::Help(scroll),
        };
    }

    /// Carries out one command of the table.
    fn run(&mut self, command: Command) -> Vec<Action> {
        let replay = |cmd| vec![Action::Replay(cmd)];
        match command {
            Command::PlayPause => return replay(ReplayCmd::PlayPause),
            Command::StepBack => return replay(ReplayCmd::Step { forward: false }),
            Command::StepForward => return replay(ReplayCmd::Step { forward: true }),
            Command::HalfSpeed => return replay(ReplayCmd::Speed { faster: false }),
            Command::DoubleSpeed => return replay(ReplayCmd::Speed { faster: true }),
            Command::Back10s => return replay(ReplayCmd::SeekBy(-10_000)),
            Command::Forward10s => return replay(ReplayCmd::SeekBy(10_000)),
            Command::SeekStart => return replay(ReplayCmd::SeekStart),
            Command::SeekEnd => return replay(ReplayCmd::SeekEnd),
            Command::Goto => {
                self.mode = Mode::Goto(String::new());
                self.status = Some(GOTO_PROMPT.into());
            }
            Command::Tasks => return self.toggle_tasks().into_iter().collect(),
            Command::Slower => return self.step_interval(1).into_iter().collect(),
            Command::Faster => return self.step_interval(-1).into_iter().collect(),
            Command::Record => return vec![Action::ToggleRecord],
            Command::Open => return self.open(),
            other => self.run_view(other),
        }
        Vec::new()
    }

    /// The commands that only change the view.
    fn run_view(&mut self, command: Command) {
        match command {
            Command::Quit => self.quit = true,
            Command::Help => self.mode = Mode::Help(0),
            Command::Filter => {
                self.mode = Mode::Filter;
                self.focus = Focus::Sites;
            }
            Command::SwitchPane => {
                self.focus = match self.focus {
                    Focus::Sites => Focus::Detail,
                    Focus::Detail => Focus::Sites,
                };
                self.ensure_visible();
            }
            Command::Back => self.back(),
            Command::Down => self.move_by(1),
            Command::Up => self.move_by(-1),
            Command::PageDown => self.page(1),
            Command::PageUp => self.page(-1),
            Command::First => self.move_to_end(false),
            Command::Last => self.move_to_end(true),
            Command::NextSort => self.set_sort(self.sort.key.next(), false),
            Command::ReverseSort => {
                self.sort.reverse = !self.sort.reverse;
                self.refresh_rows();
            }
            Command::SortBy(i) => {
                if let Some(key) = SortKey::ALL.get(i) {
                    self.sort_by_column(*key);
                }
            }
            Command::AllFrames => self.detail.all_frames = !self.detail.all_frames,
            Command::Pause => self.toggle_pause(),
            Command::Baseline => self.mark_baseline(),
            Command::ClearBaseline => self.clear_baseline(),
            _ => {}
        }
    }

    /// Enter: the detail of the selected site, or (there) its oldest tasks.
    fn open(&mut self) -> Vec<Action> {
        match self.focus {
            Focus::Sites => {
                if !self.rows.is_empty() {
                    self.focus = Focus::Detail;
                    self.ensure_visible();
                }
                Vec::new()
            }
            Focus::Detail => self.toggle_tasks().into_iter().collect(),
        }
    }

    /// Esc: back to the table, or clear the filter.
    fn back(&mut self) {
        match self.focus {
            Focus::Detail => {
                self.focus = Focus::Sites;
                self.ensure_visible();
            }
            Focus::Sites if !self.filter.is_empty() => {
                self.filter.clear();
                self.refresh_rows();
            }
            Focus::Sites => {}
        }
    }

    /// `b`: a baseline at the shown time, on the shown state (frozen while paused) and
    /// the live one alike.
    fn mark_baseline(&mut self) {
        let t = self.view().now_ms;
        self.session.mark_baseline_at(t);
        if let Some(f) = &mut self.frozen {
            f.mark_baseline_at(t);
        }
        self.status = Some(format!(
            "baseline set at uptime {}: +BASE counts tasks since then",
            super::format::age(t)
        ));
        self.refresh_rows();
    }

    /// `B`.
    fn clear_baseline(&mut self) {
        let had = self.baseline().is_some();
        self.session.clear_baseline();
        if let Some(f) = &mut self.frozen {
            f.clear_baseline();
        }
        self.status = Some(if had {
            "baseline cleared".into()
        } else {
            "no baseline to clear (b sets one)".into()
        });
        self.refresh_rows();
    }

    fn on_goto_key(&mut self, key: KeyEvent, ctrl: bool) -> Vec<Action> {
        let Mode::Goto(text) = &mut self.mode else {
            return Vec::new();
        };
        match key.code {
            KeyCode::Enter => {
                let text = std::mem::take(text);
                self.mode = Mode::Normal;
                return vec![Action::Replay(ReplayCmd::Goto(text))];
            }
            KeyCode::Esc => {
                self.mode = Mode::Normal;
                return Vec::new();
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char('u') if ctrl => text.clear(),
            KeyCode::Char(c) if !ctrl && text.chars().count() < 40 => text.push(c),
            _ => {}
        }
        if let Mode::Goto(text) = &self.mode {
            self.status = Some(format!("{GOTO_PROMPT}{text}"));
        }
        Vec::new()
    }

    fn on_filter_key(&mut self, key: KeyEvent, ctrl: bool) {
        match key.code {
            KeyCode::Enter => self.mode = Mode::Normal,
            KeyCode::Esc => {
                self.mode = Mode::Normal;
                self.filter.clear();
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char('u') if ctrl => self.filter.clear(),
            KeyCode::Down => self.move_by(1),
            KeyCode::Up => self.move_by(-1),
            KeyCode::Char(c) if !ctrl && self.filter.chars().count() < 200 => self.filter.push(c),
            _ => return,
        }
        self.refresh_rows();
    }

    fn set_sort(&mut self, key: SortKey, reverse: bool) {
        self.sort = Sort { key, reverse };
        self.status = Some(format!(
            "sorted by {}{}",
            key.name(),
            if reverse { " (reversed)" } else { "" }
        ));
        self.refresh_rows();
    }

    /// Sorts by `key`; the same key again reverses the order (like clicking a title).
    pub fn sort_by_column(&mut self, key: SortKey) {
        let reverse = self.sort.key == key && !self.sort.reverse;
        self.set_sort(key, reverse);
    }

    fn move_by(&mut self, delta: i64) {
        match self.focus {
            Focus::Sites => {
                let idx = (self.selected as i64 + delta).max(0) as usize;
                self.choose(idx);
            }
            Focus::Detail => {
                let n = self
                    .selected_row()
                    .map(|r| self.site_groups(r.site).len())
                    .unwrap_or(0);
                if n > 1 {
                    let g = (self.detail.group as i64 + delta).clamp(0, n as i64 - 1) as usize;
                    if g != self.detail.group {
                        self.detail.group = g;
                        self.detail.tasks = false;
                    }
                } else {
                    self.scroll_detail(delta);
                }
            }
        }
    }

    fn page(&mut self, dir: i64) {
        match self.focus {
            Focus::Sites => self.move_by(dir * self.table_height().saturating_sub(1).max(1) as i64),
            Focus::Detail => {
                let h = self.areas().detail.height.saturating_sub(2).max(1) as i64;
                self.scroll_detail(dir * h);
            }
        }
    }

    fn move_to_end(&mut self, end: bool) {
        match self.focus {
            Focus::Sites => self.choose(if end { usize::MAX } else { 0 }),
            Focus::Detail => self.scroll_detail(if end {
                i64::from(u16::MAX)
            } else {
                -i64::from(u16::MAX)
            }),
        }
    }

    fn scroll_detail(&mut self, delta: i64) {
        let width = self.size.width;
        let lines = super::widgets::detail::line_count(self, width) as i64;
        let h = self.areas().detail.height.saturating_sub(1) as i64;
        let max = (lines - h).max(0);
        self.detail.scroll = (self.detail.scroll as i64 + delta).clamp(0, max) as u16;
    }

    fn toggle_tasks(&mut self) -> Option<Action> {
        self.detail.tasks = !self.detail.tasks;
        if !self.detail.tasks {
            return None;
        }
        let site = self.selected_row()?.site;
        let group: Option<GroupKey> = self.selected_group().map(|g| g.key.clone());
        Some(Action::Request(ClientMsg::Tasks {
            site,
            group,
            limit: TASK_LIMIT,
        }))
    }

    fn toggle_pause(&mut self) {
        if self.frozen.take().is_none() {
            self.frozen = Some(self.session.clone());
        }
        self.refresh_rows();
    }

    fn step_interval(&mut self, dir: i64) -> Option<Action> {
        let ms = self.interval.as_millis() as u64;
        let i = INTERVALS_MS.partition_point(|v| *v < ms) as i64;
        let j = if dir > 0 {
            // partition_point is the first step >= ms: step past it when it is ms itself.
            if INTERVALS_MS.get(i as usize) == Some(&ms) {
                i + 1
            } else {
                i
            }
        } else {
            i - 1
        };
        let next = *INTERVALS_MS.get(j.clamp(0, INTERVALS_MS.len() as i64 - 1) as usize)?;
        if next == ms {
            return None;
        }
        self.interval = Duration::from_millis(next);
        self.status = Some(format!(
            "refresh every {}",
            super::format::interval(self.interval)
        ));
        Some(Action::Request(ClientMsg::Subscribe {
            interval_ms: next as u32,
        }))
    }

    fn on_mouse(&mut self, m: MouseEvent) {
        let pos = Position::new(m.column, m.row);
        if let Mode::Help(scroll) = self.mode {
            match m.kind {
                MouseEventKind::ScrollDown => self.mode = Mode::Help(scroll.saturating_add(3)),
                MouseEventKind::ScrollUp => self.mode = Mode::Help(scroll.saturating_sub(3)),
                MouseEventKind::Down(_) => self.mode = Mode::Normal,
                _ => {}
            }
            return;
        }
        if layout::too_small(self.size) {
            return;
        }
        let a = self.areas();
        let over_table = a.table.contains(pos) || a.table_header.contains(pos);
        let over_detail = a.detail.contains(pos);
        match m.kind {
            MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
                let d = if m.kind == MouseEventKind::ScrollDown {
                    3
                } else {
                    -3
                };
                if over_table {
                    let prev = self.focus;
                    self.focus = Focus::Sites;
                    self.move_by(d);
                    self.focus = prev;
                } else if over_detail {
                    self.scroll_detail(d);
                }
            }
            MouseEventKind::Down(MouseButton::Left) => {
                if a.table.contains(pos) {
                    self.focus = Focus::Sites;
                    let idx = self.table_offset + (m.row - a.table.y) as usize;
                    if idx < self.rows.len() {
                        self.choose(idx);
                    }
                } else if a.table_header.contains(pos) {
                    let x = m.column - a.table_header.x;
                    let col = layout::columns(a.table_header.width, self.baseline().is_some())
                        .into_iter()
                        .find(|c| x >= c.x && x < c.x + c.width);
                    if let Some(key) = col.and_then(|c| c.kind.sort_key()) {
                        self.sort_by_column(key);
                    }
                } else if over_detail {
                    self.focus = Focus::Detail;
                    self.ensure_visible();
                }
            }
            _ => {}
        }
    }
}
