//! The terminal of a long command: one line drawn in place on stderr (a
//! progress bar or a live status) when stderr is a terminal, log lines
//! written above it, and a panel of a few lines redrawn in place.
//!
//! Without a terminal nothing is drawn: the commands log instead (see
//! [`crate::console::live`]).

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::ProgressBar;

/// The line drawn in place on a terminal (a progress bar or a live status),
/// if any: log lines are written above it.
static LIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Writes log lines to stderr above the live line, if one is drawn (the
/// writer of the command's log subscriber).
#[derive(Clone, Copy, Debug, Default)]
pub struct Console;

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let live = LIVE.lock().expect("no panics holding the console").clone();
        match live {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A line redrawn in place on stderr in indicatif's `template`, when stderr
/// is a terminal (`None` otherwise). Log lines go above it until
/// [`end_live`] clears it.
pub fn live_line(template: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    *LIVE.lock().expect("no panics holding the console") = Some(bar.clone());
    Some(bar)
}

/// Clears the live line.
pub fn end_live(bar: Option<ProgressBar>) {
    if let Some(bar) = bar {
        bar.finish_and_clear();
        *LIVE.lock().expect("no panics holding the console") = None;
    }
}

/// A thread that paints the live line (or, without one, logs) every tick,
/// until dropped: the drop ends it at once, not at its next tick, and
/// clears the line.
#[derive(Debug)]
pub struct Painter {
    done: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Painter {
    /// Calls `paint` with `bar` (from [`live_line`]) every `tick`.
    pub fn start(
        bar: Option<ProgressBar>,
        tick: Duration,
        mut paint: impl FnMut(Option<&ProgressBar>) + Send + 'static,
    ) -> Painter {
        let (done, ticks) = std::sync::mpsc::channel::<()>();
        let thread = {
            let bar = bar.clone();
            std::thread::spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = ticks.recv_timeout(tick) {
                    paint(bar.as_ref());
                }
            })
        };
        Painter {
            done: Some(done),
            thread: Some(thread),
            bar,
        }
    }
}

impl Drop for Painter {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            // A painter that panicked has said so on stderr; what the
            // command itself returns (a worker's failure, say) matters more.
            let _ = thread.join();
        }
        end_live(self.bar.take());
    }
}

/// A panel of a few lines on stderr: on a terminal each one replaces the
/// one before it; otherwise they follow one another.
#[derive(Debug)]
pub struct Panel {
    terminal: bool,
    lines_shown: usize,
}

impl Panel {
    /// A panel on stderr; nothing is shown yet.
    pub fn stderr() -> Panel {
        Panel {
            terminal: std::io::stderr().is_terminal(),
            lines_shown: 0,
        }
    }

    /// Shows `text` (whole lines), over the previous text on a terminal.
    pub fn show(&mut self, text: &str) {
        if self.terminal && self.lines_shown > 0 {
            eprint!("\x1b[{}A\x1b[J", self.lines_shown); // redraw in place
        }
        eprint!("{text}");
        self.lines_shown = text.lines().count();
    }
}
