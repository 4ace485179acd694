//! The whole screen as one widget: `impl Widget for &App`. Pure: same state, same cells.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Widget, Wrap};

use super::app::{App, Mode};
use super::layout::{too_small, Areas, MIN_HEIGHT, MIN_WIDTH};
use super::theme;
use super::widgets::detail::DetailPane;
use super::widgets::footer::Footer;
use super::widgets::header::{Banner, Header};
use super::widgets::help::HelpOverlay;
use super::widgets::table::{SiteTable, TableHeader};
use super::widgets::timeline::TimelineBar;

/// Shown instead of the view when the terminal is below the minimum size.
pub struct TooSmall;

impl Widget for TooSmall {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width == 0 || area.height == 0 {
            return;
        }
        let text = vec![
            Line::styled("terminal too small", theme::title()),
            Line::raw(format!("{}×{}", area.width, area.height)),
            Line::raw(format!("need {MIN_WIDTH}×{MIN_HEIGHT}")),
            Line::styled("q quits", theme::dim()),
        ];
        let h = (text.len() as u16).min(area.height);
        let rect = Rect {
            y: area.y + (area.height - h) / 2,
            height: h,
            ..area
        };
        Paragraph::new(text)
            .centered()
            .wrap(Wrap { trim: true })
            .render(rect, buf);
    }
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if too_small(area) {
            TooSmall.render(area, buf);
            return;
        }
        let a = Areas::of(area, self);
        Header(self).render(a.header, buf);
        Banner(self).render(a.banner, buf);
        TableHeader(self).render(a.table_header, buf);
        SiteTable(self).render(a.table, buf);
        DetailPane(self).render(a.detail, buf);
        if let Some(t) = &self.timeline {
            TimelineBar(t).render(a.timeline, buf);
        }
        Footer(self).render(a.footer, buf);
        if let Mode::Help(scroll) = self.mode {
            HelpOverlay { app: self, scroll }.render(area, buf);
        }
    }
}
