//! walvault's configuration: a TOML file with a `[walvault]` section for global settings and
//! one section per PostgreSQL server. Key names follow Barman's so a Barman configuration
//! translates line by line.
//!
//! ```toml
//! [walvault]
//! home = "/var/lib/walvault"        # like barman_home; per-server directories default under it
//! compression = "zstd"              # any server key here is a default for every server
//!
//! [pg]
//! conninfo = "host=/var/run/postgresql dbname=postgres"
//! compression_level = "low"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::store::object_url::{ObjectUrl, S3Settings};
use serde::Deserialize;
use walvault_core::compression::{Codec, Level};
use walvault_core::wal::SegmentSize;

pub use crate::secret::{Conninfo, Secret};

/// Where the configuration comes from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/walvault.toml";
/// Default home directory.
pub const DEFAULT_HOME: &str = "/var/lib/walvault";

/// A configuration problem, naming the file, section and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `[section]`, when the problem is inside one.
    pub section: Option<String>,
    /// The key, when one is at fault.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.section, &self.key) {
            (Some(s), Some(k)) => write!(f, "[{s}] {k}: {}", self.message),
            (Some(s), None) => write!(f, "[{s}]: {}", self.message),
            (None, Some(k)) => write!(f, "{k}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(section: &str, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        section: Some(section.to_owned()),
        key: Some(key.to_owned()),
        message: message.into(),
    }
}

/// A number or a word, as TOML gives it (`compression_level = 3` or `"high"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(i64),
    Text(String),
}

impl NumberOrText {
    fn text(&self) -> String {
        match self {
            NumberOrText::Number(n) => n.to_string(),
            NumberOrText::Text(t) => t.clone(),
        }
    }
}

/// The keys a server section (or the `[walvault]` defaults) may hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    description: Option<String>,
    active: Option<bool>,
    backup_directory: Option<PathBuf>,
    wals_directory: Option<String>,
    incoming_wals_directory: Option<PathBuf>,
    streaming_wals_directory: Option<PathBuf>,
    errors_directory: Option<PathBuf>,
    xlogdb_directory: Option<PathBuf>,
    compression: Option<String>,
    compression_level: Option<NumberOrText>,
    archiver: Option<bool>,
    streaming_archiver: Option<bool>,
    archiver_batch_size: Option<u64>,
    streaming_archiver_batch_size: Option<u64>,
    jobs: Option<u64>,
    conninfo: Option<String>,
    streaming_conninfo: Option<String>,
    slot_name: Option<String>,
    create_slot: Option<String>,
    streaming_archiver_name: Option<String>,
    synchronous: Option<bool>,
    wal_segment_size: Option<NumberOrText>,
    check_page_header: Option<bool>,
    system_identifier: Option<NumberOrText>,
    max_incoming_wals_queue: Option<u64>,
    archive_queue_max: Option<NumberOrText>,
    archive_async: Option<bool>,
    last_wal_maximum_age: Option<String>,
    path_prefix: Option<String>,
    pre_archive_script: Option<String>,
    post_archive_script: Option<String>,
    pre_archive_retry_script: Option<String>,
    post_archive_retry_script: Option<String>,
    pre_wal_delete_script: Option<String>,
    post_wal_delete_script: Option<String>,
    pre_wal_delete_retry_script: Option<String>,
    post_wal_delete_retry_script: Option<String>,
    endpoint_url: Option<String>,
    region: Option<String>,
    aws_profile: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    path_style: Option<bool>,
    multipart_threshold: Option<NumberOrText>,
    request_timeout: Option<u64>,
    max_retries: Option<u64>,
    encryption: Option<String>,
    encryption_key_file: Option<OneOrMany>,
    encryption_key_id: Option<OneOrMany>,
    encryption_keyring: Option<PathBuf>,
    encryption_secret_key_file: Option<PathBuf>,
    encryption_passphrase_command: Option<String>,
    encryption_passphrase_timeout: Option<u64>,
    encryption_key_cache_ttl: Option<u64>,
}

/// One value or a list (`encryption_key_file = "a.asc"` or `["a.asc", "b.asc"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The keys a server section may hold (`ServerSection`'s fields, as serde names them): the
/// keys a Barman configuration can pass on (`barman_config`).
pub fn server_keys() -> &'static [&'static str] {
    /// A deserializer that only learns the struct's field names.
    struct Probe(&'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for &mut Probe {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("field names only"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(serde::de::Error::custom("field names only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut probe = Probe(&[]);
        let _ = ServerSection::deserialize(&mut probe);
        probe.0
    })
}

macro_rules! merge_fields {
    ($over:expr, $base:expr, $($f:ident),* $(,)?) => {
        ServerSection { $($f: $over.$f.or($base.$f),)* }
    };
}

impl ServerSection {
    fn over(self, base: ServerSection) -> ServerSection {
        merge_fields!(
            self,
            base,
            description,
            active,
            backup_directory,
            wals_directory,
            incoming_wals_directory,
            streaming_wals_directory,
            errors_directory,
            xlogdb_directory,
            compression,
            compression_level,
            archiver,
            streaming_archiver,
            archiver_batch_size,
            streaming_archiver_batch_size,
            jobs,
            conninfo,
            streaming_conninfo,
            slot_name,
            create_slot,
            streaming_archiver_name,
            synchronous,
            wal_segment_size,
            check_page_header,
            system_identifier,
            max_incoming_wals_queue,
            archive_queue_max,
            archive_async,
            last_wal_maximum_age,
            path_prefix,
            pre_archive_script,
            post_archive_script,
            pre_archive_retry_script,
            post_archive_retry_script,
            pre_wal_delete_script,
            post_wal_delete_script,
            pre_wal_delete_retry_script,
            post_wal_delete_retry_script,
            endpoint_url,
            region,
            aws_profile,
            access_key_id,
            secret_access_key,
            path_style,
            multipart_threshold,
            request_timeout,
            max_retries,
            encryption,
            encryption_key_file,
            encryption_key_id,
            encryption_keyring,
            encryption_secret_key_file,
            encryption_passphrase_command,
            encryption_passphrase_timeout,
            encryption_key_cache_ttl
        )
    }
}

/// Whether receive-wal creates its replication slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateSlot {
    /// The operator creates it (`receive-wal --create-slot`).
    Manual,
    /// receive-wal creates it when missing.
    Auto,
}

/// Hook scripts for one event, Barman style.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookScripts {
    /// Runs before; its exit status is only logged.
    pub pre: Option<String>,
    /// Runs before, retried until it exits 0, 62 (continue) or 63 (stop).
    pub pre_retry: Option<String>,
    /// Runs after, retried like `pre_retry` (63 is ignored with a warning).
    pub post_retry: Option<String>,
    /// Runs after; its exit status is only logged.
    pub post: Option<String>,
}

/// `encryption = "gpg"`: who new WAL is encrypted to (OpenPGP public keys only; see
/// `crate::crypto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionConfig {
    /// `encryption_key_file`: public key files (armored or binary), every key in each a
    /// recipient.
    pub key_files: Vec<PathBuf>,
    /// `encryption_key_id` (Barman's): key IDs, fingerprints or e-mail addresses looked up in
    /// `keyring`.
    pub key_ids: Vec<String>,
    /// `encryption_keyring`: a public keyring file (`gpg --export … > FILE`).
    pub keyring: Option<PathBuf>,
}

/// Seconds `encryption_passphrase_command` may take by default: a command waiting on a
/// terminal must not hang a recovery.
pub const DEFAULT_PASSPHRASE_TIMEOUT: u64 = 30;
/// Seconds a key agent keeps a passphrase-protected secret key unlocked after its last use:
/// gpg-agent's `default-cache-ttl`.
pub const DEFAULT_KEY_CACHE_TTL: u64 = 600;

/// How encrypted WAL is read back (`get-wal`, duplicate checks, `verify`, `reencrypt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptionConfig {
    /// `encryption_secret_key_file`: secret keys (`gpg --export-secret-keys`), private to
    /// walvault's user.
    pub secret_key_file: PathBuf,
    /// `encryption_passphrase_command` (Barman's): its standard output is the passphrase.
    /// Hidden in output like a password: `echo …` would hold the passphrase itself.
    pub passphrase_command: Option<Secret>,
    /// `encryption_passphrase_timeout`: seconds the command may take before it is killed.
    pub passphrase_timeout: u64,
    /// `encryption_key_cache_ttl`: seconds the key agent keeps a passphrase-protected key
    /// unlocked after its last use (0: no agent; every process derives the key itself).
    pub key_cache_ttl: u64,
}

/// Where a server's WAL is archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveLocation {
    /// A local `wals/` directory.
    Local(PathBuf),
    /// An object store (`s3://bucket/prefix`) and how to reach it.
    Object(Box<S3Settings>),
}

/// One server's resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The section name.
    pub name: String,
    /// Read from Barman's files (`--barman-config`): the workers it starts read them too.
    pub barman_config: bool,
    /// Free text.
    pub description: Option<String>,
    /// Inactive servers are skipped by `--all`.
    pub active: bool,
    /// Per-server home (`<home>/<name>`).
    pub backup_directory: PathBuf,
    /// Where WAL goes.
    pub archive: ArchiveLocation,
    /// `archive_command` drop zone.
    pub incoming: PathBuf,
    /// pg_receivewal target.
    pub streaming: PathBuf,
    /// Rejected files.
    pub errors: PathBuf,
    /// Where `<name>-xlog.db` lives.
    pub xlogdb_directory: PathBuf,
    /// Lock files' directory.
    pub lock_directory: PathBuf,
    /// Codec for new WAL (`None`: stored plain).
    pub compression: Option<Codec>,
    /// Its level.
    pub compression_level: Level,
    /// Whether the incoming queue is used.
    pub archiver: bool,
    /// Whether the streaming queue is used.
    pub streaming_archiver: bool,
    /// Files per archive-wal run from incoming (0: no limit).
    pub archiver_batch_size: usize,
    /// Files per archive-wal run from streaming (0: no limit).
    pub streaming_archiver_batch_size: usize,
    /// Parallel compress+write jobs (default: the number of cores).
    pub jobs: Option<usize>,
    /// libpq connection string for checks.
    pub conninfo: Option<Conninfo>,
    /// Connection string for pg_receivewal.
    pub streaming_conninfo: Option<Conninfo>,
    /// Physical replication slot for pg_receivewal.
    pub slot_name: Option<String>,
    /// Slot creation policy.
    pub create_slot: CreateSlot,
    /// `application_name` of pg_receivewal.
    pub streaming_archiver_name: String,
    /// Ask pg_receivewal to flush synchronously when PostgreSQL names it a synchronous standby.
    pub synchronous: bool,
    /// The cluster's segment size; `None`: detect it.
    pub wal_segment_size: Option<SegmentSize>,
    /// Check page headers on archive.
    pub check_page_header: bool,
    /// The expected system identifier.
    pub system_identifier: Option<u64>,
    /// Queue-size threshold for `check`.
    pub max_incoming_wals_queue: Option<u64>,
    /// `archive_queue_max`: bytes of WAL PostgreSQL may hold ready to archive before
    /// `put-wal` acknowledges the oldest without archiving them (see
    /// `walvault_core::queue_limit`); `None`: never.
    pub archive_queue_max: Option<u64>,
    /// `archive_async`: a background worker pushes PostgreSQL's ready WAL ahead of the
    /// `put-wal` calls (see `walvault_core::push_ahead`).
    pub archive_async: bool,
    /// Maximum age of the last archived WAL for `check`, in seconds.
    pub last_wal_maximum_age: Option<u64>,
    /// `encryption = "gpg"`: encrypt new WAL; `None`: store it plain.
    pub encryption: Option<EncryptionConfig>,
    /// The secret key to read encrypted WAL with, when configured.
    pub decryption: Option<DecryptionConfig>,
    /// Prepended to PATH for hooks and pg_receivewal.
    pub path_prefix: Option<String>,
    /// Archive hooks.
    pub archive_hooks: HookScripts,
    /// WAL delete hooks.
    pub delete_hooks: HookScripts,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from, which the walvault processes it starts read too.
    pub path: PathBuf,
    /// The file the operator edits: `path`, except in the daemon's children, which read the
    /// daemon's private copy of it (`--config-origin`). Hooks get it as
    /// `BARMAN_CONFIGURATION`, and `check` checks its mode.
    pub origin: PathBuf,
    /// Global home.
    pub home: PathBuf,
    /// Servers by name.
    pub servers: BTreeMap<String, ServerConfig>,
    /// The bearer token `serve` requires (`serve_token` in `[walvault]`).
    pub serve_token: Option<Secret>,
    /// `group_access` in `[walvault]`: what walvault creates is readable by its group too
    /// (0640 files, 0750 directories) instead of private (see `fsutil::restrict_umask`).
    pub group_access: bool,
    /// `log_file` in `[walvault]` (Barman's): one line per archived, rejected and failed
    /// file, for people who grep; none by default.
    pub log_file: Option<PathBuf>,
    /// `log_level` in `[walvault]` (Barman's names: DEBUG, INFO, WARNING, ERROR, CRITICAL).
    pub log_level: LogLevel,
    /// Read from Barman's files (`--barman-config`).
    pub barman: bool,
}

/// How much goes to the log file (Barman's `log_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything, debugging detail included.
    Debug,
    /// Every file archived, rejected or failed (the default).
    Info,
    /// Rejected and failed files, and other warnings (Barman's WARNING).
    Warning,
    /// Failures only (Barman's ERROR and CRITICAL).
    Error,
}

impl LogLevel {
    /// Barman's names, any case (`WARN` too).
    pub fn parse(text: &str) -> Option<LogLevel> {
        match text.trim().to_ascii_uppercase().as_str() {
            "DEBUG" => Some(LogLevel::Debug),
            "INFO" => Some(LogLevel::Info),
            "WARNING" | "WARN" => Some(LogLevel::Warning),
            "ERROR" | "CRITICAL" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

/// Parses a duration such as `1 day`, `2 weeks`, `90 minutes`, `3600` (seconds).
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(secs);
    }
    let (number, unit) = text
        .split_once(char::is_whitespace)
        .map(|(n, u)| (n, u.trim()))
        .unwrap_or((text, ""));
    let n: u64 = number.parse().ok()?;
    let unit_secs = match unit.trim_end_matches('s') {
        "second" | "sec" | "s" => 1,
        "minute" | "min" | "m" => 60,
        "hour" | "h" => 3600,
        "day" | "d" => 86_400,
        "week" | "w" => 604_800,
        "month" => 2_592_000,
        _ => return None,
    };
    n.checked_mul(unit_secs)
}

/// Parses a segment size: bytes, or `16MB`, `1GB`, `64MiB`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Checks a slot name as PostgreSQL does (lower-case letters, digits, underscore).
fn valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

impl ServerConfig {
    /// The option naming the configuration file, for the walvault processes it starts.
    pub fn config_flag(&self) -> &'static str {
        if self.barman_config {
            "--barman-config"
        } else {
            "-c"
        }
    }
}

impl Config {
    /// Reads Barman's configuration files (`--barman-config`), translated into walvault's
    /// (see `barman_config`), and validates them.
    pub fn load_barman(
        path: &Path,
    ) -> Result<(Config, crate::barman_config::Translation), ConfigError> {
        let translation = crate::barman_config::read(path)?;
        let mut config = Self::parse(&translation.toml, path)?;
        config.barman = true;
        for server in config.servers.values_mut() {
            server.barman_config = true;
        }
        Ok((config, translation))
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            section: None,
            key: None,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text (`path` is recorded for hooks and messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            section: None,
            key: None,
            message: format!("{}: {}", path.display(), e.message().trim()),
        })?;
        let mut home = PathBuf::from(DEFAULT_HOME);
        let mut lock_directory = None;
        let mut serve_token = None;
        let mut group_access = false;
        let mut log_file = None;
        let mut log_level = LogLevel::Info;
        let mut defaults = ServerSection::default();
        let mut sections = Vec::new();
        for (name, value) in table {
            let toml::Value::Table(mut section) = value else {
                return Err(ConfigError {
                    section: None,
                    key: Some(name),
                    message: "expected a [section] (a server, or [walvault])".into(),
                });
            };
            if name == "walvault" {
                if let Some(v) = section.remove("home") {
                    home = v
                        .as_str()
                        .map(PathBuf::from)
                        .ok_or_else(|| err("walvault", "home", "expected a path string"))?;
                }
                if let Some(v) = section.remove("lock_directory") {
                    lock_directory = Some(v.as_str().map(PathBuf::from).ok_or_else(|| {
                        err("walvault", "lock_directory", "expected a path string")
                    })?);
                }
                if let Some(v) = section.remove("group_access") {
                    group_access = v
                        .as_bool()
                        .ok_or_else(|| err("walvault", "group_access", "expected true or false"))?;
                }
                if let Some(v) = section.remove("log_file") {
                    let path = v
                        .as_str()
                        .map(PathBuf::from)
                        .filter(|p| p.is_absolute())
                        .ok_or_else(|| err("walvault", "log_file", "expected an absolute path"))?;
                    log_file = Some(path);
                }
                if let Some(v) = section.remove("log_level") {
                    log_level = v.as_str().and_then(LogLevel::parse).ok_or_else(|| {
                        err(
                            "walvault",
                            "log_level",
                            "expected DEBUG, INFO, WARNING, ERROR or CRITICAL",
                        )
                    })?;
                }
                if let Some(v) = section.remove("serve_token") {
                    let token = v
                        .as_str()
                        .ok_or_else(|| err("walvault", "serve_token", "expected a string"))?;
                    serve_token =
                        Some(Secret::token(token).map_err(|e| err("walvault", "serve_token", e))?);
                }
                defaults = deserialize_section("walvault", section)?;
            } else {
                if !valid_server_name(&name) {
                    return Err(ConfigError {
                        section: Some(name),
                        key: None,
                        message: "server names use letters, digits, '-', '_' and '.'".into(),
                    });
                }
                let parsed = deserialize_section(&name, section)?;
                sections.push((name, parsed));
            }
        }
        if !home.is_absolute() {
            return Err(err(
                "walvault",
                "home",
                format!("must be an absolute path, got {}", home.display()),
            ));
        }
        if let Some(dir) = lock_directory.as_ref().filter(|d| !d.is_absolute()) {
            return Err(err(
                "walvault",
                "lock_directory",
                format!("must be an absolute path, got {}", dir.display()),
            ));
        }
        let lock_directory = lock_directory.unwrap_or_else(|| home.clone());
        let mut servers = BTreeMap::new();
        for (name, section) in sections {
            let server = resolve(
                &name,
                section.over(defaults.clone()),
                &home,
                &lock_directory,
            )?;
            servers.insert(name, server);
        }
        Ok(Config {
            path: path.to_owned(),
            origin: path.to_owned(),
            home,
            servers,
            serve_token,
            group_access,
            log_file,
            log_level,
            barman: false,
        })
    }

    /// One server by name, with a helpful error.
    pub fn server(&self, name: &str) -> Result<&ServerConfig, ConfigError> {
        self.servers.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.servers.keys().map(String::as_str).collect();
            ConfigError {
                section: None,
                key: None,
                message: format!(
                    "unknown server '{name}' in {} (configured: {})",
                    self.path.display(),
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            }
        })
    }
}

fn deserialize_section(name: &str, section: toml::Table) -> Result<ServerSection, ConfigError> {
    ServerSection::deserialize(toml::Value::Table(section)).map_err(|e| {
        let message = e.message().trim().to_owned();
        // serde names the offending key in its message ("unknown field `x`, expected …").
        let key = message.split('`').nth(1).map(str::to_owned);
        ConfigError {
            section: Some(name.to_owned()),
            key,
            message,
        }
    })
}

/// Reads the object-storage keys of a server section into `settings` (their defaults are
/// `S3Settings::new`'s).
fn set_object_store_keys(
    name: &str,
    s: &ServerSection,
    settings: &mut S3Settings,
) -> Result<(), ConfigError> {
    if let Some(v) = &s.multipart_threshold {
        let text = v.text();
        settings.multipart_threshold =
            parse_size(&text).filter(|n| *n >= 5 << 20).ok_or_else(|| {
                err(
                    name,
                    "multipart_threshold",
                    format!("{text:?} is not a size of at least 5MB (S3's smallest part)"),
                )
            })?;
    }
    settings.endpoint_url.clone_from(&s.endpoint_url);
    settings.region.clone_from(&s.region);
    settings.profile.clone_from(&s.aws_profile);
    settings.access_key_id.clone_from(&s.access_key_id);
    settings.secret_access_key = s.secret_access_key.clone().map(Secret::new);
    settings.path_style = s.path_style;
    if let Some(seconds) = s.request_timeout {
        settings.timeout = std::time::Duration::from_secs(seconds.max(1));
    }
    if let Some(n) = s.max_retries {
        settings.max_retries = n as usize;
    }
    Ok(())
}

/// The encryption keys of a server section: `encryption = "gpg"` needs recipients
/// (`encryption_key_file`, or Barman's `encryption_key_id` with `encryption_keyring`); the
/// secret key may be set on its own (to read WAL encrypted before encryption was turned off).
fn encryption_keys(
    name: &str,
    s: &ServerSection,
) -> Result<(Option<EncryptionConfig>, Option<DecryptionConfig>), ConfigError> {
    let absolute = |key: &str, p: &Path| {
        if p.is_absolute() {
            Ok(p.to_path_buf())
        } else {
            Err(err(
                name,
                key,
                format!("must be an absolute path, got {}", p.display()),
            ))
        }
    };
    let key_files = s
        .encryption_key_file
        .clone()
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .map(|f| absolute("encryption_key_file", Path::new(&f)))
        .collect::<Result<Vec<_>, _>>()?;
    let key_ids: Vec<String> = s
        .encryption_key_id
        .clone()
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .collect();
    let keyring = match &s.encryption_keyring {
        Some(p) => Some(absolute("encryption_keyring", p)?),
        None => None,
    };
    let encryption = match s.encryption.as_deref().map(str::trim) {
        None | Some("" | "none") => None,
        Some("gpg") => {
            if key_files.is_empty() && key_ids.is_empty() {
                return Err(err(
                    name,
                    "encryption",
                    "\"gpg\" needs recipients: encryption_key_file (public key files) or encryption_key_id with encryption_keyring",
                ));
            }
            if !key_ids.is_empty() && keyring.is_none() {
                return Err(err(
                    name,
                    "encryption_key_id",
                    "needs encryption_keyring, a public keyring file (gpg --export ID > FILE): walvault reads keys from files, not from gpg's home",
                ));
            }
            Some(EncryptionConfig {
                key_files,
                key_ids,
                keyring,
            })
        }
        Some(other) => {
            return Err(err(
                name,
                "encryption",
                format!("{other:?}: expected \"none\" or \"gpg\""),
            ));
        }
    };
    let decryption = match &s.encryption_secret_key_file {
        Some(p) => Some(DecryptionConfig {
            secret_key_file: absolute("encryption_secret_key_file", p)?,
            passphrase_command: s
                .encryption_passphrase_command
                .clone()
                .filter(|c| !c.trim().is_empty())
                .map(Secret::new),
            passphrase_timeout: match s.encryption_passphrase_timeout {
                Some(0) => {
                    return Err(err(
                        name,
                        "encryption_passphrase_timeout",
                        "must be at least 1",
                    ));
                }
                Some(t) => t,
                None => DEFAULT_PASSPHRASE_TIMEOUT,
            },
            key_cache_ttl: s.encryption_key_cache_ttl.unwrap_or(DEFAULT_KEY_CACHE_TTL),
        }),
        None => None,
    };
    Ok((encryption, decryption))
}

fn resolve(
    name: &str,
    s: ServerSection,
    home: &Path,
    lock_directory: &Path,
) -> Result<ServerConfig, ConfigError> {
    let (encryption, decryption) = encryption_keys(name, &s)?;
    // The object URL is parsed once, here; a local archive carries no object-store settings.
    let object_store = match s.wals_directory.as_deref() {
        Some(url) if url.contains("://") => {
            let url =
                ObjectUrl::parse(url).map_err(|e| err(name, "wals_directory", format!("{e:#}")))?;
            let mut settings = S3Settings::new(url);
            set_object_store_keys(name, &s, &mut settings)?;
            Some(Box::new(settings))
        }
        _ => None,
    };
    let backup_directory = s.backup_directory.unwrap_or_else(|| home.join(name));
    let archive = match (object_store, s.wals_directory) {
        (Some(settings), _) => ArchiveLocation::Object(settings),
        (None, Some(path)) => ArchiveLocation::Local(PathBuf::from(path)),
        (None, None) => ArchiveLocation::Local(backup_directory.join("wals")),
    };
    let xlogdb_directory = match (&s.xlogdb_directory, &archive) {
        (Some(dir), _) => dir.clone(),
        (None, ArchiveLocation::Local(wals)) => wals.clone(),
        (None, ArchiveLocation::Object(_)) => backup_directory.join("meta"),
    };
    let compression = match s.compression.as_deref().map(str::trim) {
        None | Some("" | "none") => None,
        Some(c) => Some(Codec::from_name(c).ok_or_else(|| err(name, "compression", format!("unknown compression {c:?} (expected none, gzip, bzip2, xz, zstd, lz4 or snappy)")))?),
    };
    let compression_level = match s.compression_level {
        None => Level::Medium,
        Some(v) => v
            .text()
            .parse::<Level>()
            .map_err(|e| err(name, "compression_level", e.to_string()))?,
    };
    let wal_segment_size = match s.wal_segment_size {
        None => None,
        Some(v) => {
            let text = v.text();
            let bytes = parse_size(&text).ok_or_else(|| {
                err(
                    name,
                    "wal_segment_size",
                    format!("{text:?} is not a size (e.g. 16MB)"),
                )
            })?;
            Some(
                SegmentSize::new(bytes)
                    .map_err(|e| err(name, "wal_segment_size", e.to_string()))?,
            )
        }
    };
    let archive_queue_max = match s.archive_queue_max {
        None => None,
        Some(v) => {
            let text = v.text();
            Some(parse_size(&text).filter(|&b| b > 0).ok_or_else(|| {
                err(
                    name,
                    "archive_queue_max",
                    format!("{text:?} is not a size (e.g. 4GB)"),
                )
            })?)
        }
    };
    let system_identifier = match s.system_identifier {
        None => None,
        Some(v) => Some(v.text().parse::<u64>().map_err(|_| {
            err(
                name,
                "system_identifier",
                "expected the number pg_controldata prints",
            )
        })?),
    };
    if let Some(slot) = &s.slot_name
        && !valid_slot_name(slot)
    {
        return Err(err(
            name,
            "slot_name",
            format!("{slot:?}: use lower-case letters, digits and '_' (at most 63)"),
        ));
    }
    let create_slot = match s.create_slot.as_deref() {
        None | Some("manual") => CreateSlot::Manual,
        Some("auto") => CreateSlot::Auto,
        Some(other) => {
            return Err(err(
                name,
                "create_slot",
                format!("{other:?}: expected \"manual\" or \"auto\""),
            ));
        }
    };
    let last_wal_maximum_age = match &s.last_wal_maximum_age {
        None => None,
        Some(t) => Some(parse_duration(t).ok_or_else(|| {
            err(
                name,
                "last_wal_maximum_age",
                format!("{t:?} is not a duration (e.g. \"1 day\")"),
            )
        })?),
    };
    let jobs = match s.jobs {
        Some(0) => return Err(err(name, "jobs", "must be at least 1")),
        j => j.map(|j| j as usize),
    };
    let mut archiver = s.archiver.unwrap_or(false);
    let streaming_archiver = s.streaming_archiver.unwrap_or(false);
    if !archiver && !streaming_archiver {
        // As Barman: with neither archiver on, the file archiver is on.
        archiver = true;
    }
    if streaming_archiver
        && s.streaming_conninfo
            .as_ref()
            .or(s.conninfo.as_ref())
            .is_none()
    {
        return Err(err(
            name,
            "streaming_archiver",
            "needs conninfo or streaming_conninfo",
        ));
    }
    // A relative directory would be taken from wherever walvault happens to run: put-wal
    // (run by PostgreSQL in its data directory) would archive under PGDATA and get-wal from
    // elsewhere would not find it, ending a recovery early.
    let directories: [(&str, Option<&Path>); 6] = [
        ("backup_directory", Some(backup_directory.as_path())),
        (
            "incoming_wals_directory",
            s.incoming_wals_directory.as_deref(),
        ),
        (
            "streaming_wals_directory",
            s.streaming_wals_directory.as_deref(),
        ),
        ("errors_directory", s.errors_directory.as_deref()),
        (
            "wals_directory",
            match &archive {
                ArchiveLocation::Local(dir) => Some(dir.as_path()),
                ArchiveLocation::Object(_) => None,
            },
        ),
        ("xlogdb_directory", Some(xlogdb_directory.as_path())),
    ];
    for (key, dir) in directories {
        if let Some(dir) = dir.filter(|d| !d.is_absolute()) {
            return Err(err(
                name,
                key,
                format!("must be an absolute path, got {}", dir.display()),
            ));
        }
    }
    Ok(ServerConfig {
        name: name.to_owned(),
        description: s.description,
        barman_config: false,
        active: s.active.unwrap_or(true),
        incoming: s
            .incoming_wals_directory
            .unwrap_or_else(|| backup_directory.join("incoming")),
        streaming: s
            .streaming_wals_directory
            .unwrap_or_else(|| backup_directory.join("streaming")),
        errors: s
            .errors_directory
            .unwrap_or_else(|| backup_directory.join("errors")),
        backup_directory,
        archive,
        xlogdb_directory,
        lock_directory: lock_directory.to_owned(),
        compression,
        compression_level,
        archiver,
        streaming_archiver,
        archiver_batch_size: s.archiver_batch_size.unwrap_or(0) as usize,
        streaming_archiver_batch_size: s.streaming_archiver_batch_size.unwrap_or(0) as usize,
        jobs,
        streaming_conninfo: s
            .streaming_conninfo
            .or_else(|| s.conninfo.clone())
            .map(Conninfo::new),
        conninfo: s.conninfo.map(Conninfo::new),
        slot_name: s.slot_name,
        create_slot,
        streaming_archiver_name: s
            .streaming_archiver_name
            .unwrap_or_else(|| "walvault_receive_wal".into()),
        synchronous: s.synchronous.unwrap_or(false),
        wal_segment_size,
        check_page_header: s.check_page_header.unwrap_or(true),
        system_identifier,
        max_incoming_wals_queue: s.max_incoming_wals_queue,
        archive_queue_max,
        archive_async: s.archive_async.unwrap_or(false),
        last_wal_maximum_age,
        encryption,
        decryption,
        path_prefix: s.path_prefix,
        archive_hooks: HookScripts {
            pre: s.pre_archive_script,
            pre_retry: s.pre_archive_retry_script,
            post_retry: s.post_archive_retry_script,
            post: s.post_archive_script,
        },
        delete_hooks: HookScripts {
            pre: s.pre_wal_delete_script,
            pre_retry: s.pre_wal_delete_retry_script,
            post_retry: s.post_wal_delete_retry_script,
            post: s.post_wal_delete_script,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/walvault.toml"))
    }

    #[test]
    fn archive_queue_max_is_a_size_or_a_clear_error() {
        let c = parse("[pg]\narchive_queue_max = \"4GB\"\n[q]\narchive_queue_max = 1048576\n[r]\n")
            .expect("valid");
        assert_eq!(c.server("pg").expect("pg").archive_queue_max, Some(4 << 30));
        assert_eq!(c.server("q").expect("q").archive_queue_max, Some(1 << 20));
        assert_eq!(c.server("r").expect("r").archive_queue_max, None);
        for bad in [
            "\"0\"",
            "\"lots\"",
            "\"-4GB\"",
            "\"99999999999999999999GB\"",
        ] {
            let err = parse(&format!("[pg]\narchive_queue_max = {bad}\n")).expect_err(bad);
            assert!(
                err.to_string().starts_with("[pg] archive_queue_max: "),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn encryption_needs_recipients_and_absolute_key_files() {
        let c = parse(
            "[pg]\nencryption = \"gpg\"\nencryption_key_file = [\"/k/a.asc\", \"/k/b.asc\"]\n\
             encryption_secret_key_file = \"/k/a.sec\"\nencryption_passphrase_command = \"cat /k/p\"\n\
             [q]\nencryption = \"gpg\"\nencryption_key_id = \"0xABCDEF0123456789\"\nencryption_keyring = \"/k/ring.gpg\"\n\
             [r]\nencryption_secret_key_file = \"/k/a.sec\"\n",
        )
        .expect("valid");
        let pg = c.server("pg").expect("pg");
        let e = pg.encryption.as_ref().expect("encrypted");
        assert_eq!(
            e.key_files,
            [PathBuf::from("/k/a.asc"), PathBuf::from("/k/b.asc")]
        );
        let d = pg.decryption.as_ref().expect("secret key");
        assert_eq!(
            d.passphrase_command.as_ref().map(Secret::expose),
            Some("cat /k/p")
        );
        assert!(!format!("{pg:?}").contains("cat /k/p"), "never in output");
        let q = c.server("q").expect("q");
        assert_eq!(
            q.encryption.as_ref().expect("q").key_ids,
            ["0xABCDEF0123456789"]
        );
        let r = c.server("r").expect("r");
        assert!(r.encryption.is_none() && r.decryption.is_some());
        for (bad, start) in [
            (
                "encryption = \"gpg\"",
                "[pg] encryption: \"gpg\" needs recipients",
            ),
            ("encryption = \"aes\"", "[pg] encryption: \"aes\": expected"),
            (
                "encryption = \"gpg\"\nencryption_key_id = \"ABCD\"",
                "[pg] encryption_key_id: needs encryption_keyring",
            ),
            (
                "encryption = \"gpg\"\nencryption_key_file = \"a.asc\"",
                "[pg] encryption_key_file: must be an absolute path",
            ),
            (
                "encryption_secret_key_file = \"k.sec\"",
                "[pg] encryption_secret_key_file: must be an absolute path",
            ),
        ] {
            let e = parse(&format!("[pg]\n{bad}\n")).expect_err(bad);
            assert!(e.to_string().starts_with(start), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_follow_barman_layout() {
        let c = parse("[walvault]\nhome = \"/srv/wv\"\n[pg]\n").expect("valid");
        let pg = c.server("pg").expect("pg");
        assert_eq!(pg.archive, ArchiveLocation::Local("/srv/wv/pg/wals".into()));
        assert_eq!(pg.incoming, PathBuf::from("/srv/wv/pg/incoming"));
        assert_eq!(pg.streaming, PathBuf::from("/srv/wv/pg/streaming"));
        assert_eq!(pg.errors, PathBuf::from("/srv/wv/pg/errors"));
        assert_eq!(pg.xlogdb_directory, PathBuf::from("/srv/wv/pg/wals"));
        assert_eq!(pg.lock_directory, PathBuf::from("/srv/wv"));
        assert!(
            pg.archiver && !pg.streaming_archiver,
            "archiver forced on when both are off"
        );
        assert_eq!(
            (pg.compression, pg.compression_level),
            (None, Level::Medium)
        );
    }

    #[test]
    fn global_defaults_and_overrides() {
        let c = parse("[walvault]\ncompression = \"zstd\"\ncompression_level = 3\n[a]\n[b]\ncompression = \"gzip\"\ncompression_level = \"high\"\nwal_segment_size = \"64MB\"\n").expect("valid");
        assert_eq!(c.server("a").expect("a").compression, Some(Codec::Zstd));
        assert_eq!(
            c.server("a").expect("a").compression_level,
            Level::Number(3)
        );
        let b = c.server("b").expect("b");
        assert_eq!(
            (b.compression, b.compression_level),
            (Some(Codec::Gzip), Level::High)
        );
        assert_eq!(b.wal_segment_size.map(SegmentSize::bytes), Some(64 << 20));
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[pg]\ncompression = \"gzp\"\n").expect_err("bad codec");
        assert_eq!(
            (e.section.as_deref(), e.key.as_deref()),
            (Some("pg"), Some("compression"))
        );
        assert!(
            e.to_string()
                .starts_with("[pg] compression: unknown compression \"gzp\""),
            "{e}"
        );
        let e = parse("[pg]\ncompresion = \"gzip\"\n").expect_err("typo");
        assert_eq!(e.key.as_deref(), Some("compresion"), "{e}");
        let e = parse("[pg]\nwal_segment_size = \"3MB\"\n").expect_err("size");
        assert_eq!(e.key.as_deref(), Some("wal_segment_size"));
        let e = parse("[pg]\ncompression_level = \"fast\"\n").expect_err("level");
        assert_eq!(e.key.as_deref(), Some("compression_level"));
        let e = parse("[pg]\nslot_name = \"Bad-Slot\"\n").expect_err("slot");
        assert_eq!(e.key.as_deref(), Some("slot_name"));
        let e = parse("[pg]\nstreaming_archiver = true\n").expect_err("needs conninfo");
        assert_eq!(e.key.as_deref(), Some("streaming_archiver"));
        let e = parse("[pg]\nwals_directory = \"ftp://b/p\"\n").expect_err("scheme");
        assert_eq!(e.key.as_deref(), Some("wals_directory"));
        assert!(e.to_string().contains("unsupported scheme"), "{e}");
        let e = parse("[pg]\nwals_directory = \"s3://\"\n").expect_err("no bucket");
        assert_eq!(e.key.as_deref(), Some("wals_directory"));
        let e = parse("[pg]\nwals_directory = \"s3://b/p\"\nmultipart_threshold = \"1MB\"\n")
            .expect_err("part too small");
        assert_eq!(e.key.as_deref(), Some("multipart_threshold"));
        let c = parse("[pg]\nwals_directory = \"s3://b/p\"\nendpoint_url = \"http://127.0.0.1:9000\"\nsecret_access_key = \"s\"\n")
            .expect("s3");
        let pg = c.server("pg").expect("pg");
        let ArchiveLocation::Object(settings) = &pg.archive else {
            panic!("an object store: {:?}", pg.archive);
        };
        assert_eq!(settings.url.to_string(), "s3://b/p");
        assert_eq!(
            settings.endpoint_url.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            settings.timeout,
            std::time::Duration::from_secs(60),
            "the default"
        );
        assert!(
            !format!("{pg:?}").contains("\"s\""),
            "secrets are not printed"
        );
        let e = parse("[walvault]\nhome = \"relative\"\n").expect_err("relative home");
        assert_eq!(e.key.as_deref(), Some("home"));
        let e = parse("pg = 1\n").expect_err("not a table");
        assert_eq!(e.key.as_deref(), Some("pg"));
        assert!(parse("[pg\n").is_err());
        let c = parse("[pg]\n").expect("valid");
        assert!(
            c.server("nope")
                .expect_err("unknown")
                .to_string()
                .contains("configured: pg")
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("1 day"), Some(86_400));
        assert_eq!(parse_duration("2 weeks"), Some(1_209_600));
        assert_eq!(parse_duration("90 minutes"), Some(5400));
        assert_eq!(parse_duration("3600"), Some(3600));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("16777216"), Some(16 << 20));
        assert_eq!(parse_size("16 parsecs"), None);
    }

    #[test]
    fn group_access_and_directories_refuse_what_they_cannot_mean() {
        let e = parse("[walvault]\ngroup_access = \"yes\"\n").expect_err("not a boolean");
        assert_eq!(e.key.as_deref(), Some("group_access"));
        assert!(
            parse("[walvault]\ngroup_access = true\n")
                .expect("boolean")
                .group_access
        );
        let e = parse("[walvault]\nlock_directory = \"locks\"\n").expect_err("relative");
        assert_eq!(e.key.as_deref(), Some("lock_directory"));
        let e = parse("[pg]\nwals_directory = \"../wals\"\n").expect_err("relative");
        assert_eq!(e.key.as_deref(), Some("wals_directory"));
    }
}
