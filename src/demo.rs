//! `leaktop demo`: a small leaky tokio program, run as a child process (the `leaktop`
//! binary re-executed in a hidden mode, linked with the agent), so a newcomer sees the
//! whole tool work with one command.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Hidden subcommand that runs the leaky program.
pub const CHILD_COMMAND: &str = "__demo-child";

/// Starts the demo program as a child of this process.
pub fn spawn_child() -> std::io::Result<Child> {
    spawn_child_with(Stdio::inherit())
}

/// Starts the demo program with its stderr sent to `stderr` (the live view sends it to
/// its log file, so it cannot scribble over the screen).
pub fn spawn_child_with(stderr: Stdio) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .arg(CHILD_COMMAND)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
}

/// Waits until the child's agent socket answers, up to `timeout`.
pub fn wait_for_agent(pid: u32, timeout: Duration) -> Result<(), crate::attach::AttachError> {
    let start = Instant::now();
    loop {
        match crate::attach::Connection::attach(pid) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Kills and reaps a child when dropped, whatever happened.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The demo program itself (runs in the child).
pub fn run_child() -> ! {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leaktop demo: cannot start a tokio runtime: {e}");
            std::process::exit(2);
        }
    };
    rt.block_on(async {
        if let Err(e) = leaktop_agent::start() {
            eprintln!("leaktop demo: agent did not start: {e}");
            std::process::exit(2);
        }
        forgotten_sender_server().await
    });
    std::process::exit(0)
}

/// Seed 000, "The Forgotten Sender": each request spawns a search whose result is sent
/// on an unbuffered channel; the handler times out first and never receives, so the
/// search task waits on its send forever.
async fn forgotten_sender_server() {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        leaktop_agent::spawn(handle_request());
        // A healthy background job next to the leak: finishes every time.
        leaktop_agent::spawn(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
    }
}

async fn handle_request() {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(1);
    leaktop_agent::spawn(async move {
        let result = search("leaktop").await;
        // The first result fills the one slot; the second send waits for a reader that
        // never comes.
        let _ = tx.send(result.clone()).await;
        let _ = tx.send(result).await;
    });
    // The handler parks the receiver "for later" in a long-lived place and returns.
    FORGOTTEN.lock().unwrap_or_else(|p| p.into_inner()).push(rx);
}

static FORGOTTEN: std::sync::Mutex<Vec<tokio::sync::mpsc::Receiver<String>>> =
    std::sync::Mutex::new(Vec::new());

async fn search(term: &str) -> String {
    tokio::time::sleep(Duration::from_millis(20)).await;
    format!("results for {term}")
}
