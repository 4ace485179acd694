//! The bottom line: keys (htop style), or the filter prompt; the sort and a status message
//! on the right.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::put_line;
use crate::tui::app::{App, Mode};
use crate::tui::keys::FOOTER;
use crate::tui::theme;

pub struct Footer<'a>(pub &'a App);

impl Widget for Footer<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        let right = if let Some(status) = &app.status {
            Span::styled(format!(" {status} "), theme::growing())
        } else {
            Span::styled(
                format!(
                    " sort: {} {} ",
                    app.sort.key.name(),
                    if app.sort.reverse { "▲" } else { "▼" }
                ),
                theme::dim(),
            )
        };
        let left: Line = if app.mode == Mode::Filter {
            Line::from(vec![
                Span::styled(" Filter: ", theme::footer_label()),
                Span::raw(" "),
                Span::styled(app.filter.clone(), theme::value()),
                Span::styled("█", theme::label()),
                Span::styled("  Enter keep · Esc clear", theme::dim()),
            ])
        } else {
            let mut spans = Vec::new();
            if !app.filter.is_empty() {
                spans.push(Span::styled(" Filter: ", theme::footer_label()));
                spans.push(Span::styled(format!(" {} ", app.filter), theme::value()));
            }
            for (key, label, _) in FOOTER {
                spans.push(Span::styled(*key, theme::footer_key()));
                spans.push(Span::styled(format!("{label} "), theme::footer_label()));
            }
            Line::from(spans)
        };
        // The keys first; the sort on the right only when it fits beside them; a
        // status message always shows (over the last keys).
        let right_w = right.width() as u16;
        let show_right = app.status.is_some() || left.width() as u16 + right_w <= area.width;
        let left_room = if show_right && area.width > right_w + 10 {
            area.width - right_w
        } else {
            area.width
        };
        put_line(
            buf,
            Rect {
                width: left_room,
                ..area
            },
            area.y,
            &left,
        );
        if left_room < area.width {
            put_line(
                buf,
                Rect {
                    x: area.x + left_room,
                    width: right_w,
                    ..area
                },
                area.y,
                &Line::from(right),
            );
        }
    }
}
