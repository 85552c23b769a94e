//! Where a WAL file lives inside a store, in Barman's two layouts.
//!
//! - Local (`wals/` directory): `<hash>/<name>` with **no** extension, whatever the
//!   compression; history files at the root. The codec is found from magic bytes.
//! - Cloud (barman-cloud): `<path>/<server>/wals/<hash>/<name><ext>`, history files at
//!   `<path>/<server>/wals/<name><ext>`, the extension (`.gz`, `.zst`, …) after `.partial` or
//!   `.backup`. An encrypted object's key ends in `.gpg` after that
//!   (docs/barman-behaviours.md#B-CHANGE-20).

use serde::{Deserialize, Serialize};

use crate::compression::Codec;
use crate::storage::{ObjectMeta, StorageError, WalStore};
use crate::wal::WalFileName;

/// A store's key scheme.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Keys relative to a local `wals/` directory, no extensions.
    Local,
    /// barman-cloud keys under `prefix` (`"<path>/<server>/wals/"`, or `"<server>/wals/"`).
    Cloud {
        /// The key prefix, ending in `wals/`.
        prefix: String,
    },
}

/// A WAL file found in a store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWal {
    /// The object's key.
    pub key: String,
    /// The WAL name the key stands for.
    pub name: WalFileName,
    /// The codec named by the key's extension (cloud); `None` when the key has none.
    pub codec_from_key: Option<Codec>,
    /// Stored size.
    pub size: u64,
}

/// Why a key in a WAL area is not a WAL file where it should be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KeyProblem {
    /// Outside this layout's prefix.
    #[error("outside the archive prefix")]
    OutsidePrefix,
    /// A temporary file (a write in progress, or left by a crash).
    #[error("temporary file")]
    Temporary,
    /// Not a WAL, partial, backup label or history name (with an optional extension).
    #[error("not a WAL file name")]
    NotWal,
    /// A WAL name in the wrong directory (Barman's rebuild accepts these; walvault reports them).
    #[error("in the wrong directory: belongs in {expected:?}")]
    Misplaced {
        /// Where it belongs (`""` for the root).
        expected: String,
    },
}

impl StoredWal {
    /// A decoder for this object's bytes: by the codec its key names (cloud), else by the
    /// magic bytes (local keys carry no extension).
    pub fn decoder<R: std::io::Read>(
        &self,
        reader: R,
        limits: crate::compression::DecodeLimits,
    ) -> std::io::Result<crate::compression::Decoder<R>> {
        crate::compression::Decoder::known_or_auto(self.codec_from_key, reader, limits)
    }
}

impl Layout {
    /// The cloud layout for `s3://bucket/<url_path>` and a server name, as barman-cloud builds it.
    pub fn cloud(url_path: &str, server: &str) -> Layout {
        let path = url_path.trim_matches('/');
        let prefix = if path.is_empty() {
            format!("{server}/wals/")
        } else {
            format!("{path}/{server}/wals/")
        };
        Layout::Cloud { prefix }
    }

    fn prefix(&self) -> &str {
        match self {
            Layout::Local => "",
            Layout::Cloud { prefix } => prefix,
        }
    }

    /// The key to store `name` under when compressed with `codec`.
    pub fn key(&self, name: &WalFileName, codec: Option<Codec>) -> String {
        match self {
            Layout::Local => name.relative_path(),
            Layout::Cloud { prefix } => format!(
                "{prefix}{}{}",
                name.relative_path(),
                codec.map_or("", Codec::extension)
            ),
        }
    }

    /// The key for `name` compressed with `codec`, encrypted when `encrypted`: in the cloud
    /// layout `.gpg` follows the codec's extension, so barman-cloud-wal-restore, which knows no
    /// encryption, reports such a WAL missing instead of serving ciphertext; local keys never
    /// carry an extension, as Barman keeps its encrypted files.
    pub fn key_for(&self, name: &WalFileName, codec: Option<Codec>, encrypted: bool) -> String {
        let key = self.key(name, codec);
        match self {
            Layout::Cloud { .. } if encrypted => key + crate::encryption::OPENPGP_EXTENSION,
            _ => key,
        }
    }

    /// The listing prefix that finds every stored variant of `name` (any extension, and its
    /// `.partial` / backup-label siblings, which [`Layout::find`] filters).
    pub fn lookup_prefix(&self, name: &WalFileName) -> String {
        format!("{}{}", self.prefix(), name.relative_path())
    }

    /// The listing prefix of the whole WAL area.
    pub fn area_prefix(&self) -> &str {
        self.prefix()
    }

    /// Interprets one key of a listing.
    pub fn parse_key(&self, meta: &ObjectMeta) -> Result<StoredWal, KeyProblem> {
        let rel = meta
            .key
            .strip_prefix(self.prefix())
            .ok_or(KeyProblem::OutsidePrefix)?;
        let (dir, file) = match rel.split_once('/') {
            Some((dir, file)) if !file.contains('/') => (dir, file),
            Some(_) => return Err(KeyProblem::NotWal),
            None => ("", rel),
        };
        if file.ends_with(".tmp") || file.starts_with('.') {
            return Err(KeyProblem::Temporary);
        }
        let (base, codec_from_key) = match self {
            Layout::Local => (file, None),
            Layout::Cloud { .. } => {
                let file = file
                    .strip_suffix(crate::encryption::OPENPGP_EXTENSION)
                    .unwrap_or(file);
                Codec::ALL
                    .iter()
                    .find_map(|c| {
                        file.strip_suffix(c.extension())
                            .map(|base| (base, Some(*c)))
                    })
                    .unwrap_or((file, None))
            }
        };
        let name: WalFileName = base.parse().map_err(|_| KeyProblem::NotWal)?;
        let expected = name.hash_dir().unwrap_or_default();
        if dir != expected {
            return Err(KeyProblem::Misplaced { expected });
        }
        Ok(StoredWal {
            key: meta.key.clone(),
            name,
            codec_from_key,
            size: meta.size,
        })
    }

    /// Stored objects that are exactly `name` (any extension), from a listing.
    pub fn find(&self, name: &WalFileName, listing: &[ObjectMeta]) -> Vec<StoredWal> {
        listing
            .iter()
            .filter_map(|m| self.parse_key(m).ok())
            .filter(|s| s.name == *name)
            .collect()
    }

    /// Lists the store and returns the stored variants of `name`.
    pub fn find_in<S: WalStore + ?Sized>(
        &self,
        store: &S,
        name: &WalFileName,
    ) -> Result<Vec<StoredWal>, StorageError> {
        Ok(self.find(name, &store.list(&self.lookup_prefix(name))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> WalFileName {
        n.parse().expect("name")
    }

    fn meta(key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: 1,
        }
    }

    #[test]
    fn local_keys_have_no_extension() {
        assert_eq!(
            Layout::Local.key(&name("000000010000000000000001"), Some(Codec::Gzip)),
            "0000000100000000/000000010000000000000001"
        );
        assert_eq!(
            Layout::Local.key(&name("00000002.history"), Some(Codec::Zstd)),
            "00000002.history"
        );
    }

    #[test]
    fn encrypted_cloud_keys_end_in_gpg_and_are_found_by_name() {
        let l = Layout::cloud("p", "srv");
        let n = name("000000010000000000000001");
        let key = l.key_for(&n, Some(Codec::Zstd), true);
        assert_eq!(
            key,
            "p/srv/wals/0000000100000000/000000010000000000000001.zst.gpg"
        );
        assert_eq!(
            l.key_for(&n, None, true),
            "p/srv/wals/0000000100000000/000000010000000000000001.gpg"
        );
        assert_eq!(
            l.key_for(&n, Some(Codec::Zstd), false),
            l.key(&n, Some(Codec::Zstd))
        );
        assert_eq!(
            Layout::Local.key_for(&n, Some(Codec::Zstd), true),
            "0000000100000000/000000010000000000000001"
        );
        let found = l.find(&n, &[meta(&key)]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].codec_from_key, Some(Codec::Zstd));
    }

    #[test]
    fn cloud_keys_match_barman_cloud() {
        // docs/barman-behaviours.md#B-KEEP-15.
        let l = Layout::cloud("/path/to/dir", "srv");
        assert_eq!(
            l.key(&name("000000080000ABFF000000C1"), None),
            "path/to/dir/srv/wals/000000080000ABFF/000000080000ABFF000000C1"
        );
        for (codec, ext) in [
            (Codec::Gzip, ".gz"),
            (Codec::Bzip2, ".bz2"),
            (Codec::Xz, ".xz"),
            (Codec::Snappy, ".snappy"),
            (Codec::Zstd, ".zst"),
            (Codec::Lz4, ".lz4"),
        ] {
            assert!(
                l.key(&name("000000080000ABFF000000C1"), Some(codec))
                    .ends_with(&format!("000000080000ABFF000000C1{ext}"))
            );
        }
        assert_eq!(
            l.key(&name("00000002.history"), Some(Codec::Gzip)),
            "path/to/dir/srv/wals/00000002.history.gz"
        );
        assert_eq!(
            l.key(&name("000000030000000000000010.partial"), Some(Codec::Gzip)),
            "path/to/dir/srv/wals/0000000300000000/000000030000000000000010.partial.gz"
        );
        assert_eq!(
            Layout::cloud("", "srv").key(&name("00000002.history"), None),
            "srv/wals/00000002.history"
        );
        assert_eq!(
            Layout::cloud("p/", "srv").key(&name("00000002.history"), None),
            "p/srv/wals/00000002.history"
        );
    }

    #[test]
    fn parse_keys() {
        let l = Layout::cloud("p", "s");
        let parsed = l
            .parse_key(&meta(
                "p/s/wals/0000000100000000/000000010000000000000001.partial.zst",
            ))
            .expect("valid");
        assert_eq!(parsed.name, name("000000010000000000000001.partial"));
        assert_eq!(parsed.codec_from_key, Some(Codec::Zstd));
        assert_eq!(
            l.parse_key(&meta("p/s/wals/00000002.history"))
                .expect("valid")
                .codec_from_key,
            None
        );
        assert_eq!(
            l.parse_key(&meta("q/s/wals/00000002.history")),
            Err(KeyProblem::OutsidePrefix)
        );
        assert_eq!(
            l.parse_key(&meta("p/s/wals/0000000100000000/notawal")),
            Err(KeyProblem::NotWal)
        );
        assert_eq!(
            l.parse_key(&meta(
                "p/s/wals/0000000100000000/000000010000000000000001.br"
            )),
            Err(KeyProblem::NotWal)
        );
        assert_eq!(
            l.parse_key(&meta("p/s/wals/a/b/000000010000000000000001")),
            Err(KeyProblem::NotWal)
        );
        // docs/barman-behaviours.md#B-CHANGE-08: Barman accepts a segment in another hash dir;
        // walvault reports it.
        assert_eq!(
            Layout::Local.parse_key(&meta("0000000200000000/000000010000000000000001")),
            Err(KeyProblem::Misplaced {
                expected: "0000000100000000".into()
            })
        );
        assert_eq!(
            Layout::Local.parse_key(&meta("000000010000000000000001")),
            Err(KeyProblem::Misplaced {
                expected: "0000000100000000".into()
            })
        );
        assert_eq!(
            Layout::Local.parse_key(&meta("0000000100000000/00000002.history")),
            Err(KeyProblem::Misplaced {
                expected: String::new()
            })
        );
        assert_eq!(
            Layout::Local.parse_key(&meta("0000000100000000/.000000010000000000000001.x.tmp")),
            Err(KeyProblem::Temporary)
        );
        assert_eq!(
            Layout::Local.parse_key(&meta("pg-xlog.db")),
            Err(KeyProblem::NotWal)
        );
        // Local keys never carry an extension.
        assert_eq!(
            Layout::Local.parse_key(&meta("0000000100000000/000000010000000000000001.gz")),
            Err(KeyProblem::NotWal)
        );
    }

    #[test]
    fn find_filters_exact_name() {
        let l = Layout::cloud("", "s");
        let listing: Vec<ObjectMeta> = [
            "s/wals/0000000100000000/000000010000000000000001.gz",
            "s/wals/0000000100000000/000000010000000000000001.00000028.backup.gz",
            "s/wals/0000000100000000/000000010000000000000001.partial",
            "s/wals/0000000100000000/000000010000000000000001",
        ]
        .iter()
        .map(|k| meta(k))
        .collect();
        let found = l.find(&name("000000010000000000000001"), &listing);
        let keys: Vec<&str> = found.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "s/wals/0000000100000000/000000010000000000000001.gz",
                "s/wals/0000000100000000/000000010000000000000001"
            ]
        );
        assert_eq!(
            l.lookup_prefix(&name("000000010000000000000001")),
            "s/wals/0000000100000000/000000010000000000000001"
        );
    }
}
