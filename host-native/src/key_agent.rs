//! The key agent of `encryption_key_cache_ttl`: a background process that keeps a
//! passphrase-protected secret key unlocked, as gpg-agent does for gpg (and so for Barman).
//!
//! Why: PostgreSQL runs `restore_command` once per segment, each a new process, and unlocking
//! a gpg-protected key costs what its string-to-key count asks (gpg sets 65 MB of SHA-1, about
//! 45 ms), plus running `encryption_passphrase_command`. The first `get-wal` that unlocks the
//! key starts the agent and hands it the passphrase through a pipe; later calls send it the
//! message's session key packets (a few hundred bytes, never the data) and get the session
//! key back, then decrypt and check the data themselves.
//!
//! Least privilege: the socket lives in `<backup_directory>/key-agent/`, a directory private
//! to walvault's user (checked by both sides), and the agent answers only peers of its own
//! user (`SO_PEERCRED`), who can read the key file and run the passphrase command anyway. It
//! exits `encryption_key_cache_ttl` seconds after its last answer, and at once when the
//! secret key file changes (a rotated key is never served stale). Any trouble with an agent
//! makes the caller decrypt by itself: the agent only ever saves time.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use walvault_core::encryption::openpgp::SessionKey;
use zeroize::Zeroizing;

use crate::config::ServerConfig;

/// What starts a request (and names the protocol's version). The secret key file's identity
/// ([`stamp`], 40 bytes) follows, then the length of the session key packets and the packets.
const MAGIC: &[u8; 6] = b"WVKA2\n";
/// The largest request: session key packets for many recipients, never data.
const MAX_REQUEST: usize = 64 << 10;
/// How long either side waits for the other before giving up (the caller then decrypts
/// itself).
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's directory.
pub fn dir(server: &ServerConfig) -> PathBuf {
    server.backup_directory.join("key-agent")
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("S")
}

/// Whether this server uses an agent: a passphrase command to unlock with, and a TTL.
pub fn enabled(server: &ServerConfig) -> bool {
    server
        .decryption
        .as_ref()
        .is_some_and(|d| d.passphrase_command.is_some() && d.key_cache_ttl > 0)
}

/// Whether `dir` is a directory of this user that no one else may enter.
fn private_dir(dir: &Path) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|m| {
        m.is_dir() && m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o077 == 0
    })
}

/// Asks a running agent for the session key of a message whose session key packets are
/// `packets`. `Ok(None)` when no agent answers (none runs, a stale socket, a directory that
/// is not private, a timeout): the caller decrypts by itself. An error is the agent's
/// definite answer (the message names none of the keys, or its packets are damaged).
pub fn session_key(server: &ServerConfig, packets: &[u8]) -> io::Result<Option<SessionKey>> {
    let dir = dir(server);
    // The agent must hold the very key file this configuration names (another configuration
    // may share the directory, or the file may have been replaced since).
    let Some(stamp) = server
        .decryption
        .as_ref()
        .and_then(|d| stamp(&d.secret_key_file))
    else {
        return Ok(None);
    };
    if packets.len() > MAX_REQUEST || !private_dir(&dir) {
        return Ok(None);
    }
    let Ok(mut stream) = UnixStream::connect(socket(&dir)) else {
        return Ok(None);
    };
    let exchange = |stream: &mut UnixStream| -> io::Result<(u8, Zeroizing<Vec<u8>>)> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut request = Vec::with_capacity(MAGIC.len() + 44 + packets.len());
        request.extend_from_slice(MAGIC);
        request.extend_from_slice(&stamp_bytes(stamp));
        request.extend_from_slice(&(packets.len() as u32).to_be_bytes());
        request.extend_from_slice(packets);
        stream.write_all(&request)?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_REQUEST {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "reply too long"));
        }
        let mut body = Zeroizing::new(vec![0u8; len]);
        stream.read_exact(&mut body)?;
        Ok((head[0], body))
    };
    let Ok((kind, body)) = exchange(&mut stream) else {
        return Ok(None);
    };
    match kind {
        b'K' => SessionKey::from_bytes(&body).map(Some),
        b'P' | b'D' => Err(io::Error::new(
            if kind == b'P' {
                io::ErrorKind::PermissionDenied
            } else {
                io::ErrorKind::InvalidData
            },
            String::from_utf8_lossy(&body).into_owned(),
        )),
        // 'S' (another key file, or it changed and the agent is leaving) or anything else.
        _ => Ok(None),
    }
}

/// Starts an agent for `server` in the background and hands it `passphrase` through a pipe
/// (never an argument or the environment). Best effort: the caller has its plaintext already.
pub fn start(config_path: &Path, server: &ServerConfig, passphrase: &[u8]) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = Command::new(exe);
    command
        .arg("-q")
        .arg(server.config_flag())
        .arg(config_path)
        .args(["key-agent", &server.name])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: PostgreSQL signals the startup process's whole group, and
        // the agent outlives the restore_command call that started it.
        .process_group(0);
    let Ok(mut child) = command.spawn() else {
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(passphrase);
    }
    // Reaps it should it end while this process still runs (a long verify, a daemon).
    std::thread::spawn(move || child.wait());
}

/// The identity of the secret key file: a change (a new key, a rotation) ends the agent.
type Stamp = (u64, u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

fn stamp_bytes((dev, ino, size, mtime, nsec): Stamp) -> [u8; 40] {
    let mut out = [0u8; 40];
    for (i, v) in [dev, ino, size, mtime as u64, nsec as u64]
        .iter()
        .enumerate()
    {
        out[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// Runs the agent (the hidden `walvault key-agent SERVER`): reads the passphrase from its
/// standard input, unlocks the secret keys, and answers until `encryption_key_cache_ttl`
/// seconds pass without a request. Returns at once when another agent already serves, or
/// when the passphrase unlocks nothing.
pub fn serve(server: &ServerConfig) -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    let Some(decryption) = &server.decryption else {
        bail!("[{}] has no encryption_secret_key_file", server.name);
    };
    let ttl = Duration::from_secs(decryption.key_cache_ttl);
    // Stopped (SIGTERM, SIGINT, SIGHUP) at any point, it removes its socket as when its TTL
    // passes: so these are caught before anything else.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let mut passphrase = Zeroizing::new(Vec::new());
    io::stdin()
        .take(MAX_REQUEST as u64)
        .read_to_end(&mut passphrase)
        .context("reading the passphrase")?;
    let dir = dir(server);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    if !private_dir(&dir) {
        bail!(
            "{}: not a directory private to walvault's user (mode 0700)",
            dir.display()
        );
    }
    // One agent per server: the lock is held for the agent's life.
    let Ok(_lock) = crate::lock::LockFile::flock(&dir.join("lock"), false) else {
        return Ok(());
    };
    let key_file = decryption.secret_key_file.clone();
    let stamped = stamp(&key_file);
    let slot = std::sync::Mutex::new(Some(passphrase));
    let decryptor = crate::crypto::decryptor_with(
        server,
        Box::new(move || {
            // Asked once (unlocking every key below); wiped as the closure drops it.
            slot.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .map(|p| p.to_vec())
                .ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "no passphrase"))
        }),
    )?;
    decryptor.unlock_all()?;
    if !decryptor.holds_unlocked_key() {
        return Ok(());
    }
    let path = socket(&dir);
    let _ = fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    // A stop that came while unlocking ends the loop below at once, removing the socket.
    let started = Instant::now();
    let last_use = Arc::new(AtomicU64::new(0));
    {
        let (last_use, stop) = (last_use.clone(), stop.clone());
        std::thread::spawn(move || {
            let me = rustix::process::geteuid();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // Only this user's processes are answered.
                let ours =
                    rustix::net::sockopt::socket_peercred(&stream).is_ok_and(|cred| cred.uid == me);
                if !ours {
                    continue;
                }
                if stamp(&key_file) != stamped {
                    let _ = reply(&mut stream, b'S', b"the secret key file changed");
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
                let _ = answer(&mut stream, &decryptor, stamped);
                last_use.store(started.elapsed().as_millis() as u64, Ordering::SeqCst);
            }
        });
    }
    // A changed key file ends the agent now, not at its next request; so does its socket
    // removed (the directory deleted, an operator's `rm`).
    while !stop.load(Ordering::SeqCst)
        && stamp(&decryption.secret_key_file) == stamped
        && fs::symlink_metadata(&path).is_ok()
    {
        let idle = started
            .elapsed()
            .saturating_sub(Duration::from_millis(last_use.load(Ordering::SeqCst)));
        if idle >= ttl {
            break;
        }
        std::thread::sleep((ttl - idle).min(Duration::from_millis(200)));
    }
    // Gone before the process ends, so no caller waits on a socket nobody answers. The
    // unlocked key goes with the process.
    let _ = fs::remove_file(&path);
    Ok(())
}

/// Reads one request and answers it.
fn answer(
    stream: &mut UnixStream,
    decryptor: &walvault_core::encryption::openpgp::OpenPgpDecryptor,
    key_file: Option<Stamp>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = [0u8; MAGIC.len() + 44];
    stream.read_exact(&mut head)?;
    if &head[..MAGIC.len()] != MAGIC {
        return reply(stream, b'D', b"not a walvault key agent request");
    }
    if key_file.map(stamp_bytes).as_ref().map(|s| &s[..]) != Some(&head[6..46]) {
        return reply(stream, b'S', b"another secret key file");
    }
    let len = u32::from_be_bytes([head[46], head[47], head[48], head[49]]) as usize;
    if len > MAX_REQUEST {
        return reply(stream, b'D', b"request too long");
    }
    let mut packets = vec![0u8; len];
    stream.read_exact(&mut packets)?;
    match decryptor.session_key(&packets) {
        Ok(key) => reply(stream, b'K', &key.to_bytes()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            reply(stream, b'P', e.to_string().as_bytes())
        }
        Err(e) => reply(stream, b'D', e.to_string().as_bytes()),
    }
}

fn reply(stream: &mut UnixStream, kind: u8, body: &[u8]) -> io::Result<()> {
    let mut out = Zeroizing::new(Vec::with_capacity(5 + body.len()));
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    stream.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use walvault_core::encryption::openpgp::OpenPgpDecryptor;

    /// A directory planted as a link, or one others may enter, is no agent's: the caller
    /// decrypts by itself (and `serve` refuses to listen there).
    #[test]
    fn only_a_private_directory_of_this_user_is_trusted() {
        let base = tempfile::tempdir().expect("tempdir");
        let private = base.path().join("private");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .expect("dir");
        assert!(private_dir(&private));
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&private, &link).expect("symlink");
        assert!(!private_dir(&link), "a link is not followed");
        fs::set_permissions(&private, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(!private_dir(&private), "others may enter");
        assert!(!private_dir(&base.path().join("missing")));
    }

    /// Garbage, a request for another key file and an oversized length get an answer that is
    /// no session key, and nothing is read beyond the limit.
    #[test]
    fn malformed_requests_get_no_session_key() {
        let decryptor = OpenPgpDecryptor::new(
            Vec::new(),
            Box::new(|| Err(io::Error::other("no passphrase here"))),
        );
        let stamp = Some((1, 2, 3, 4, 5));
        let ask = |request: Vec<u8>| {
            let (mut ours, mut theirs) = UnixStream::pair().expect("pair");
            ours.write_all(&request).expect("request");
            let _ = answer(&mut theirs, &decryptor, stamp);
            drop(theirs);
            let mut reply = Vec::new();
            let _ = ours.read_to_end(&mut reply);
            reply.first().copied()
        };
        let mut garbage = vec![0u8; MAGIC.len() + 44];
        garbage[..4].copy_from_slice(b"GET ");
        assert_eq!(ask(garbage), Some(b'D'));
        let mut other = MAGIC.to_vec();
        other.extend_from_slice(&stamp_bytes((9, 9, 9, 9, 9)));
        other.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(ask(other), Some(b'S'));
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&stamp_bytes((1, 2, 3, 4, 5)));
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(ask(huge), Some(b'D'));
        let mut junk = MAGIC.to_vec();
        junk.extend_from_slice(&stamp_bytes((1, 2, 3, 4, 5)));
        junk.extend_from_slice(&4u32.to_be_bytes());
        junk.extend_from_slice(b"\xff\xff\xff\xff");
        assert_ne!(ask(junk), Some(b'K'));
    }
}
