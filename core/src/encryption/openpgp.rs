//! OpenPGP encryption of archived copies, in the format `gpg` writes and Barman's
//! `encryption = gpg` reads: public-key encrypted session keys (one per recipient) and a
//! symmetrically encrypted, integrity-protected data packet (SEIPD v1, AES-256, with the
//! modification detection code every OpenPGP implementation checks) holding one literal data
//! packet. Pure Rust (rPGP), so the WASI guest encrypts with the same code. Archiving needs
//! only public keys; the secret key and its passphrase are needed to read copies back
//! (docs/barman-behaviours.md#B-CHANGE-20).
//!
//! No I/O: key files arrive as bytes, randomness and the passphrase through functions the
//! host supplies, and the literal packet carries no file name and a zero date (so nothing
//! about the source leaks and no clock is read).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use pgp::composed::PlainSessionKey;
use pgp::composed::{Deserializable, Message, MessageBuilder};
/// The key types the parsers return (rPGP's).
pub use pgp::composed::{SignedPublicKey, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{PublicSubkey, SecretKey, SecretSubkey, SignatureType};
use pgp::types::{
    DecryptionKey, EskType, KeyDetails, KeyVersion, Password, PlainSecretParams, S2kParams,
    SecretParams, StringToKey,
};
use rand_core::CryptoRngCore;
use sha2::Digest as _;

use super::{Decrypt, Encrypt, PKESK, PacketHeader, looks_like_openpgp, packet_header};

/// The catalogue's name for this encryption, as Barman writes it.
pub const SCHEME: &str = "gpg";

/// A problem with a configured key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The bytes are not an OpenPGP key (armored or binary).
    #[error("{origin}: not an OpenPGP {kind} key: {error}")]
    Unreadable {
        /// Where the bytes came from (a file name).
        origin: String,
        /// `public` or `secret`.
        kind: &'static str,
        /// The parser's explanation.
        error: String,
    },
    /// The bytes hold no key.
    #[error("{origin}: holds no OpenPGP {kind} key")]
    Empty {
        /// Where the bytes came from.
        origin: String,
        /// `public` or `secret`.
        kind: &'static str,
    },
    /// The key's self-signatures do not verify: it may have been tampered with.
    #[error("{origin}: key {fingerprint}: its self-signatures do not verify: {error}")]
    BadSignatures {
        /// Where the bytes came from.
        origin: String,
        /// The primary key's fingerprint.
        fingerprint: String,
        /// The verifier's explanation.
        error: String,
    },
    /// No (sub)key of the certificate may encrypt now (none flagged for encryption, or all
    /// expired or revoked).
    #[error(
        "{origin}: key {fingerprint} has no usable encryption key (expired, revoked, or not for encryption)"
    )]
    NoEncryptionKey {
        /// Where the bytes came from.
        origin: String,
        /// The primary key's fingerprint.
        fingerprint: String,
    },
    /// No configured key ID matched a key of the keyring.
    #[error("{origin}: no key with ID {id}")]
    NoSuchKey {
        /// The keyring.
        origin: String,
        /// The ID asked for.
        id: String,
    },
}

/// Upper-case hex, as gpg prints fingerprints and key IDs.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn parse_error(origin: &str, kind: &'static str, e: impl fmt::Display) -> KeyError {
    KeyError::Unreadable {
        origin: origin.to_owned(),
        kind,
        error: e.to_string(),
    }
}

/// The armored blocks of a key file, each on its own (rPGP reads one armored block per
/// call); binary data whole.
fn blocks(bytes: &[u8]) -> Vec<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN PGP ";
    const END: &[u8] = b"-----END PGP ";
    let find = |from: usize, what: &[u8]| {
        bytes[from..]
            .windows(what.len())
            .position(|w| w == what)
            .map(|p| p + from)
    };
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = find(at, BEGIN) {
        let Some(end) = find(start, END) else {
            out.push(&bytes[start..]);
            return out;
        };
        // The end line runs to its newline.
        let stop = bytes[end..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |p| end + p + 1);
        out.push(&bytes[start..stop]);
        at = stop;
    }
    if out.is_empty() {
        out.push(bytes);
    }
    out
}

/// Every key of type `K` in an armored or binary key file (several armored blocks one after
/// another too), each with its self-signatures verified by `verify`.
fn parse_keys<K: Deserializable>(
    origin: &str,
    kind: &'static str,
    bytes: &[u8],
    verify: impl Fn(&K) -> Result<(), KeyError>,
) -> Result<Vec<K>, KeyError> {
    let mut out = Vec::new();
    for block in blocks(bytes) {
        let (parsed, _) = K::from_reader_many(block).map_err(|e| parse_error(origin, kind, e))?;
        for key in parsed {
            let key = key.map_err(|e| parse_error(origin, kind, e))?;
            verify(&key)?;
            out.push(key);
        }
    }
    if out.is_empty() {
        return Err(KeyError::Empty {
            origin: origin.to_owned(),
            kind,
        });
    }
    Ok(out)
}

/// Every public key (certificate) in an armored or binary key file or keyring (several
/// armored blocks one after another too), each with its self-signatures verified.
pub fn parse_public_keys(origin: &str, bytes: &[u8]) -> Result<Vec<SignedPublicKey>, KeyError> {
    parse_keys(origin, "public", bytes, |k: &SignedPublicKey| {
        k.verify_bindings()
            .map_err(|e| bad_signatures(origin, k.fingerprint().as_bytes(), e))
    })
}

/// Every secret key in an armored or binary file (`gpg --export-secret-keys`, several
/// armored blocks one after another too), verified. One passphrase opens them all: the one
/// `encryption_passphrase_command` prints (a key without protection needs none).
pub fn parse_secret_keys(origin: &str, bytes: &[u8]) -> Result<Vec<SignedSecretKey>, KeyError> {
    parse_keys(origin, "secret", bytes, |k: &SignedSecretKey| {
        k.verify_bindings()
            .map_err(|e| bad_signatures(origin, k.fingerprint().as_bytes(), e))
    })
}

fn bad_signatures(origin: &str, fingerprint: &[u8], e: pgp::errors::Error) -> KeyError {
    KeyError::BadSignatures {
        origin: origin.to_owned(),
        fingerprint: hex(fingerprint),
        error: e.to_string(),
    }
}

/// Whether `id` names `key` or one of its subkeys, as Barman's `encryption_key_id` (handed
/// to `gpg --recipient`) does: hex, any case, optionally `0x`-prefixed (a 16-digit key ID, its
/// last 8 digits, or a 40/64-digit fingerprint), else an e-mail address or name found in one
/// of the key's user IDs, any case.
pub fn key_matches(key: &SignedPublicKey, id: &str) -> bool {
    let text = id
        .trim()
        .trim_matches(|c| c == '<' || c == '>')
        .to_lowercase();
    if !text.is_empty()
        && !text
            .trim_start_matches("0x")
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
    {
        return key.details.users.iter().any(|u| {
            String::from_utf8_lossy(u.id.id())
                .to_lowercase()
                .contains(&text)
        });
    }
    let id = id.trim().trim_start_matches("0x").to_ascii_uppercase();
    let names = |fingerprint: &[u8], key_id: &[u8]| {
        let (f, k) = (hex(fingerprint), hex(key_id));
        !id.is_empty() && (f == id || k == id || (id.len() == 8 && k.ends_with(&id)))
    };
    names(key.fingerprint().as_bytes(), key.legacy_key_id().as_ref())
        || key.public_subkeys.iter().any(|s| {
            names(
                s.key.fingerprint().as_bytes(),
                s.key.legacy_key_id().as_ref(),
            )
        })
}

/// The key IDs of a certificate's primary key and every subkey: a copy encrypted to any of
/// them is one this certificate's owner can open.
pub fn cert_key_ids(cert: &SignedPublicKey) -> Vec<[u8; 8]> {
    std::iter::once(key_id_bytes(cert.legacy_key_id().as_ref()))
        .chain(
            cert.public_subkeys
                .iter()
                .map(|s| key_id_bytes(s.key.legacy_key_id().as_ref())),
        )
        .collect()
}

/// One recipient: a certificate and the (sub)key of it that encrypts.
#[derive(Clone)]
pub struct Recipient {
    /// The primary key's fingerprint (upper-case hex): how `check` and the README name it.
    pub fingerprint: String,
    /// The ID of the key the session key is encrypted to.
    pub key_id: [u8; 8],
    rsa: bool,
    key: EncryptingKey,
}

#[derive(Clone)]
enum EncryptingKey {
    Primary(pgp::packet::PublicKey),
    Subkey(PublicSubkey),
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recipient")
            .field("fingerprint", &self.fingerprint)
            .field("key_id", &hex(&self.key_id))
            .finish()
    }
}

impl Recipient {
    /// The certificate's newest subkey that may encrypt at `now_unix` (flagged for encryption,
    /// not revoked, not expired), as gpg picks it; else its primary key when that may.
    pub fn of(origin: &str, cert: &SignedPublicKey, now_unix: u64) -> Result<Self, KeyError> {
        let fingerprint = hex(cert.fingerprint().as_bytes());
        let expired = |created: u64, sigs: &[pgp::packet::Signature]| {
            sigs.iter()
                .filter_map(pgp::packet::Signature::key_expiration_time)
                .any(|d| {
                    d.as_secs() > 0 && created.saturating_add(u64::from(d.as_secs())) <= now_unix
                })
        };
        let subkey = cert
            .public_subkeys
            .iter()
            .filter(|s| s.key.algorithm().can_encrypt())
            .filter(|s| {
                let binding = s
                    .signatures
                    .iter()
                    .filter(|sig| sig.typ() == Some(SignatureType::SubkeyBinding));
                let revoked = s
                    .signatures
                    .iter()
                    .any(|sig| sig.typ() == Some(SignatureType::SubkeyRevocation));
                let flagged = binding.clone().any(|sig| {
                    let flags = sig.key_flags();
                    flags.encrypt_comms() || flags.encrypt_storage()
                });
                let created = u64::from(s.key.created_at().as_secs());
                flagged && !revoked && !expired(created, &s.signatures)
            })
            .max_by_key(|s| s.key.created_at().as_secs());
        if let Some(s) = subkey {
            return Ok(Recipient {
                fingerprint,
                key_id: key_id_bytes(s.key.legacy_key_id().as_ref()),
                rsa: is_rsa(s.key.algorithm()),
                key: EncryptingKey::Subkey(s.key.clone()),
            });
        }
        let primary = &cert.primary_key;
        let revoked = !cert.details.revocation_signatures.is_empty();
        let created = u64::from(primary.created_at().as_secs());
        let self_sigs: Vec<_> = cert
            .details
            .users
            .iter()
            .flat_map(|u| u.signatures.iter().cloned())
            .collect();
        if primary.algorithm().can_encrypt() && !revoked && !expired(created, &self_sigs) {
            return Ok(Recipient {
                fingerprint,
                key_id: key_id_bytes(primary.legacy_key_id().as_ref()),
                rsa: is_rsa(primary.algorithm()),
                key: EncryptingKey::Primary(primary.clone()),
            });
        }
        Err(KeyError::NoEncryptionKey {
            origin: origin.to_owned(),
            fingerprint,
        })
    }
}

fn is_rsa(algorithm: pgp::crypto::public_key::PublicKeyAlgorithm) -> bool {
    use pgp::crypto::public_key::PublicKeyAlgorithm as A;
    matches!(algorithm, A::RSA | A::RSAEncrypt)
}

fn key_id_bytes(id: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    let n = id.len().min(8);
    out[..n].copy_from_slice(&id[..n]);
    out
}

/// Fresh randomness for one message (the host's operating-system generator).
pub type RngSource = Box<dyn Fn() -> Box<dyn CryptoRngCore> + Send + Sync>;

/// Encrypts to every configured recipient: any one of their secret keys opens the copy.
pub struct OpenPgpEncryptor {
    recipients: Vec<Recipient>,
    rng: RngSource,
}

impl fmt::Debug for OpenPgpEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenPgpEncryptor")
            .field("recipients", &self.recipients)
            .finish_non_exhaustive()
    }
}

impl OpenPgpEncryptor {
    /// An encryptor for at least one recipient. RSA recipients go first: Barman recognises
    /// an encrypted file only when its first session key is RSA's (see
    /// [`OldFormatSessionKeys`]).
    pub fn new(mut recipients: Vec<Recipient>, rng: RngSource) -> Option<Self> {
        recipients.sort_by_key(|r| !r.rsa);
        (!recipients.is_empty()).then_some(OpenPgpEncryptor { recipients, rng })
    }

    /// The recipients: RSA ones first, otherwise in configuration order.
    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }
}

/// Makes a rPGP error an I/O error, keeping an I/O error's own kind (the source's failure
/// must stay recognisable as such).
fn to_io(e: pgp::errors::Error) -> io::Error {
    match e {
        pgp::errors::Error::IO { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

impl Encrypt for OpenPgpEncryptor {
    fn name(&self) -> &str {
        SCHEME
    }

    fn encrypt(&self, plaintext: &mut dyn Read, out: &mut dyn Write) -> io::Result<()> {
        let mut rng = (self.rng)();
        let mut builder = MessageBuilder::from_reader("", plaintext)
            .seipd_v1(&mut *rng, SymmetricKeyAlgorithm::AES256);
        for r in &self.recipients {
            match &r.key {
                EncryptingKey::Primary(k) => builder.encrypt_to_key(&mut *rng, k),
                EncryptingKey::Subkey(k) => builder.encrypt_to_key(&mut *rng, k),
            }
            .map_err(to_io)?;
        }
        let mut out = OldFormatSessionKeys::new(out);
        builder.to_writer(&mut *rng, &mut out).map_err(to_io)?;
        out.finish()
    }
}

/// Rewrites the message's leading public-key encrypted session key packets from the new
/// packet format rPGP writes to the old format gpg writes (`0x85` and a two-octet length;
/// RFC 9580 section 4.2 allows both for this packet, byte for byte the same body). Barman
/// decides whether an archived file is encrypted from `file --brief`, whose magic knows only
/// that header: with the new one Barman's get-wal would hand the ciphertext to PostgreSQL
/// (docs/barman-behaviours.md#B-CHANGE-20). Everything after the session keys passes through.
struct OldFormatSessionKeys<'w> {
    out: &'w mut dyn Write,
    /// Header bytes seen but not yet written (at most six).
    header: Vec<u8>,
    /// Body bytes of the current session key packet still to pass.
    body_left: usize,
    passthrough: bool,
}

impl<'w> OldFormatSessionKeys<'w> {
    fn new(out: &'w mut dyn Write) -> Self {
        OldFormatSessionKeys {
            out,
            header: Vec::with_capacity(6),
            body_left: 0,
            passthrough: false,
        }
    }

    /// Decides on a complete header in `self.header`: `Some(body length)` once it was written
    /// (rewritten or not), `None` while more header bytes are needed.
    fn decide(&mut self) -> io::Result<Option<usize>> {
        match packet_header(&self.header) {
            PacketHeader::Incomplete => Ok(None),
            // A new-format session key packet (a definite length: partial ones are data's).
            PacketHeader::Packet {
                tag: PKESK,
                new_format: true,
                body_len: Some(body),
                ..
            } if body <= 0xFFFF => {
                // Old format, tag 1, length type 1 (two octets).
                let b = (body as u16).to_be_bytes();
                self.out.write_all(&[0x85, b[0], b[1]])?;
                self.header.clear();
                Ok(Some(body))
            }
            // Old format already, or the data packet: the session keys are over.
            _ => {
                self.out.write_all(&self.header)?;
                self.header.clear();
                self.passthrough = true;
                Ok(Some(0))
            }
        }
    }

    fn finish(self) -> io::Result<()> {
        if !self.header.is_empty() {
            self.out.write_all(&self.header)?;
        }
        self.out.flush()
    }
}

impl Write for OldFormatSessionKeys<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut used = 0;
        while used < buf.len() {
            if self.passthrough {
                self.out.write_all(&buf[used..])?;
                return Ok(buf.len());
            }
            if self.body_left > 0 {
                let n = self.body_left.min(buf.len() - used);
                self.out.write_all(&buf[used..used + n])?;
                self.body_left -= n;
                used += n;
                continue;
            }
            self.header.push(buf[used]);
            used += 1;
            if let Some(body) = self.decide()? {
                self.body_left = body;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The passphrase of the secret keys, from the host (Barman's
/// `encryption_passphrase_command`); asked once, when a copy first needs opening.
pub type PassphraseSource = Box<dyn Fn() -> io::Result<Vec<u8>> + Send + Sync>;

/// Opens copies encrypted to any of its secret keys.
pub struct OpenPgpDecryptor {
    keys: Vec<SignedSecretKey>,
    passphrase: PassphraseSource,
    /// What has been unlocked, held until the decryptor is dropped (the end of the command).
    unlocking: Mutex<Unlocking>,
}

impl fmt::Debug for OpenPgpDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprints: Vec<_> = self
            .keys
            .iter()
            .map(|k| hex(k.fingerprint().as_bytes()))
            .collect();
        f.debug_struct("OpenPgpDecryptor")
            .field("keys", &fingerprints)
            .finish_non_exhaustive()
    }
}

impl OpenPgpDecryptor {
    /// A decryptor with these secret keys; `passphrase` is called only if one is protected.
    pub fn new(keys: Vec<SignedSecretKey>, passphrase: PassphraseSource) -> Self {
        let unlocking = Mutex::new(Unlocking {
            keys: Arc::new(keys.clone()),
            password: None,
            tried: std::collections::BTreeSet::new(),
        });
        OpenPgpDecryptor {
            keys,
            passphrase,
            unlocking,
        }
    }

    /// The key IDs of the secret keys and their subkeys.
    pub fn key_ids(&self) -> Vec<[u8; 8]> {
        self.keys
            .iter()
            .flat_map(components)
            .map(|(id, _)| id)
            .collect()
    }

    /// The secret keys with those (sub)keys unlocked that `recipients` name (all when it
    /// names none), each once per decryptor: the passphrase is asked for and a key's
    /// string-to-key derivation run (gpg calibrates it to cost ~100 ms on purpose) the first
    /// time a copy needs that key only, as gpg-agent keeps keys unlocked, instead of for
    /// every copy opened. A key the passphrase does not open stays locked and is not tried
    /// again (its copies fail with "wrong passphrase").
    fn keys_for(&self, recipients: &[[u8; 8]]) -> io::Result<Arc<Vec<SignedSecretKey>>> {
        let mut state = self
            .unlocking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let wanted = |id: [u8; 8], state: &Unlocking| {
            (recipients.is_empty() || recipients.contains(&id)) && !state.tried.contains(&id)
        };
        let locked: Vec<[u8; 8]> = state
            .keys
            .iter()
            .flat_map(components)
            .filter(|&(id, encrypted)| encrypted && wanted(id, &state))
            .map(|(id, _)| id)
            .collect();
        if locked.is_empty() {
            return Ok(state.keys.clone());
        }
        if state.password.is_none() {
            let mut bytes = (self.passphrase)()?;
            // A command's output ends with a newline that is not part of the passphrase.
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            state.password = Some(Password::from(bytes.as_slice()));
            bytes.fill(0);
        }
        let mut keys = (*state.keys).clone();
        if let Some(password) = &state.password {
            for key in &mut keys {
                // A key the passphrase does not open stays locked (reported at decryption).
                if locked.contains(&key_id_bytes(key.legacy_key_id().as_ref())) {
                    let _ = unlock_primary(&mut key.primary_key, password);
                }
                for sub in &mut key.secret_subkeys {
                    if locked.contains(&key_id_bytes(sub.key.legacy_key_id().as_ref())) {
                        let _ = unlock_subkey(&mut sub.key, password);
                    }
                }
            }
        }
        state.tried.extend(locked);
        state.keys = Arc::new(keys);
        Ok(state.keys.clone())
    }

    /// Whether a key has been unlocked (or tried) by a decryption.
    pub fn is_unlocked(&self) -> bool {
        !self
            .unlocking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tried
            .is_empty()
    }
}

/// Removes the passphrase protection of a primary key, as rPGP's `remove_password` does.
fn unlock_primary(key: &mut SecretKey, password: &Password) -> pgp::errors::Result<()> {
    match fast_unlock(key.secret_params(), key.public_key(), password).plain()? {
        Some(plain) => *key = SecretKey::new(key.public_key().clone(), plain)?,
        None => key.remove_password(password)?,
    }
    Ok(())
}

/// Removes the passphrase protection of a subkey, as rPGP's `remove_password` does.
fn unlock_subkey(key: &mut SecretSubkey, password: &Password) -> pgp::errors::Result<()> {
    match fast_unlock(key.secret_params(), key.public_key(), password).plain()? {
        Some(plain) => *key = SecretSubkey::new(key.public_key().clone(), plain)?,
        None => key.remove_password(password)?,
    }
    Ok(())
}

impl FastUnlock {
    /// The plain secret parameters, `None` when rPGP must unlock it, an error for a wrong
    /// passphrase (what rPGP reports for a key it cannot use).
    fn plain(self) -> pgp::errors::Result<Option<SecretParams>> {
        match self {
            FastUnlock::Unlocked(plain) => Ok(Some(SecretParams::Plain(*plain))),
            FastUnlock::WrongPassphrase => Err(pgp::errors::Error::MissingKey),
            FastUnlock::NotApplicable => Ok(None),
        }
    }
}

/// What [`fast_unlock`] made of a key's protection.
enum FastUnlock {
    /// The secret material, in plain (boxed: it is large and the other cases are empty).
    Unlocked(Box<PlainSecretParams>),
    /// The protection is gpg's, but the passphrase does not open it (the checksum fails).
    WrongPassphrase,
    /// Not gpg's usual protection: rPGP's own unlocking applies.
    NotApplicable,
}

/// Unlocks the protection gpg gives every v4 secret key (S2K usage 254: CFB with a SHA-1
/// checksum, iterated-and-salted S2K), deriving the key with SHA-NI where the CPU has it.
///
/// Why not rPGP's own `remove_password`: it hashes the 65 MB the S2K count asks for (gpg's
/// default) with collision-detecting SHA-1 in 24-byte updates, about 0.23 s here, and every
/// `restore_command` call is a new process that pays it. Collision detection guards
/// signatures against crafted inputs and does nothing for a key derivation; the digest is the
/// same. Anything else (v6 keys, AEAD, Argon2, other hashes) goes to rPGP.
fn fast_unlock(
    params: &SecretParams,
    details: &impl KeyDetails,
    password: &Password,
) -> FastUnlock {
    let SecretParams::Encrypted(encrypted) = params else {
        return FastUnlock::NotApplicable;
    };
    let S2kParams::Cfb {
        sym_alg,
        s2k:
            StringToKey::IteratedAndSalted {
                hash_alg,
                salt,
                count,
            },
        iv,
    } = encrypted.string_to_key_params()
    else {
        return FastUnlock::NotApplicable;
    };
    if details.version() != KeyVersion::V4 {
        return FastUnlock::NotApplicable;
    }
    let passphrase = password.read();
    let key_size = sym_alg.key_size();
    let key = match hash_alg {
        HashAlgorithm::Sha1 => {
            iterated_salted_s2k::<sha1::Sha1>(salt, &passphrase, *count, key_size)
        }
        HashAlgorithm::Sha224 => {
            iterated_salted_s2k::<sha2::Sha224>(salt, &passphrase, *count, key_size)
        }
        HashAlgorithm::Sha256 => {
            iterated_salted_s2k::<sha2::Sha256>(salt, &passphrase, *count, key_size)
        }
        HashAlgorithm::Sha384 => {
            iterated_salted_s2k::<sha2::Sha384>(salt, &passphrase, *count, key_size)
        }
        HashAlgorithm::Sha512 => {
            iterated_salted_s2k::<sha2::Sha512>(salt, &passphrase, *count, key_size)
        }
        _ => return FastUnlock::NotApplicable,
    };
    let mut plaintext = zeroize::Zeroizing::new(encrypted.data().to_vec());
    if sym_alg
        .decrypt_with_iv_regular(&key, iv, &mut plaintext)
        .is_err()
    {
        return FastUnlock::NotApplicable;
    }
    // The last 20 bytes are the SHA-1 of the secret material: a wrong passphrase fails here.
    let Some(split) = plaintext.len().checked_sub(20) else {
        return FastUnlock::WrongPassphrase;
    };
    let (material, checksum) = plaintext.split_at(split);
    if sha1::Sha1::digest(material).as_slice() != checksum {
        return FastUnlock::WrongPassphrase;
    }
    match PlainSecretParams::try_from_reader_no_checksum(
        material,
        details.version(),
        details.algorithm(),
        details.public_params(),
    ) {
        Ok(plain) => FastUnlock::Unlocked(Box::new(plain)),
        Err(_) => FastUnlock::WrongPassphrase,
    }
}

/// OpenPGP's iterated-and-salted string-to-key (RFC 9580, 3.7.1.3): the hash of `salt ||
/// passphrase` repeated to the decoded count of bytes, once per digest the key needs (the
/// n-th prefixed with n zero bytes). The repetition is fed in 64 KiB blocks, so the hash runs
/// at its block speed.
fn iterated_salted_s2k<D: sha2::Digest>(
    salt: &[u8; 8],
    passphrase: &[u8],
    coded_count: u8,
    key_size: usize,
) -> zeroize::Zeroizing<Vec<u8>> {
    let count = (16usize + usize::from(coded_count & 15)) << (usize::from(coded_count >> 4) + 6);
    let period = salt.len() + passphrase.len();
    // At least one whole `salt || passphrase`, even when the count is smaller.
    let total = count.max(period);
    let periods = ((64 << 10) / period).max(1);
    let mut block = zeroize::Zeroizing::new(Vec::with_capacity(periods * period));
    for _ in 0..periods {
        block.extend_from_slice(salt);
        block.extend_from_slice(passphrase);
    }
    let digest_size = <D as sha2::Digest>::output_size();
    let mut key = zeroize::Zeroizing::new(Vec::with_capacity(key_size + digest_size));
    let mut round = 0;
    while key.len() < key_size {
        let mut hasher = D::new();
        hasher.update(vec![0u8; round]);
        // The block holds whole periods, so each chunk starts where the stream does.
        let mut left = total;
        while left > 0 {
            let n = left.min(block.len());
            hasher.update(&block[..n]);
            left -= n;
        }
        key.extend_from_slice(hasher.finalize().as_slice());
        round += 1;
    }
    key.truncate(key_size);
    key
}

/// The key ID of a secret key's primary key and of each subkey, with whether its secret
/// material is still locked.
fn components(key: &SignedSecretKey) -> impl Iterator<Item = ([u8; 8], bool)> + '_ {
    let primary = (
        key_id_bytes(key.legacy_key_id().as_ref()),
        key.primary_key.secret_params().is_encrypted(),
    );
    std::iter::once(primary).chain(key.secret_subkeys.iter().map(|s| {
        (
            key_id_bytes(s.key.legacy_key_id().as_ref()),
            s.key.secret_params().is_encrypted(),
        )
    }))
}

/// What a decryptor has unlocked so far.
struct Unlocking {
    /// The keys, with what was unlocked so far in plain (rPGP wipes secret material on drop).
    keys: Arc<Vec<SignedSecretKey>>,
    /// The passphrase, once asked for (kept until the decryptor is dropped, then wiped).
    password: Option<Password>,
    /// The (sub)keys an unlock was tried for.
    tried: std::collections::BTreeSet<[u8; 8]>,
}

/// The ciphertext as rPGP reads it (buffered; its own `Debug` since the reader has none).
struct Ciphertext<'a>(BufReader<Box<dyn Read + Send + 'a>>);

impl fmt::Debug for Ciphertext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ciphertext")
    }
}

impl Read for Ciphertext<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl BufRead for Ciphertext<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.0.consume(amt);
    }
}

/// The plaintext of a decrypted message. rPGP checks the modification detection code when
/// the data ends; this reader also turns its errors into `InvalidData`, so a tampered or
/// truncated copy is a corrupt copy, never a short one.
struct Plaintext<'a>(Message<'a>);

impl Read for Plaintext<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                e
            } else {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("OpenPGP data does not check out (tampered or truncated): {e}"),
                )
            }
        })
    }
}

impl Decrypt for OpenPgpDecryptor {
    fn name(&self) -> &str {
        SCHEME
    }

    fn detect(&self, prefix: &[u8]) -> bool {
        looks_like_openpgp(prefix)
    }

    fn decrypt<'a>(
        &self,
        ciphertext: Box<dyn Read + Send + 'a>,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        let invalid = |what: &str, e: pgp::errors::Error| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
        };
        let mut ciphertext = Ciphertext(BufReader::with_capacity(64 << 10, ciphertext));
        let recipients = super::openpgp_recipients(ciphertext.fill_buf()?).unwrap_or_default();
        let message = Message::from_bytes(ciphertext)
            .map_err(|e| invalid("not a readable OpenPGP message", e))?;
        if !message.is_encrypted() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an OpenPGP message that is not encrypted",
            ));
        }
        let keys = self.keys_for(&recipients)?;
        let message = message
            .decrypt_with_keys(vec![&Password::empty()], keys.iter().collect())
            .map_err(|e| match e {
                // rPGP reports a key it could not unlock as no key at all.
                pgp::errors::Error::MissingKey => self.no_key(&recipients),
                other => invalid("cannot decrypt (damaged or tampered copy)", other),
            })?;
        plaintext(message)
    }
}

impl OpenPgpDecryptor {
    /// Why none of the keys opened a message naming `recipients`: none of them is ours, or
    /// ours stayed locked.
    fn no_key(&self, recipients: &[[u8; 8]]) -> io::Error {
        let ours = self.key_ids();
        let names = |ids: &[[u8; 8]]| ids.iter().map(|id| hex(id)).collect::<Vec<_>>().join(", ");
        let matching: Vec<_> = recipients
            .iter()
            .copied()
            .filter(|id| ours.contains(id))
            .collect();
        let message = if matching.is_empty() {
            format!(
                "encrypted to none of the configured secret keys (it names key {})",
                if recipients.is_empty() {
                    "IDs that are hidden".to_owned()
                } else {
                    names(recipients)
                }
            )
        } else {
            format!(
                "cannot unlock secret key {}: wrong passphrase",
                names(&matching)
            )
        };
        io::Error::new(io::ErrorKind::PermissionDenied, message)
    }

    /// Unlocks every secret key the passphrase opens now (a key agent does this once, before
    /// it serves). Fails only if the passphrase cannot be had.
    pub fn unlock_all(&self) -> io::Result<()> {
        self.keys_for(&[]).map(drop)
    }

    /// Whether some secret key is unlocked in memory (so a key agent has something to serve).
    pub fn holds_unlocked_key(&self) -> bool {
        let state = self
            .unlocking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // More (sub)keys open now than were loaded open.
        let open = |keys: &[SignedSecretKey]| {
            keys.iter()
                .flat_map(components)
                .filter(|(_, locked)| !locked)
                .count()
        };
        open(&state.keys) > open(&self.keys)
    }

    /// The session key of a message from its session key packets alone (the first
    /// [`session_key_packets_len`](super::session_key_packets_len) bytes): what a key agent
    /// answers, so the data itself never passes through it. Errors as [`Decrypt::decrypt`]'s.
    pub fn session_key(&self, packets: &[u8]) -> io::Result<SessionKey> {
        let mut pkesks = Vec::new();
        for packet in pgp::packet::PacketParser::new(packets) {
            let packet = packet.map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a readable OpenPGP session key packet: {e}"),
                )
            })?;
            if let pgp::packet::Packet::PublicKeyEncryptedSessionKey(pkesk) = packet {
                pkesks.push(pkesk);
            }
        }
        // Zero ("anonymous") IDs name no key, as in `openpgp_recipients`.
        let recipients: Vec<[u8; 8]> = pkesks
            .iter()
            .filter_map(|p| p.id().ok())
            .map(|id| key_id_bytes(id.as_ref()))
            .filter(|id| *id != [0; 8])
            .collect();
        let keys = self.keys_for(&recipients)?;
        for pkesk in &pkesks {
            let Ok(values) = pkesk.values() else {
                continue;
            };
            // The outer error is a key still locked; the inner one a session key that does
            // not decrypt (another recipient's, or damaged).
            for key in keys.iter() {
                let found = pkesk
                    .match_identity(&key.primary_key)
                    .then(|| {
                        key.primary_key
                            .decrypt(&Password::empty(), values, EskType::V3_4)
                    })
                    .and_then(|r| r.ok()?.ok())
                    .or_else(|| {
                        key.secret_subkeys.iter().find_map(|sub| {
                            pkesk
                                .match_identity(&sub.key)
                                .then(|| sub.key.decrypt(&Password::empty(), values, EskType::V3_4))
                                .and_then(|r| r.ok()?.ok())
                        })
                    });
                if let Some(found) = found {
                    return SessionKey::checked(found);
                }
            }
        }
        Err(self.no_key(&recipients))
    }
}

/// The session key of one message, held by a key agent's client for as long as it reads
/// the message (wiped on drop).
pub struct SessionKey(PlainSessionKey);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// Only the session keys SEIPD v1 messages use (what gpg and walvault write).
    fn checked(key: PlainSessionKey) -> io::Result<Self> {
        match key {
            PlainSessionKey::V3_4 { .. } => Ok(SessionKey(key)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an OpenPGP session key of the v3/v4 kind gpg writes",
            )),
        }
    }

    /// The wire form: the symmetric algorithm's ID, then the key.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::new());
        if let PlainSessionKey::V3_4 { sym_alg, key } = &self.0 {
            out.push(u8::from(*sym_alg));
            out.extend_from_slice(key.as_ref());
        }
        out
    }

    /// Reads [`SessionKey::to_bytes`]'s form back; the key must fit its algorithm.
    pub fn from_bytes(bytes: &[u8]) -> io::Result<Self> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "not a session key");
        let (&alg, key) = bytes.split_first().ok_or_else(bad)?;
        let sym_alg = SymmetricKeyAlgorithm::from(alg);
        if sym_alg.key_size() == 0 || key.len() != sym_alg.key_size() {
            return Err(bad());
        }
        Ok(SessionKey(PlainSessionKey::V3_4 {
            sym_alg,
            key: key.into(),
        }))
    }
}

/// Opens a message with its session key (from a key agent): the data is decrypted and its
/// modification detection code checked here, as [`Decrypt::decrypt`] does.
pub fn open_with_session_key<'a>(
    ciphertext: Box<dyn Read + Send + 'a>,
    key: SessionKey,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    let invalid = |what: &str, e: pgp::errors::Error| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    let ciphertext = Ciphertext(BufReader::with_capacity(64 << 10, ciphertext));
    let message = Message::from_bytes(ciphertext)
        .map_err(|e| invalid("not a readable OpenPGP message", e))?;
    if !message.is_encrypted() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "an OpenPGP message that is not encrypted",
        ));
    }
    let message = message.decrypt_with_session_key(key.0).map_err(|e| {
        invalid(
            "cannot decrypt (damaged or tampered copy, or a wrong session key)",
            e,
        )
    })?;
    plaintext(message)
}

/// The plaintext of a decrypted message. gpg compresses before encrypting unless told not
/// to (Barman's copies may carry a compressed data packet).
fn plaintext(mut message: Message<'_>) -> io::Result<Box<dyn Read + Send + '_>> {
    if message.is_compressed() {
        message = message.decompress().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("OpenPGP compressed data: {e}"),
            )
        })?;
    }
    Ok(Box::new(Plaintext(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = include_bytes!("../../tests/data/openpgp/a.sec.asc");
    const C: &[u8] = include_bytes!("../../tests/data/openpgp/c.sec.asc");

    fn key(bytes: &[u8]) -> SignedSecretKey {
        parse_secret_keys("test", bytes)
            .expect("test key parses")
            .remove(0)
    }

    /// gpg's protection (AES-128, SHA-1, count 65011712): the fast derivation opens it as
    /// rPGP does, and a wrong passphrase leaves it locked.
    #[test]
    fn gpg_protected_key_unlocks_exactly_as_rpgp_unlocks_it() {
        let locked = key(A).primary_key;
        let right = Password::from("walvault-test-a");
        let mut reference = locked.clone();
        reference.remove_password(&right).expect("rPGP unlocks");
        assert!(matches!(
            fast_unlock(locked.secret_params(), locked.public_key(), &right),
            FastUnlock::Unlocked(_)
        ));
        let mut fast = locked.clone();
        unlock_primary(&mut fast, &right).expect("unlocks");
        assert_eq!(fast.secret_params(), reference.secret_params());
        assert!(!fast.secret_params().is_encrypted());

        let mut wrong = locked.clone();
        assert!(unlock_primary(&mut wrong, &Password::from("walvault-test-b")).is_err());
        assert!(wrong.secret_params().is_encrypted());
    }

    /// Other hashes, counts below one `salt || passphrase`, and protections the fast path
    /// leaves to rPGP all end in the same secret material.
    #[test]
    fn other_protections_unlock_as_rpgp_unlocks_them() {
        let plain = key(C).secret_subkeys.remove(0).key;
        assert!(matches!(
            fast_unlock(
                plain.secret_params(),
                plain.public_key(),
                &Password::empty()
            ),
            FastUnlock::NotApplicable
        ));
        let long = "p".repeat(2000);
        let cases = [
            (HashAlgorithm::Sha256, 96, "short", true),
            (HashAlgorithm::Sha512, 0, long.as_str(), true),
            (HashAlgorithm::Sha384, 17, "", true),
            (HashAlgorithm::Sha3_256, 96, "short", false),
        ];
        for (hash_alg, count, passphrase, fast) in cases {
            let password = Password::from(passphrase);
            let mut locked = plain.clone();
            locked
                .set_password_with_s2k(
                    &password,
                    S2kParams::Cfb {
                        sym_alg: SymmetricKeyAlgorithm::AES256,
                        s2k: StringToKey::IteratedAndSalted {
                            hash_alg,
                            salt: [7; 8],
                            count,
                        },
                        iv: vec![3u8; 16].into(),
                    },
                )
                .expect("locks");
            assert_eq!(
                matches!(
                    fast_unlock(locked.secret_params(), locked.public_key(), &password),
                    FastUnlock::Unlocked(_)
                ),
                fast,
                "{hash_alg:?}"
            );
            let mut opened = locked.clone();
            unlock_subkey(&mut opened, &password).expect("unlocks");
            assert_eq!(
                opened.secret_params(),
                plain.secret_params(),
                "{hash_alg:?}"
            );
            let mut wrong = locked.clone();
            assert!(unlock_subkey(&mut wrong, &Password::from("other")).is_err());
            assert!(wrong.secret_params().is_encrypted(), "{hash_alg:?}");
        }
    }
}
