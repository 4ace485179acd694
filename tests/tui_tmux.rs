//! The live TUI in a real terminal: the real `leaktop` binary runs under tmux, attached to
//! a real leaky child (`leaktop __demo-child`); keys go in with send-keys, the screen comes
//! out with capture-pane. Checks that the leaking site shows up, that j/Enter/`/`/`?`/q do
//! what they say, that the exit of the target is shown, and that `q` gives the terminal
//! back as it was (no alternate screen, no mouse reporting, cooked mode).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// A tmux server of its own (unique `-L` socket), killed on drop.
struct Tmux {
    socket: String,
}

static SERVERS: AtomicUsize = AtomicUsize::new(0);

impl Tmux {
    /// Starts a server with one `w`×`h` window running `sh` with a plain prompt, and
    /// waits for the prompt.
    fn start(w: u16, h: u16) -> Tmux {
        let socket = format!(
            "leaktop-test-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::SeqCst)
        );
        let t = Tmux { socket };
        let out = t
            .cmd()
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "main"])
            .args(["-x", &w.to_string(), "-y", &h.to_string()])
            .args(["-e", "PS1=$ ", "-e", "TERM=xterm-256color"])
            .args(["env", "-u", "TMUX", "PS1=$ ", "sh"])
            .output()
            .expect("run tmux (install it: apt-get install tmux)");
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.wait_for("the shell prompt", Duration::from_secs(10), |s| {
            s.contains('$')
        });
        t
    }

    /// Types a command line into the shell and runs it.
    fn run(&self, line: &str) {
        self.type_text(line);
        self.keys(&["Enter"]);
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// `tmux send-keys` (each argument is a key name or literal text).
    fn keys(&self, keys: &[&str]) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "main"])
            .args(keys)
            .status()
            .expect("tmux send-keys")
            .success();
        assert!(ok, "send-keys {keys:?}");
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "main", "-l", text])
            .status()
            .expect("tmux send-keys")
            .success();
        assert!(ok, "send-keys -l {text:?}");
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "main"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn format(&self, f: &str) -> String {
        let out = self
            .cmd()
            .args(["display-message", "-p", "-t", "main", f])
            .output()
            .expect("tmux display-message");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until the screen satisfies `pred`; panics with the last screen otherwise.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if start.elapsed() > timeout {
                panic!("timed out waiting for {what}; the screen was:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// The shell command that opens the live view on `child`, logging to `log`.
fn view_command(leaktop: &Path, child: &ChildGuard, log: &Path) -> String {
    format!(
        "LEAKTOP_SOCKET_DIR={} LEAKTOP_LOG={} {} {}",
        child.socket_dir.display(),
        log.display(),
        leaktop.display(),
        child.pid()
    )
}

fn has_tmux() -> bool {
    Command::new("tmux").arg("-V").output().is_ok()
}

/// `file:line:col` of the forgotten-sender scenario's leaking spawn (marked in its source).
fn leaking_site() -> String {
    let file = "src/demo/scenarios/forgotten_sender.rs";
    let src = std::fs::read_to_string(workspace_root().join(file)).expect("scenario source");
    for (i, line) in src.lines().enumerate() {
        if line.contains("// leak-site: forgotten-sender") {
            let col = line
                .find("leaktop_agent::spawn")
                .expect("spawn on the marked line");
            return format!("{file}:{}:{}", i + 1, col + 1);
        }
    }
    panic!("no leak-site marker in {file}");
}

/// The detail pane's `spawn site` value.
fn detail_site(screen: &str) -> Option<String> {
    screen
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("spawn site"))
        .map(|s| s.trim().to_string())
}

#[test]
fn live_view_under_tmux_finds_the_leak_handles_keys_and_restores_the_terminal() {
    if !has_tmux() {
        panic!("tmux is not installed: apt-get install -y tmux (.ci/run installs it)");
    }
    let leaktop = Path::new(env!("CARGO_BIN_EXE_leaktop"));
    // One scenario, so the table holds its two sites (the request handler, the leaking
    // search task) and nothing else competes for the top row.
    let mut child = spawn_child(leaktop, &["__demo-child", "forgotten-sender"]);
    let pid = child.pid();
    let site = leaking_site();
    // At 80 columns the table shows the end of the path.
    let tail = site.rsplit('/').next().unwrap_or(&site).to_string();
    let log = child.socket_dir.join("tui.log");

    let tmux = Tmux::start(80, 24);
    tmux.run(&format!(
        "{} --window 10s --min-age 3s; echo \"leaktop exited $?\"; stty -a | tr -s ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo",
        view_command(leaktop, &child, &log),
    ));

    // The leaking site appears at the top (sorted by suspicion: before a verdict is due,
    // by growth), with its live count rising.
    let first_row = |s: &str| {
        s.lines()
            .skip_while(|l| !l.contains("SPAWN SITE"))
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    // A capture can catch a frame half drawn: every wait asks for all it then checks.
    tmux.wait_for("the leaking site, growing", Duration::from_secs(20), |s| {
        let row = first_row(s);
        row.contains(&tail)
            && row.split_whitespace().any(|w| w.starts_with('+'))
            && s.contains(&format!("pid {pid}"))
            && s.contains("LIVE")
            && detail_site(s).as_deref() == Some(site.as_str())
    });
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "1",
        "the TUI uses the alternate screen"
    );
    // With the thresholds given on the command line (a 10 s window, tasks stuck for 3 s
    // count), the verdict comes within seconds: the mark in the table and the detail.
    tmux.wait_for("the leak marked", Duration::from_secs(20), |s| {
        first_row(s).starts_with('●') && s.contains("verdict      ● LEAK")
    });

    // j selects the next site: the detail pane follows; k comes back.
    tmux.keys(&["j"]);
    tmux.wait_for(
        "the detail of the second site",
        Duration::from_secs(5),
        |s| detail_site(s).is_some_and(|d| d != site && d.starts_with("src/demo/")),
    );
    tmux.keys(&["k"]);
    tmux.wait_for("the leak selected again", Duration::from_secs(5), |s| {
        detail_site(s).as_deref() == Some(site.as_str())
    });

    // Enter focuses the detail pane; Esc goes back.
    tmux.keys(&["Enter"]);
    tmux.wait_for("the focused detail pane", Duration::from_secs(5), |s| {
        s.contains("Detail · Esc: back")
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for("the table focused", Duration::from_secs(5), |s| {
        s.contains("Detail · Enter or Tab: focus")
    });

    // `/` filters: a substring nothing matches empties the table, Esc restores it.
    tmux.keys(&["/"]);
    tmux.type_text("no-such-site");
    tmux.wait_for("the empty filtered table", Duration::from_secs(5), |s| {
        s.contains("no spawn site matches") && s.contains("Filter:")
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for("the table back", Duration::from_secs(5), |s| {
        s.contains(&tail) && !s.contains("no spawn site matches")
    });
    tmux.keys(&["/"]);
    tmux.type_text("forgotten_sender");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the kept filter", Duration::from_secs(5), |s| {
        s.contains(&tail) && s.contains("Filter:  forgotten_sender")
    });

    // `?` shows every key; Esc closes it.
    tmux.keys(&["?"]);
    tmux.wait_for("the help overlay", Duration::from_secs(5), |s| {
        s.contains("leaktop keys") && s.contains("filter by path or function")
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for("the help closed", Duration::from_secs(5), |s| {
        !s.contains("leaktop keys")
    });

    // The target exits: the view says so and keeps the last state.
    child.kill();
    tmux.wait_for(
        "the exit shown, last state kept",
        Duration::from_secs(10),
        |s| {
            s.contains("EXITED")
                && s.contains(&format!("process {pid} exited"))
                && s.contains(&tail)
        },
    );

    // q quits and gives the terminal back.
    tmux.keys(&["q"]);
    let s = tmux.wait_for("the shell back", Duration::from_secs(10), |s| {
        // Both stty lines, whatever they say (the assertions below read them).
        s.contains("leaktop exited 0")
            && s.lines().any(|l| l == "icanon" || l == "-icanon")
            && s.lines().any(|l| l == "echo" || l == "-echo")
    });
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "0",
        "alternate screen left:\n{s}"
    );
    assert_eq!(
        tmux.format("#{mouse_any_flag}"),
        "0",
        "mouse reporting off:\n{s}"
    );
    assert!(s.lines().any(|l| l == "icanon"), "cooked mode back:\n{s}");
    assert!(s.lines().any(|l| l == "echo"), "echo back:\n{s}");
    assert!(!s.contains("SPAWN SITE"), "no TUI left on the screen:\n{s}");

    // Logs went to the file, not the screen.
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("first complete frame"), "log: {logged}");
}

/// Regression: a live view whose terminal went away (tmux server killed, ssh dropped) spun
/// inside crossterm's reader, which retries forever on EOF/EIO, at ~20 % of a core and
/// never saw SIGHUP or SIGTERM. It must notice the hang-up and exit.
#[test]
fn orphaned_live_view_exits_when_its_terminal_hangs_up() {
    if !has_tmux() {
        panic!("tmux is not installed: apt-get install -y tmux (.ci/run installs it)");
    }
    let leaktop = Path::new(env!("CARGO_BIN_EXE_leaktop"));
    let child = spawn_child(leaktop, &["__demo-child", "forgotten-sender"]);
    let pid = child.pid();
    let tmux = Tmux::start(80, 24);
    // Run from the shell (not exec'd): the view is the shell's child, as when a person
    // types it, which is the case that spun.
    tmux.run(&view_command(
        leaktop,
        &child,
        &child.socket_dir.join("tui.log"),
    ));
    tmux.wait_for("the live view", Duration::from_secs(20), |s| {
        s.contains(&format!("pid {pid}")) && s.contains("SPAWN SITE")
    });
    let shell: i32 = tmux.format("#{pane_pid}").parse().expect("the pane's pid");
    let view = children_of(shell)
        .into_iter()
        .find(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "leaktop")
        })
        .expect("the live view is the shell's child");
    // Kills the view if the assertion below fails, so no orphan outlives the test.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: kill(2) with a pid of a process this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _guard = KillOnDrop(view);
    // The terminal goes away with its server; the view must go too.
    let _ = tmux.cmd().arg("kill-server").output();
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    };
    let start = Instant::now();
    while alive(view) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(view),
        "the live view (pid {view}) still runs {:?} after its terminal hung up",
        start.elapsed()
    );
}

/// Pids whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                // After the `)` that ends the command name: state, then the parent's pid.
                s.rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    .and_then(|pp| pp.parse::<i32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}
