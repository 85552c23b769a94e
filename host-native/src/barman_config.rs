//! Barman's configuration, read as is: `walvault --barman-config /etc/barman.conf` reads
//! Barman's INI files (the main file, then `configuration_files_directory/*.conf` in name
//! order, as Barman does) and translates the keys walvault knows into its own TOML, which it
//! then loads like any walvault configuration. `walvault config convert` prints that TOML, so
//! a Barman host can switch with its files unchanged and move to walvault's format later.
//!
//! Read as Barman reads it (Python's `configparser` with `strict=False`, then Barman's own
//! rules): `key = value` or `key: value`, keys case-insensitive, `#`/`;` comment lines,
//! indented continuation lines, `[DEFAULT]` keys in every section, a later file or section
//! overriding an earlier one, `%(key)s` interpolation (of the same section's keys and
//! `[DEFAULT]`'s, all Barman 3.20 accepts), one pair of surrounding quotes
//! stripped, `None` or an empty value meaning unset. Server keys in `[barman]` are defaults
//! for every server only where Barman inherits them. Every key walvault does not use is
//! reported with the reason (docs/barman-behaviours.md#B-CHANGE-21).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// A key walvault does not take from Barman's files, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The file it is in.
    pub file: PathBuf,
    /// Its section.
    pub section: String,
    /// The key.
    pub key: String,
    /// Why walvault does not use it.
    pub why: &'static str,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: [{}] {}: left out: {}",
            self.file.display(),
            self.section,
            self.key,
            self.why
        )
    }
}

/// Barman's files translated: walvault's TOML, and what was left out.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The configuration in walvault's format.
    pub toml: String,
    /// The keys walvault does not use.
    pub ignored: Vec<Ignored>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// One value and where it was set.
#[derive(Debug, Clone)]
struct Entry {
    value: String,
    file: PathBuf,
}

/// Sections by name (`DEFAULT` included), keys lower-cased, in the order read.
type Sections = BTreeMap<String, BTreeMap<String, Entry>>;

fn error(file: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError {
        section: None,
        key: None,
        message: format!("{}: {}", file.display(), message.into()),
    }
}

/// Parses one INI file into `sections` (merging, as `configparser.read` does).
fn parse_ini(file: &Path, text: &str, sections: &mut Sections) -> Result<(), ConfigError> {
    let mut section: Option<String> = None;
    let mut last_key: Option<String> = None;
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let indented = line.len() != trimmed.len();
        if indented && let (Some(s), Some(k)) = (&section, &last_key) {
            // A continuation line: part of the value above.
            if let Some(entry) = sections.get_mut(s).and_then(|m| m.get_mut(k)) {
                entry.value.push('\n');
                entry.value.push_str(trimmed);
                continue;
            }
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some((name, _)) = rest.split_once(']') else {
                return Err(error(
                    file,
                    format!("line {}: a section header without ']'", number + 1),
                ));
            };
            section = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
            last_key = None;
            continue;
        }
        let Some(current) = &section else {
            return Err(error(
                file,
                format!("line {}: a setting before the first [section]", number + 1),
            ));
        };
        let Some(at) = trimmed.find(['=', ':']) else {
            return Err(error(
                file,
                format!(
                    "line {}: expected 'key = value', got {trimmed:?}",
                    number + 1
                ),
            ));
        };
        let key = trimmed[..at].trim().to_lowercase();
        let value = trimmed[at + 1..].trim().to_owned();
        if key.is_empty() {
            return Err(error(
                file,
                format!("line {}: a value without a key", number + 1),
            ));
        }
        sections.entry(current.clone()).or_default().insert(
            key.clone(),
            Entry {
                value,
                file: file.to_owned(),
            },
        );
        last_key = Some(key);
    }
    Ok(())
}

/// Reads Barman's main file and the `*.conf` files of its `configuration_files_directory`.
pub fn read(path: &Path) -> Result<Translation, ConfigError> {
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|e| error(p, format!("cannot read: {e}")));
    let mut sections = Sections::new();
    let mut files = vec![path.to_owned()];
    parse_ini(path, &read(path)?, &mut sections)?;
    if let Some(dir) = sections
        .get("barman")
        .and_then(|b| b.get("configuration_files_directory"))
        .map(|e| expand_home(&unquote(&e.value)))
        .filter(|d| !d.as_os_str().is_empty())
    {
        // As Barman: a directory that is not one is ignored (Barman warns).
        if dir.is_dir() {
            let mut confs: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| error(&dir, format!("cannot list: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
                .collect();
            confs.sort();
            for conf in confs {
                parse_ini(&conf, &read(&conf)?, &mut sections)?;
                files.push(conf);
            }
        }
    }
    let (toml, ignored) = translate(&sections)?;
    Ok(Translation {
        toml,
        ignored,
        files,
    })
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Barman strips one pair of matching quotes around a value.
fn unquote(value: &str) -> String {
    let v = value.as_bytes();
    if v.len() >= 2 && (v[0] == b'"' || v[0] == b'\'') && v[v.len() - 1] == v[0] {
        value[1..value.len() - 1].to_owned()
    } else {
        value.to_owned()
    }
}

/// Barman's server keys it takes from `[barman]` when a server does not set them (among those
/// walvault knows; `ServerConfig.BARMAN_KEYS` in Barman 3.20).
const INHERITED: &[&str] = &[
    "archiver",
    "archiver_batch_size",
    "compression",
    "compression_level",
    "create_slot",
    "encryption",
    "encryption_key_id",
    "encryption_passphrase_command",
    "last_wal_maximum_age",
    "max_incoming_wals_queue",
    "path_prefix",
    "post_archive_retry_script",
    "post_archive_script",
    "post_wal_delete_retry_script",
    "post_wal_delete_script",
    "pre_archive_retry_script",
    "pre_archive_script",
    "pre_wal_delete_retry_script",
    "pre_wal_delete_script",
    "slot_name",
    "streaming_archiver",
    "streaming_archiver_batch_size",
    "streaming_archiver_name",
    "xlogdb_directory",
];

/// Barman's keys that name the same setting in walvault but that walvault must not take as
/// is: Barman uses them for something walvault does not do.
const NOT_TAKEN: &[(&str, &str)] = &[(
    "aws_profile",
    "Barman's is for snapshot backups; walvault's names the profile of an s3:// archive",
)];

/// Why walvault does not take a key it knows by name, if it is one of [`NOT_TAKEN`].
fn not_taken(key: &str) -> Option<&'static str> {
    NOT_TAKEN
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, why)| *why)
}

/// Barman's unset: an empty value or `None`.
fn is_unset(value: &str) -> bool {
    value.is_empty() || value == "None"
}

/// An entry's value as Barman reads it: unquoted, then interpolated with `lookup`; an error
/// names the section and key.
fn resolve(
    section: &str,
    key: &str,
    entry: &Entry,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    interpolate(&unquote(&entry.value), lookup, 0).map_err(|message| ConfigError {
        section: Some(section.to_owned()),
        key: Some(key.to_owned()),
        message,
    })
}

/// Why walvault leaves out a Barman key it does not know.
fn why_unknown(key: &str) -> &'static str {
    match key {
        "log_format" => "walvault's log lines have one format (time, level, process, fields)",
        "barman_user" => "walvault runs as the user that starts it",
        _ if key.contains("backup")
            || key.contains("recovery")
            || key.starts_with("retention")
            || key.contains("snapshot") =>
        {
            "a backup, recovery or retention setting: walvault archives and serves WAL only"
        }
        _ => "not a setting walvault has",
    }
}

/// The TOML type of walvault's keys that are not strings.
fn kind(key: &str) -> Kind {
    match key {
        "active" | "archiver" | "streaming_archiver" | "synchronous" | "check_page_header"
        | "archive_async" | "path_style" | "group_access" => Kind::Bool,
        "archiver_batch_size"
        | "streaming_archiver_batch_size"
        | "jobs"
        | "max_incoming_wals_queue"
        | "request_timeout"
        | "max_retries"
        | "encryption_passphrase_timeout"
        | "encryption_key_cache_ttl" => Kind::Integer,
        "compression_level"
        | "wal_segment_size"
        | "system_identifier"
        | "archive_queue_max"
        | "multipart_threshold" => Kind::NumberOrText,
        _ => Kind::Text,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Integer,
    NumberOrText,
    Text,
}

/// Barman's booleans (`parse_boolean`).
fn parse_boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" | "on" => Some(true),
        "false" | "f" | "no" | "n" | "0" | "off" => Some(false),
        _ => None,
    }
}

/// A Barman value as the TOML value walvault's key takes.
fn toml_value(section: &str, key: &str, value: &str) -> Result<toml::Value, ConfigError> {
    let bad = |what: &str| ConfigError {
        section: Some(section.to_owned()),
        key: Some(key.to_owned()),
        message: format!("{value:?} is not {what}"),
    };
    Ok(match kind(key) {
        Kind::Bool => toml::Value::Boolean(
            parse_boolean(value)
                .ok_or_else(|| bad("a boolean (true|t|yes|1|on, false|f|no|0|off)"))?,
        ),
        Kind::Integer => toml::Value::Integer(value.parse().map_err(|_| bad("a number"))?),
        Kind::NumberOrText => match value.parse::<i64>() {
            Ok(n) => toml::Value::Integer(n),
            Err(_) => toml::Value::String(value.to_owned()),
        },
        Kind::Text => toml::Value::String(value.to_owned()),
    })
}

/// Expands `%(name)s` and `%%` as configparser's interpolation does, looking names up with
/// `lookup`.
fn interpolate(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    if !value.contains('%') {
        return Ok(value.to_owned());
    }
    if depth > 10 {
        return Err(format!("{value:?}: interpolation nested too deeply"));
    }
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("%%") {
            out.push('%');
            rest = after;
        } else if let Some(inner) = rest.strip_prefix("%(")
            && let Some((name, after)) = inner.split_once(")s")
        {
            let found = lookup(&name.to_lowercase()).ok_or_else(|| {
                format!("{value:?}: %({name})s is not set in this section or [DEFAULT]")
            })?;
            out.push_str(&interpolate(&found, lookup, depth + 1)?);
            rest = after;
        } else {
            return Err(format!(
                "{value:?}: '%' must be followed by '%' or '(name)s'"
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Translates parsed sections into walvault's TOML, with the keys left out.
fn translate(sections: &Sections) -> Result<(String, Vec<Ignored>), ConfigError> {
    let known = crate::config::server_keys();
    let defaults = sections.get("DEFAULT").cloned().unwrap_or_default();
    let barman = sections.get("barman").cloned().unwrap_or_default();
    let mut ignored = Vec::new();
    let mut out = toml::Table::new();

    // Barman's reading of a key: the section's, else [DEFAULT]'s; `None` and empty are unset
    // (an explicit unset, which stops inheritance from [barman]).
    let raw = |entries: &BTreeMap<String, Entry>, key: &str| -> Option<Entry> {
        entries.get(key).or_else(|| defaults.get(key)).cloned()
    };
    let barman_value = |key: &str| raw(&barman, key).map(|e| unquote(&e.value));
    let Some(home) = barman_value("barman_home").filter(|h| !h.is_empty()) else {
        return Err(ConfigError {
            section: Some("barman".into()),
            key: Some("barman_home".into()),
            message: "not set: Barman's servers live under it".into(),
        });
    };
    // configparser interpolates as Barman 3.20 merges its files: from the same section's
    // keys and [DEFAULT]'s only (`%(name)s` or a [barman] key in a server section is an error
    // in Barman, and here).
    let mut walvault = toml::Table::new();
    walvault.insert("home".into(), toml::Value::String(home.clone()));
    for (key, entry) in barman
        .iter()
        .chain(defaults.iter().filter(|(k, _)| !barman.contains_key(*k)))
    {
        let value = resolve("barman", key, entry, &barman_value)?;
        let mut skip = |why: &'static str| {
            ignored.push(Ignored {
                file: entry.file.clone(),
                section: "barman".into(),
                key: key.clone(),
                why,
            });
        };
        match key.as_str() {
            "barman_home" => {}
            "barman_lock_directory" if !is_unset(&value) => {
                walvault.insert("lock_directory".into(), toml::Value::String(value));
            }
            "log_file" | "log_level" if !is_unset(&value) => {
                walvault.insert(key.clone(), toml::Value::String(value));
            }
            "configuration_files_directory" => {}
            _ if is_unset(&value) => {}
            _ if let Some(why) = not_taken(key) => skip(why),
            _ if known.contains(&key.as_str()) => {
                if barman_key(key) && !INHERITED.contains(&key.as_str()) {
                    skip("a per-server setting: Barman does not take it from [barman] either");
                } else {
                    walvault.insert(key.clone(), toml_value("barman", key, &value)?);
                }
            }
            _ => skip(why_unknown(key)),
        }
    }
    out.insert("walvault".into(), toml::Value::Table(walvault));

    for (name, entries) in sections {
        if name == "barman" || name == "DEFAULT" {
            continue;
        }
        let is_model = raw(entries, "model")
            .and_then(|e| parse_boolean(&unquote(&e.value)))
            .unwrap_or(false);
        if is_model {
            for (key, entry) in entries {
                ignored.push(Ignored {
                    file: entry.file.clone(),
                    section: name.clone(),
                    key: key.clone(),
                    why: "a Barman model (applied by `barman config-switch`): walvault reads server sections only",
                });
            }
            continue;
        }
        let lookup = |key: &str| raw(entries, key).map(|e| unquote(&e.value));
        let mut server = toml::Table::new();
        let mut keys: Vec<&String> = entries.keys().collect();
        keys.extend(defaults.keys().filter(|k| !entries.contains_key(*k)));
        for key in keys {
            let Some(entry) = raw(entries, key) else {
                continue;
            };
            let value = resolve(name, key, &entry, &lookup)?;
            let mut skip = |why: &'static str| {
                ignored.push(Ignored {
                    file: entry.file.clone(),
                    section: name.clone(),
                    key: key.clone(),
                    why,
                });
            };
            if let Some(why) = not_taken(key) {
                skip(why);
            } else if !known.contains(&key.as_str()) {
                skip(why_unknown(key));
            } else if is_unset(&value) {
                // Unset here: stops [barman]'s value for this server, as in Barman.
                if key == "compression" {
                    server.insert(key.clone(), toml::Value::String("none".into()));
                } else if barman.contains_key(key) {
                    skip(
                        "unset for this server only: walvault cannot unset a [barman] default per server, so [barman]'s value applies",
                    );
                }
            } else {
                server.insert(key.clone(), toml_value(name, key, &value)?);
            }
        }
        out.insert(name.clone(), toml::Value::Table(server));
    }
    let text = toml::to_string(&out).map_err(|e| ConfigError {
        section: None,
        key: None,
        message: format!("cannot write the translation: {e}"),
    })?;
    Ok((text, ignored))
}

/// Whether Barman itself has this server key (walvault's own keys, such as `jobs`, are not
/// Barman's: in Barman's files they are walvault's alone and Barman ignores them).
fn barman_key(key: &str) -> bool {
    matches!(
        key,
        "active"
            | "backup_directory"
            | "conninfo"
            | "description"
            | "errors_directory"
            | "incoming_wals_directory"
            | "streaming_conninfo"
            | "streaming_wals_directory"
            | "wals_directory"
    ) || INHERITED.contains(&key)
}

/// The comment block `config convert` puts above the TOML: where it came from and what it
/// left out.
pub fn header(translation: &Translation) -> String {
    let mut out = String::from("# walvault configuration translated from Barman's:\n");
    for file in &translation.files {
        out.push_str(&format!("#   {}\n", file.display()));
    }
    if !translation.ignored.is_empty() {
        out.push_str("# Left out (walvault does not use them):\n");
        for i in &translation.ignored {
            out.push_str(&format!("#   [{}] {}: {}\n", i.section, i.key, i.why));
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate_text(text: &str) -> Result<(toml::Table, Vec<Ignored>), ConfigError> {
        let mut sections = Sections::new();
        parse_ini(Path::new("barman.conf"), text, &mut sections)?;
        let (toml, ignored) = translate(&sections)?;
        Ok((toml.parse().expect("valid TOML"), ignored))
    }

    fn get<'a>(table: &'a toml::Table, section: &str, key: &str) -> Option<&'a toml::Value> {
        table.get(section)?.as_table()?.get(key)
    }

    #[test]
    fn ini_syntax_as_configparser_reads_it() {
        let (t, _) = translate_text(
            "; a comment\n# another\n[barman]\nBARMAN_HOME : '/var/lib/barman'\ncompression=gzip\n\n\
             [pg]\ndescription = first line\n  second line\nconninfo = host=/tmp dbname=postgres\n\
             archiver = on\nstreaming_archiver = 0\narchiver_batch_size = 50\n\
             [pg]\ncompression_level = 9\n",
        )
        .expect("translates");
        assert_eq!(
            get(&t, "walvault", "home").and_then(|v| v.as_str()),
            Some("/var/lib/barman")
        );
        assert_eq!(
            get(&t, "walvault", "compression").and_then(|v| v.as_str()),
            Some("gzip")
        );
        assert_eq!(
            get(&t, "pg", "description").and_then(|v| v.as_str()),
            Some("first line\nsecond line")
        );
        assert_eq!(
            get(&t, "pg", "conninfo").and_then(|v| v.as_str()),
            Some("host=/tmp dbname=postgres")
        );
        assert_eq!(
            get(&t, "pg", "archiver").and_then(|v| v.as_bool()),
            Some(true)
        );
        assert_eq!(
            get(&t, "pg", "streaming_archiver").and_then(|v| v.as_bool()),
            Some(false)
        );
        assert_eq!(
            get(&t, "pg", "archiver_batch_size").and_then(|v| v.as_integer()),
            Some(50)
        );
        // A repeated section adds to the first (strict=False).
        assert_eq!(
            get(&t, "pg", "compression_level").and_then(|v| v.as_integer()),
            Some(9)
        );
    }

    #[test]
    fn interpolation_inheritance_unset_and_what_is_left_out() {
        let (t, ignored) = translate_text(
            "[DEFAULT]\nroot = /srv/barman/pg\n\
             [barman]\nbarman_home = /srv/barman\nbarman_user = barman\nlog_file = /var/log/barman/barman.log\n\
             compression = gzip\npre_archive_script = /bin/true\nconninfo = host=nowhere\n\
             retention_policy = RECOVERY WINDOW OF 4 WEEKS\nbarman_lock_directory = /run/barman\n\
             prefix = barman\nslot_name = %(prefix)s_slot\n\
             [pg]\nbase = /srv/barman/pg\nincoming_wals_directory = %(base)s/in\n\
             errors_directory = %(root)s/err-%%\ncompression = None\n\
             pre_archive_script =\nbackup_method = postgres\naws_profile = snapshots\n\
             [template]\nmodel = true\ncompression = xz\n",
        )
        .expect("translates");
        assert_eq!(
            get(&t, "pg", "incoming_wals_directory").and_then(|v| v.as_str()),
            Some("/srv/barman/pg/in")
        );
        assert_eq!(
            get(&t, "pg", "errors_directory").and_then(|v| v.as_str()),
            Some("/srv/barman/pg/err-%")
        );
        // `None` unsets [barman]'s compression for this server.
        assert_eq!(
            get(&t, "pg", "compression").and_then(|v| v.as_str()),
            Some("none")
        );
        assert_eq!(
            get(&t, "walvault", "lock_directory").and_then(|v| v.as_str()),
            Some("/run/barman")
        );
        assert!(t.get("template").is_none(), "a model is no server");
        assert_eq!(
            get(&t, "walvault", "slot_name").and_then(|v| v.as_str()),
            Some("barman_slot")
        );
        let left: Vec<(&str, &str)> = ignored
            .iter()
            .map(|i| (i.section.as_str(), i.key.as_str()))
            .collect();
        for expected in [
            ("barman", "barman_user"),
            ("barman", "retention_policy"),
            ("barman", "conninfo"),
            ("pg", "pre_archive_script"),
            ("pg", "backup_method"),
            ("pg", "aws_profile"),
            ("template", "compression"),
        ] {
            assert!(
                left.contains(&expected),
                "{expected:?} not reported: {left:?}"
            );
        }
        assert!(get(&t, "walvault", "conninfo").is_none());
        assert_eq!(
            get(&t, "walvault", "log_file").and_then(|v| v.as_str()),
            Some("/var/log/barman/barman.log")
        );
        assert!(get(&t, "pg", "backup_method").is_none());
    }

    #[test]
    fn bad_files_are_clear_errors() {
        for (text, expect) in [
            ("compression = gzip\n", "before the first [section]"),
            ("[barman]\nbarman_home\n", "expected 'key = value'"),
            ("[barman\n", "without ']'"),
            ("[pg]\nconninfo = x\n", "barman_home"),
            (
                "[barman]\nbarman_home = /b\n[pg]\narchiver = maybe\n",
                "not a boolean",
            ),
            (
                "[barman]\nbarman_home = /b\n[pg]\nwals_directory = %(nope)s/w\n",
                "%(nope)s is not set",
            ),
            // As in Barman 3.20: a server's name is no interpolation variable.
            (
                "[barman]\nbarman_home = /b\n[pg]\nwals_directory = %(name)s/w\n",
                "%(name)s is not set",
            ),
        ] {
            let err = translate_text(text).expect_err(text).to_string();
            assert!(err.contains(expect), "{text:?}: {err}");
        }
    }

    /// Hostile files in configuration_files_directory: a FIFO named `.conf` is skipped (never
    /// opened, so nothing hangs), a link to a directory too; a file that is not UTF-8 is a
    /// clear error naming it.
    #[test]
    fn fifos_links_and_binary_files_among_the_conf_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let confs = dir.path().join("conf.d");
        std::fs::create_dir(&confs).expect("conf.d");
        let main = dir.path().join("barman.conf");
        std::fs::write(
            &main,
            format!(
                "[barman]\nbarman_home = /b\nconfiguration_files_directory = {}\n",
                confs.display()
            ),
        )
        .expect("main");
        std::fs::write(confs.join("pg.conf"), "[pg]\nconninfo = x\n").expect("pg.conf");
        let status = std::process::Command::new("mkfifo")
            .arg(confs.join("fifo.conf"))
            .status()
            .expect("mkfifo");
        assert!(status.success());
        std::os::unix::fs::symlink(dir.path(), confs.join("dir.conf")).expect("symlink");
        let t = read(&main).expect("the FIFO and the link are skipped");
        assert_eq!(t.files.len(), 2, "{:?}", t.files);
        assert!(t.toml.contains("[pg]"), "{}", t.toml);

        std::fs::write(confs.join("z.conf"), b"[x]\nkey = \xff\xfe\n").expect("binary");
        let err = read(&main).expect_err("not UTF-8").to_string();
        assert!(
            err.contains("z.conf") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn every_walvault_server_key_has_its_toml_type() {
        // A key walvault adds must be typed here too, or its Barman value would be a string
        // where walvault wants a number or a boolean.
        let keys = crate::config::server_keys();
        assert!(keys.len() > 40 && keys.contains(&"conninfo") && keys.contains(&"archiver"));
        for key in keys {
            let sample = match kind(key) {
                Kind::Bool => "true",
                Kind::Integer | Kind::NumberOrText => "1",
                Kind::Text => "text",
            };
            let mut table = toml::Table::new();
            table.insert(
                key.to_string(),
                toml_value("pg", key, sample).expect("converts"),
            );
            let text = format!(
                "[walvault]\nhome = \"/h\"\n[pg]\n{}",
                toml::to_string(&table).expect("toml")
            );
            if let Err(e) = crate::config::Config::parse(&text, Path::new("t.toml")) {
                assert!(
                    !e.to_string().contains("invalid type"),
                    "{key}: Barman's value becomes the wrong TOML type: {e}"
                );
            }
        }
    }
}
