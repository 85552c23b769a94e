//! Pure-Rust zstd (ruzstd), used when the `native-codecs` feature is off (wasm builds).
//!
//! ruzstd's encoder only implements its `Fastest` mode (roughly zstd -1 with a smaller
//! match finder), so every level compresses the same way; its other modes panic and are
//! never used. Its `FrameCompressor` also unwraps I/O results, so it only ever sees an
//! in-memory slice and `Vec`.

use std::io::{self, Read, Write};

use ruzstd::decoding::errors::FrameDecoderError;
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use ruzstd::encoding::{CompressionLevel, compress};

use super::frames::{ZstdFrameOutput, next_zstd_frame, zstd_corrupt};
use super::source::Source;

/// Input compressed per frame. Frames are independent, so this bounds memory at about
/// twice this size while costing little ratio: ruzstd's window is far smaller.
const CHUNK: usize = 1 << 20;

/// Writes a zstd stream as a sequence of frames of [`CHUNK`] input bytes each.
pub(super) struct ZstdPureEncoder<W: Write> {
    w: W,
    pending: Vec<u8>,
    out: Vec<u8>,
    frames: u64,
}

impl<W: Write> ZstdPureEncoder<W> {
    pub(super) fn new(w: W) -> Self {
        ZstdPureEncoder {
            w,
            pending: Vec::new(),
            out: Vec::new(),
            frames: 0,
        }
    }

    fn emit_frame(&mut self) -> io::Result<()> {
        self.out.clear();
        compress(&self.pending[..], &mut self.out, CompressionLevel::Fastest);
        self.w.write_all(&self.out)?;
        self.pending.clear();
        self.frames += 1;
        Ok(())
    }

    pub(super) fn finish(mut self) -> io::Result<W> {
        // Even empty input gets one frame, so the output is a valid zstd stream.
        if !self.pending.is_empty() || self.frames == 0 {
            self.emit_frame()?;
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

impl<W: Write> Write for ZstdPureEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(CHUNK);
        }
        let n = buf.len().min(CHUNK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == CHUNK {
            self.emit_frame()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // A frame boundary is the only way to make buffered input decodable.
        if !self.pending.is_empty() {
            self.emit_frame()?;
        }
        self.w.flush()
    }
}

/// Decodes concatenated zstd frames and skippable frames, verifying each frame's content
/// checksum and declared size (ruzstd itself checks neither).
pub(super) struct ZstdPureDecoder<R: Read> {
    src: Source<R>,
    // Boxed: the decoder state is large next to the other codecs' readers.
    frame: Box<FrameDecoder>,
    /// Inside a frame: what it has produced against what it declared.
    output: Option<ZstdFrameOutput>,
    max_window: u64,
}

impl<R: Read> ZstdPureDecoder<R> {
    pub(super) fn new(src: Source<R>, max_window: u64) -> Self {
        let mut frame = Box::new(FrameDecoder::new());
        frame.set_max_window_size(max_window);
        ZstdPureDecoder {
            src,
            frame,
            output: None,
            max_window,
        }
    }

    pub(super) fn source_mut(&mut self) -> &mut Source<R> {
        &mut self.src
    }

    /// At a frame boundary: starts the next frame. Returns false at the end of the input.
    fn start_frame(&mut self) -> io::Result<bool> {
        let Some(header) = next_zstd_frame(&mut self.src, self.max_window)? else {
            return Ok(false);
        };
        self.frame.reset(&mut self.src).map_err(frame_error)?;
        self.output = Some(ZstdFrameOutput::new(&header));
        Ok(true)
    }

    /// After the last block and every byte of the frame was handed out.
    fn end_frame(&mut self) -> io::Result<()> {
        if let Some(expected) = self.frame.get_checksum_from_data()
            && self.frame.get_calculated_checksum() != Some(expected)
        {
            return Err(zstd_corrupt("frame content checksum mismatch".to_owned()));
        }
        self.output.take().map_or(Ok(()), |o| o.finish())
    }
}

impl<R: Read> Read for ZstdPureDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.output.is_none() && !self.start_frame()? {
                return Ok(0);
            }
            if self.frame.can_collect() > 0 {
                let n = self.frame.read(buf)?;
                if let Some(output) = &mut self.output {
                    output.add(n)?;
                }
                return Ok(n);
            }
            if self.frame.is_finished() {
                self.end_frame()?;
                continue;
            }
            self.frame
                .decode_blocks(&mut self.src, BlockDecodingStrategy::UptoBlocks(1))
                .map_err(frame_error)?;
        }
    }
}

fn frame_error(e: FrameDecoderError) -> io::Error {
    // Left to the decoder to classify: the source knows whether the input ran out.
    io::Error::other(e.to_string())
}
