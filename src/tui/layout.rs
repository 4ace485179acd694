//! Where everything goes on the screen: one pure function of the terminal area and the app
//! state, shared by rendering and by mouse hit-testing, so a click lands on what was drawn.

use ratatui::layout::Rect;

use super::app::{App, Focus};
use super::rows::SortKey;

/// Smallest terminal the full view fits in; below it a "terminal too small" note is shown.
pub const MIN_WIDTH: u16 = 50;
pub const MIN_HEIGHT: u16 = 10;

/// Lines of the header.
pub const HEADER_HEIGHT: u16 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Areas {
    pub header: Rect,
    /// The "process exited" line (zero height while the process runs).
    pub banner: Rect,
    /// Column titles of the site table.
    pub table_header: Rect,
    /// The rows of the site table.
    pub table: Rect,
    /// The detail pane including its title rule.
    pub detail: Rect,
    /// Replay position (zero height without a timeline).
    pub timeline: Rect,
    pub footer: Rect,
}

/// True when the terminal is too small for the view.
pub fn too_small(area: Rect) -> bool {
    area.width < MIN_WIDTH || area.height < MIN_HEIGHT
}

fn take_top(r: &mut Rect, h: u16) -> Rect {
    let h = h.min(r.height);
    let top = Rect { height: h, ..*r };
    r.y += h;
    r.height -= h;
    top
}

fn take_bottom(r: &mut Rect, h: u16) -> Rect {
    let h = h.min(r.height);
    r.height -= h;
    Rect {
        y: r.y + r.height,
        height: h,
        ..*r
    }
}

impl Areas {
    pub fn of(area: Rect, app: &App) -> Areas {
        let mut rest = area;
        let header = take_top(&mut rest, HEADER_HEIGHT);
        let banner = take_top(&mut rest, u16::from(app.view().ended.is_some()));
        let footer = take_bottom(&mut rest, 1);
        let timeline = take_bottom(&mut rest, u16::from(app.timeline.is_some()));
        let table_header = take_top(&mut rest, 1);
        // The pane with the focus gets the larger share.
        let share = match app.focus {
            Focus::Sites => 55,
            Focus::Detail => 20,
        };
        // The table takes its share, or less when it has fewer rows: the detail pane
        // gets the rest.
        let table_rows = (rest.height as u32 * share / 100) as u16;
        let wanted = app.rows.len().max(3).min(u16::MAX as usize) as u16;
        let table_rows = table_rows
            .min(wanted)
            .clamp(2.min(rest.height), rest.height);
        let table = take_top(&mut rest, table_rows);
        Areas {
            header,
            banner,
            table_header,
            table,
            detail: rest,
            timeline,
            footer,
        }
    }
}

/// Horizontal alignment of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// What a table column shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColKind {
    Mark,
    Site,
    Live,
    Growth,
    SinceBaseline,
    BlockedSend,
    BlockedRecv,
    OldestBlock,
    History,
}

impl ColKind {
    /// The sort key a click on this column's title selects.
    pub fn sort_key(self) -> Option<SortKey> {
        match self {
            ColKind::Mark | ColKind::SinceBaseline => Some(SortKey::Suspicion),
            ColKind::Site => Some(SortKey::Site),
            ColKind::Live => Some(SortKey::Live),
            ColKind::Growth => Some(SortKey::Growth),
            ColKind::BlockedSend => Some(SortKey::BlockedSend),
            ColKind::BlockedRecv => Some(SortKey::BlockedRecv),
            ColKind::OldestBlock => Some(SortKey::OldestBlock),
            ColKind::History => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Col {
    pub kind: ColKind,
    pub title: &'static str,
    /// Start column relative to the table's left edge, and width.
    pub x: u16,
    pub width: u16,
    pub align: Align,
}

/// The table's columns for a table `width` wide. Narrow terminals get short titles and
/// a narrower history; the spawn site takes what is left.
pub fn columns(width: u16, baseline: bool) -> Vec<Col> {
    let wide = width >= 110;
    let mut spec: Vec<(ColKind, &'static str, u16, Align)> = vec![
        (ColKind::Mark, "", 1, Align::Left),
        (ColKind::Site, "SPAWN SITE", 0, Align::Left),
        (ColKind::Live, "LIVE", 7, Align::Right),
        (ColKind::Growth, "Δ/MIN", 6, Align::Right),
    ];
    if baseline {
        spec.push((ColKind::SinceBaseline, "+BASE", 6, Align::Right));
    }
    if wide {
        spec.push((ColKind::BlockedSend, "BLK SEND", 8, Align::Right));
        spec.push((ColKind::BlockedRecv, "BLK RECV", 8, Align::Right));
        spec.push((ColKind::OldestBlock, "OLDEST BLK", 10, Align::Right));
    } else {
        spec.push((ColKind::BlockedSend, "SEND", 6, Align::Right));
        spec.push((ColKind::BlockedRecv, "RECV", 6, Align::Right));
        spec.push((ColKind::OldestBlock, "OLDEST", 6, Align::Right));
    }
    let history = match width {
        0..=69 => 0,
        70..=99 => 12,
        100..=139 => 24,
        _ => 32,
    };
    if history > 0 {
        spec.push((ColKind::History, "HISTORY", history, Align::Left));
    }
    let gaps = spec.len().saturating_sub(1) as u16;
    let fixed: u16 = spec.iter().map(|s| s.2).sum::<u16>() + gaps;
    let site_w = width.saturating_sub(fixed).max(8);
    let mut x = 0u16;
    let mut out = Vec::with_capacity(spec.len());
    for (kind, title, w, align) in spec {
        let w = if kind == ColKind::Site { site_w } else { w };
        if x >= width {
            break;
        }
        let w = w.min(width - x);
        out.push(Col {
            kind,
            title,
            x,
            width: w,
            align,
        });
        x = x.saturating_add(w).saturating_add(1);
    }
    out
}
