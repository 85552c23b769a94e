//! LZ4 frame format: lz4_flex for decoding (and fast-mode encoding), C liblz4 for HC levels
//! in native builds.

use std::io::{self, Read, Write};

use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use super::frames::skippable_frame_len;
use super::source::Source;

#[cfg(feature = "native-codecs")]
/// Levels from here on are LZ4 HC in liblz4 (`LZ4HC_CLEVEL_MIN`); lower ones are its fast mode.
pub(super) const HC_MIN_LEVEL: i32 = 3;

/// Block size of the frames we write. 4 MiB is what the `lz4` CLI writes by default: big
/// independent blocks compress as well as linked small ones and decode in parallel-friendly
/// units.
const BLOCK_SIZE: BlockSize = BlockSize::Max4MB;

/// Fast-mode encoder (lz4_flex has no HC), content checksum on like the `lz4` CLI.
pub(super) fn fast_encoder<W: Write>(w: W) -> FrameEncoder<W> {
    let info = FrameInfo::new()
        .block_size(BLOCK_SIZE)
        .block_mode(BlockMode::Independent)
        .content_checksum(true);
    FrameEncoder::with_frame_info(info, w)
}

/// LZ4 HC through C liblz4, with the same frame options as [`fast_encoder`].
#[cfg(feature = "native-codecs")]
pub(super) fn hc_encoder<W: Write>(w: W, level: i32) -> io::Result<lz4::Encoder<W>> {
    lz4::EncoderBuilder::new()
        .level(u32::try_from(level).unwrap_or(0))
        .block_size(lz4::BlockSize::Max4MB)
        .block_mode(lz4::BlockMode::Independent)
        .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
        .checksum(lz4::ContentChecksum::ChecksumEnabled)
        .build(w)
}

/// Decodes a sequence of LZ4 frames (and skippable frames), as `lz4 -d` does.
///
/// lz4_flex's reader returns end-of-file after each frame and also when the input stops at
/// a block boundary; this wrapper tells the two apart with [`Source::starved`] and moves on
/// to the next frame only when more input follows.
pub(super) struct Lz4Decoder<R: Read> {
    /// `None` only while a fresh decoder takes the source over (see `next_frame`).
    inner: Option<FrameDecoder<Source<R>>>,
    /// Between frames: the next bytes are a frame header, a skippable frame or the end.
    at_boundary: bool,
    /// A frame was started: the next one gets a fresh decoder.
    started: bool,
}

impl<R: Read> Lz4Decoder<R> {
    pub(super) fn new(source: Source<R>) -> Self {
        Lz4Decoder {
            inner: Some(FrameDecoder::new(source)),
            at_boundary: true,
            started: false,
        }
    }

    fn decoder(&mut self) -> &mut FrameDecoder<Source<R>> {
        self.inner
            .as_mut()
            .expect("the source is always in a decoder between calls")
    }

    pub(super) fn source_mut(&mut self) -> &mut Source<R> {
        self.decoder().get_mut()
    }

    /// Each frame gets a fresh lz4_flex decoder. One decoder keeps its buffers from frame to
    /// frame and asserts (with debug assertions) that an independent-block frame finds them
    /// at exactly its block size, so a legacy or linked-block frame followed by an
    /// independent one panicked in test builds. Found by fuzzing.
    fn next_frame(&mut self) {
        if std::mem::replace(&mut self.started, true)
            && let Some(old) = self.inner.take()
        {
            self.inner = Some(FrameDecoder::new(old.into_inner()));
        }
    }
}

impl<R: Read> Read for Lz4Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.at_boundary {
                let src = self.source_mut();
                let head = src.peek(8)?;
                if head.is_empty() {
                    return Ok(0);
                }
                match skippable_frame_len(head) {
                    Some(Some(len)) => {
                        src.skip(8 + u64::from(len))?;
                        continue;
                    }
                    Some(None) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "input ended inside a skippable frame header",
                        ));
                    }
                    None => {
                        self.at_boundary = false;
                        self.next_frame();
                    }
                }
            }
            let n = self.decoder().read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder().get_ref().starved() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "input ended inside an lz4 frame",
                ));
            }
            // lz4_flex read the end mark (and checksum) without reading past them.
            self.at_boundary = true;
        }
    }
}
