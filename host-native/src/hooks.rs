//! Hook scripts with Barman's `BARMAN_*` environment, so existing scripts keep working.
//!
//! Order per file: pre script → pre retry script → archive → post retry script → post script.
//! Plain scripts' exit status is only logged. Retry scripts run until they exit 0, 62
//! (ABORT_CONTINUE) or 63 (ABORT_STOP): 63 from the pre retry script stops the run, from the
//! post retry script it is ignored with a warning. Unlike Barman, every post script receives
//! the error in `BARMAN_ERROR`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use walvault_core::archive::{ArchiveHooks, FileOutcome, HookVerdict};
use walvault_core::compression::Codec;
use walvault_core::queue::Candidate;
use walvault_core::time::python_float_repr;

use crate::config::{HookScripts, ServerConfig};
use crate::ui::Ui;

/// Exit status of a retry script meaning "give up on this hook, carry on".
pub const ABORT_CONTINUE: i32 = 62;
/// Exit status of a retry script meaning "stop".
pub const ABORT_STOP: i32 = 63;

/// Pauses between retries of a retry script: short ones, then a long nap (Barman: 3 s × 5,
/// then 60 s).
#[derive(Debug, Clone, Copy)]
pub struct RetryPauses {
    /// Between attempts.
    pub short: Duration,
    /// After `attempts_before_nap` failures in a row.
    pub nap: Duration,
    /// Failures before a nap.
    pub attempts_before_nap: u32,
}

impl Default for RetryPauses {
    fn default() -> Self {
        RetryPauses {
            short: Duration::from_secs(3),
            nap: Duration::from_secs(60),
            attempts_before_nap: 5,
        }
    }
}

/// One hook invocation's environment.
#[derive(Debug, Clone, Default)]
pub struct HookEnv {
    /// `BARMAN_SEGMENT`.
    pub segment: String,
    /// `BARMAN_FILE`.
    pub file: String,
    /// `BARMAN_SIZE`.
    pub size: u64,
    /// `BARMAN_TIMESTAMP` (source mtime).
    pub timestamp: f64,
    /// `BARMAN_COMPRESSION` (empty for plain).
    pub compression: String,
    /// `BARMAN_ERROR` (empty on success).
    pub error: String,
}

/// Runs a server's hook scripts.
#[derive(Debug)]
pub struct HookRunner<'a> {
    server: &'a ServerConfig,
    config_path: PathBuf,
    ui: &'a Ui,
    pauses: RetryPauses,
}

/// What kind of event a script set belongs to (`BARMAN_HOOK` base name).
#[derive(Debug, Clone, Copy)]
pub enum HookKind {
    /// WAL archiving.
    Archive,
    /// WAL deletion.
    WalDelete,
}

impl HookKind {
    fn base(self) -> &'static str {
        match self {
            HookKind::Archive => "archive",
            HookKind::WalDelete => "wal_delete",
        }
    }
}

impl<'a> HookRunner<'a> {
    /// Hooks of `server`, whose configuration file is `config_path`.
    pub fn new(server: &'a ServerConfig, config_path: &Path, ui: &'a Ui) -> Self {
        HookRunner {
            server,
            config_path: config_path.to_owned(),
            ui,
            pauses: RetryPauses::default(),
        }
    }

    /// Overrides the retry pauses (tests).
    #[cfg(test)]
    pub fn with_pauses(mut self, pauses: RetryPauses) -> Self {
        self.pauses = pauses;
        self
    }

    fn scripts(&self, kind: HookKind) -> &HookScripts {
        match kind {
            HookKind::Archive => &self.server.archive_hooks,
            HookKind::WalDelete => &self.server.delete_hooks,
        }
    }

    fn run_script(
        &self,
        script: &str,
        hook: &str,
        phase: &str,
        retry: bool,
        env: &HookEnv,
    ) -> std::io::Result<i32> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        if let Some(prefix) = &self.server.path_prefix {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{prefix}:{path}"));
        }
        cmd.env("BARMAN_VERSION", env!("CARGO_PKG_VERSION"))
            .env("WALVAULT_VERSION", env!("CARGO_PKG_VERSION"))
            .env("BARMAN_SERVER", &self.server.name)
            .env("BARMAN_CONFIGURATION", &self.config_path)
            .env("BARMAN_HOOK", hook)
            .env("BARMAN_PHASE", phase)
            .env("BARMAN_RETRY", if retry { "1" } else { "0" })
            .env("BARMAN_SEGMENT", &env.segment)
            .env("BARMAN_FILE", &env.file)
            .env("BARMAN_SIZE", env.size.to_string())
            .env("BARMAN_TIMESTAMP", python_float_repr(env.timestamp))
            .env("BARMAN_COMPRESSION", &env.compression)
            .env("BARMAN_ERROR", &env.error);
        let status = cmd.status()?;
        // A script killed by a signal counts as a failure (retried).
        Ok(status.code().unwrap_or(1))
    }

    fn plain(&self, script: Option<&String>, kind: HookKind, phase: &str, env: &HookEnv) {
        let Some(script) = script else { return };
        let hook = format!("{}_script", kind.base());
        match self.run_script(script, &hook, phase, false, env) {
            Ok(0) => self
                .ui
                .debug(format_args!("{phase} {hook} for {} succeeded", env.segment)),
            Ok(code) => self.ui.warn(format_args!(
                "{phase} {hook} for {} exited with {code}",
                env.segment
            )),
            Err(e) => self.ui.warn(format_args!(
                "{phase} {hook} for {} could not run: {e}",
                env.segment
            )),
        }
    }

    /// Runs a retry script until it settles; returns `Stop` only for ABORT_STOP.
    fn retry(
        &self,
        script: Option<&String>,
        kind: HookKind,
        phase: &str,
        env: &HookEnv,
    ) -> HookVerdict {
        let Some(script) = script else {
            return HookVerdict::Proceed;
        };
        let hook = format!("{}_retry_script", kind.base());
        let mut failures = 0u32;
        loop {
            match self.run_script(script, &hook, phase, true, env) {
                Ok(0) => return HookVerdict::Proceed,
                Ok(ABORT_CONTINUE) => {
                    self.ui.warn(format_args!(
                        "{phase} {hook} for {} asked to continue (exit {ABORT_CONTINUE})",
                        env.segment
                    ));
                    return HookVerdict::Proceed;
                }
                Ok(ABORT_STOP) => {
                    self.ui.warn(format_args!(
                        "{phase} {hook} for {} asked to stop (exit {ABORT_STOP})",
                        env.segment
                    ));
                    return HookVerdict::Stop;
                }
                Ok(code) => self.ui.warn(format_args!(
                    "{phase} {hook} for {} exited with {code}; retrying",
                    env.segment
                )),
                Err(e) => self.ui.warn(format_args!(
                    "{phase} {hook} for {} could not run: {e}; retrying",
                    env.segment
                )),
            }
            failures += 1;
            if failures.is_multiple_of(self.pauses.attempts_before_nap) {
                std::thread::sleep(self.pauses.nap);
            } else {
                std::thread::sleep(self.pauses.short);
            }
        }
    }

    /// The pre phase: plain script, then retry script.
    pub fn pre(&self, kind: HookKind, env: &HookEnv) -> HookVerdict {
        let scripts = self.scripts(kind);
        self.plain(scripts.pre.as_ref(), kind, "pre", env);
        self.retry(scripts.pre_retry.as_ref(), kind, "pre", env)
    }

    /// The post phase: retry script (ABORT_STOP ignored), then plain script.
    pub fn post(&self, kind: HookKind, env: &HookEnv) {
        let scripts = self.scripts(kind);
        if self.retry(scripts.post_retry.as_ref(), kind, "post", env) == HookVerdict::Stop {
            self.ui.warn(format_args!(
                "post {}_retry_script cannot stop a run that already happened; ignored",
                kind.base()
            ));
        }
        self.plain(scripts.post.as_ref(), kind, "post", env);
    }

    /// Whether any archive hook is configured (to skip work when none is).
    pub fn has_archive_hooks(&self) -> bool {
        let s = &self.server.archive_hooks;
        s.pre.is_some() || s.pre_retry.is_some() || s.post.is_some() || s.post_retry.is_some()
    }
}

/// [`HookRunner`] bound to a queue directory and an archive location, as the core's hooks.
#[derive(Debug)]
pub struct ArchiveHookAdapter<'a> {
    /// The runner.
    pub runner: HookRunner<'a>,
    /// The queue the candidates come from.
    pub source_dir: PathBuf,
    /// Turns a stored key into what `BARMAN_FILE` shows after archiving.
    pub archive_root: String,
}

impl ArchiveHooks for ArchiveHookAdapter<'_> {
    fn before(&self, c: &Candidate) -> HookVerdict {
        if !self.runner.has_archive_hooks() {
            return HookVerdict::Proceed;
        }
        let path = self.source_dir.join(&c.file_name);
        let head = std::fs::File::open(&path).ok().and_then(|mut f| {
            let mut buf = [0u8; 10];
            std::io::Read::read(&mut f, &mut buf)
                .ok()
                .map(|n| buf[..n].to_vec())
        });
        let env = HookEnv {
            segment: c.name.to_string(),
            file: path.display().to_string(),
            size: c.size,
            timestamp: c.mtime,
            compression: head
                .and_then(|h| Codec::identify(&h))
                .map(|c| c.name().to_owned())
                .unwrap_or_default(),
            error: String::new(),
        };
        self.runner.pre(HookKind::Archive, &env)
    }

    fn after(&self, c: &Candidate, outcome: &FileOutcome) {
        if !self.runner.has_archive_hooks() {
            return;
        }
        let (file, size, compression) = match outcome {
            FileOutcome::Archived { entry, key } => (
                format!("{}{key}", self.archive_root),
                entry.size,
                entry.compression.clone().unwrap_or_default(),
            ),
            FileOutcome::IdenticalDuplicate { key, .. }
            | FileOutcome::DifferentDuplicate { key, .. } => {
                (format!("{}{key}", self.archive_root), c.size, String::new())
            }
            _ => (
                self.source_dir.join(&c.file_name).display().to_string(),
                c.size,
                String::new(),
            ),
        };
        let env = HookEnv {
            segment: c.name.to_string(),
            file,
            size,
            timestamp: c.mtime,
            compression,
            error: outcome.error().unwrap_or_default(),
        };
        self.runner.post(HookKind::Archive, &env);
    }
}
