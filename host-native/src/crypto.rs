//! The keys of `encryption = "gpg"`, read from the files the configuration names, and the
//! passphrase from `encryption_passphrase_command`. The OpenPGP work itself is the core's
//! (`walvault_core::encryption::openpgp`); this is where files, the clock, randomness and the
//! command come in.

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
#[cfg(feature = "native")]
use walvault_core::encryption::openpgp::open_with_session_key;
use walvault_core::encryption::openpgp::{
    OpenPgpDecryptor, OpenPgpEncryptor, PassphraseSource, Recipient, SignedPublicKey, key_matches,
    parse_public_keys, parse_secret_keys,
};
use zeroize::Zeroizing;

use crate::config::{EncryptionConfig, ServerConfig};

/// The largest key file read: real keys and keyrings are a few KiB.
const MAX_KEY_FILE: u64 = 4 << 20;

/// Reads a key file: a regular file (a FIFO or device would hang or never end), at most
/// [`MAX_KEY_FILE`] bytes. Links are followed: key files are the operator's, set up like
/// any configuration file.
fn read_key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        bail!(
            "{}: larger than {MAX_KEY_FILE} bytes, not a key file",
            path.display()
        );
    }
    Ok(bytes)
}

/// The certificates `encryption = "gpg"` names, each with the file it came from: every key
/// in the `encryption_key_file` files, then the keyring's key for each `encryption_key_id`;
/// and the IDs the keyring has no key for.
fn certificates(cfg: &EncryptionConfig) -> anyhow::Result<Certificates> {
    let mut certs = Vec::new();
    for path in &cfg.key_files {
        let origin = path.display().to_string();
        for cert in parse_public_keys(&origin, &read_key_file(path)?)? {
            certs.push((origin.clone(), cert));
        }
    }
    let mut missing = Vec::new();
    if !cfg.key_ids.is_empty() {
        let Some(keyring) = &cfg.keyring else {
            bail!("encryption_key_id needs encryption_keyring");
        };
        let origin = keyring.display().to_string();
        let ring = parse_public_keys(&origin, &read_key_file(keyring)?)?;
        for id in &cfg.key_ids {
            match ring.iter().find(|c| key_matches(c, id)) {
                Some(cert) => certs.push((origin.clone(), cert.clone())),
                None => missing.push((origin.clone(), id.clone())),
            }
        }
    }
    Ok(Certificates { certs, missing })
}

/// What [`certificates`] found: certificates with their files, and (keyring, ID) pairs with
/// no key.
struct Certificates {
    certs: Vec<(String, SignedPublicKey)>,
    missing: Vec<(String, String)>,
}

/// The recipients `encryption = "gpg"` names, each checked usable now.
pub fn recipients(cfg: &EncryptionConfig, now_unix: u64) -> anyhow::Result<Vec<Recipient>> {
    let Certificates { certs, missing } = certificates(cfg)?;
    if let Some((origin, id)) = missing.into_iter().next() {
        return Err(walvault_core::encryption::openpgp::KeyError::NoSuchKey { origin, id }.into());
    }
    let mut out = Vec::new();
    for (origin, cert) in &certs {
        out.push(Recipient::of(origin, cert, now_unix)?);
    }
    // The same key named twice (a file and an ID) is one recipient.
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|r| seen.insert(r.key_id));
    Ok(out)
}

/// The key IDs (every primary key and subkey) of the certificates `encryption = "gpg"` names:
/// a copy whose session keys name none of them can only be opened by keys no longer
/// configured.
pub fn configured_key_ids(
    cfg: &EncryptionConfig,
) -> anyhow::Result<std::collections::BTreeSet<[u8; 8]>> {
    Ok(certificates(cfg)?
        .certs
        .iter()
        .flat_map(|(_, cert)| walvault_core::encryption::openpgp::cert_key_ids(cert))
        .collect())
}

/// The encryptor of a server with `encryption = "gpg"`, `None` without.
pub fn encryptor(server: &ServerConfig) -> anyhow::Result<Option<OpenPgpEncryptor>> {
    let Some(cfg) = &server.encryption else {
        return Ok(None);
    };
    let now = crate::server::now().max(0.0) as u64;
    let recipients =
        recipients(cfg, now).with_context(|| format!("[{}] encryption", server.name))?;
    Ok(OpenPgpEncryptor::new(
        recipients,
        Box::new(|| Box::new(rand_core::OsRng)),
    ))
}

/// The decryptor of a server with `encryption_secret_key_file`, `None` without. The secret
/// key file must be private to walvault's user (as ssh insists for its keys): a WAL archive
/// holds every row of the database.
pub fn decryptor(server: &ServerConfig) -> anyhow::Result<Option<OpenPgpDecryptor>> {
    if server.decryption.is_none() {
        return Ok(None);
    }
    decryptor_with(server, passphrase_source(server)).map(Some)
}

/// `encryption_passphrase_command` as the decryptor asks it.
fn passphrase_source(server: &ServerConfig) -> PassphraseSource {
    let cfg = server.decryption.as_ref();
    let command = cfg
        .and_then(|c| c.passphrase_command.as_ref())
        .map(|c| c.expose().to_owned());
    let timeout = Duration::from_secs(cfg.map_or(crate::config::DEFAULT_PASSPHRASE_TIMEOUT, |c| {
        c.passphrase_timeout
    }));
    let server_name = server.name.clone();
    let path_prefix = server.path_prefix.clone();
    Box::new(move || match &command {
        Some(c) => run_passphrase_command(c, path_prefix.as_deref(), timeout),
        None => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "[{server_name}] the secret key is protected by a passphrase and encryption_passphrase_command is not set"
            ),
        )),
    })
}

/// The decryptor of a server with `encryption_secret_key_file`, its passphrase from
/// `passphrase` (the key agent's comes through a pipe).
pub fn decryptor_with(
    server: &ServerConfig,
    passphrase: PassphraseSource,
) -> anyhow::Result<OpenPgpDecryptor> {
    let Some(cfg) = &server.decryption else {
        bail!("[{}] has no encryption_secret_key_file", server.name);
    };
    let context = || format!("[{}] encryption_secret_key_file", server.name);
    check_private(&cfg.secret_key_file).with_context(context)?;
    let origin = cfg.secret_key_file.display().to_string();
    let keys =
        parse_secret_keys(&origin, &read_key_file(&cfg.secret_key_file)?).with_context(context)?;
    Ok(OpenPgpDecryptor::new(keys, passphrase))
}

/// The server's decryptor as the archive flow and restores use it: any OpenPGP object is
/// taken as this server's, and the secret key is loaded (and the passphrase asked) only when
/// one must be opened, so a server with a broken key setup still archives and serves plain
/// WAL. Opening without a configured secret key fails as "permission denied", which get-wal
/// turns into a stop of the recovery and archive-wal into a copy that cannot be compared.
///
/// With `encryption_key_cache_ttl` (and a passphrase command) a key agent is asked first, and
/// a process that had to unlock the key itself starts one (`key_agent`).
pub struct LazyDecryptor<'a> {
    server: &'a ServerConfig,
    #[cfg_attr(not(feature = "native"), allow(dead_code))]
    config_path: &'a Path,
    loaded: std::sync::OnceLock<Result<OpenPgpDecryptor, String>>,
    /// The passphrase as the command gave it, kept only until the key agent has it.
    #[cfg_attr(not(feature = "native"), allow(dead_code))]
    passphrase: Arc<Mutex<Option<Zeroizing<Vec<u8>>>>>,
}

impl std::fmt::Debug for LazyDecryptor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyDecryptor")
            .field("server", &self.server.name)
            .finish_non_exhaustive()
    }
}

impl<'a> LazyDecryptor<'a> {
    /// Nothing is read until an encrypted object needs opening.
    pub fn new(server: &'a ServerConfig, config_path: &'a Path) -> Self {
        LazyDecryptor {
            server,
            config_path,
            loaded: std::sync::OnceLock::new(),
            passphrase: Arc::default(),
        }
    }

    /// Whether a key agent is asked first and started after an unlock.
    fn agent(&self) -> bool {
        #[cfg(feature = "native")]
        return crate::key_agent::enabled(self.server);
        #[cfg(not(feature = "native"))]
        return false;
    }

    /// The loaded decryptor, or why there is none.
    pub fn get(&self) -> Result<&OpenPgpDecryptor, String> {
        self.loaded
            .get_or_init(|| {
                if self.server.decryption.is_none() {
                    return Err(format!(
                        "[{}] has no encryption_secret_key_file to decrypt it with",
                        self.server.name
                    ));
                }
                let mut source = passphrase_source(self.server);
                if self.agent() {
                    // Keep a copy for the agent this process starts.
                    let keep = self.passphrase.clone();
                    source = Box::new(move || {
                        let bytes = source()?;
                        *keep.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(Zeroizing::new(bytes.clone()));
                        Ok(bytes)
                    });
                }
                decryptor_with(self.server, source).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The plaintext through a running key agent, or the ciphertext back when none answers.
    #[cfg(feature = "native")]
    fn via_agent<'r>(
        &self,
        ciphertext: Box<dyn Read + Send + 'r>,
    ) -> io::Result<Result<Box<dyn Read + Send + 'r>, Box<dyn Read + Send + 'r>>> {
        use std::io::BufRead;
        if !self.agent() || self.loaded.get().is_some() {
            return Ok(Err(ciphertext));
        }
        let mut buffered = io::BufReader::with_capacity(64 << 10, ciphertext);
        let prefix = buffered.fill_buf()?;
        let Some(len) = walvault_core::encryption::session_key_packets_len(prefix) else {
            return Ok(Err(Box::new(buffered)));
        };
        match crate::key_agent::session_key(self.server, &prefix[..len])? {
            Some(key) => Ok(Ok(open_with_session_key(Box::new(buffered), key)?)),
            None => Ok(Err(Box::new(buffered))),
        }
    }

    /// Starts a key agent once this process has unlocked a key with the passphrase.
    #[cfg(feature = "native")]
    fn hand_to_agent(&self, decryptor: &OpenPgpDecryptor) {
        let Some(passphrase) = self
            .passphrase
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        if decryptor.holds_unlocked_key() {
            crate::key_agent::start(self.config_path, self.server, &passphrase);
        }
    }
}

impl walvault_core::encryption::Decrypt for LazyDecryptor<'_> {
    fn name(&self) -> &str {
        walvault_core::encryption::openpgp::SCHEME
    }

    fn detect(&self, prefix: &[u8]) -> bool {
        walvault_core::encryption::looks_like_openpgp(prefix)
    }

    fn decrypt<'r>(
        &self,
        ciphertext: Box<dyn Read + Send + 'r>,
    ) -> io::Result<Box<dyn Read + Send + 'r>> {
        #[cfg(feature = "native")]
        let ciphertext = match self.via_agent(ciphertext)? {
            Ok(plaintext) => return Ok(plaintext),
            Err(ciphertext) => ciphertext,
        };
        match self.get() {
            Ok(d) => {
                let plaintext = d.decrypt(ciphertext)?;
                #[cfg(feature = "native")]
                self.hand_to_agent(d);
                Ok(plaintext)
            }
            Err(why) => Err(io::Error::new(io::ErrorKind::PermissionDenied, why)),
        }
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{}: mode {mode:04o} lets other users read or change it; a secret key must be private (chmod 600)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// Runs Barman's `encryption_passphrase_command` through the shell and returns its standard
/// output. The passphrase never goes on a command line, into a hook's environment or into
/// a message: a failure reports the exit status only (standard error goes to walvault's).
#[cfg(not(target_os = "wasi"))]
pub fn run_passphrase_command(
    command: &str,
    path_prefix: Option<&str>,
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0);
    if let Some(prefix) = path_prefix {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{prefix}:{path}"));
    }
    let mut child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("encryption_passphrase_command cannot start: {e}"),
        )
    })?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let (done, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        // A passphrase is short; more is not one.
        let _ = (&mut stdout).take(64 << 10).read_to_end(&mut out);
        let _ = done.send(out);
    });
    let started = Instant::now();
    // The output ends when the command does (or closes it): waiting for that instead of
    // polling the process saves every restore_command call a polling interval.
    let out = output.recv_timeout(timeout).ok();
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if out.is_none() || started.elapsed() > timeout {
            // The whole group: what the shell started would otherwise live on.
            #[cfg(feature = "native")]
            let _ = rustix::process::kill_process_group(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::KILL,
            );
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "encryption_passphrase_command did not finish within {} s and was killed",
                    timeout.as_secs()
                ),
            ));
        }
        // Closed its output but still running: poll, backing off.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let out = out.unwrap_or_default();
    if !status.success() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("encryption_passphrase_command failed ({status})"),
        ));
    }
    if out.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "encryption_passphrase_command printed no passphrase",
        ));
    }
    Ok(out)
}

/// No processes in the WASI sandbox: a protected secret key cannot be opened there.
#[cfg(target_os = "wasi")]
pub fn run_passphrase_command(_: &str, _: Option<&str>, _: Duration) -> io::Result<Vec<u8>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "encryption_passphrase_command cannot run inside the WASI sandbox",
    ))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    const PASSPHRASE_TIMEOUT: Duration = Duration::from_secs(30);

    #[test]
    fn the_passphrase_command_output_failure_and_hang() {
        let out = run_passphrase_command("printf 'pw\\n'", None, PASSPHRASE_TIMEOUT).expect("runs");
        assert_eq!(out, b"pw\n");
        let err = run_passphrase_command("echo secret-ish; exit 3", None, PASSPHRASE_TIMEOUT)
            .expect_err("fails");
        assert!(err.to_string().contains("exit status: 3"), "{err}");
        assert!(!err.to_string().contains("secret-ish"), "{err}");
        let started = std::time::Instant::now();
        let err = run_passphrase_command("sleep 30", None, Duration::from_millis(300))
            .expect_err("hangs");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10));
        let err = run_passphrase_command("true", None, PASSPHRASE_TIMEOUT).expect_err("empty");
        assert!(err.to_string().contains("no passphrase"), "{err}");
    }
}
