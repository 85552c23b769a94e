//! Encrypted archive copies.
//!
//! The archive flow never needs to know a cipher's format: it asks a [`Decrypt`] (supplied
//! by the host when a key is configured) to recognise and open encrypted objects. Without one
//! an encrypted copy cannot be compared, and the flow says so instead of guessing (Barman
//! calls every re-delivery of an encrypted WAL a different duplicate;
//! docs/barman-behaviours.md#B-CHANGE-04).

use std::io::{self, Read};

/// Opens encrypted archive objects.
pub trait Decrypt: Send + Sync {
    /// The catalogue name of the encryption (`gpg`, …).
    fn name(&self) -> &str;
    /// Whether the first bytes of an object are this cipher's.
    fn detect(&self, prefix: &[u8]) -> bool;
    /// A reader yielding the plaintext of `ciphertext`.
    fn decrypt<'a>(&self, ciphertext: Box<dyn Read + 'a>) -> io::Result<Box<dyn Read + 'a>>;
}

/// Whether bytes start like an OpenPGP message as gpg writes it (a public-key or symmetric-key
/// encrypted session key packet, old or new packet format). Barman runs `file --brief` per
/// WAL for this; reading the packet header in-process is enough
/// (docs/barman-behaviours.md#B-CHANGE-05).
pub fn looks_like_openpgp(prefix: &[u8]) -> bool {
    const PKESK: u8 = 1;
    const SKESK: u8 = 3;
    let Some(&tag_byte) = prefix.first() else {
        return false;
    };
    if tag_byte & 0x80 == 0 {
        return false;
    }
    let tag = if tag_byte & 0x40 != 0 {
        tag_byte & 0x3F
    } else {
        (tag_byte >> 2) & 0x0F
    };
    if tag != PKESK && tag != SKESK {
        return false;
    }
    // The packet body starts with a version byte: 3 (PKESK v3), 4/5/6.
    let body_version = if tag_byte & 0x40 != 0 {
        // New format: one-octet length < 192, or two-octet 192..223, or five-octet 255.
        match prefix.get(1) {
            Some(&l) if l < 192 => prefix.get(2),
            Some(&l) if l < 224 => prefix.get(3),
            Some(&255) => prefix.get(6),
            _ => None,
        }
    } else {
        match tag_byte & 0x03 {
            0 => prefix.get(2),
            1 => prefix.get(3),
            2 => prefix.get(5),
            _ => None,
        }
    };
    matches!(body_version, Some(3..=6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_gpg_headers() {
        // gpg --encrypt -r KEY: old-format PKESK, two-octet length, version 3.
        assert!(looks_like_openpgp(&[0x85, 0x01, 0x0C, 0x03, 0x12, 0x34]));
        // gpg --symmetric: old-format SKESK, one-octet length, version 4.
        assert!(looks_like_openpgp(&[0x8C, 0x0D, 0x04, 0x09, 0x03]));
        // New-format PKESK (tag 1), one-octet length, version 3.
        assert!(looks_like_openpgp(&[0xC1, 0x5E, 0x03, 0x00]));
        // New-format SKESK v6 (RFC 9580).
        assert!(looks_like_openpgp(&[0xC3, 0x2A, 0x06, 0x20]));
    }

    #[test]
    fn rejects_other_data() {
        for data in [
            &b""[..],
            b"\x1f\x8b\x08\x00",
            b"\x28\xb5\x2f\xfd",
            b"\x10\xd1\x06\x00",
            b"\x00\x00\x00\x00",
            b"\x85",
            b"\x85\x01\x0c\x09",
            b"\xC2\x05\x04",
        ] {
            assert!(!looks_like_openpgp(data), "{data:02x?}");
        }
    }
}
