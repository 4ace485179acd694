//! The real terminal: raw mode, alternate screen, mouse capture; restored on quit, on
//! error (guard drop), on panic (hook) and on SIGTERM/SIGHUP/SIGINT (flag the loop sees).

use std::io::{self, BufWriter, Stdout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Once};
use std::time::Duration;

use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event as TermEvent};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use super::log::log;
use super::Input;

/// The terminal type of the live TUI.
pub type Term = Terminal<CrosstermBackend<BufWriter<Stdout>>>;

/// Room for a whole frame, so it reaches the terminal in one write at the end of a draw
/// (stdout's own line buffer would hand it over in 1 KiB pieces: torn frames).
const FRAME_BUFFER: usize = 256 * 1024;

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The signal that asked the view to stop (0: none yet).
static SIGNAL: LazyLock<Arc<AtomicUsize>> = LazyLock::new(Default::default);
static HOOKS: Once = Once::new();
/// How long the event loop has to notice a signal before the watchdog ends the process.
const SIGNAL_GRACE: Duration = Duration::from_secs(2);

/// Puts the terminal back as it was. Safe to call more than once, and when nothing was
/// changed.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(
            io::stdout(),
            DisableMouseCapture,
            LeaveAlternateScreen,
            cursor::Show
        );
    }
}

fn install_hooks() {
    HOOKS.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            log!("panic: {info}");
            previous(info);
        }));
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        for sig in [SIGTERM, SIGHUP, SIGINT] {
            let _ = signal_hook::flag::register_usize(sig, SIGNAL.clone(), sig as usize);
        }
        // The loop sees the flag within a tick. Should it ever be stuck where it cannot
        // look (a library call that does not return), the terminal is restored and the
        // process ends anyway: a signalled live view must go away. A recording being
        // written stays readable (every frame is checked on its own).
        let _ = std::thread::Builder::new()
            .name("leaktop-signal-watchdog".into())
            .spawn(|| {
                while SIGNAL.load(Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(250));
                }
                std::thread::sleep(SIGNAL_GRACE);
                if ACTIVE.load(Ordering::SeqCst) {
                    restore();
                    log!("still running {SIGNAL_GRACE:?} after a signal: exiting");
                    std::process::exit(128 + SIGNAL.load(Ordering::SeqCst) as i32);
                }
            });
    });
}

/// Restores the terminal when dropped (normal return and `?` errors alike).
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Switches the terminal to the TUI's mode.
pub fn enter() -> io::Result<(Term, Guard)> {
    install_hooks();
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    let guard = Guard(());
    execute!(
        io::stdout(),
        EnterAlternateScreen,
        EnableMouseCapture,
        cursor::Hide
    )?;
    let terminal = Terminal::new(CrosstermBackend::new(BufWriter::with_capacity(
        FRAME_BUFFER,
        io::stdout(),
    )))?;
    Ok((terminal, guard))
}

/// Keys, mouse and resizes from the real terminal.
///
/// crossterm 0.29's reader loops forever when the terminal hangs up (its read loop
/// retries on EOF and EIO), so a view whose terminal died (ssh dropped, tmux server
/// killed) spun in there and never saw SIGHUP or SIGTERM. This input looks at the
/// terminal itself first: crossterm is asked to read only when the terminal has bytes
/// and has not hung up, and a hangup ends the loop with an error. Resizes are noticed by
/// comparing the size on every tick (crossterm reports them only when it is reading).
pub struct TerminalInput {
    tty: std::os::fd::OwnedFd,
    size: Option<(u16, u16)>,
    /// Events crossterm parsed from the bytes it read (one read can hold many keys,
    /// a paste many more) and this input has not handed out yet.
    pending: std::collections::VecDeque<TermEvent>,
    /// The last drain stopped at [`MAX_PENDING`]: crossterm may hold more.
    more: bool,
}

impl TerminalInput {
    /// The same terminal crossterm reads: stdin when it is a terminal, else `/dev/tty`.
    pub fn new() -> io::Result<TerminalInput> {
        use std::os::fd::AsFd;
        let stdin = io::stdin();
        let tty = if std::io::IsTerminal::is_terminal(&stdin) {
            stdin.as_fd().try_clone_to_owned()?
        } else {
            std::fs::File::open("/dev/tty")?.into()
        };
        Ok(TerminalInput {
            tty,
            size: crossterm::terminal::size().ok(),
            pending: std::collections::VecDeque::new(),
            more: false,
        })
    }

    /// Waits up to `timeout` for the terminal: `Ok(true)` when it has input.
    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(self.tty.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            return Err(terminal_gone());
        }
        Ok(revents.contains(PollFlags::POLLIN))
    }
}

/// Most events taken from crossterm at once (a long paste is taken in several turns).
const MAX_PENDING: usize = 1024;

/// The error that ends a live view whose terminal went away.
fn terminal_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the terminal hung up")
}

impl Input for TerminalInput {
    fn next(&mut self, timeout: Duration) -> io::Result<Option<TermEvent>> {
        if self.pending.is_empty() && (self.more || self.wait_readable(timeout)?) {
            // Everything crossterm makes of the bytes there are now: asking again later
            // would wait for new bytes while parsed keys sit in crossterm's buffer.
            self.more = false;
            while event::poll(Duration::ZERO)? {
                self.pending.push_back(event::read()?);
                if self.pending.len() == MAX_PENDING {
                    self.more = true;
                    break;
                }
            }
        }
        if let Some(ev) = self.pending.pop_front() {
            if let TermEvent::Resize(w, h) = ev {
                self.size = Some((w, h));
            }
            return Ok(Some(ev));
        }
        let size = crossterm::terminal::size().ok();
        if size.is_some() && size != self.size {
            self.size = size;
            if let Some((w, h)) = size {
                return Ok(Some(TermEvent::Resize(w, h)));
            }
        }
        Ok(None)
    }

    fn interrupted(&self) -> bool {
        SIGNAL.load(Ordering::SeqCst) != 0
    }
}
