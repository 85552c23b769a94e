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
            cmd.env("PATH", hook_path(Some(prefix)));
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

/// The `PATH` hook scripts run with: `path_prefix`, then walvault's own `PATH`.
fn hook_path(path_prefix: Option<&str>) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    match path_prefix {
        Some(prefix) => format!("{prefix}:{path}"),
        None => path,
    }
}

/// Every configured hook script of `server`, with its configuration key.
pub fn configured_scripts(server: &ServerConfig) -> Vec<(&'static str, &str)> {
    let (a, d) = (&server.archive_hooks, &server.delete_hooks);
    [
        ("pre_archive_script", &a.pre),
        ("pre_archive_retry_script", &a.pre_retry),
        ("post_archive_retry_script", &a.post_retry),
        ("post_archive_script", &a.post),
        ("pre_wal_delete_script", &d.pre),
        ("pre_wal_delete_retry_script", &d.pre_retry),
        ("post_wal_delete_retry_script", &d.post_retry),
        ("post_wal_delete_script", &d.post),
    ]
    .into_iter()
    .filter_map(|(key, script)| script.as_deref().map(|s| (key, s)))
    .collect()
}

/// The hook scripts of `server` that cannot run, as (key, why). A retry script that cannot
/// run is retried forever, stalling archiving, so `config check` and `check` report these.
pub fn script_problems(server: &ServerConfig) -> Vec<(&'static str, String)> {
    configured_scripts(server)
        .into_iter()
        .filter_map(|(key, script)| {
            script_problem(script, server.path_prefix.as_deref()).map(|why| (key, why))
        })
        .collect()
}

/// Shell words that need no program: reserved words and the builtins a hook plausibly
/// starts with.
const SHELL_WORDS: &[&str] = &[
    "!", "{", "(", "if", "for", "while", "until", "case", "exec", "exit", "true", "false", ":",
    ".", "echo", "printf", "test", "[", "cd", "set", "export", "command", "eval", "trap",
];

/// The program a `/bin/sh -c` command line starts, when it can be told without running it:
/// leading `NAME=value` assignments skipped, simple quotes removed; `None` for a command that
/// starts with a shell word or expands something.
fn first_program(script: &str) -> Option<String> {
    let mut rest = script.trim_start();
    loop {
        let end = rest
            .find(|c: char| c.is_whitespace() || ";&|<>()".contains(c))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        let assignment = word.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        if !assignment {
            break;
        }
        rest = rest[end..].trim_start();
    }
    let word = match rest.chars().next() {
        Some(q @ ('\'' | '"')) => &rest[1..rest[1..].find(q)? + 1],
        _ => {
            let end = rest
                .find(|c: char| c.is_whitespace() || ";&|<>()".contains(c))
                .unwrap_or(rest.len());
            &rest[..end]
        }
    };
    let expands = word.contains(['$', '`', '*', '?', '[', '~', '\\', '\'', '"']);
    (!word.is_empty() && !expands && !SHELL_WORDS.contains(&word)).then(|| word.to_owned())
}

/// Why `script` cannot run as `/bin/sh -c` would run it with `path_prefix` ahead of `PATH`:
/// its program is missing, not a file or not executable. `None` when it can, or when the
/// program cannot be told without running the script.
pub fn script_problem(script: &str, path_prefix: Option<&str>) -> Option<String> {
    let program = first_program(script)?;
    let runnable = |path: &Path| -> Result<(), String> {
        match std::fs::metadata(path) {
            Err(e) => Err(format!("{}: {e}", path.display())),
            Ok(meta) if !meta.is_file() => Err(format!("{} is not a file", path.display())),
            Ok(meta) if !executable(&meta) => Err(format!("{} is not executable", path.display())),
            Ok(_) => Ok(()),
        }
    };
    if program.starts_with('/') {
        return runnable(Path::new(&program)).err();
    }
    if program.contains('/') {
        // Relative to the directory walvault runs in, which differs between PostgreSQL's
        // archive_command and whoever runs the check: nothing to judge here.
        return None;
    }
    let path = hook_path(path_prefix);
    let mut found = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(&program);
        match runnable(&candidate) {
            Ok(()) => return None,
            Err(why) if candidate.exists() => found = found.or(Some(why)),
            Err(_) => {}
        }
    }
    Some(found.unwrap_or_else(|| {
        format!(
            "{program:?} is not in {}PATH",
            path_prefix.map_or_else(String::new, |p| format!("path_prefix ({p}) or "))
        )
    }))
}

#[cfg(unix)]
fn executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn executable(_: &std::fs::Metadata) -> bool {
    true
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_program_of_a_command_line() {
        assert_eq!(
            first_program("/opt/h/pre.sh --x").as_deref(),
            Some("/opt/h/pre.sh")
        );
        assert_eq!(first_program("  hook arg").as_deref(), Some("hook"));
        assert_eq!(
            first_program("A=1 B_2=x hook; other").as_deref(),
            Some("hook")
        );
        assert_eq!(
            first_program("'/opt/my hooks/h' a").as_deref(),
            Some("/opt/my hooks/h")
        );
        assert_eq!(first_program("hook>/dev/null").as_deref(), Some("hook"));
        for unknowable in [
            "exit 0",
            "true",
            "$HOOK a",
            "if x; then y; fi",
            "",
            "~/h",
            "'open",
        ] {
            assert_eq!(first_program(unknowable), None, "{unknowable}");
        }
    }

    #[test]
    fn missing_and_non_executable_scripts_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("good-hook");
        let plain = dir.path().join("plain-hook");
        std::fs::write(&exe, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(&plain, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let prefix = dir.path().to_str().expect("utf-8");
        let problem = |script: &str, prefix: Option<&str>| script_problem(script, prefix);

        assert_eq!(problem(&format!("{} arg", exe.display()), None), None);
        assert_eq!(
            problem("good-hook arg", Some(prefix)),
            None,
            "found in path_prefix"
        );
        assert_eq!(problem("sh -c true", None), None, "found in PATH");
        assert_eq!(problem("exit 0", None), None, "a shell word");
        let why = problem("good-hook", None).expect("not without the prefix");
        assert!(why.contains("\"good-hook\" is not in PATH"), "{why}");
        let why = problem("no-such-hook", Some(prefix)).expect("missing");
        assert!(
            why.contains(&format!("path_prefix ({prefix}) or PATH")),
            "{why}"
        );
        let why = problem("plain-hook", Some(prefix)).expect("not executable");
        assert!(why.ends_with("plain-hook is not executable"), "{why}");
        let why = problem(&plain.display().to_string(), None).expect("not executable");
        assert!(why.ends_with("is not executable"), "{why}");
        let why =
            problem(&format!("{}/missing.sh x", dir.path().display()), None).expect("missing");
        assert!(why.contains("missing.sh: No such file"), "{why}");
        let why = problem(&dir.path().display().to_string(), None).expect("a directory");
        assert!(why.ends_with("is not a file"), "{why}");
    }

    #[test]
    fn every_hook_key_is_checked() {
        let text = "[pg]\npre_archive_script = \"/nonexistent/a\"\n\
                    pre_archive_retry_script = \"/nonexistent/b\"\n\
                    post_archive_retry_script = \"/nonexistent/c\"\n\
                    post_archive_script = \"/nonexistent/d\"\n\
                    pre_wal_delete_script = \"/nonexistent/e\"\n\
                    pre_wal_delete_retry_script = \"/nonexistent/f\"\n\
                    post_wal_delete_retry_script = \"/nonexistent/g\"\n\
                    post_wal_delete_script = \"exit 0\"\n";
        let config =
            crate::config::Config::parse(text, Path::new("/etc/walvault.toml")).expect("config");
        let keys: Vec<&str> = script_problems(config.server("pg").expect("pg"))
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(
            keys,
            [
                "pre_archive_script",
                "pre_archive_retry_script",
                "post_archive_retry_script",
                "post_archive_script",
                "pre_wal_delete_script",
                "pre_wal_delete_retry_script",
                "post_wal_delete_retry_script",
            ]
        );
    }
}
