//! Encrypted archive copies.
//!
//! The archive flow never needs to know a cipher's format: it asks an [`Encrypt`] to seal
//! what it stores (after compression, as Barman does) and a [`Decrypt`] (supplied by the host
//! when a key is configured) to recognise and open encrypted objects. Without one an
//! encrypted copy cannot be compared, and the flow says so instead of guessing (Barman calls
//! every re-delivery of an encrypted WAL a different duplicate;
//! docs/barman-behaviours.md#B-CHANGE-04). [`openpgp`] implements both in the OpenPGP format
//! `gpg` and Barman read and write.

use std::io::{self, Read, Write};

#[cfg(feature = "openpgp")]
pub mod openpgp;

/// What an encrypted object's key ends with in the cloud layout (after the codec's extension).
pub const OPENPGP_EXTENSION: &str = ".gpg";

/// Opens `reader` through `decryptor` when its first bytes are encrypted: the plaintext
/// reader and the encryption's name, or the reader unchanged and `None` for a plain object.
/// An encrypted object with no decryptor fails with `PermissionDenied`: it cannot be read,
/// which is not the same as damaged.
pub fn open_if_encrypted<'a>(
    reader: Box<dyn Read + Send + 'a>,
    decryptor: Option<&dyn Decrypt>,
) -> io::Result<(Box<dyn Read + Send + 'a>, Option<String>)> {
    let mut reader = io::BufReader::with_capacity(64 << 10, reader);
    let prefix = io::BufRead::fill_buf(&mut reader)?;
    let prefix = &prefix[..prefix.len().min(16)];
    if let Some(d) = decryptor.filter(|d| d.detect(prefix)) {
        let name = d.name().to_owned();
        return Ok((d.decrypt(Box::new(reader))?, Some(name)));
    }
    if crate::compression::Codec::identify(prefix).is_none() && looks_like_openpgp(prefix) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "it is encrypted (OpenPGP) and no secret key is configured to decrypt it",
        ));
    }
    Ok((Box::new(reader), None))
}

/// Encrypts archive objects as they are stored.
pub trait Encrypt: Send + Sync {
    /// The catalogue name of the encryption (`gpg`).
    fn name(&self) -> &str;
    /// Reads `plaintext` to its end and writes its encryption to `out`. An error from
    /// `plaintext` comes back unchanged in kind, so the caller can tell its source's failure
    /// from its own.
    fn encrypt(&self, plaintext: &mut dyn Read, out: &mut dyn Write) -> io::Result<()>;
}

/// Opens encrypted archive objects.
pub trait Decrypt: Send + Sync {
    /// The catalogue name of the encryption (`gpg`, …).
    fn name(&self) -> &str;
    /// Whether the first bytes of an object are this cipher's.
    fn detect(&self, prefix: &[u8]) -> bool;
    /// A reader yielding the plaintext of `ciphertext`.
    fn decrypt<'a>(
        &self,
        ciphertext: Box<dyn Read + Send + 'a>,
    ) -> io::Result<Box<dyn Read + Send + 'a>>;
}

/// The tag of a public-key encrypted session key packet.
pub(crate) const PKESK: u8 = 1;
/// The tag of a symmetric-key encrypted session key packet.
const SKESK: u8 = 3;

/// One OpenPGP packet header (RFC 9580 section 4.2), as read from the start of some bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PacketHeader {
    /// More bytes are needed to read it.
    Incomplete,
    /// Not a packet header (bit 7 clear).
    NotAPacket,
    /// A header.
    Packet {
        /// The packet tag.
        tag: u8,
        /// Whether it is in the new format (`0xC0 | tag`).
        new_format: bool,
        /// Its length in bytes.
        header_len: usize,
        /// The body's length; `None` for a partial or indeterminate length (data packets).
        body_len: Option<usize>,
    },
}

/// Reads the packet header at the start of `bytes`.
pub(crate) fn packet_header(bytes: &[u8]) -> PacketHeader {
    let Some(&tag_byte) = bytes.first() else {
        return PacketHeader::Incomplete;
    };
    if tag_byte & 0x80 == 0 {
        return PacketHeader::NotAPacket;
    }
    let byte = |i: usize| bytes.get(i).map(|&b| usize::from(b));
    let be = |from: usize, n: usize| {
        bytes
            .get(from..from + n)
            .map(|b| b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)))
    };
    let new_format = tag_byte & 0x40 != 0;
    let (tag, length) = if new_format {
        let length = match byte(1) {
            None => None,
            Some(l @ 0..=191) => Some((2, Some(l))),
            Some(l @ 192..=223) => byte(2).map(|m| (3, Some(((l - 192) << 8) + m + 192))),
            Some(255) => be(2, 4).map(|l| (6, Some(l))),
            // A partial body length.
            Some(_) => Some((2, None)),
        };
        (tag_byte & 0x3F, length)
    } else {
        let length = match tag_byte & 0x03 {
            0 => byte(1).map(|l| (2, Some(l))),
            1 => be(1, 2).map(|l| (3, Some(l))),
            2 => be(1, 4).map(|l| (5, Some(l))),
            // Indeterminate length.
            _ => Some((1, None)),
        };
        ((tag_byte >> 2) & 0x0F, length)
    };
    match length {
        None => PacketHeader::Incomplete,
        Some((header_len, body_len)) => PacketHeader::Packet {
            tag,
            new_format,
            header_len,
            body_len,
        },
    }
}

/// The 8-byte key IDs an OpenPGP message's leading public-key encrypted session key packets
/// name, in order: the keys that can open it. `None` when the bytes do not start like an
/// OpenPGP message or a packet is cut short (read a longer prefix). A PKESK with a zero
/// ("anonymous") or v6 recipient gives no ID. Used to find copies encrypted only to keys no
/// longer configured, without any key.
pub fn openpgp_recipients(prefix: &[u8]) -> Option<Vec<[u8; 8]>> {
    session_key_packets(prefix).map(|(ids, _)| ids)
}

/// How many bytes the session key packets an OpenPGP message begins with take: all a key
/// agent needs to find the session key, never any of the data. `None` as for
/// [`openpgp_recipients`].
pub fn session_key_packets_len(prefix: &[u8]) -> Option<usize> {
    session_key_packets(prefix).map(|(_, len)| len)
}

/// The key IDs the leading session key packets name and the bytes those packets take.
fn session_key_packets(prefix: &[u8]) -> Option<(Vec<[u8; 8]>, usize)> {
    if !looks_like_openpgp(prefix) {
        return None;
    }
    let mut ids = Vec::new();
    let mut at = 0usize;
    while at < prefix.len() {
        let PacketHeader::Packet {
            tag,
            header_len,
            body_len,
            ..
        } = packet_header(&prefix[at..])
        else {
            return None;
        };
        // The session keys end where the data starts (a partial length, another tag).
        let Some(body_len) = body_len.filter(|_| tag == PKESK || tag == SKESK) else {
            return Some((ids, at));
        };
        let body = prefix.get(at + header_len..at + header_len + body_len)?;
        if tag == PKESK
            && let [3, id @ ..] = body
            && let Some(id) = id.get(..8)
        {
            let id: [u8; 8] = id.try_into().ok()?;
            if id != [0; 8] {
                ids.push(id);
            }
        }
        at = at.checked_add(header_len + body_len)?;
    }
    None
}

/// Whether bytes start like an OpenPGP message as gpg writes it (a public-key or symmetric-key
/// encrypted session key packet, old or new packet format). Barman runs `file --brief` per
/// WAL for this; reading the packet header in-process is enough
/// (docs/barman-behaviours.md#B-CHANGE-05).
pub fn looks_like_openpgp(prefix: &[u8]) -> bool {
    match packet_header(prefix) {
        PacketHeader::Packet {
            tag,
            header_len,
            body_len: Some(_),
            ..
        } if tag == PKESK || tag == SKESK => {
            // The packet body starts with a version byte: 3 (PKESK v3), 4/5/6.
            matches!(prefix.get(header_len), Some(3..=6))
        }
        _ => false,
    }
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
    fn names_the_recipients_of_a_message() {
        // Two old-format PKESK v3 packets (gpg's), then a SEIPD packet (tag 18, new format,
        // partial length).
        let mut msg = vec![0x84, 12, 3, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0xAA, 0xBB];
        msg.extend_from_slice(&[0xC1, 11, 3, 9, 9, 9, 9, 9, 9, 9, 9, 18, 0xCC]);
        msg.extend_from_slice(&[0xD2, 0xE5, 1, 2, 3]);
        assert_eq!(
            openpgp_recipients(&msg),
            Some(vec![[1, 2, 3, 4, 5, 6, 7, 8], [9; 8]])
        );
        // Cut inside the second packet: read more.
        assert_eq!(openpgp_recipients(&msg[..18]), None);
        // An anonymous recipient names no key.
        let anonymous = [0x84, 10, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xD2, 0xE5];
        assert_eq!(openpgp_recipients(&anonymous), Some(vec![]));
        assert_eq!(openpgp_recipients(b"\x28\xb5\x2f\xfd"), None);
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
