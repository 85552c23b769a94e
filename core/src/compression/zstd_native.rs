//! C zstd decoding (the `native-codecs` build), frame by frame.
//!
//! libzstd decodes each frame; this wrapper finds the frames itself, as the pure-Rust
//! decoder does, to check what libzstd's streaming decoder does not: a frame whose last block
//! is empty ends without its declared content size being compared with what it held
//! (libzstd 1.5.7; its one-shot path and the `zstd` CLI do compare), so a frame declaring
//! 38 bytes decoded to none without an error. Found by fuzzing.

use std::io::{self, BufRead, Read};

use zstd::stream::raw::{DParameter, InBuffer, Operation, OutBuffer};

use super::frames::{ZstdFrameOutput, eof, next_zstd_frame};
use super::source::Source;

/// Decodes concatenated zstd frames and skippable frames with C libzstd, checking each
/// frame's declared content size.
pub(super) struct ZstdNativeDecoder<R: Read> {
    src: Source<R>,
    raw: zstd::stream::raw::Decoder<'static>,
    /// Inside a frame: what it has produced against what it declared.
    output: Option<ZstdFrameOutput>,
    max_window: u64,
}

impl<R: Read> ZstdNativeDecoder<R> {
    /// `window_log_max` makes libzstd itself refuse larger windows before allocating, after
    /// [`next_zstd_frame`] has refused them with the precise size.
    pub(super) fn new(src: Source<R>, max_window: u64) -> io::Result<Self> {
        let mut raw = zstd::stream::raw::Decoder::new()?;
        // floor(log2(max_window)), within what libzstd accepts (ZSTD_WINDOWLOG_ABSOLUTEMIN..MAX_64).
        let log = 63u32
            .saturating_sub(max_window.max(1).leading_zeros())
            .clamp(10, 31);
        raw.set_parameter(DParameter::WindowLogMax(log))?;
        Ok(ZstdNativeDecoder {
            src,
            raw,
            output: None,
            max_window,
        })
    }

    pub(super) fn source_mut(&mut self) -> &mut Source<R> {
        &mut self.src
    }
}

impl<R: Read> Read for ZstdNativeDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(output) = &mut self.output else {
                let Some(header) = next_zstd_frame(&mut self.src, self.max_window)? else {
                    return Ok(0);
                };
                self.raw.reinit()?;
                self.output = Some(ZstdFrameOutput::new(&header));
                continue;
            };
            let input = self.src.fill_buf()?;
            let ended = input.is_empty();
            let mut input = InBuffer::around(input);
            let mut out = OutBuffer::around(&mut *buf);
            // 0: the frame is decoded and all of it handed out.
            let hint = self.raw.run(&mut input, &mut out)?;
            let (read, written) = (input.pos(), out.pos());
            self.src.consume(read);
            output.add(written)?;
            if hint == 0 {
                output.finish()?;
                self.output = None;
            } else if ended && written == 0 {
                return Err(eof("input ended inside a zstd frame"));
            }
            if written > 0 {
                return Ok(written);
            }
        }
    }
}
