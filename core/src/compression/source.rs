//! The buffered reader every decoder reads from.
//!
//! Decoders hide why they stopped: most report a short input as a generic error or even as a
//! clean end. `Source` records what the underlying reader did, so [`Decoder`](super::Decoder)
//! can tell truncation from corruption from a failing disk, and it can peek at the next bytes
//! (magic sniffing, frame boundaries) without losing them.

use std::io::{self, BufRead, Read};

/// Large enough that per-call overhead vanishes, small enough to stay in L2.
const BUF_SIZE: usize = 64 * 1024;

pub(super) struct Source<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// The underlying reader returned 0: there is no more input.
    eof: bool,
    /// A decoder asked for bytes and got none because the input had ended. A decoder that
    /// stops at a well-formed end never asks past it, so this marks truncation.
    starved: bool,
    /// The underlying reader's error. Decoders get a copy (some wrap it beyond recognition);
    /// the original goes back to the caller.
    io_error: Option<io::Error>,
}

impl<R: Read> Source<R> {
    pub(super) fn new(inner: R) -> Self {
        Source {
            inner,
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            pos: 0,
            end: 0,
            eof: false,
            starved: false,
            io_error: None,
        }
    }

    pub(super) fn starved(&self) -> bool {
        self.starved
    }

    /// Takes the error of the underlying reader, if it failed.
    pub(super) fn take_io_error(&mut self) -> Option<io::Error> {
        self.io_error.take()
    }

    /// Returns up to `n` buffered bytes (fewer only at the end of the input) without
    /// consuming them. `n` must not exceed the buffer size.
    pub(super) fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        let n = n.min(self.buf.len());
        if self.end - self.pos < n && self.pos + n > self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        while self.end - self.pos < n && !self.eof {
            let got = self.read_inner_at_end()?;
            if got == 0 {
                self.eof = true;
            }
        }
        let avail = (self.end - self.pos).min(n);
        Ok(&self.buf[self.pos..self.pos + avail])
    }

    /// Whether any input is left, without consuming it.
    pub(super) fn at_end(&mut self) -> io::Result<bool> {
        Ok(self.peek(1)?.is_empty())
    }

    /// Discards exactly `n` bytes; running out first is reported as `UnexpectedEof`.
    pub(super) fn skip(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let avail = self.fill_buf()?.len();
            if avail == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "input ended inside a skippable frame",
                ));
            }
            let step = usize::try_from(n).map_or(avail, |n| n.min(avail));
            self.consume(step);
            n -= step as u64;
        }
        Ok(())
    }

    /// Reads more input after `end`, retrying interruptions so decoders never see them.
    fn read_inner_at_end(&mut self) -> io::Result<usize> {
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    self.io_error = Some(e);
                    return Err(copy);
                }
            }
        }
    }
}

impl<R: Read> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            if !self.eof && self.read_inner_at_end()? == 0 {
                self.eof = true;
            }
            if self.eof && self.end == 0 {
                self.starved = true;
            }
        }
        Ok(&self.buf[self.pos..self.end])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.end);
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_keeps_bytes_and_skip_consumes() {
        let mut src = Source::new(&b"0123456789"[..]);
        assert_eq!(src.peek(4).ok(), Some(&b"0123"[..]));
        assert!(src.skip(3).is_ok());
        let mut rest = Vec::new();
        assert!(src.read_to_end(&mut rest).is_ok());
        assert_eq!(rest, b"3456789");
        assert!(src.starved());
    }

    #[test]
    fn peek_past_the_end_does_not_starve() {
        let mut src = Source::new(&b"ab"[..]);
        assert_eq!(src.peek(10).ok(), Some(&b"ab"[..]));
        assert!(!src.starved());
        let mut two = [0u8; 2];
        assert!(src.read_exact(&mut two).is_ok());
        assert!(!src.starved());
        assert!(src.at_end().unwrap_or(false));
        assert!(!src.starved());
    }

    #[test]
    fn skip_past_the_end_is_unexpected_eof() {
        let mut src = Source::new(&b"abc"[..]);
        let err = src.skip(4).err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::UnexpectedEof));
    }
}
