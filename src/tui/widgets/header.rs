//! Two header lines: the process, then the totals.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::put_line;
use crate::model::Verdict;
use crate::tui::app::App;
use crate::tui::format::{age, count, interval, keep_end, thousands};
use crate::tui::theme;

pub struct Header<'a>(pub &'a App);

/// The state badge: what the user looks at.
pub fn state_badges(app: &App) -> Vec<Span<'static>> {
    let s = app.view();
    let mut out = Vec::new();
    let (text, color) = if app.timeline.is_some() {
        (" REPLAY ", Color::Magenta)
    } else if s.ended.is_some() {
        (" EXITED ", Color::Red)
    } else if app.paused() {
        (" PAUSED ", Color::Yellow)
    } else if s.seq == 0 {
        (" ATTACHING ", Color::Gray)
    } else {
        (" LIVE ", Color::Green)
    };
    out.push(Span::styled(text, theme::badge(color)));
    if app.recording.is_some() {
        out.push(Span::raw(" "));
        out.push(Span::styled(" ● REC ", theme::badge(Color::Red)));
    }
    out
}

impl Widget for Header<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        process_line(self.0, area, buf);
        if area.height >= 2 {
            put_line(
                buf,
                area,
                area.y + 1,
                &Line::from(totals_line(self.0, area.width)),
            );
        }
    }
}

/// The first line: leaktop, the process, and on the right the state badges and the
/// refresh interval.
fn process_line(app: &App, area: Rect, buf: &mut Buffer) {
    let s = app.view();
    let mut right = state_badges(app);
    right.push(Span::styled(
        format!(" every {} ", interval(app.interval)),
        theme::dim(),
    ));
    let right_w: u16 = right.iter().map(|s| s.width() as u16).sum();
    let mut left = vec![
        Span::styled(" leaktop ", theme::badge(Color::Cyan)),
        Span::raw(" "),
    ];
    if let Some(h) = &s.hello {
        left.push(Span::styled("pid ", theme::label()));
        left.push(Span::styled(h.pid.to_string(), theme::value()));
        left.push(Span::styled("  up ", theme::label()));
        left.push(Span::styled(age(s.now_ms), theme::value()));
        left.push(Span::styled("  agent ", theme::label()));
        left.push(Span::styled(h.agent_version.clone(), theme::value()));
        left.push(Span::raw("  "));
        let used: u16 = left.iter().map(|s| s.width() as u16).sum::<u16>() + right_w + 1;
        let room = area.width.saturating_sub(used) as usize;
        left.push(Span::raw(keep_end(&h.exe, room)));
    } else {
        left.push(Span::styled("waiting for the agent's hello…", theme::dim()));
    }
    put_line(buf, area, area.y, &Line::from(left));
    if area.width > right_w {
        put_line(
            buf,
            Rect {
                x: area.x + area.width - right_w,
                width: right_w,
                ..area
            },
            area.y,
            &Line::from(right),
        );
    }
}

/// The second line: tasks, blocked tasks, sites and their verdicts, the baseline.
fn totals_line(app: &App, width: u16) -> Vec<Span<'static>> {
    let s = app.view();
    let (live, _) = s.totals();
    let (send, recv) = s
        .sites
        .values()
        .filter_map(|x| x.stats.as_ref())
        .fold((0, 0), |(a, b), st| {
            (a + st.blocked_send, b + st.blocked_recv)
        });
    let mut l2 = vec![
        Span::styled(" Tasks ", theme::label()),
        Span::styled(thousands(live), theme::value()),
        Span::raw(" live · "),
        Span::styled(
            thousands(send + recv),
            if send + recv > 0 {
                theme::growing().add_modifier(ratatui::style::Modifier::BOLD)
            } else {
                theme::value()
            },
        ),
        Span::raw(if width >= 100 {
            format!(
                " blocked ({} send, {} recv)",
                count(send, 9),
                count(recv, 9)
            )
        } else {
            " blocked".to_string()
        }),
        Span::styled("   Sites ", theme::label()),
        Span::styled(thousands(s.sites.len() as u64), theme::value()),
    ];
    let n = |v: Verdict| app.rows.iter().filter(|r| r.verdict == v).count();
    for (v, what, style) in [
        (Verdict::Leak, "● {} leaking", theme::leak()),
        (Verdict::Stuck, "■ {} stuck", theme::stuck()),
        (Verdict::Growing, "▲ {} growing", theme::growing()),
    ] {
        let k = n(v);
        if k > 0 {
            l2.push(Span::raw(" "));
            l2.push(Span::styled(what.replace("{}", &k.to_string()), style));
        }
    }
    if let Some(b) = app.baseline() {
        l2.push(Span::styled("   Baseline ", theme::label()));
        l2.push(Span::styled(
            format!("{} ago", age(s.now_ms.saturating_sub(b.t_ms))),
            theme::value(),
        ));
    }
    if s.sites_seen > s.sites.len() as u64 && s.seq > 0 {
        l2.push(Span::styled(
            format!("  ({} seen, over the cap)", thousands(s.sites_seen)),
            theme::dim(),
        ));
    }
    l2
}

/// The "process exited" banner.
pub struct Banner<'a>(pub &'a App);

impl Widget for Banner<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let Some(reason) = &self.0.view().ended else {
            return;
        };
        buf.set_style(area, theme::banner());
        let text = format!(" {reason} · last state shown");
        put_line(buf, area, area.y, &Line::styled(text, theme::banner()));
    }
}
