//! The live view of `swarmtrace run` on a terminal: a top-style screen with the tracer's health,
//! a table of handshakes per (service, client), the verdicts so far and the last drops.
//!
//! [`start`] takes over the terminal (raw mode, alternate screen) and starts a thread that
//! draws and reads keys; it returns the [`Observer`] to hand to the run, the receiver to put
//! into `Control.stop` (fired by `q` or Ctrl-C) and a [`TuiHandle`]. The terminal is given back
//! when the run reports its summary (so the summary prints normally), when the handle is
//! finished or dropped, and on a panic.
//!
//! While the view owns the terminal, whatever the process writes on stderr (log records, the
//! run's banner) would scribble over the screen: it is captured, its last line shown at the
//! bottom of the view, and written out on stderr again when the view closes.
//!
//! Memory is bounded: at most [`MAX_ROWS`] (service, client) pairs (later pairs are counted
//! together in one "(other pairs)" row), [`MAX_DROPS`] recent drops, the last
//! [`LATENCY_SAMPLES`] latencies per pair for its median.

mod model;
mod view;

pub use model::*;
pub use view::*;

use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::crossterm::event::{self, Event};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

use crate::trace::drops;
use crate::trace::observe::{HandshakeRecord, Health, Observer};

/// At most ~4 redraws a second for updates; keys redraw at once.
const FRAME: Duration = Duration::from_millis(250);

/// How to draw.
#[derive(Debug, Clone, Default)]
pub struct TuiOptions {
    /// No colors at all (`NO_COLOR` set and not empty, or `--no-color`).
    pub no_color: bool,
    /// The first line of the screen, e.g. "swarmtrace on host X, port 8080".
    pub title: String,
}

impl TuiOptions {
    /// `no_color` from the environment (`NO_COLOR`, see no-color.org).
    pub fn from_env(title: impl Into<String>) -> Self {
        Self {
            no_color: no_color_env(),
            title: title.into(),
        }
    }
}

/// `NO_COLOR` is set to a non-empty value.
pub fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Whether `swarmtrace run` should show the live view: not `--json`, stdout and stdin are
/// terminals, and the terminal is not "dumb".
pub fn should_use(json: bool) -> bool {
    !json
        && std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

// ---------------------------------------------------------------------------------------------
// The terminal: taking it over, the drawing thread, giving it back.

/// The view is on screen: the terminal must be given back.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The real stderr while it is captured, else -1.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);
static PANIC_HOOK: Once = Once::new();

/// Leaves the alternate screen, ends raw mode, shows the cursor and puts stderr back.
/// Idempotent; safe from a panic hook.
fn restore_terminal() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let mut out = std::io::stdout();
        let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
        let _ = out.flush();
    }
    let fd = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `fd` is our duplicate of the original stderr; dup2 closes the pipe end.
        unsafe {
            libc::dup2(fd, 2);
            libc::close(fd);
        }
    }
}

/// Sends fd 2 into a pipe; returns its reading end.
fn capture_stderr() -> Result<std::fs::File> {
    let mut fds = [0; 2];
    // SAFETY: plain fd juggling; every fd is checked and closed on failure.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error()).context("pipe");
        }
        let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
        if saved < 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fds[0]);
            libc::close(fds[1]);
            return Err(e).context("dup stderr");
        }
        if libc::dup2(fds[1], 2) < 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fds[0]);
            libc::close(fds[1]);
            libc::close(saved);
            return Err(e).context("dup2 stderr");
        }
        libc::close(fds[1]);
        SAVED_STDERR.store(saved, Ordering::SeqCst);
        Ok(std::fs::File::from_raw_fd(fds[0]))
    }
}

struct Shared {
    model: Mutex<Model>,
    /// The model changed since the last draw.
    dirty: AtomicBool,
    /// Give the terminal back and end the thread.
    quit: AtomicBool,
    /// The terminal is given back.
    done: Mutex<bool>,
    done_cv: Condvar,
}

impl Shared {
    fn model(&self) -> MutexGuard<'_, Model> {
        // A panic while holding the lock leaves the model usable: it holds only counters.
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Model)) {
        f(&mut self.model());
        self.dirty.store(true, Ordering::Release);
    }

    /// Asks the thread to give the terminal back and waits (at most `timeout`) until it has.
    fn close(&self, timeout: Duration) {
        self.quit.store(true, Ordering::Release);
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .done_cv
            .wait_timeout_while(done, timeout, |d| !*d)
            .map_err(|_| ());
    }
}

/// Tells those waiting in [`Shared::close`] that the terminal is given back.
struct Done<'a>(&'a Shared);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        restore_terminal();
        *self.0.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.done_cv.notify_all();
    }
}

/// The observer handed to the run.
struct ViewObserver {
    shared: Arc<Shared>,
}

impl Observer for ViewObserver {
    fn on_drop(&mut self, drop: &drops::Drop) -> Result<()> {
        self.shared.update(|m| m.on_drop(drop));
        Ok(())
    }

    fn on_handshake(&mut self, handshake: &HandshakeRecord<'_>) -> Result<()> {
        self.shared.update(|m| m.on_handshake(handshake));
        Ok(())
    }

    fn on_health(&mut self, health: &Health) {
        self.shared.update(|m| m.on_health(health));
    }

    fn owns_terminal(&self) -> bool {
        true
    }

    /// The summary is about to be printed: give the terminal back first.
    fn on_end(&mut self) {
        self.shared.close(Duration::from_secs(3));
    }
}

/// The running view. [`TuiHandle::finish`] (or dropping it) gives the terminal back.
pub struct TuiHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl TuiHandle {
    /// Gives the terminal back (if the run's summary has not already done it) and waits for
    /// the drawing thread. Idempotent.
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        restore_terminal();
    }
}

impl Drop for TuiHandle {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Starts the live view on the terminal (a thread that draws, reading keys); returns the
/// observer to hand to the run, the stop receiver to put into `Control.stop` (fired by `q` or
/// Ctrl-C), and the handle that gives the terminal back.
pub fn start(
    opts: TuiOptions,
) -> Result<(
    Box<dyn Observer>,
    tokio::sync::oneshot::Receiver<()>,
    TuiHandle,
)> {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
    if ACTIVE.load(Ordering::SeqCst) {
        anyhow::bail!("the live view is already open");
    }
    terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
    ACTIVE.store(true, Ordering::SeqCst);
    let mut stdout = std::io::stdout();
    if let Err(e) = execute!(stdout, terminal::EnterAlternateScreen, cursor::Hide) {
        restore_terminal();
        return Err(e).context("cannot open the alternate screen");
    }
    let term = match Terminal::new(CrosstermBackend::new(std::io::stdout())) {
        Ok(t) => t,
        Err(e) => {
            restore_terminal();
            return Err(e).context("cannot draw on the terminal");
        }
    };
    let shared = Arc::new(Shared {
        model: Mutex::new(Model::default()),
        dirty: AtomicBool::new(true),
        quit: AtomicBool::new(false),
        done: Mutex::new(false),
        done_cv: Condvar::new(),
    });
    // stderr into the view; without it (no fd left?) the view still works, scribbled on.
    let reader = match capture_stderr() {
        Ok(pipe) => {
            let s = shared.clone();
            let (eof_tx, eof) = mpsc::channel::<()>();
            std::thread::Builder::new()
                .name("swarmtrace-tui-stderr".to_owned())
                .spawn(move || {
                    for line in std::io::BufReader::new(pipe).lines() {
                        match line {
                            Ok(l) => s.update(|m| m.on_message(l)),
                            Err(_) => break,
                        }
                    }
                    let _ = eof_tx.send(());
                })
                .map(|_| eof)
                .ok()
        }
        Err(e) => {
            log::debug!("stderr stays on the terminal: {e:#}");
            None
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let ui = Ui::new(&opts);
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("swarmtrace-tui".to_owned())
        .spawn(move || {
            // Whatever happens here (a panic too), whoever waits for the terminal gets it.
            let _done = Done(&s);
            draw_loop(term, &s, ui, stop_tx);
            restore_terminal();
            // What was written on stderr meanwhile, now that it reaches the terminal again.
            if let Some(eof) = reader {
                let _ = eof.recv_timeout(Duration::from_millis(500));
            }
            let (lines, lost) = {
                let mut m = s.model();
                (std::mem::take(&mut m.messages), m.messages_lost)
            };
            let mut err = std::io::stderr().lock();
            if lost > 0 {
                let _ = writeln!(err, "swarmtrace: ({lost} earlier stderr lines not kept)");
            }
            for l in lines {
                let _ = writeln!(err, "{l}");
            }
        });
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            restore_terminal();
            return Err(e).context("cannot start the live view's thread");
        }
    };
    let handle = TuiHandle {
        shared: shared.clone(),
        thread: Some(thread),
    };
    Ok((Box::new(ViewObserver { shared }), stop_rx, handle))
}

fn draw_loop<B: Backend>(
    mut term: Terminal<B>,
    shared: &Shared,
    mut ui: Ui,
    stop: tokio::sync::oneshot::Sender<()>,
) {
    let mut stop = Some(stop);
    let mut last_draw: Option<Instant> = None;
    let mut force = true;
    while !shared.quit.load(Ordering::Acquire) {
        let due = last_draw.is_none_or(|t| t.elapsed() >= FRAME);
        if force || (due && shared.dirty.load(Ordering::Acquire)) {
            shared.dirty.store(false, Ordering::Release);
            let capacity = term
                .size()
                .map(|a| table_capacity(a.width, a.height))
                .unwrap_or(0);
            let snap = shared.model().snapshot(&ui, capacity);
            // Scrolling stops at the last page.
            ui.scroll = snap.scroll;
            let drawn = term.draw(|f| render(f, &snap, &ui)).map(|_| ());
            if drawn.is_err() {
                // The terminal is gone: end the run so that it reports.
                if let Some(tx) = stop.take() {
                    let _ = tx.send(());
                }
                return;
            }
            last_draw = Some(Instant::now());
            force = false;
        }
        match event::poll(Duration::from_millis(50)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        match event::read() {
            Ok(Event::Key(k)) => match ui.key(k) {
                Action::Quit => {
                    ui.stopping = true;
                    force = true;
                    if let Some(tx) = stop.take() {
                        let _ = tx.send(());
                    }
                }
                Action::Redraw => force = true,
                Action::Nothing => {}
            },
            Ok(Event::Resize(..)) => {
                let _ = term.autoresize();
                force = true;
            }
            _ => {}
        }
    }
}
