//! Who a frame belongs to: the user's code, the async runtime (and other third-party
//! crates), the standard library and system libraries, or leaktop's own agent.

pub use crate::frame::FrameClass;

/// The rules of [`FrameClass`]. The lists hold crate names as they appear in demangled
/// paths (`tokio_util`, not `tokio-util`); extend them through the public fields.
#[derive(Clone, Debug)]
pub struct Classifier {
    pub std_crates: Vec<String>,
    pub runtime_crates: Vec<String>,
    pub agent_crates: Vec<String>,
    /// Crates that stay [`FrameClass::User`] even when built from the registry (a user's
    /// own published libraries).
    pub user_crates: Vec<String>,
    /// Treat frames whose source lies in `~/.cargo/registry` or `~/.cargo/git` as Runtime.
    pub third_party_is_runtime: bool,
}

const STD_CRATES: &[&str] = &[
    "std",
    "core",
    "alloc",
    "proc_macro",
    "test",
    "std_detect",
    "compiler_builtins",
    "panic_unwind",
    "panic_abort",
    "unwind",
    "libc",
    "hashbrown",
    "backtrace_rs",
    "gimli",
    "addr2line",
    "miniz_oxide",
    "rustc_demangle",
];

const RUNTIME_CRATES: &[&str] = &[
    "tokio",
    "tokio_util",
    "tokio_stream",
    "futures",
    "futures_util",
    "futures_core",
    "futures_channel",
    "futures_executor",
    "futures_task",
    "futures_lite",
    "mio",
    "parking_lot",
    "parking_lot_core",
    "lock_api",
    "crossbeam",
    "crossbeam_channel",
    "crossbeam_utils",
    "crossbeam_epoch",
    "crossbeam_deque",
    "async_std",
    "async_task",
    "async_executor",
    "async_io",
    "smol",
    "tracing",
    "tracing_core",
    "tracing_futures",
    "pin_project",
    "pin_project_lite",
    "backtrace",
    "rayon",
    "rayon_core",
];

/// C-level entry and thread-start symbols that belong to libc or the Rust entry shim.
const STD_C_SYMBOLS: &[&str] = &[
    "main",
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "__libc_start_main_impl",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "_dl_start",
    "_dl_start_user",
];

/// System libraries whose frames are [`FrameClass::Std`] whatever their names.
const STD_MODULE_PREFIXES: &[&str] = &[
    "libc.so",
    "libc-",
    "ld-linux",
    "ld64.so",
    "ld-musl",
    "libpthread",
    "libgcc_s",
    "libm.so",
    "libdl.so",
    "librt.so",
    "libstdc++",
    "[vdso]",
];

impl Default for Classifier {
    fn default() -> Self {
        let own = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        Classifier {
            std_crates: own(STD_CRATES),
            runtime_crates: own(RUNTIME_CRATES),
            agent_crates: vec!["leaktop_agent".to_owned()],
            user_crates: Vec::new(),
            third_party_is_runtime: true,
        }
    }
}

impl Classifier {
    /// Classifies one frame from its demangled function name, source file and module path.
    pub fn classify(&self, function: &str, file: Option<&str>, module: &str) -> FrameClass {
        let base = module.rsplit('/').next().unwrap_or(module);
        if STD_MODULE_PREFIXES.iter().any(|p| base.starts_with(p)) {
            return FrameClass::Std;
        }
        let krate = crate_of(function);
        let has = |list: &[String], k: &str| list.iter().any(|c| c == k);
        if let Some(k) = krate {
            if has(&self.user_crates, k) {
                return FrameClass::User;
            }
            if has(&self.agent_crates, k) {
                return FrameClass::Agent;
            }
            if has(&self.std_crates, k) {
                return FrameClass::Std;
            }
            if has(&self.runtime_crates, k) {
                return FrameClass::Runtime;
            }
        } else if STD_C_SYMBOLS.contains(&function) {
            return FrameClass::Std;
        }
        if let Some(file) = file {
            if is_std_source(file) {
                return FrameClass::Std;
            }
            if self.third_party_is_runtime && is_third_party_source(file) {
                return FrameClass::Runtime;
            }
        }
        FrameClass::User
    }
}

/// `/rustc/<hash>/library/...`: the standard library as shipped by rustup.
fn is_std_source(file: &str) -> bool {
    (file.starts_with("/rustc/") && file.contains("/library/"))
        || file.contains("/lib/rustlib/src/rust/library/")
}

fn is_third_party_source(file: &str) -> bool {
    file.contains("/.cargo/registry/src/") || file.contains("/.cargo/git/checkouts/")
}

/// The crate a demangled Rust path belongs to: the first path segment, looking through
/// `<Type as Trait>` to the type (or to the trait when the type is a bare generic like
/// `F`), references, pointers and `dyn`. `None` for names that are not paths (`main`).
pub fn crate_of(function: &str) -> Option<&str> {
    let mut s = function.trim_start();
    loop {
        let before = s;
        s = s.trim_start_matches(['<', '&', '(', '[', '*', ' ']);
        for prefix in ["mut ", "const ", "dyn ", "impl "] {
            if let Some(rest) = s.strip_prefix(prefix) {
                s = rest;
            }
        }
        if s.len() == before.len() {
            break;
        }
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let (head, rest) = s.split_at(end);
    if !head.is_empty() && rest.starts_with("::") {
        return Some(head);
    }
    // A bare type (`F`, `T`, `u8`): the trait after " as " decides.
    let trait_part = &s[s.find(" as ")? + 4..];
    crate_of(trait_part).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_of_paths_and_impls() {
        let cases = [
            ("tokio::runtime::park::CachedParkThread::block_on", Some("tokio")),
            (
                "<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll",
                Some("tokio"),
            ),
            ("<&mut F as core::ops::function::FnOnce<A>>::call_once", Some("core")),
            ("<F as core::future::future::Future>::poll", Some("core")),
            ("app::level_one::{{closure}}", Some("app")),
            ("<app::Leaf as core::future::future::Future>::poll", Some("app")),
            ("core::ptr::drop_in_place<app::Thing>", Some("core")),
            ("<[T] as alloc::slice::Concat>::concat", Some("alloc")),
            ("<*const T as core::fmt::Debug>::fmt", Some("core")),
            ("<dyn core::any::Any>::is", Some("core")),
            ("main", None),
            ("_start", None),
            ("", None),
            ("<", None),
        ];
        for (name, want) in cases {
            assert_eq!(crate_of(name), want, "{name}");
        }
    }

    #[test]
    fn classes() {
        let c = Classifier::default();
        let exe = "/srv/app";
        assert_eq!(
            c.classify(
                "app::handler::{{closure}}",
                Some("/src/app/src/main.rs"),
                exe
            ),
            FrameClass::User
        );
        assert_eq!(
            c.classify("tokio::runtime::task::raw::poll", Some("/home/u/.cargo/registry/src/index.crates.io-x/tokio-1.47.0/src/runtime/task/raw.rs"), exe),
            FrameClass::Runtime
        );
        assert_eq!(
            c.classify(
                "<leaktop_agent::sync::mpsc::Recv<T> as core::future::future::Future>::poll",
                None,
                exe
            ),
            FrameClass::Agent
        );
        assert_eq!(
            c.classify("std::rt::lang_start_internal", None, exe),
            FrameClass::Std
        );
        assert_eq!(
            c.classify(
                "__libc_start_call_main",
                None,
                "/usr/lib/x86_64-linux-gnu/libc.so.6"
            ),
            FrameClass::Std
        );
        assert_eq!(c.classify("main", None, exe), FrameClass::Std);
        // Generic std glue whose only known crate is core.
        assert_eq!(
            c.classify(
                "<F as core::future::future::Future>::poll",
                Some("/rustc/abc/library/core/src/future/future.rs"),
                exe
            ),
            FrameClass::Std
        );
        // An unknown registry crate is third-party unless listed as the user's.
        let hyper = "/root/.cargo/registry/src/index.crates.io-x/hyper-1.0.0/src/client.rs";
        assert_eq!(
            c.classify("hyper::client::send", Some(hyper), exe),
            FrameClass::Runtime
        );
        let mut mine = Classifier::default();
        mine.user_crates.push("hyper".into());
        assert_eq!(
            mine.classify("hyper::client::send", Some(hyper), exe),
            FrameClass::User
        );
        // No name at all in the user's binary stays visible.
        assert_eq!(c.classify("app+0x1234", None, exe), FrameClass::User);
    }
}
