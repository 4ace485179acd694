//! Folding a resolved stack for display: by default only the user's frames, with the number
//! of frames hidden between them, so the await chain reads first.

use super::classify::FrameClass;
use super::Frame;

/// Which frames [`fold`] keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FoldMode {
    /// Only [`FrameClass::User`] frames; runs of other frames become [`Folded::Hidden`].
    #[default]
    UserOnly,
    /// Every frame.
    All,
}

/// One line of a folded stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folded<'a> {
    Frame(&'a Frame),
    /// `count` consecutive frames that were not shown.
    Hidden {
        count: usize,
    },
}

/// Folds `frames` (innermost first, as resolved). Runs of hidden frames at the ends are
/// reported too, so a renderer can say "… 12 runtime frames". A stack with no user frame
/// at all folds to a single `Hidden`; a renderer may fall back to [`FoldMode::All`] then.
pub fn fold(frames: &[Frame], mode: FoldMode) -> Vec<Folded<'_>> {
    let keep = |f: &Frame| match mode {
        FoldMode::All => true,
        FoldMode::UserOnly => f.class == FrameClass::User,
    };
    let mut out = Vec::new();
    let mut hidden = 0;
    for frame in frames {
        if keep(frame) {
            if hidden > 0 {
                out.push(Folded::Hidden { count: hidden });
                hidden = 0;
            }
            out.push(Folded::Frame(frame));
        } else {
            hidden += 1;
        }
    }
    if hidden > 0 {
        out.push(Folded::Hidden { count: hidden });
    }
    out
}

/// A function's name as people write it: an async fn's poll is its state machine's
/// closure (`path::handler::{{closure}}`), shown as `path::handler`.
pub fn display_name(name: &str) -> &str {
    let mut n = name;
    while let Some(rest) = n.strip_suffix("::{{closure}}") {
        n = rest;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_drops_the_async_state_machine_closures() {
        assert_eq!(display_name("app::handler::{{closure}}"), "app::handler");
        assert_eq!(
            display_name("app::run::{{closure}}::{{closure}}"),
            "app::run"
        );
        assert_eq!(display_name("app::plain"), "app::plain");
        assert_eq!(display_name("{{closure}}"), "{{closure}}");
    }

    fn frame(function: &str, class: FrameClass) -> Frame {
        super::super::unknown_frame(function.into(), class, "/bin/app", 0)
    }

    #[test]
    fn user_only_counts_what_it_hides() {
        use FrameClass::*;
        let frames = [
            frame("agent_poll", Agent),
            frame("leaf", User),
            frame("a", User),
            frame("tokio1", Runtime),
            frame("tokio2", Runtime),
            frame("b", User),
            frame("std", Std),
        ];
        let folded = fold(&frames, FoldMode::UserOnly);
        let shape: Vec<String> = folded
            .iter()
            .map(|f| match f {
                Folded::Frame(f) => f.function.to_string(),
                Folded::Hidden { count } => format!("…{count}"),
            })
            .collect();
        assert_eq!(shape, ["…1", "leaf", "a", "…2", "b", "…1"]);
        assert_eq!(fold(&frames, FoldMode::All).len(), frames.len());
        assert!(fold(&[], FoldMode::UserOnly).is_empty());
        assert_eq!(
            fold(&frames[3..5], FoldMode::UserOnly),
            [Folded::Hidden { count: 2 }]
        );
    }
}
