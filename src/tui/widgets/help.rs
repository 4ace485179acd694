//! The `?` overlay: every key, from the key table.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget};

use crate::model::Verdict;
use crate::tui::app::App;
use crate::tui::format::age;
use crate::tui::keys::{Section, HELP, TIMELINE_HELP};
use crate::tui::theme;
use crate::tui::widgets::verdict_mark;

pub struct HelpOverlay<'a> {
    pub app: &'a App,
    pub scroll: u16,
}

/// The help text.
pub fn lines(app: &App) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    let mut sections: Vec<&Section> = HELP.iter().collect();
    if app.timeline.is_some() {
        sections.push(&TIMELINE_HELP);
    }
    for s in sections {
        out.push(Line::styled(
            s.title,
            theme::title().fg(ratatui::style::Color::Green),
        ));
        for k in s.entries {
            out.push(Line::from(vec![
                Span::styled(format!("  {:<16}", k.keys), theme::label()),
                Span::raw(k.what),
            ]));
        }
        out.push(Line::default());
    }
    out.push(Line::styled(
        "Marks",
        theme::title().fg(ratatui::style::Color::Green),
    ));
    let th = &app.thresholds;
    for (v, what) in [
        (
            Verdict::Leak,
            format!(
                "leak: growing, tasks waiting {}+ without progress",
                age(th.min_age_ms)
            ),
        ),
        (
            Verdict::Stuck,
            format!(
                "stuck: tasks blocked {}+ on a channel that never moves",
                age(th.stuck_age_ms)
            ),
        ),
        (
            Verdict::Growing,
            format!(
                "growing: live count rising steadily over {}",
                age(th.window_ms)
            ),
        ),
    ] {
        out.push(Line::from(vec![
            Span::raw("  "),
            verdict_mark(v),
            Span::raw(format!("{:15}", "")),
            Span::raw(what),
        ]));
    }
    out.push(Line::from(vec![
        Span::styled("  Δ/MIN           ", theme::label()),
        Span::raw("robust growth of the live count, tasks per minute"),
    ]));
    out
}

impl Widget for HelpOverlay<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let text = lines(self.app);
        let want_w = text.iter().map(|l| l.width() as u16).max().unwrap_or(0) + 4;
        let w = want_w.min(area.width);
        let h = (text.len() as u16 + 2).min(area.height);
        let rect = Rect {
            x: area.x + (area.width - w) / 2,
            y: area.y + (area.height - h) / 2,
            width: w,
            height: h,
        };
        Clear.render(rect, buf);
        let inner_h = h.saturating_sub(2) as usize;
        let max_scroll = text.len().saturating_sub(inner_h) as u16;
        let scroll = self.scroll.min(max_scroll);
        let block = Block::default()
            .borders(Borders::ALL)
            .border_style(theme::label())
            .title(Line::styled(" leaktop keys ", theme::title()))
            .title_bottom(Line::styled(
                if max_scroll > 0 {
                    " Esc/? close · j/k scroll "
                } else {
                    " Esc/? close "
                },
                theme::dim(),
            ));
        Paragraph::new(text)
            .block(block)
            .scroll((scroll, 0))
            .render(rect, buf);
    }
}
