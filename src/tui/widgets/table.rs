//! The site table: one row per spawn site, with a sparkline of its live count.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::put_line;
use crate::model::Verdict;
use crate::tui::app::{App, Focus};
use crate::tui::format::{age, buckets, count, keep_end, rate, signed, sparkline};
use crate::tui::layout::{columns, Align, Col, ColKind};
use crate::tui::rows::{Row, SortKey};
use crate::tui::theme;
use crate::tui::widgets::{verdict_mark, verdict_style};

/// Default history window when the agent has not said (10 min of 1 s samples).
const DEFAULT_WINDOW_MS: u64 = 600_000;

/// Column titles.
pub struct TableHeader<'a>(pub &'a App);

/// The visible rows.
pub struct SiteTable<'a>(pub &'a App);

/// Shortest span of the sparklines: a young process shows its first half minute.
const MIN_WINDOW_MS: u64 = 30_000;

/// Length of the history the sparklines cover: what the agent keeps, or the process's
/// uptime while that is shorter (so a young process's growth fills the column).
pub fn history_window_ms(app: &App) -> u64 {
    let s = app.view();
    let kept = s
        .hello
        .as_ref()
        .map(|h| h.history_len as u64 * h.sample_interval_ms as u64)
        .filter(|w| *w > 0)
        .unwrap_or(DEFAULT_WINDOW_MS);
    kept.min(s.now_ms.max(MIN_WINDOW_MS))
}

fn pad(text: &str, width: u16, align: Align) -> String {
    let w = width as usize;
    let t = crate::tui::format::keep_start(text, w);
    match align {
        Align::Left => format!("{t:<w$}"),
        Align::Right => format!("{t:>w$}"),
    }
}

impl Widget for TableHeader<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        buf.set_style(area, theme::table_header());
        let cols = columns(area.width, app.baseline().is_some());
        for c in &cols {
            let sorted = c.kind.sort_key() == Some(app.sort.key)
                && !(c.kind == ColKind::SinceBaseline && app.sort.key == SortKey::Suspicion)
                && !(c.kind == ColKind::Mark);
            let mut title = c.title.to_string();
            if c.kind == ColKind::History {
                title = format!("HISTORY {}", age_short(history_window_ms(app)));
            }
            if sorted {
                title.push(if app.sort.reverse { '▲' } else { '▼' });
            }
            let style = if sorted {
                theme::table_header_sorted()
            } else {
                theme::table_header()
            };
            buf.set_stringn(
                area.x + c.x,
                area.y,
                pad(&title, c.width, c.align),
                c.width as usize,
                style,
            );
        }
    }
}

fn age_short(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

fn cell(app: &App, row: &Row, c: &Col) -> Span<'static> {
    let w = c.width as usize;
    let zero = |n: u64| {
        if n == 0 {
            Span::styled(pad("0", c.width, c.align), theme::dim())
        } else {
            Span::raw(pad(&count(n, w), c.width, c.align))
        }
    };
    match c.kind {
        ColKind::Mark => verdict_mark(row.verdict),
        ColKind::Site => {
            let style = match row.kind {
                Some(leaktop_agent::wire::SiteKind::Spawn) | None => Style::new(),
                _ => theme::dim(),
            };
            Span::styled(pad(&keep_end(&row.label, w), c.width, c.align), style)
        }
        ColKind::Live => Span::styled(pad(&count(row.live, w), c.width, c.align), theme::value()),
        ColKind::Growth => match row.growth {
            None => Span::styled(pad("·", c.width, c.align), theme::dim()),
            Some(g) => {
                let text = pad(&rate(g, w), c.width, c.align);
                if g >= 0.05 {
                    Span::styled(text, theme::growing())
                } else {
                    Span::raw(text)
                }
            }
        },
        ColKind::SinceBaseline => match row.since_baseline {
            Some(d) if d > 0 => {
                Span::styled(pad(&signed(d, w), c.width, c.align), theme::growing())
            }
            Some(d) => Span::raw(pad(&signed(d, w), c.width, c.align)),
            None => Span::raw(pad("", c.width, c.align)),
        },
        ColKind::BlockedSend => zero(row.blocked_send),
        ColKind::BlockedRecv => zero(row.blocked_recv),
        ColKind::OldestBlock => match row.oldest_block_ms {
            Some(ms) => Span::raw(pad(&age(ms), c.width, c.align)),
            None => Span::styled(pad("·", c.width, c.align), theme::dim()),
        },
        ColKind::History => {
            let s = app.view();
            let points: Vec<(u64, u64)> = s
                .sites
                .get(&row.site)
                .map(|site| {
                    site.series
                        .iter()
                        .map(|p| (p.t_ms, p.sample.live as u64))
                        .collect()
                })
                .unwrap_or_default();
            let b = buckets(&points, s.now_ms, history_window_ms(app), w);
            let style = match row.verdict {
                Verdict::None => theme::spark(),
                v => verdict_style(v),
            };
            Span::styled(sparkline(&b), style)
        }
    }
}

impl Widget for SiteTable<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        if app.rows.is_empty() {
            let s = app.view();
            let msg = if !app.filter.is_empty() {
                format!(
                    " no spawn site matches “{}” (Esc clears the filter)",
                    app.filter
                )
            } else if s.seq == 0 && s.ended.is_none() {
                " waiting for the first snapshot…".to_string()
            } else {
                " no instrumented task yet: spawn with leaktop_agent::spawn(…)".to_string()
            };
            put_line(buf, area, area.y, &Line::styled(msg, theme::dim()));
            return;
        }
        let cols = columns(area.width, app.baseline().is_some());
        let visible = app
            .rows
            .iter()
            .enumerate()
            .skip(app.table_offset)
            .take(area.height as usize);
        for (i, (idx, row)) in visible.enumerate() {
            let y = area.y + i as u16;
            let line_area = Rect {
                y,
                height: 1,
                ..area
            };
            for c in &cols {
                let span = cell(app, row, c);
                buf.set_span(area.x + c.x, y, &span, c.width);
            }
            if idx == app.selected {
                let style = if app.focus == Focus::Sites {
                    theme::selected_focused()
                } else {
                    theme::selected_unfocused()
                };
                buf.set_style(line_area, style);
            }
        }
    }
}
