//! One configured server, opened: its store, layout and catalogue.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use walvault_core::archive::ArchiveSettings;
use walvault_core::compression::{DecodeLimits, Decoder};
use walvault_core::encryption::openpgp::OpenPgpEncryptor;
use walvault_core::layout::Layout;
use walvault_core::queue::{QueueKind, select_batch};
use walvault_core::storage::WalStore;
use walvault_core::wal::{LONG_PAGE_HEADER_LEN, SegmentSize};

use crate::catalogue_file::CatalogueFile;
use crate::config::{ArchiveLocation, Config, ServerConfig};
use crate::fsutil::Fs;
use crate::store::LocalStore;
#[cfg(feature = "native")]
use crate::store::s3::LazyS3Store;

/// A server ready to work on.
pub struct ServerCtx<'a> {
    /// Its settings.
    pub cfg: &'a ServerConfig,
    /// The configuration file, for the walvault processes this one starts.
    pub config_path: &'a Path,
    /// The operator's configuration file, for hooks' `BARMAN_CONFIGURATION` (see
    /// `Config::origin`).
    pub config_origin: &'a Path,
    /// Where WAL lives.
    pub store: Box<dyn WalStore + Sync + 'a>,
    /// The key scheme of `store`.
    pub layout: Layout,
    /// `<server>-xlog.db`.
    pub catalogue: CatalogueFile,
    /// The file system, on this target's platform.
    pub fs: Fs,
    /// Opens encrypted copies with the configured secret key, loaded on first use.
    pub decrypt: crate::crypto::LazyDecryptor<'a>,
    /// The encryptor of `encryption = "gpg"`, its key files read once per process (the
    /// archive_async worker archives many WAL through one context).
    encrypt: std::sync::OnceLock<Result<Option<OpenPgpEncryptor>, String>>,
}

impl std::fmt::Debug for ServerCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCtx")
            .field("server", &self.cfg.name)
            .field("layout", &self.layout)
            .finish()
    }
}

impl<'a> ServerCtx<'a> {
    /// Opens the storage of `cfg`, a server of `config`, natively.
    pub fn open(cfg: &'a ServerConfig, config: &'a Config) -> anyhow::Result<Self> {
        Self::open_on(Fs::native(), cfg, config)
    }

    /// Opens the storage of `cfg`, a server of `config`, on the platform of `fs`.
    pub fn open_on(fs: Fs, cfg: &'a ServerConfig, config: &'a Config) -> anyhow::Result<Self> {
        let config_path = config.path.as_path();
        let (store, layout): (Box<dyn WalStore + Sync>, Layout) = match &cfg.archive {
            ArchiveLocation::Local(dir) => {
                (Box::new(LocalStore::new(fs, dir.clone())), Layout::Local)
            }
            #[cfg(not(feature = "native"))]
            ArchiveLocation::Object(settings) => anyhow::bail!(
                "server '{}': {}: object storage needs the native walvault (this build has no network)",
                cfg.name,
                settings.url
            ),
            #[cfg(feature = "native")]
            ArchiveLocation::Object(settings) => {
                let store = LazyS3Store::new(settings)
                    .with_context(|| format!("server '{}': {}", cfg.name, settings.url))?;
                (
                    Box::new(store),
                    Layout::cloud(&settings.url.prefix, &cfg.name),
                )
            }
        };
        let store = crate::faults::wrap_store(store)?;
        let catalogue =
            CatalogueFile::new(fs, &cfg.xlogdb_directory, &cfg.lock_directory, &cfg.name);
        Ok(ServerCtx {
            cfg,
            config_path,
            config_origin: &config.origin,
            store,
            layout,
            catalogue,
            fs,
            decrypt: crate::crypto::LazyDecryptor::new(cfg, config_path),
            encrypt: std::sync::OnceLock::new(),
        })
    }

    /// The encryptor of `encryption = "gpg"` (`None` without), loaded on first use.
    pub fn encryptor(&self) -> anyhow::Result<Option<&OpenPgpEncryptor>> {
        self.encrypt
            .get_or_init(|| crate::crypto::encryptor(self.cfg).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map(Option::as_ref)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// What `BARMAN_FILE` and messages show before a stored key: the archive directory, or
    /// the bucket's URL (an object key already starts with the configured prefix).
    pub fn archive_root(&self) -> String {
        match &self.cfg.archive {
            ArchiveLocation::Local(dir) => format!("{}/", dir.display()),
            ArchiveLocation::Object(settings) => settings.url.bucket_root(),
        }
    }

    /// The archive as configured (a directory, or a URL with its prefix), for display.
    pub fn archive_location(&self) -> String {
        match &self.cfg.archive {
            ArchiveLocation::Local(dir) => format!("{}/", dir.display()),
            ArchiveLocation::Object(settings) => format!("{}/", settings.url),
        }
    }

    /// The local archive directory, when the archive is local.
    pub fn local_archive_dir(&self) -> Option<&Path> {
        match &self.cfg.archive {
            ArchiveLocation::Local(dir) => Some(dir),
            ArchiveLocation::Object(_) => None,
        }
    }

    /// The segment size: configured, else read from the page header of the first file in
    /// `hints` (or of an archived segment) that has one, else PostgreSQL's default.
    pub fn segment_size(&self, hints: &[PathBuf]) -> SegmentSize {
        if let Some(size) = self.cfg.wal_segment_size {
            return size;
        }
        for path in hints {
            if let Ok(file) = crate::fsutil::open_regular(path)
                && let Some(size) = header_segment_size(Box::new(file))
            {
                return size;
            }
        }
        if let Ok(listing) = self.store.list(self.layout.area_prefix()) {
            for meta in listing
                .iter()
                .filter(|m| self.layout.parse_key(m).is_ok_and(|s| s.name.is_segment()))
                .take(3)
            {
                if let Ok(reader) = self.store.get(&meta.key)
                    && let Some(size) = header_segment_size(reader)
                {
                    return size;
                }
            }
        }
        SegmentSize::DEFAULT
    }

    /// Paths of the files waiting in a queue directory (segment-size detection hints).
    pub fn queue_hints(dir: &Path) -> Vec<PathBuf> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    // Never a link or a FIFO (opening one could block or read elsewhere).
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.len() == 24)
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names.truncate(3);
        names
    }

    /// How archive-wal and put-wal archive this server's WAL.
    pub fn archive_settings(&self, segment_size: SegmentSize) -> ArchiveSettings {
        ArchiveSettings {
            codec: self.cfg.compression,
            level: self.cfg.compression_level,
            segment_size,
            check_page_header: self.cfg.check_page_header,
            system_identifier: self.cfg.system_identifier,
            layout: self.layout.clone(),
            ..ArchiveSettings::default()
        }
    }

    /// Where the reasons for files moved to errors/ are kept (errors/ itself holds only the
    /// files, as Barman's `check` counts every entry there).
    pub fn error_reasons_path(&self) -> PathBuf {
        self.cfg.backup_directory.join("meta").join("errors.jsonl")
    }

    /// Where `check` records its last run for `serve` (`meta/last-check.json`).
    pub fn last_check_path(&self) -> PathBuf {
        self.cfg
            .backup_directory
            .join("meta")
            .join("last-check.json")
    }

    /// Files a queue would archive now.
    pub fn waiting(dir: &Path, kind: QueueKind) -> usize {
        crate::queue_dir::list_queue(dir)
            .map(|entries| select_batch(kind, entries, 0).total_candidates())
            .unwrap_or(0)
    }

    /// Creates the server's directories (incoming, streaming, errors, archive) if missing.
    pub fn ensure_dirs(&self) -> anyhow::Result<()> {
        let mut dirs = vec![
            &self.cfg.incoming,
            &self.cfg.errors,
            &self.cfg.xlogdb_directory,
        ];
        if self.cfg.streaming_archiver {
            dirs.push(&self.cfg.streaming);
        }
        if let ArchiveLocation::Local(dir) = &self.cfg.archive {
            dirs.push(dir);
        }
        for dir in dirs {
            self.fs
                .create_dir_durable(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }
}

/// How long a run holding the archive-wal lock may go without finishing a file before it
/// counts as stalled (a hung store or file system): later runs then fail loudly instead of
/// skipping the server in silence, and `check` fails.
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Whether the run holding the archive-wal lock has stalled: `Some(description)` when it has
/// shown no progress for [`STALLED_AFTER`].
pub fn stalled_archive_wal(cfg: &ServerConfig) -> Option<String> {
    let path = crate::lock::lock_path(&cfg.lock_directory, &cfg.name, "archive-wal");
    let holder = crate::lock::holder_info(&path).ok()??;
    let idle = holder
        .last_progress
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())?;
    (idle > STALLED_AFTER).then(|| {
        format!(
            "archive-wal {}has held the lock of server {} ({}) for {} min without archiving a file: archiving is stalled;              find out what it waits for, or stop it",
            holder.pid.map(|p| format!("(pid {p}) ")).unwrap_or_default(),
            cfg.name,
            path.display(),
            idle.as_secs() / 60
        )
    })
}

/// The current time, seconds since the epoch (the host's clock, for the core's decisions).
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn header_segment_size<'r>(reader: Box<dyn Read + 'r>) -> Option<SegmentSize> {
    let mut decoder = Decoder::auto(reader, DecodeLimits::default()).ok()?;
    let mut head = [0u8; LONG_PAGE_HEADER_LEN];
    decoder.read_exact(&mut head).ok()?;
    walvault_core::restore::header_segment_size(&head)
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;

    #[test]
    fn object_keys_are_shown_under_the_bucket_not_the_prefix_twice() {
        let text = "[walvault]\nhome = \"/srv/wv\"\n[pg]\nwals_directory = \"s3://wal/p\"\n";
        let config =
            crate::config::Config::parse(text, Path::new("/etc/walvault.toml")).expect("config");
        let ctx = ServerCtx::open(config.server("pg").expect("pg"), &config).expect("open");
        // Keys already carry the prefix (Barman's cloud layout: <prefix>/<server>/wals/…).
        let key = ctx
            .layout
            .key(&"000000010000000000000001".parse().expect("name"), None);
        assert_eq!(
            format!("{}{key}", ctx.archive_root()),
            "s3://wal/p/pg/wals/0000000100000000/000000010000000000000001"
        );
        assert_eq!(ctx.archive_location(), "s3://wal/p/");
    }
}
