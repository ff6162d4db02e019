//! Progress on long work: a live bar or spinner on a terminal, a plain line every few seconds
//! otherwise (logs, CI).

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Reports how many units (users, rows, ...) are done.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    last_line: Cell<Instant>,
}

impl Progress {
    /// A progress display for `what` (for example "users clustered"), out of `total` if known.
    pub fn new(what: &'static str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let (bar, template) = match total {
                Some(n) => (
                    indicatif::ProgressBar::new(n),
                    format!("{{bar:40}} {{pos}}/{{len}} {what} ({{eta}} left)"),
                ),
                None => (
                    indicatif::ProgressBar::new_spinner(),
                    format!("{{spinner}} {{elapsed}} {{pos}} {what} ({{per_sec}})"),
                ),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(&template).expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            what,
            last_line: Cell::new(Instant::now()),
        }
    }

    /// `done` units are finished.
    pub fn update(&self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_line.get().elapsed() >= Duration::from_secs(5) => {
                eprintln!("{done} {}", self.what);
                self.last_line.set(Instant::now());
            }
            None => {}
        }
    }

    /// Removes the live display.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The library's [`pinnersage_core::progress::Progress`] drawn as one [`Progress`] display per
/// phase (phases with an unknown total show only their name), notes printed to stderr.
pub struct Bars {
    unit: &'static str,
    current: std::sync::Mutex<Option<Progress>>,
    done: std::sync::atomic::AtomicU64,
}

impl Bars {
    /// Bars counting `unit` (for example "items").
    pub fn new(unit: &'static str) -> Self {
        Self {
            unit,
            current: std::sync::Mutex::new(None),
            done: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl pinnersage_core::progress::Progress for Bars {
    fn phase(&self, name: &str, total: u64) {
        self.finish();
        eprintln!("{name}...");
        self.done.store(0, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut current) = self.current.lock() {
            *current = (total > 0).then(|| Progress::new(self.unit, Some(total)));
        }
    }

    fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        if let Ok(current) = self.current.lock()
            && let Some(p) = current.as_ref()
        {
            p.update(done);
        }
    }

    fn note(&self, text: &str) {
        eprintln!("{text}");
    }

    fn finish(&self) {
        if let Ok(mut current) = self.current.lock()
            && let Some(p) = current.take()
        {
            p.finish();
        }
    }
}
