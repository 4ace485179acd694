//! Colours and text styles, in one place (htop's palette: green column titles, cyan
//! selection, keys in the footer on cyan).

use ratatui::style::{Color, Modifier, Style};

pub fn title() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}
pub fn label() -> Style {
    Style::new().fg(Color::Cyan)
}
pub fn value() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}
pub fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}
pub fn table_header() -> Style {
    Style::new().fg(Color::Black).bg(Color::Green)
}
pub fn table_header_sorted() -> Style {
    Style::new()
        .fg(Color::Black)
        .bg(Color::Cyan)
        .add_modifier(Modifier::BOLD)
}
pub fn selected_focused() -> Style {
    Style::new().fg(Color::Black).bg(Color::Cyan)
}
pub fn selected_unfocused() -> Style {
    Style::new().bg(Color::DarkGray)
}
pub fn leak() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}
pub fn stuck() -> Style {
    Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)
}
pub fn growing() -> Style {
    Style::new().fg(Color::Yellow)
}
pub fn spark() -> Style {
    Style::new().fg(Color::Cyan)
}
pub fn footer_key() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}
pub fn footer_label() -> Style {
    Style::new().fg(Color::Black).bg(Color::Cyan)
}
pub fn badge(bg: Color) -> Style {
    Style::new()
        .fg(Color::Black)
        .bg(bg)
        .add_modifier(Modifier::BOLD)
}
pub fn pane_title(focused: bool) -> Style {
    if focused {
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(Color::Gray)
    }
}
pub fn banner() -> Style {
    Style::new()
        .fg(Color::White)
        .bg(Color::Red)
        .add_modifier(Modifier::BOLD)
}
