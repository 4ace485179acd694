//! Resolved stack frames: what the symbolizer makes of a raw return address, what a
//! recording stores and what the model folds from an `Event::Symbols`. Plain data with no
//! IO, shared by every layer: the symbolizer produces it, the model keeps it, `report` and
//! `tui` fold it for display ([`fold`]: by default only the user's frames, with the number
//! of frames hidden between them, so the await chain reads first).
//!
//! The serde form of a [`Frame`] is the frame of a recording's symbol table
//! (`docs/recording.md`): postcard encodes by position, so the field order and the
//! `with` codecs below are the recording format and never change.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Owner of a frame, used to fold everything but the user's await chain by default.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameClass {
    /// The program's own code (anything not recognised as one of the others).
    User,
    /// The async runtime and its helpers (tokio, futures, mio, parking_lot, …) and any
    /// other crate compiled from the cargo registry or a git checkout.
    Runtime,
    /// std, core, alloc, libc, the dynamic loader, compiler glue.
    Std,
    /// leaktop's agent, linked into the target.
    Agent,
}

impl FrameClass {
    pub const ALL: [FrameClass; 4] = [
        FrameClass::User,
        FrameClass::Runtime,
        FrameClass::Std,
        FrameClass::Agent,
    ];

    /// The stable name of the class: in recordings and in the JSON reports.
    pub fn name(self) -> &'static str {
        match self {
            FrameClass::User => "user",
            FrameClass::Runtime => "runtime",
            FrameClass::Std => "std",
            FrameClass::Agent => "agent",
        }
    }

    /// The class of a stored name; anything else is the user's.
    pub fn from_name(name: &str) -> FrameClass {
        FrameClass::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .unwrap_or(FrameClass::User)
    }
}

/// One function frame of a resolved address. An address inside inlined code yields several
/// frames, innermost first; all but the last of them have `inlined == true`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Demangled Rust path without hash (`app::worker::{{closure}}`), a C name, or, when
    /// nothing is known, `<module file name>+0x<offset>` (the ELF virtual address when the
    /// module could be read, else the file offset), or the raw `0x<addr>` outside any module.
    /// Strings are shared with the symbolizer's cache: cloning a frame allocates nothing.
    #[serde(with = "codec::function")]
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// This frame was inlined into the next one (same machine frame).
    pub inlined: bool,
    /// Path of the module as the process maps it; empty outside any module.
    #[serde(with = "codec::module")]
    pub module: Arc<str>,
    #[serde(with = "codec::class")]
    pub class: FrameClass,
    /// The raw address this frame was resolved from, as given. Not stored: a recording
    /// keeps the frames of each address under that address.
    #[serde(skip)]
    pub addr: u64,
}

impl Frame {
    /// A frame that names a place without a function, file or line (an address outside
    /// every module, a module that could not be read).
    pub fn unknown(function: String, class: FrameClass, module: &str, addr: u64) -> Frame {
        Frame {
            function: function.into(),
            file: None,
            line: None,
            column: None,
            inlined: false,
            class,
            module: module.into(),
            addr,
        }
    }

    /// `file:line[:column]`, or `None` without line information.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_deref()?;
        Some(match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
            (Some(l), None) => format!("{file}:{l}"),
            _ => file.to_owned(),
        })
    }
}

/// How a frame's fields are stored in a recording: a function as an optional name (`??`
/// when absent), a module as an optional path (empty when absent), a class by its name.
mod codec {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::FrameClass;

    pub mod function {
        use super::*;
        pub fn serialize<S: Serializer>(f: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
            Some(&**f).serialize(s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
            Ok(Option::<String>::deserialize(d)?
                .as_deref()
                .unwrap_or("??")
                .into())
        }
    }

    pub mod module {
        use super::*;
        pub fn serialize<S: Serializer>(m: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
            (!m.is_empty()).then_some(&**m).serialize(s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
            Ok(Option::<String>::deserialize(d)?.unwrap_or_default().into())
        }
    }

    pub mod class {
        use super::*;
        pub fn serialize<S: Serializer>(c: &FrameClass, s: S) -> Result<S::Ok, S::Error> {
            Some(c.name()).serialize(s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FrameClass, D::Error> {
            let name = Option::<String>::deserialize(d)?;
            Ok(name
                .as_deref()
                .map_or(FrameClass::User, FrameClass::from_name))
        }
    }
}

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
        Frame::unknown(function.into(), class, "/bin/app", 0)
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

    /// Regression guard for the recording format: a frame is stored as the version-1
    /// files store it (optional strings, the class by name), so older recordings read.
    #[test]
    fn frames_keep_the_recorded_layout() {
        #[derive(serde::Serialize)]
        struct Stored {
            function: Option<String>,
            file: Option<String>,
            line: Option<u32>,
            column: Option<u32>,
            inlined: bool,
            module: Option<String>,
            class: Option<String>,
        }
        let stored = Stored {
            function: Some("app::run".into()),
            file: Some("src/main.rs".into()),
            line: Some(3),
            column: None,
            inlined: true,
            module: None,
            class: Some("runtime".into()),
        };
        let bytes = postcard::to_allocvec(&stored).unwrap();
        let frame: Frame = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&*frame.function, "app::run");
        assert_eq!((&*frame.module, frame.class), ("", FrameClass::Runtime));
        assert_eq!(postcard::to_allocvec(&frame).unwrap(), bytes);
        let unnamed = Stored {
            function: None,
            class: None,
            ..stored
        };
        let frame: Frame = postcard::from_bytes(&postcard::to_allocvec(&unnamed).unwrap()).unwrap();
        assert_eq!((&*frame.function, frame.class), ("??", FrameClass::User));
    }
}
