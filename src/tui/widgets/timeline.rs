//! The replay position bar (shown when the app has a [`Timeline`]).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::Widget;

use crate::tui::app::Timeline;
use crate::tui::format::{age, speed};
use crate::tui::theme;

pub struct TimelineBar<'a>(pub &'a Timeline);

impl Widget for TimelineBar<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let t = self.0;
        let span = t.end_ms.saturating_sub(t.start_ms);
        let pos = t.pos_ms.clamp(t.start_ms, t.end_ms.max(t.start_ms)) - t.start_ms;
        let label = format!(" {} / {} ", age(pos), age(span));
        let prefix = if t.playing {
            format!(" ▶ {} ", speed(t.speed))
        } else {
            format!(" ‖ {} ", speed(t.speed))
        };
        let prefix = prefix.as_str();
        let bar_w = (area.width as usize).saturating_sub(prefix.chars().count() + label.len());
        let filled = if span == 0 {
            bar_w
        } else {
            (bar_w as u128 * pos as u128 / span as u128) as usize
        };
        let bar: String = (0..bar_w)
            .map(|i| match i.cmp(&filled) {
                std::cmp::Ordering::Less => '━',
                std::cmp::Ordering::Equal => '●',
                std::cmp::Ordering::Greater => '─',
            })
            .collect();
        buf.set_stringn(area.x, area.y, prefix, area.width as usize, theme::label());
        let x = area.x + prefix.chars().count().min(area.width as usize) as u16;
        buf.set_stringn(x, area.y, &bar, bar_w, theme::spark());
        let x = x + bar_w as u16;
        buf.set_stringn(
            x,
            area.y,
            label,
            area.width.saturating_sub(x - area.x) as usize,
            theme::value(),
        );
    }
}
