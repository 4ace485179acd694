//! The pieces of the screen, each a pure function of the app state (`impl Widget`).

pub mod detail;
pub mod footer;
pub mod header;
pub mod help;
pub mod table;
pub mod timeline;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;

/// Draws `line` into `area`'s first row, cut at its right edge.
pub fn put_line(buf: &mut Buffer, area: Rect, y: u16, line: &Line<'_>) {
    if area.width == 0 || y >= area.y + area.height || y < area.y {
        return;
    }
    buf.set_line(area.x, y, line, area.width);
}
