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
            println!("{msg}");
        }
    }

    /// Per-file detail on stdout (`-v`).
    pub fn verbose(&self, msg: Arguments<'_>) {
        if self.verbosity >= Verbosity::Verbose {
            println!("{msg}");
        }
    }

    /// Debugging detail on stderr (`-vv`).
    pub fn debug(&self, msg: Arguments<'_>) {
        if self.verbosity >= Verbosity::Debug {
            eprintln!("debug: {msg}");
        }
    }

    /// A warning on stderr (always shown: cron mails it).
    pub fn warn(&self, msg: Arguments<'_>) {
        eprintln!("warning: {msg}");
    }

    /// An error on stderr.
    pub fn error(&self, msg: Arguments<'_>) {
        eprintln!("error: {msg}");
    }
}
