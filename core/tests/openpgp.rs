//! OpenPGP encryption of archived copies with keys gpg 2.2 made (tests/data/openpgp: A and B
//! are RSA with passphrases `walvault-test-a`/`-b`, C is Ed25519/Cv25519 without one).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use walvault_core::encryption::openpgp::{
    KeyError, OpenPgpDecryptor, OpenPgpEncryptor, Recipient, SessionKey, open_with_session_key,
    parse_public_keys, parse_secret_keys,
};
use walvault_core::encryption::{
    Decrypt, Encrypt, looks_like_openpgp, openpgp_recipients, session_key_packets_len,
};

const NOW: u64 = 1_800_000_000;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/openpgp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

fn recipient(name: &str) -> Recipient {
    let keys = parse_public_keys(name, &data(name)).expect("public key");
    Recipient::of(name, &keys[0], NOW).expect("encryption key")
}

fn encryptor(names: &[&str]) -> OpenPgpEncryptor {
    let recipients = names.iter().map(|n| recipient(n)).collect();
    OpenPgpEncryptor::new(recipients, Box::new(|| Box::new(rand_core::OsRng))).expect("recipients")
}

fn decryptor(name: &str, passphrase: &'static str, calls: Arc<AtomicUsize>) -> OpenPgpDecryptor {
    let keys = parse_secret_keys(name, &data(name)).expect("secret key");
    OpenPgpDecryptor::new(
        keys,
        Box::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(format!("{passphrase}\n").into_bytes())
        }),
    )
}

fn seal(enc: &OpenPgpEncryptor, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    enc.encrypt(&mut &plain[..], &mut out).expect("encrypt");
    out
}

fn open(dec: &OpenPgpDecryptor, sealed: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut reader = dec.decrypt(Box::new(io::Cursor::new(sealed)))?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out)?;
    Ok(out)
}

fn segment_like() -> Vec<u8> {
    // 1 MiB of not very compressible bytes, larger than any internal buffer.
    let mut x = 0x1234_5678u32;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn round_trip_with_the_passphrase_asked_once() {
    let plain = segment_like();
    let calls = Arc::new(AtomicUsize::new(0));
    let dec = decryptor("a.sec.asc", "walvault-test-a", calls.clone());
    let enc = encryptor(&["a.pub.asc"]);
    assert!(
        !dec.is_unlocked(),
        "nothing is unlocked before it is needed"
    );
    for _ in 0..2 {
        let sealed = seal(&enc, &plain);
        assert!(looks_like_openpgp(&sealed));
        assert!(dec.detect(&sealed));
        assert_eq!(open(&dec, sealed).expect("decrypt"), plain);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the passphrase is asked once"
    );
    // And the key derived from it once: the keys stay unlocked for the decryptor's life, so
    // the second copy costs no string-to-key derivation (gpg calibrates it to ~100 ms).
    assert!(dec.is_unlocked());
}

#[test]
fn the_first_packet_is_the_old_format_rsa_session_key_barman_recognises() {
    // Barman decides "encrypted" from `file --brief`, whose magic matches only an old-format
    // (0x85, two-octet length) version-3 public-key session key packet.
    let sealed = seal(&encryptor(&["a.pub.asc", "b.pub.asc"]), b"hello");
    assert_eq!(sealed[0], 0x85, "{:02x?}", &sealed[..4]);
    assert_eq!(sealed[3], 3);
    let ids = openpgp_recipients(&sealed[..1024.min(sealed.len())]).expect("recipients");
    assert_eq!(
        ids,
        vec![recipient("a.pub.asc").key_id, recipient("b.pub.asc").key_id]
    );
}

#[test]
fn rsa_recipients_come_first_so_barman_recognises_the_file() {
    let sealed = seal(&encryptor(&["c.pub.asc", "a.pub.asc"]), b"x");
    let ids = openpgp_recipients(&sealed).expect("recipients");
    assert_eq!(
        ids,
        vec![recipient("a.pub.asc").key_id, recipient("c.pub.asc").key_id]
    );
}

#[test]
fn any_recipient_opens_it_and_no_other_key_does() {
    let plain = b"only for A and B".to_vec();
    let sealed = seal(&encryptor(&["a.pub.asc", "b.pub.asc"]), &plain);
    let none = Arc::new(AtomicUsize::new(0));
    let b = decryptor("b.sec.gpg", "walvault-test-b", none.clone());
    assert_eq!(open(&b, sealed.clone()).expect("B opens it"), plain);
    let c = decryptor("c.sec.asc", "", none.clone());
    let err = open(&c, sealed).expect_err("C is no recipient");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(
        err.to_string()
            .contains("none of the configured secret keys"),
        "{err}"
    );
}

#[test]
fn an_unprotected_key_never_asks_for_a_passphrase() {
    let plain = b"for C".to_vec();
    let sealed = seal(&encryptor(&["c.pub.asc"]), &plain);
    let calls = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        open(&decryptor("c.sec.asc", "", calls.clone()), sealed).expect("test"),
        plain
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_wrong_or_failing_passphrase_is_a_clear_error() {
    let sealed = seal(&encryptor(&["a.pub.asc"]), b"secret");
    let err = open(
        &decryptor("a.sec.asc", "not-it", Arc::default()),
        sealed.clone(),
    )
    .expect_err("wrong passphrase");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
    let keys = parse_secret_keys("a", &data("a.sec.asc")).expect("test");
    let failing = OpenPgpDecryptor::new(
        keys,
        Box::new(|| Err(io::Error::other("passphrase command exited with status 3"))),
    );
    let err = open(&failing, sealed).expect_err("no passphrase");
    assert!(err.to_string().contains("status 3"), "{err}");
}

#[test]
fn tampered_or_truncated_copies_fail_their_integrity_check() {
    let plain = segment_like();
    let sealed = seal(&encryptor(&["c.pub.asc"]), &plain);
    let dec = decryptor("c.sec.asc", "", Arc::default());
    let mut tampered = sealed.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    let err = open(&dec, tampered).expect_err("tampered");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    for cut in [sealed.len() - 1, sealed.len() - 22, sealed.len() / 2, 600] {
        let err = open(&dec, sealed[..cut].to_vec()).expect_err("truncated");
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidData,
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn key_files_that_are_not_usable_public_keys_are_refused_with_their_name() {
    let err = parse_public_keys("junk.asc", b"not a key at all").expect_err("junk");
    assert!(
        matches!(err, KeyError::Unreadable { .. } | KeyError::Empty { .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("junk.asc: "), "{err}");
    // A keyring holds several certificates.
    assert_eq!(
        parse_public_keys("ring", &data("ab.keyring.gpg"))
            .expect("test")
            .len(),
        2
    );
    // Expired at `now`: a key made with no expiry never is; a `now` far before its creation
    // changes nothing either (expiry only counts forward).
    let keys = parse_public_keys("a", &data("a.pub.asc")).expect("test");
    assert!(Recipient::of("a", &keys[0], 0).is_ok());
}
#[test]
fn a_file_of_several_armored_keys_yields_them_all() {
    // gpg --export-secret-keys -a A >> f; … C >> f: an operator's file while rotating.
    let mut both = data("a.sec.asc");
    both.extend(data("c.sec.asc"));
    let keys = parse_secret_keys("ac", &both).expect("keys");
    assert_eq!(keys.len(), 2);
    let mut pubs = data("a.pub.asc");
    pubs.extend(b"\n");
    pubs.extend(data("b.pub.asc"));
    assert_eq!(parse_public_keys("ab", &pubs).expect("keys").len(), 2);
    // One passphrase for the file: C's key has none and opens what is sealed to C.
    let sealed = seal(&encryptor(&["c.pub.asc"]), b"for C");
    let d = OpenPgpDecryptor::new(keys, Box::new(|| Ok(b"walvault-test-a".to_vec())));
    assert_eq!(open(&d, sealed).expect("C opens it"), b"for C");
}

#[test]
fn a_barman_key_id_may_be_an_e_mail_address_or_a_name_as_gpg_takes_it() {
    use walvault_core::encryption::openpgp::key_matches;
    let a = &parse_public_keys("a", &data("a.pub.asc")).expect("key")[0];
    let hex_id = walvault_core::encryption::openpgp::hex(&recipient("a.pub.asc").key_id);
    for id in [
        "a@example.invalid",
        "<A@example.invalid>",
        "walvault test A",
        hex_id.as_str(),
    ] {
        assert!(key_matches(a, id), "{id}");
    }
    for id in ["b@example.invalid", "", "  ", "0000000000000000"] {
        assert!(!key_matches(a, id), "{id}");
    }
}

/// What a key agent does: the session key from the session key packets alone (never the
/// data), carried in its wire form and used to open the whole copy, integrity check included;
/// with the same errors as a local decryption.
#[test]
fn a_session_key_from_the_packets_alone_opens_the_copy() {
    let plain = segment_like();
    let sealed = seal(&encryptor(&["a.pub.asc", "c.pub.asc"]), &plain);
    let len = session_key_packets_len(&sealed).expect("session key packets");
    assert!(len > 0 && len < 2048, "{len}");
    assert_eq!(session_key_packets_len(&sealed[..len - 1]), None);
    for (key, passphrase) in [("a.sec.asc", "walvault-test-a"), ("c.sec.asc", "")] {
        let calls = Arc::new(AtomicUsize::new(0));
        let dec = decryptor(key, passphrase, calls.clone());
        let session = dec.session_key(&sealed[..len]).expect("session key");
        let wire = session.to_bytes();
        let session = SessionKey::from_bytes(&wire).expect("wire form");
        let mut out = Vec::new();
        open_with_session_key(Box::new(io::Cursor::new(sealed.clone())), session)
            .and_then(|mut r| r.read_to_end(&mut out))
            .expect("opens");
        assert!(out == plain, "{key}: plaintext differs");
        // A second copy: the key stays unlocked, the passphrase is not asked again.
        let other = seal(&encryptor(&["a.pub.asc", "c.pub.asc"]), b"second");
        dec.session_key(&other[..session_key_packets_len(&other).expect("len")])
            .expect("second session key");
        assert!(calls.load(Ordering::SeqCst) <= 1, "{key}");
        assert_eq!(dec.holds_unlocked_key(), !passphrase.is_empty(), "{key}");
    }

    let dec = decryptor("a.sec.asc", "walvault-test-a", Arc::default());
    let session = || dec.session_key(&sealed[..len]).expect("session key");
    // Another message's session key, tampered or truncated data: the integrity check fails.
    let other = seal(&encryptor(&["a.pub.asc"]), &plain);
    let wrong = dec
        .session_key(&other[..session_key_packets_len(&other).expect("len")])
        .expect("other session key");
    let mut tampered = sealed.clone();
    tampered[sealed.len() / 2] ^= 1;
    for (what, bytes, key) in [
        ("another message's key", sealed.clone(), wrong),
        ("tampered", tampered, session()),
        ("truncated", sealed[..sealed.len() - 5].to_vec(), session()),
    ] {
        let err = open_with_session_key(Box::new(io::Cursor::new(bytes)), key)
            .and_then(|mut r| r.read_to_end(&mut Vec::new()))
            .expect_err(what);
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
    }
    assert!(SessionKey::from_bytes(&[9, 1, 2, 3]).is_err(), "short key");
    assert!(SessionKey::from_bytes(&[]).is_err(), "empty");

    // Errors as a local decryption gives them.
    let err = decryptor("b.sec.gpg", "walvault-test-b", Arc::default())
        .session_key(&sealed[..len])
        .expect_err("not ours");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("none of the configured"), "{err}");
    let err = decryptor("a.sec.asc", "not-it", Arc::default())
        .session_key(&sealed[..len])
        .expect_err("wrong passphrase");
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
}
