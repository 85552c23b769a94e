//! Key rotation. `check` finds the archived copies only keys no longer configured can open
//! (from the key IDs their session key packets name: no key needed), and
//! `reencrypt SERVER --to-current-keys` rewrites them for the current recipients without a
//! moment in which the WAL has no readable copy (docs/barman-behaviours.md#B-CHANGE-20):
//!
//! 1. the copy is decrypted (the configured secret key must open it) and sealed again;
//! 2. the new copy is stored create-if-absent under a temporary key (`.NAME.reencrypt`, which
//!    every listing of WAL skips) and made durable;
//! 3. it is read back and checked: the same bytes, and the same plaintext when the secret key
//!    is also a current recipient's;
//! 4. it replaces the copy in one atomic put, made durable; then the temporary is removed;
//! 5. the catalogue's sizes are brought in line with what is stored.
//!
//! A kill anywhere leaves the old copy or the new one under the WAL's key, both complete, and
//! maybe a temporary that the next run removes first.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use walvault_core::encryption::{
    Encrypt, looks_like_openpgp, open_if_encrypted, openpgp_recipients,
};
use walvault_core::layout::StoredWal;
use walvault_core::storage::{PutMode, StorageError};
use walvault_core::wal::SegmentSize;

use crate::server::ServerCtx;
use crate::ui::Ui;

/// Enough of an object's start to hold its session key packets (gpg writes one per
/// recipient: about 270 bytes for RSA 2048, 530 for RSA 4096).
const PREFIX: u64 = 64 << 10;

/// What a key scan found.
#[derive(Debug, Default)]
pub struct KeyScan {
    /// Encrypted objects seen.
    pub encrypted: usize,
    /// Encrypted only to keys no longer configured.
    pub stale: Vec<StoredWal>,
    /// Objects whose session keys could not be read (a read error, hidden recipients).
    pub unknown: Vec<(String, String)>,
    /// Temporary copies a killed `reencrypt` left (never a WAL's only copy).
    pub leftovers: Vec<String>,
}

/// Reads every archived object's first bytes (`jobs` at a time) and classes the encrypted
/// ones by the keys that can open them.
pub fn scan(
    ctx: &ServerCtx<'_>,
    current: &BTreeSet<[u8; 8]>,
    jobs: usize,
) -> anyhow::Result<KeyScan> {
    let listing = ctx
        .store
        .list(ctx.layout.area_prefix())
        .context("listing the archive")?;
    let stored: Vec<StoredWal> = listing
        .iter()
        .filter_map(|m| ctx.layout.parse_key(m).ok())
        .collect();
    let leftovers = listing
        .iter()
        .filter(|m| {
            let file = m.key.rsplit('/').next().unwrap_or_default();
            file.starts_with('.') && file.ends_with(".reencrypt")
        })
        .map(|m| m.key.clone())
        .collect();
    let next = AtomicUsize::new(0);
    let result = Mutex::new(KeyScan {
        leftovers,
        ..KeyScan::default()
    });
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, 32) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(s) = stored.get(i) else { return };
                    let mut prefix = Vec::new();
                    let read = ctx
                        .store
                        .get(&s.key)
                        .map_err(|e| e.to_string())
                        .and_then(|r| {
                            r.take(PREFIX)
                                .read_to_end(&mut prefix)
                                .map_err(|e| e.to_string())
                        });
                    let mut out = result
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Err(e) = read {
                        out.unknown.push((s.key.clone(), e));
                        continue;
                    }
                    if !looks_like_openpgp(&prefix) {
                        continue;
                    }
                    out.encrypted += 1;
                    match openpgp_recipients(&prefix) {
                        Some(ids) if !ids.is_empty() => {
                            if !ids.iter().any(|id| current.contains(id)) {
                                out.stale.push(s.clone());
                            }
                        }
                        _ => out.unknown.push((
                            s.key.clone(),
                            "its recipients are hidden or beyond the first 64 KiB".into(),
                        )),
                    }
                }
            });
        }
    });
    let mut scan = result
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    scan.stale.sort_by(|a, b| a.key.cmp(&b.key));
    scan.unknown.sort();
    Ok(scan)
}

/// The key IDs of the configured recipients, or an error when encryption is off.
pub fn current_keys(ctx: &ServerCtx<'_>) -> anyhow::Result<BTreeSet<[u8; 8]>> {
    let Some(cfg) = &ctx.cfg.encryption else {
        bail!(
            "[{}] has no encryption = \"gpg\": there are no current keys to encrypt to",
            ctx.cfg.name
        );
    };
    crate::crypto::configured_key_ids(cfg)
}

/// The temporary key a re-encrypted copy is stored under before it replaces `key`.
fn temp_key(key: &str) -> String {
    match key.rsplit_once('/') {
        Some((dir, file)) => format!("{dir}/.{file}.reencrypt"),
        None => format!(".{key}.reencrypt"),
    }
}

/// `reencrypt SERVER --to-current-keys`.
pub fn reencrypt(ctx: &ServerCtx<'_>, dry_run: bool, jobs: usize, ui: &Ui) -> anyhow::Result<u8> {
    let current = current_keys(ctx)?;
    let scan = scan(ctx, &current, jobs)?;
    for (key, why) in &scan.unknown {
        ui.warn(format_args!(
            "{}{key}: {why}; left as it is",
            ctx.archive_root()
        ));
    }
    if dry_run || (scan.stale.is_empty() && scan.leftovers.is_empty()) {
        for s in &scan.stale {
            ui.info(format_args!(
                "would re-encrypt {}{}",
                ctx.archive_root(),
                s.key
            ));
        }
        ui.info(format_args!(
            "{} of {} encrypted WAL are encrypted only to keys no longer configured",
            scan.stale.len(),
            scan.encrypted
        ));
        return Ok(0);
    }
    let encryptor = ctx
        .encryptor()?
        .context("encryption = \"gpg\" has no recipients")?;
    // Between archive-wal runs and never beside delete-wals, which could see a WAL deleted
    // and then put back by the replacement.
    let _lock = super::maintenance::exclude_archiving(ctx, ui)?;
    let decryptor = ctx
        .decrypt
        .get()
        .map_err(anyhow::Error::msg)
        .context("re-encrypting needs the secret key of the old recipients")?;
    for temp in &scan.leftovers {
        match ctx.store.delete(temp) {
            Ok(()) | Err(StorageError::NotFound { .. }) => {
                ui.verbose(format_args!("removed the leftover temporary {temp}"));
            }
            Err(e) => ui.warn(format_args!(
                "cannot remove the leftover temporary {temp}: {e}"
            )),
        }
    }
    let mut failures = 0;
    for stored in &scan.stale {
        match reencrypt_one(ctx, stored, encryptor, decryptor) {
            Ok(size) => ui.verbose(format_args!("re-encrypted {} ({size} bytes)", stored.key)),
            Err(e) => {
                failures += 1;
                ui.error(format_args!("{}{}: {e:#}", ctx.archive_root(), stored.key));
            }
        }
    }
    let fixed = sync_catalogue_sizes(ctx)?;
    ui.info(format_args!(
        "re-encrypted {} of {} WAL for the current keys{}",
        scan.stale.len() - failures,
        scan.stale.len(),
        if fixed > 0 {
            format!("; {fixed} catalogue sizes updated")
        } else {
            String::new()
        }
    ));
    Ok(u8::from(failures > 0))
}

fn reencrypt_one(
    ctx: &ServerCtx<'_>,
    stored: &StoredWal,
    encryptor: &dyn Encrypt,
    decryptor: &walvault_core::encryption::openpgp::OpenPgpDecryptor,
) -> anyhow::Result<u64> {
    use walvault_core::encryption::Decrypt as _;
    // The most a stored WAL may hold, plus room for a codec's worst case.
    let cap = SegmentSize::MAX.bytes() + (1 << 20);
    let read_plain = |bytes: Box<dyn Read + Send + '_>| -> anyhow::Result<Vec<u8>> {
        let (reader, _) = open_if_encrypted(bytes, Some(decryptor))?;
        let mut plain = Vec::new();
        reader.take(cap + 1).read_to_end(&mut plain)?;
        if plain.len() as u64 > cap {
            bail!("decrypts to more than {cap} bytes");
        }
        Ok(plain)
    };
    let plain = read_plain(ctx.store.get(&stored.key)?).context("decrypting the copy")?;
    let mut sealed = Vec::new();
    encryptor
        .encrypt(&mut plain.as_slice(), &mut sealed)
        .context("encrypting for the current keys")?;
    let temp = temp_key(&stored.key);
    // A killed run's temporary: removed, it was never the WAL's only copy.
    match ctx.store.delete(&temp) {
        Ok(()) | Err(StorageError::NotFound { .. }) => {}
        Err(e) => return Err(e).context("removing an old temporary copy"),
    }
    ctx.store
        .put(&temp, PutMode::Create, &mut sealed.as_slice())?;
    ctx.store.sync()?;
    crate::faults::failpoint("reencrypt-copy-stored");
    let back = walvault_core::storage::get_bytes(&*ctx.store, &temp)?;
    if back != sealed {
        bail!(
            "the temporary copy {temp} reads back differently; the archived copy is left as it was"
        );
    }
    // When the secret key is also a current recipient's, the new copy must open to the same
    // bytes as the old one.
    if decryptor.detect(&back) {
        let ids = openpgp_recipients(&back).unwrap_or_default();
        if decryptor.key_ids().iter().any(|k| ids.contains(k)) {
            let again = read_plain(Box::new(std::io::Cursor::new(back)))
                .context("decrypting the new copy")?;
            if again != plain {
                bail!("the new copy decrypts to other bytes; the archived copy is left as it was");
            }
        }
    }
    ctx.store
        .put(&stored.key, PutMode::Overwrite, &mut sealed.as_slice())?;
    ctx.store.sync()?;
    crate::faults::failpoint("reencrypt-replaced");
    ctx.store.delete(&temp)?;
    Ok(sealed.len() as u64)
}

/// Sets each catalogue line's size to its stored object's, where they differ (a copy
/// re-encrypted, now or by a run killed before its catalogue rewrite). Returns how many.
fn sync_catalogue_sizes(ctx: &ServerCtx<'_>) -> anyhow::Result<usize> {
    let sizes: std::collections::HashMap<String, u64> = ctx
        .store
        .list(ctx.layout.area_prefix())
        .context("listing the archive")?
        .iter()
        .filter_map(|m| ctx.layout.parse_key(m).ok())
        .map(|s| (s.name.to_string(), s.size))
        .collect();
    let changed = ctx.catalogue.rewrite_with(|| {
        let mut entries = ctx.catalogue.read()?.map_err(std::io::Error::other)?;
        let mut changed = 0;
        for e in &mut entries {
            if let Some(&size) = sizes.get(&e.name)
                && e.encryption.is_some()
                && e.size != size
            {
                e.size = size;
                changed += 1;
            }
        }
        Ok((entries, changed))
    })?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn temporary_keys_are_hidden_next_to_the_copy() {
        assert_eq!(
            super::temp_key("0000000100000000/000000010000000000000001"),
            "0000000100000000/.000000010000000000000001.reencrypt"
        );
        assert_eq!(
            super::temp_key("p/pg/wals/0000000100000000/000000010000000000000001.zst.gpg"),
            "p/pg/wals/0000000100000000/.000000010000000000000001.zst.gpg.reencrypt"
        );
        assert_eq!(
            super::temp_key("00000002.history"),
            ".00000002.history.reencrypt"
        );
    }
}
