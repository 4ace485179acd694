//! The detail pane of the selected site: its counters, blocked groups, the channel each
//! waits on, the await chain, and (on demand) the oldest tasks.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use leaktop_agent::wire::{BlockedGroup, ChannelStats, SiteStats, TaskState};

use super::put_line;
use crate::frame::{display_name, fold, FoldMode, Folded, Frame, FrameClass};
use crate::model::verdict::{assess_site, stall, SiteVerdict, Verdict};
use crate::model::Session;
use crate::tui::app::{App, Focus};
use crate::tui::format::{age, keep_end, rate, signed, thousands, wrap};
use crate::tui::rows::{location, Row};
use crate::tui::theme;
use crate::tui::widgets::{verdict_mark, verdict_style};

pub struct DetailPane<'a>(pub &'a App);

/// Frames of the await chain shown while folded.
pub const FOLDED_FRAMES: usize = 12;

const INDENT: &str = "  ";
const LABEL_W: usize = 13;

fn kv(label: &str, value: Vec<Span<'static>>) -> Line<'static> {
    let mut spans = vec![Span::styled(
        format!("{INDENT}{label:<LABEL_W$}"),
        theme::label(),
    )];
    spans.extend(value);
    Line::from(spans)
}

fn cont(value: Vec<Span<'static>>) -> Line<'static> {
    let mut spans = vec![Span::raw(format!("{INDENT}{:LABEL_W$}", ""))];
    spans.extend(value);
    Line::from(spans)
}

fn ago(now: u64, t: Option<u64>) -> String {
    match t {
        Some(t) => format!("{} ago", age(now.saturating_sub(t))),
        None => "never".into(),
    }
}

/// `n` (with thousands separators) and its noun: "1 sender", "4,211 tasks".
fn plural(n: u64, one: &str) -> String {
    format!("{} {}", thousands(n), crate::plural::noun(n, one))
}

/// The text of a blocked group: `[chan send, 5m12s] ×4,211`.
pub fn group_title(g: &BlockedGroup, now_ms: u64) -> String {
    format!(
        "[{}, {}] ×{}",
        g.key.op.name(),
        age(now_ms.saturating_sub(g.oldest_since_ms)),
        thousands(g.count)
    )
}

fn channel_lines(s: &Session, g: &BlockedGroup, width: usize, out: &mut Vec<Line<'static>>) {
    let room = width.saturating_sub(INDENT.len() + LABEL_W + 12);
    let st = stall(g, s.now_ms);
    let why = crate::report::evidence::why(&st);
    let text = if st.stalled_ms + 1000 >= st.waiting_ms {
        format!("{} without progress: {why}", age(st.stalled_ms))
    } else {
        format!("{}: {why}", age(st.waiting_ms))
    };
    let wrap_room = width.saturating_sub(INDENT.len() + LABEL_W).max(20);
    for (i, piece) in wrap(&text, wrap_room).into_iter().enumerate() {
        let spans = vec![Span::raw(piece)];
        out.push(if i == 0 {
            kv("waiting", spans)
        } else {
            cont(spans)
        });
    }
    out.push(kv(
        "channel",
        vec![
            Span::styled(g.kind.name().to_string(), theme::value()),
            Span::raw(" created at "),
            Span::raw(keep_end(&location(s, g.key.channel_site), room)),
        ],
    ));
    if let Some(c) = &g.channel {
        out.push(cont(vec![Span::raw(channel_state(c))]));
        out.push(cont(vec![Span::styled(
            format!(
                "last send {} · last recv {}",
                ago(s.now_ms, c.last_send_ms),
                ago(s.now_ms, c.last_recv_ms)
            ),
            theme::dim(),
        )]));
    }
    let totals = s
        .channels
        .iter()
        .find(|c| c.site == g.key.channel_site && c.kind == g.kind);
    if let Some(cs) = totals.filter(|_| width >= 100) {
        out.push(cont(vec![Span::styled(
            format!(
                "all from this site: {} live of {} created · {} · {}",
                thousands(cs.live),
                thousands(cs.created),
                plural(cs.sends, "send"),
                plural(cs.recvs, "recv")
            ),
            theme::dim(),
        )]));
    }
}

fn channel_state(c: &ChannelStats) -> String {
    let mut parts = Vec::new();
    match (c.capacity, c.len) {
        (Some(cap), Some(len)) => parts.push(format!("length {len} of capacity {cap}")),
        (None, Some(len)) => parts.push(format!("length {len}, unbounded")),
        (Some(cap), None) => parts.push(format!("capacity {cap}")),
        (None, None) => {}
    }
    parts.push(plural(c.senders, "sender"));
    parts.push(plural(c.receivers, "receiver"));
    if c.closed {
        parts.push("closed".into());
    }
    parts.join(" · ")
}

/// Which module an address is in, as `name+0xoffset` (until frames are symbolized).
fn module_of(s: &Session, addr: u64) -> String {
    match s.modules.iter().find(|m| addr >= m.start && addr < m.end) {
        Some(m) => {
            let name = m.path.rsplit('/').next().unwrap_or(&m.path);
            format!("{name}+{:#x}", addr - m.start + m.offset)
        }
        None => "?".into(),
    }
}

fn stack_lines(app: &App, g: &BlockedGroup, out: &mut Vec<Line<'static>>) {
    let s = app.view();
    let fold = !app.detail.all_frames;
    out.push(Line::from(vec![
        Span::styled(format!("{INDENT}Await chain"), theme::title()),
        Span::styled(
            if fold {
                "  (folded · f: all frames)"
            } else {
                "  (all frames · f: fold)"
            },
            theme::dim(),
        ),
    ]));
    let Some(id) = g.key.stack else {
        out.push(cont(vec![Span::styled(
            "no stack was captured for this group",
            theme::dim(),
        )]));
        return;
    };
    if let Some(frames) = s.symbols.get(&id) {
        symbol_lines(frames, fold, out);
        for note in &s.symbol_notes {
            out.push(cont(vec![Span::styled(
                format!("note: {note}"),
                theme::dim(),
            )]));
        }
        return;
    }
    let Some(frames) = s.stacks.get(&id) else {
        out.push(cont(vec![Span::styled(
            format!("stack #{id} not received yet"),
            theme::dim(),
        )]));
        return;
    };
    let shown = if fold {
        frames.len().min(FOLDED_FRAMES)
    } else {
        frames.len()
    };
    for (i, addr) in frames.iter().take(shown).enumerate() {
        out.push(Line::from(vec![
            Span::styled(format!("{INDENT}{i:>4}  "), theme::dim()),
            Span::raw(format!("{addr:#018x}  ")),
            Span::styled(module_of(s, *addr), theme::dim()),
        ]));
    }
    if shown < frames.len() {
        out.push(cont(vec![Span::styled(
            format!(
                "… {} (f: show all)",
                plural((frames.len() - shown) as u64, "more frame")
            ),
            theme::dim(),
        )]));
    }
}

/// A symbolized chain: function, then `at file:line`; folded, runs of runtime, std and
/// agent frames become one `… N runtime frames` line (all of them when no frame is the
/// user's own).
fn symbol_lines(frames: &[Frame], folded: bool, out: &mut Vec<Line<'static>>) {
    let any_user = frames.iter().any(|f| f.class == FrameClass::User);
    let mode = if folded && any_user {
        FoldMode::UserOnly
    } else {
        FoldMode::All
    };
    for item in fold(frames, mode) {
        match item {
            Folded::Hidden { count } => out.push(cont(vec![Span::styled(
                format!("… {} (f shows them)", plural(count as u64, "runtime frame")),
                theme::dim(),
            )])),
            Folded::Frame(f) => {
                let user = f.class == FrameClass::User;
                let style = if user { theme::value() } else { theme::dim() };
                out.push(Line::from(vec![
                    Span::raw(format!("{INDENT}{:LABEL_W$}", "")),
                    Span::styled(display_name(&f.function).to_string(), style),
                    Span::styled(if f.inlined { "  (inlined)" } else { "" }, theme::dim()),
                ]));
                if let Some(loc) = f.location() {
                    out.push(cont(vec![
                        Span::styled("  at ", theme::dim()),
                        Span::raw(crate::tui::format::short_path(&loc).to_string()),
                    ]));
                }
            }
        }
    }
}

fn task_lines(app: &App, site: u32, g: Option<&BlockedGroup>, out: &mut Vec<Line<'static>>) {
    let s = app.view();
    let key = g.map(|g| g.key.clone());
    out.push(Line::styled(
        format!(
            "{INDENT}Oldest tasks{}",
            if g.is_some() { " of this group" } else { "" }
        ),
        theme::title(),
    ));
    let Some(list) = s
        .task_lists
        .iter()
        .find(|l| l.site == site && l.group == key)
    else {
        out.push(cont(vec![Span::styled("asking the agent…", theme::dim())]));
        return;
    };
    if list.tasks.is_empty() {
        out.push(cont(vec![Span::styled("none alive", theme::dim())]));
    }
    for t in &list.tasks {
        let state = match t.state {
            TaskState::Running => "running".to_string(),
            TaskState::Idle => "idle".to_string(),
            TaskState::Blocked => match t.blocked_since_ms {
                Some(since) => format!("blocked {}", age(s.now_ms.saturating_sub(since))),
                None => "blocked".to_string(),
            },
            TaskState::Waiting => "waiting".to_string(),
            TaskState::Runnable => "runnable".to_string(),
            TaskState::Uncaptured => "pending, not captured".to_string(),
            TaskState::Unknown => "state unknown".to_string(),
        };
        out.push(Line::from(vec![
            Span::raw(format!("{INDENT}{:>LABEL_W$}", format!("task {}", t.id))),
            Span::raw(format!(
                "  spawned {} ago  ",
                age(s.now_ms.saturating_sub(t.spawned_ms))
            )),
            Span::styled(state, theme::dim()),
        ]));
    }
}

/// The verdict and the sentences it rests on.
fn verdict_lines(s: &Session, v: Option<&SiteVerdict>, width: usize, out: &mut Vec<Line<'static>>) {
    let Some(v) = v.filter(|v| v.verdict != Verdict::None) else {
        out.push(kv(
            "verdict",
            vec![Span::styled("no finding", theme::dim())],
        ));
        return;
    };
    out.push(kv(
        "verdict",
        vec![
            verdict_mark(v.verdict),
            Span::styled(
                format!(" {}", v.verdict.name().to_uppercase()),
                verdict_style(v.verdict),
            ),
        ],
    ));
    let room = width.saturating_sub(INDENT.len() + LABEL_W + 2).max(20);
    for sentence in crate::report::evidence::sentences(s, v) {
        for (i, piece) in wrap(&sentence, room).into_iter().enumerate() {
            let bullet = if i == 0 { "· " } else { "  " };
            out.push(cont(vec![Span::styled(
                format!("{bullet}{piece}"),
                theme::dim(),
            )]));
        }
    }
}

/// Every line of the pane for the selected site (before scrolling).
pub fn lines(app: &App, width: u16) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    let Some(row) = app.selected_row() else {
        return out;
    };
    let s = app.view();
    let w = width as usize;
    let Some(st) = s.sites.get(&row.site).and_then(|x| x.stats.as_ref()) else {
        return out;
    };
    site_lines(s, row, st, w, &mut out);
    let verdict = assess_site(s, row.site, &app.thresholds);
    verdict_lines(s, verdict.as_ref(), w, &mut out);
    out.push(Line::default());
    let groups = app.site_groups(row.site);
    if groups.is_empty() {
        unblocked_lines(app, row.site, st, &mut out);
        return out;
    }
    let sel = app.detail.group.min(groups.len() - 1);
    group_list_lines(app, &groups, sel, w, &mut out);
    let g = groups[sel];
    out.push(Line::default());
    channel_lines(s, g, w, &mut out);
    out.push(Line::default());
    stack_lines(app, g, &mut out);
    out.push(Line::default());
    if app.detail.tasks {
        task_lines(app, row.site, Some(g), &mut out);
    } else {
        out.push(Line::styled(
            format!("{INDENT}t: list the oldest tasks of this group"),
            theme::dim(),
        ));
    }
    out
}

/// The site and its counters.
fn site_lines(s: &Session, row: &Row, st: &SiteStats, w: usize, out: &mut Vec<Line<'static>>) {
    out.push(kv(
        "spawn site",
        vec![Span::styled(
            keep_end(&row.label, w.saturating_sub(INDENT.len() + LABEL_W)),
            theme::value(),
        )],
    ));
    let mut parts = Vec::new();
    for (n, what) in [
        (st.blocked_send, "blocked on send"),
        (st.blocked_recv, "blocked on recv"),
        (st.idle(), "idle"),
        (st.running, "running"),
    ] {
        if n > 0 {
            parts.push(format!("{} {what}", thousands(n)));
        }
    }
    out.push(kv(
        "tasks",
        vec![
            Span::styled(format!("{} live", thousands(st.live)), theme::value()),
            Span::raw(if parts.is_empty() {
                String::new()
            } else {
                format!(": {}", parts.join(" · "))
            }),
        ],
    ));
    let mut more = vec![format!(
        "{} spawned · {} done",
        thousands(st.spawned),
        thousands(st.completed)
    )];
    if let Some(t) = st.oldest_live_ms {
        more.push(format!("oldest {}", age(s.now_ms.saturating_sub(t))));
    }
    if let Some(g) = row.growth {
        more.push(format!("Δ/min {}", rate(g, 8)));
    }
    if let Some(d) = row.since_baseline {
        more.push(format!("{} since baseline", signed(d, 9)));
    }
    out.push(cont(vec![Span::styled(more.join(" · "), theme::dim())]));
}

/// A site none of whose tasks waits on an instrumented channel.
fn unblocked_lines(app: &App, site: u32, st: &SiteStats, out: &mut Vec<Line<'static>>) {
    out.push(Line::styled(
        format!("{INDENT}Not blocked on any instrumented channel"),
        theme::title(),
    ));
    if st.idle() > 0 {
        out.push(cont(vec![Span::styled(
            format!(
                "{} idle: awaiting timers, IO, locks or tokio channels",
                plural(st.idle(), "task")
            ),
            theme::dim(),
        )]));
    }
    if app.detail.tasks {
        out.push(Line::default());
        task_lines(app, site, None, out);
    } else {
        out.push(cont(vec![Span::styled(
            "t: list the oldest tasks",
            theme::dim(),
        )]));
    }
}

/// The site's blocked groups, one line each, the selected one marked.
fn group_list_lines(
    app: &App,
    groups: &[&BlockedGroup],
    sel: usize,
    w: usize,
    out: &mut Vec<Line<'static>>,
) {
    let s = app.view();
    out.push(Line::from(vec![
        Span::styled(format!("{INDENT}Blocked"), theme::title()),
        Span::styled(
            format!(
                "  ({}{})",
                plural(groups.len() as u64, "group"),
                match (groups.len(), app.focus) {
                    (1, _) => "",
                    (_, Focus::Detail) => " · j/k picks one",
                    (_, Focus::Sites) => " · Tab, then j/k picks one",
                }
            ),
            theme::dim(),
        ),
    ]));
    for (i, g) in groups.iter().enumerate() {
        let picked = i == sel;
        let marker = if picked { "▶ " } else { "  " };
        let title_style = if picked && app.focus == Focus::Detail {
            theme::selected_focused()
        } else if picked {
            theme::value()
        } else {
            ratatui::style::Style::new()
        };
        out.push(Line::from(vec![
            Span::raw(INDENT.to_string()),
            Span::styled(marker, theme::label()),
            Span::styled(group_title(g, s.now_ms), title_style),
            Span::styled("  at ", theme::dim()),
            Span::raw(keep_end(
                &location(s, g.key.call_site),
                w.saturating_sub(40),
            )),
        ]));
    }
}

/// Lines the pane would have at this width (for scrolling).
pub fn line_count(app: &App, width: u16) -> usize {
    lines(app, width).len()
}

impl Widget for DetailPane<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        if area.height == 0 {
            return;
        }
        let focused = app.focus == Focus::Detail;
        let title = match app.selected_row() {
            Some(_) if focused => " Detail · Esc: back · Enter/t: tasks ",
            Some(_) => " Detail · Enter or Tab: focus ",
            None => " Detail ",
        };
        let rule: String = "─".repeat(area.width as usize);
        buf.set_stringn(
            area.x,
            area.y,
            &rule,
            area.width as usize,
            theme::pane_title(focused),
        );
        buf.set_stringn(
            area.x + 1,
            area.y,
            title,
            area.width.saturating_sub(2) as usize,
            theme::pane_title(focused).add_modifier(Modifier::BOLD),
        );
        let body = Rect {
            y: area.y + 1,
            height: area.height - 1,
            ..area
        };
        let all = lines(app, area.width);
        if all.is_empty() {
            put_line(
                buf,
                body,
                body.y,
                &Line::styled(format!("{INDENT}no site selected"), theme::dim()),
            );
            return;
        }
        let max_scroll = all.len().saturating_sub(body.height as usize);
        let scroll = (app.detail.scroll as usize).min(max_scroll);
        for (i, line) in all
            .iter()
            .skip(scroll)
            .take(body.height as usize)
            .enumerate()
        {
            put_line(buf, body, body.y + i as u16, line);
        }
        if all.len() > body.height as usize && body.width > 0 {
            let more = format!(
                " {}/{} ",
                (scroll + body.height as usize).min(all.len()),
                all.len()
            );
            let x = body.x + body.width.saturating_sub(more.len() as u16);
            buf.set_stringn(x, area.y, more, body.width as usize, theme::dim());
        }
    }
}
