//! The log file (Barman's `log_file` and `log_level` in `[walvault]`): one line per archived,
//! rejected and failed file, with the server, the WAL and the reason, for people who grep.
//! The terminal output of the commands is unchanged; this is a second, steady record.
//!
//! Without `log_file` the lines go to standard error only under systemd (`JOURNAL_STREAM` set:
//! the journal), never to a terminal. Each line is one `write` to a file opened for appending,
//! so concurrent walvault processes never interleave within a line. Long-running commands
//! (`receive-wal`, `serve`) reopen the file on SIGHUP, as logrotate expects.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

use crate::config::{Config, LogLevel};

/// Set by SIGHUP: the next line reopens the file.
static REOPEN: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn reopen_flag() -> &'static Arc<AtomicBool> {
    REOPEN.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Where log lines go.
#[derive(Debug)]
struct Sink {
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
    stderr: bool,
}

impl Sink {
    fn open(path: &Path) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        // Less the umask: private, or group-readable with `group_access`.
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
        options.open(path)
    }

    /// Writes one whole line. A log that cannot be written never stops archiving.
    fn emit(&self, line: &[u8]) {
        if let Some(path) = &self.path {
            let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            if reopen_flag().swap(false, Ordering::SeqCst) || file.is_none() {
                *file = Self::open(path).ok();
            }
            if let Some(f) = file.as_mut() {
                let _ = f.write_all(line);
            }
        }
        if self.stderr {
            let _ = io::stderr().write_all(line);
        }
    }
}

/// What `tracing` writes one event into: a buffer, handed to the sink whole when dropped.
#[derive(Debug)]
pub struct Line<'a> {
    sink: &'a Sink,
    buf: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink.emit(&one_line(&self.buf));
        }
    }
}

/// The event as exactly one line: control characters inside it (a line break in an error
/// that quotes a file name, an escape sequence) are written as `\n`, `\xNN`, so nothing a
/// queue's writer names can forge or hide a line.
fn one_line(buf: &[u8]) -> Vec<u8> {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let mut out = Vec::with_capacity(body.len() + 1);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b'\t'),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_event_is_always_one_line() {
        assert_eq!(
            super::one_line(b"a\nINFO forged\x1b[2J\n"),
            b"a\\nINFO forged\\x1b[2J\n"
        );
        assert_eq!(super::one_line(b"plain"), b"plain\n");
    }
}

/// The `MakeWriter` of the subscriber.
#[derive(Debug, Clone)]
struct Writer(Arc<Sink>);

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Line<'a>;
    fn make_writer(&'a self) -> Line<'a> {
        Line {
            sink: &self.0,
            buf: Vec::with_capacity(256),
        }
    }
}

/// Starts logging for this process (`command` names it in every line, with the pid). Without
/// a log file and outside systemd, nothing is set up. A log file that cannot be opened is a
/// warning: WAL is archived regardless.
pub fn init(config: &Config, command: &str, ui: &crate::ui::Ui) {
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    if config.log_file.is_none() && !under_systemd {
        return;
    }
    let mut file = None;
    if let Some(path) = &config.log_file {
        match Sink::open(path) {
            Ok(f) => file = Some(f),
            Err(e) => ui.warn(format_args!(
                "log_file {}: {e}; archiving goes on without it",
                path.display()
            )),
        }
    }
    let sink = Sink {
        path: config.log_file.clone(),
        file: Mutex::new(file),
        stderr: config.log_file.is_none() && under_systemd,
    };
    let level = match config.log_level {
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warning => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(Writer(Arc::new(sink)))
        .with_max_level(level)
        .event_format(Format {
            command: command.to_owned(),
        })
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// `2026-12-02T08:40:01.123456Z INFO archive-wal[4242]: archived server=pg wal="…"`: the
/// time (UTC), Barman's level names, the command and its pid (as Barman's `[pid]`), then the
/// message and its fields (file names quoted and escaped, so a hostile name cannot forge a
/// line).
#[derive(Debug)]
struct Format {
    command: String,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Format
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime;
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut writer)?;
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            _ => "DEBUG",
        };
        write!(
            writer,
            " {level} {}[{}]: ",
            self.command,
            std::process::id()
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Reopens the log file on SIGHUP (for logrotate), in commands that run for long.
#[cfg(feature = "native")]
pub fn reopen_on_sighup() {
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, reopen_flag().clone());
}
