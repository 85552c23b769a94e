//! Frame-level facts of the zstd and lz4 formats that the decoders check themselves.

use std::io::{self, Read};

use super::Codec;
use super::error::DecodeError;
use super::source::Source;

/// zstd and lz4 share the skippable-frame range: magic `0x184D2A50..=0x184D2A5F`, then a
/// 4-byte little-endian length, then that many bytes to ignore.
pub(super) fn skippable_frame_len(head: &[u8]) -> Option<Option<u32>> {
    let magic = u32::from_le_bytes(head.get(..4)?.try_into().ok()?);
    if magic & 0xFFFF_FFF0 != 0x184D_2A50 {
        return None;
    }
    Some(
        head.get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes),
    )
}

/// The largest zstd frame header: magic, descriptor, window byte, 4-byte dictionary id,
/// 8-byte content size.
pub(super) const ZSTD_MAX_HEADER: usize = 18;

/// What a zstd frame header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ZstdFrameHeader {
    /// Bytes of history the decoder must keep.
    pub(super) window_size: u64,
    /// Decompressed size, when the encoder wrote it.
    pub(super) content_size: Option<u64>,
}

/// Why bytes are not a zstd frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ZstdHeaderError {
    /// Fewer bytes than the descriptor says the header has.
    Short,
    /// Not a zstd frame, or a reserved bit is set.
    Invalid,
}

/// Parses a zstd frame header (RFC 8878 §3.1.1.1) from its first bytes.
pub(super) fn zstd_frame_header(head: &[u8]) -> Result<ZstdFrameHeader, ZstdHeaderError> {
    const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    if head.len() < 5 {
        return Err(if MAGIC.starts_with(head) {
            ZstdHeaderError::Short
        } else {
            ZstdHeaderError::Invalid
        });
    }
    if head[..4] != MAGIC {
        return Err(ZstdHeaderError::Invalid);
    }
    let descriptor = head[4];
    if descriptor & 0x08 != 0 {
        return Err(ZstdHeaderError::Invalid);
    }
    let single_segment = descriptor & 0x20 != 0;
    let fcs_len = match (descriptor >> 6, single_segment) {
        (0, false) => 0,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let dict_len = match descriptor & 0x03 {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => 4,
    };
    let mut at = 5;
    let window_descriptor = if single_segment {
        None
    } else {
        let b = *head.get(at).ok_or(ZstdHeaderError::Short)?;
        at += 1;
        Some(b)
    };
    at += dict_len;
    let fcs = head.get(at..at + fcs_len).ok_or(ZstdHeaderError::Short)?;
    let content_size = match fcs_len {
        0 => None,
        2 => Some(u64::from(u16::from_le_bytes([fcs[0], fcs[1]])) + 256),
        _ => Some(
            fcs.iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        ),
    };
    let window_size = match window_descriptor {
        Some(b) => {
            let log = 10 + u32::from(b >> 3);
            let base = 1u64 << log;
            base + (base / 8) * u64::from(b & 0x07)
        }
        // A single-segment frame's window is its whole content (the size field is mandatory).
        None => content_size.unwrap_or(0),
    };
    Ok(ZstdFrameHeader {
        window_size,
        content_size,
    })
}

/// At a zstd frame boundary: skips skippable frames and reads the next frame's header
/// without consuming it, refusing a window over `max_window` before anything is allocated
/// for it. `None` at the end of the input.
pub(super) fn next_zstd_frame<R: Read>(
    src: &mut Source<R>,
    max_window: u64,
) -> io::Result<Option<ZstdFrameHeader>> {
    loop {
        let head = src.peek(ZSTD_MAX_HEADER)?;
        if head.is_empty() {
            return Ok(None);
        }
        match skippable_frame_len(head) {
            Some(Some(len)) => {
                src.skip(8 + u64::from(len))?;
                continue;
            }
            Some(None) => return Err(eof("input ended inside a skippable frame header")),
            None => {}
        }
        let header = match zstd_frame_header(head) {
            Ok(h) => h,
            Err(ZstdHeaderError::Short) => return Err(eof("input ended inside a frame header")),
            Err(ZstdHeaderError::Invalid) => {
                return Err(zstd_corrupt("invalid zstd frame header".to_owned()));
            }
        };
        if header.window_size > max_window {
            return Err(DecodeError::WindowTooLarge {
                codec: Some(Codec::Zstd),
                requested: Some(header.window_size),
                limit: max_window,
            }
            .into());
        }
        return Ok(Some(header));
    }
}

/// Bytes a zstd frame has produced, checked against the content size its header declares.
#[derive(Debug, Clone, Copy)]
pub(super) struct ZstdFrameOutput {
    declared: Option<u64>,
    produced: u64,
}

impl ZstdFrameOutput {
    pub(super) fn new(header: &ZstdFrameHeader) -> Self {
        ZstdFrameOutput {
            declared: header.content_size,
            produced: 0,
        }
    }

    /// Counts `n` more bytes; more than declared is corruption.
    pub(super) fn add(&mut self, n: usize) -> io::Result<()> {
        self.produced += n as u64;
        match self.declared {
            Some(size) if self.produced > size => Err(zstd_corrupt(format!(
                "frame holds more than its declared {size} bytes"
            ))),
            _ => Ok(()),
        }
    }

    /// At the frame's end: fewer bytes than declared is corruption.
    pub(super) fn finish(&self) -> io::Result<()> {
        match self.declared {
            Some(size) if size != self.produced => Err(zstd_corrupt(format!(
                "frame declares {size} bytes but holds {}",
                self.produced
            ))),
            _ => Ok(()),
        }
    }
}

pub(super) fn eof(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg)
}

pub(super) fn zstd_corrupt(detail: String) -> io::Error {
    DecodeError::Corrupt {
        codec: Some(Codec::Zstd),
        detail,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_descriptor_is_decoded() {
        // Descriptor 0x04 (checksum, no size), window byte 0x58: 2^(10+11) = 2 MiB.
        let h = zstd_frame_header(&[0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58]);
        assert_eq!(
            h,
            Ok(ZstdFrameHeader {
                window_size: 2 << 20,
                content_size: None
            })
        );
        // Mantissa 3 on 2^10: 1024 + 3 * 128.
        let h = zstd_frame_header(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x03]);
        assert_eq!(h.map(|h| h.window_size), Ok(1024 + 384));
    }

    #[test]
    fn single_segment_window_is_content_size() {
        let h = zstd_frame_header(&[0x28, 0xb5, 0x2f, 0xfd, 0x60, 0x10, 0x00]);
        assert_eq!(
            h.map(|h| (h.window_size, h.content_size)),
            Ok((272, Some(272)))
        );
        let h = zstd_frame_header(&[0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x07]);
        assert_eq!(h.map(|h| h.content_size), Ok(Some(7)));
    }

    #[test]
    fn short_and_invalid_headers() {
        assert_eq!(
            zstd_frame_header(&[0x28, 0xb5]),
            Err(ZstdHeaderError::Short)
        );
        assert_eq!(
            zstd_frame_header(&[0x28, 0xb5, 0x2f, 0xfd, 0x00]),
            Err(ZstdHeaderError::Short)
        );
        assert_eq!(
            zstd_frame_header(&[0x28, 0xb5, 0x2f, 0xfd, 0x08, 0]),
            Err(ZstdHeaderError::Invalid)
        );
        assert_eq!(zstd_frame_header(b"hello"), Err(ZstdHeaderError::Invalid));
    }

    #[test]
    fn skippable_frames() {
        assert_eq!(
            skippable_frame_len(&[0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0]),
            Some(Some(3))
        );
        assert_eq!(
            skippable_frame_len(&[0x50, 0x2a, 0x4d, 0x18, 3]),
            Some(None)
        );
        assert_eq!(
            skippable_frame_len(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]),
            None
        );
        assert_eq!(skippable_frame_len(&[0x50]), None);
    }
}
