//! The two builds of the workloads in `body.rs`: plain tokio (also what the
//! console-subscriber variant runs; tokio's own instrumentation does the rest there) and
//! leaktop-agent's drop-ins, the one-`use`-line migration a user would make.

/// Plain tokio: `tokio::spawn`, `tokio::sync::{mpsc, oneshot}`.
pub mod plain {
    use tokio::spawn;
    use tokio::sync::{mpsc, oneshot};
    include!("body.rs");
}

/// leaktop-agent: `leaktop_agent::spawn`, `leaktop_agent::sync::{mpsc, oneshot}`.
pub mod agent {
    use leaktop_agent::spawn;
    use leaktop_agent::sync::{mpsc, oneshot};
    include!("body.rs");
}
