//! Messages for people: quiet under cron, more with `-v`, a progress bar only on a terminal.

use std::fmt::Arguments;
use std::io::IsTerminal;

/// How chatty to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors only (`-q`).
    Quiet,
    /// Errors, warnings and results.
    Normal,
    /// Plus per-file detail (`-v`).
    Verbose,
    /// Plus debugging detail (`-vv`).
    Debug,
}

/// Output settings for one command.
#[derive(Debug, Clone)]
pub struct Ui {
    /// The verbosity.
    pub verbosity: Verbosity,
    /// Whether stderr is a terminal (progress bars).
    pub interactive: bool,
}

impl Ui {
    /// From `-v` / `-q` counts.
    pub fn new(verbose: u8, quiet: bool) -> Self {
        let verbosity = match (quiet, verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, 1) => Verbosity::Verbose,
            _ => Verbosity::Debug,
        };
        Ui {
            verbosity,
            interactive: std::io::stderr().is_terminal() && verbosity > Verbosity::Quiet,
        }
    }

    /// A result line on stdout (suppressed by `-q`).
    pub fn info(&self, msg: Arguments<'_>) {
        if self.verbosity >= Verbosity::Normal {
            println!("{}", shown(msg));
        }
    }

    /// Per-file detail on stdout (`-v`).
    pub fn verbose(&self, msg: Arguments<'_>) {
        if self.verbosity >= Verbosity::Verbose {
            println!("{}", shown(msg));
        }
    }

    /// Debugging detail on stderr (`-vv`).
    pub fn debug(&self, msg: Arguments<'_>) {
        if self.verbosity >= Verbosity::Debug {
            eprintln!("debug: {}", shown(msg));
        }
    }

    /// A warning on stderr (always shown: cron mails it).
    pub fn warn(&self, msg: Arguments<'_>) {
        eprintln!("warning: {}", shown(msg));
    }

    /// An error on stderr.
    pub fn error(&self, msg: Arguments<'_>) {
        eprintln!("error: {}", shown(msg));
    }
}

/// A message as it may reach a terminal: control characters escaped (file names come from
/// whoever can write to a queue, and an escape sequence in one must not drive the operator's
/// terminal), line breaks and tabs kept.
fn shown(msg: Arguments<'_>) -> String {
    let text = msg.to_string();
    match walvault_core::text::escape_message(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

/// A progress bar over `len` files, drawn only on a terminal (and only where the native
/// build has one: the WASI guest's is a no-op).
#[derive(Debug)]
pub struct Progress {
    #[cfg(feature = "native")]
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A bar when `ui` is interactive and there is more than one file.
    pub fn new(ui: &Ui, len: usize) -> Self {
        #[cfg(feature = "native")]
        {
            let bar = (ui.interactive && len > 1).then(|| {
                let bar = indicatif::ProgressBar::new(len as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {pos}/{len} WAL files [{elapsed}] {wide_bar} {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            });
            Progress { bar }
        }
        #[cfg(not(feature = "native"))]
        {
            let _ = (ui, len);
            Progress {}
        }
    }

    /// One more file done.
    pub fn inc(&self, file_name: &str) {
        #[cfg(feature = "native")]
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(file_name.to_owned());
        }
        #[cfg(not(feature = "native"))]
        let _ = file_name;
    }

    /// Removes the bar.
    pub fn finish(self) {
        #[cfg(feature = "native")]
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
