//! The pieces of the screen, each a pure function of the app state (`impl Widget`).

pub mod detail;
pub mod footer;
pub mod header;
pub mod help;
pub mod table;
pub mod timeline;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};

use crate::model::Verdict;
use crate::tui::theme;

/// Colour of a verdict.
pub fn verdict_style(v: Verdict) -> Style {
    match v {
        Verdict::Leak => theme::leak(),
        Verdict::Stuck => theme::stuck(),
        Verdict::Growing => theme::growing(),
        Verdict::None => Style::new(),
    }
}

/// The one-column mark of a verdict: `●` leak, `■` stuck, `▲` growing.
pub fn verdict_mark(v: Verdict) -> Span<'static> {
    let c = match v {
        Verdict::Leak => "●",
        Verdict::Stuck => "■",
        Verdict::Growing => "▲",
        Verdict::None => " ",
    };
    Span::styled(c, verdict_style(v))
}

/// Draws `line` into `area`'s first row, cut at its right edge.
pub fn put_line(buf: &mut Buffer, area: Rect, y: u16, line: &Line<'_>) {
    if area.width == 0 || y >= area.y + area.height || y < area.y {
        return;
    }
    buf.set_line(area.x, y, line, area.width);
}
