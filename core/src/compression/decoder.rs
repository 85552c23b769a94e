//! Streaming, bounded decoders.

use std::fmt;
use std::io::{self, Read};

use super::codec::{Codec, MAGIC_MAX_LEN};
use super::error::DecodeError;
use super::lz4::Lz4Decoder;
use super::source::Source;

/// Resource limits for decoding untrusted data.
///
/// Both are checked before the memory is committed: the window when a frame or block
/// header announces it, the output as it is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most decompressed bytes a stream may produce; one more is an error.
    pub max_output: u64,
    /// Largest zstd window or xz (LZMA2) dictionary accepted, in bytes. Other formats have
    /// small fixed windows (gzip 32 KiB, bzip2 900 kB blocks, lz4 4 MiB blocks, snappy 64 KiB).
    pub max_window: u64,
}

impl Default for DecodeLimits {
    /// 1 GiB of output (the largest WAL segment PostgreSQL allows) and a 128 MiB window
    /// (the `zstd` CLI's default `--memory` limit, windowLog 27; xz -9 needs 64 MiB).
    fn default() -> Self {
        DecodeLimits {
            max_output: 1 << 30,
            max_window: 128 << 20,
        }
    }
}

/// Decompresses a stream read from `R`, or passes plain data through.
///
/// Accepts what the reference tools write: multi-member gzip, concatenated bzip2/xz
/// streams, concatenated and skippable zstd and lz4 frames, snappy framing. Every failure
/// that is about the data is an `io::Error` of kind `InvalidData` carrying a
/// [`DecodeError`] that names the codec; errors of `R` itself are returned unchanged.
/// After an error the decoder keeps returning it.
///
/// Input ending before the end of the compressed stream is an error, except where the
/// format cannot tell: snappy framing has no end marker, so a snappy stream cut exactly at
/// a 64 KiB chunk boundary reads as a shorter valid stream (callers that know the expected
/// size, like WAL segments, must check it).
pub struct Decoder<R: Read> {
    codec: Option<Codec>,
    inner: Inner<R>,
    limits: DecodeLimits,
    produced: u64,
    state: State,
}

enum State {
    /// Nothing read yet: empty input is still to be rejected.
    Start,
    Running,
    Done,
    Failed(Failure),
}

/// A stored failure, replayed on every later read: decoder states after an error are not
/// something to keep driving.
enum Failure {
    Data(DecodeError),
    Io(io::ErrorKind, String),
}

enum Inner<R: Read> {
    Plain(Source<R>),
    Gzip(flate2::bufread::MultiGzDecoder<Source<R>>),
    Bzip2(bzip2::bufread::MultiBzDecoder<Source<R>>),
    #[cfg(feature = "native-codecs")]
    Xz(liblzma::bufread::XzDecoder<Source<R>>),
    #[cfg(not(feature = "native-codecs"))]
    Xz(Box<lzma_rust2::XzReader<Source<R>>>),
    #[cfg(feature = "native-codecs")]
    Zstd(super::zstd_native::ZstdNativeDecoder<R>),
    #[cfg(not(feature = "native-codecs"))]
    Zstd(super::zstd_pure::ZstdPureDecoder<R>),
    Lz4(Lz4Decoder<R>),
    Snappy(snap::read::FrameDecoder<Source<R>>),
}

impl<R: Read> Inner<R> {
    fn source_mut(&mut self) -> &mut Source<R> {
        match self {
            Inner::Plain(s) => s,
            Inner::Gzip(d) => d.get_mut(),
            Inner::Bzip2(d) => d.get_mut(),
            Inner::Xz(d) => d.get_mut_source(),
            Inner::Zstd(d) => d.get_mut_source(),
            Inner::Lz4(d) => d.source_mut(),
            Inner::Snappy(d) => d.get_mut(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Inner::Plain(s) => s.read(buf),
            Inner::Gzip(d) => d.read(buf),
            Inner::Bzip2(d) => d.read(buf),
            Inner::Xz(d) => d.read(buf),
            Inner::Zstd(d) => d.read(buf),
            Inner::Lz4(d) => d.read(buf),
            Inner::Snappy(d) => d.read(buf),
        }
    }
}

/// Uniform access to the source under either xz implementation.
trait XzSource<R> {
    fn get_mut_source(&mut self) -> &mut Source<R>;
}

#[cfg(feature = "native-codecs")]
impl<R: Read> XzSource<R> for liblzma::bufread::XzDecoder<Source<R>> {
    fn get_mut_source(&mut self) -> &mut Source<R> {
        self.get_mut()
    }
}

#[cfg(not(feature = "native-codecs"))]
impl<R: Read> XzSource<R> for Box<lzma_rust2::XzReader<Source<R>>> {
    fn get_mut_source(&mut self) -> &mut Source<R> {
        self.inner_mut()
    }
}

/// Uniform access to the source under either zstd implementation.
trait ZstdSource<R> {
    fn get_mut_source(&mut self) -> &mut Source<R>;
}

#[cfg(feature = "native-codecs")]
impl<R: Read> ZstdSource<R> for super::zstd_native::ZstdNativeDecoder<R> {
    fn get_mut_source(&mut self) -> &mut Source<R> {
        self.source_mut()
    }
}

#[cfg(not(feature = "native-codecs"))]
impl<R: Read> ZstdSource<R> for super::zstd_pure::ZstdPureDecoder<R> {
    fn get_mut_source(&mut self) -> &mut Source<R> {
        self.source_mut()
    }
}

impl<R: Read> Decoder<R> {
    /// Decodes `r` as `codec`; `None` passes the bytes through (still bounded by
    /// `limits.max_output`). Nothing is read until the first `read`.
    pub fn new(codec: Option<Codec>, r: R, limits: DecodeLimits) -> io::Result<Self> {
        Self::with_source(codec, Source::new(r), limits)
    }

    /// Sniffs the format from the first bytes ([`Codec::identify`]) and decodes it, or
    /// passes the data through when no magic matches. The sniffed bytes are not lost.
    pub fn auto(r: R, limits: DecodeLimits) -> io::Result<Self> {
        let mut source = Source::new(r);
        let codec = Codec::identify(source.peek(MAGIC_MAX_LEN)?);
        Self::with_source(codec, source, limits)
    }

    /// Decodes `r` as `codec` when it is known (a cloud key's extension names it), else as
    /// [`Decoder::auto`] recognises it (local keys carry no extension).
    pub fn known_or_auto(codec: Option<Codec>, r: R, limits: DecodeLimits) -> io::Result<Self> {
        match codec {
            Some(codec) => Self::new(Some(codec), r, limits),
            None => Self::auto(r, limits),
        }
    }

    fn with_source(
        codec: Option<Codec>,
        source: Source<R>,
        limits: DecodeLimits,
    ) -> io::Result<Self> {
        let inner = match codec {
            None => Inner::Plain(source),
            Some(Codec::Gzip) => Inner::Gzip(flate2::bufread::MultiGzDecoder::new(source)),
            Some(Codec::Bzip2) => Inner::Bzip2(bzip2::bufread::MultiBzDecoder::new(source)),
            Some(Codec::Xz) => Inner::Xz(xz_decoder(source, limits.max_window)?),
            Some(Codec::Zstd) => Inner::Zstd(zstd_decoder(source, limits.max_window)?),
            Some(Codec::Lz4) => Inner::Lz4(Lz4Decoder::new(source)),
            Some(Codec::Snappy) => Inner::Snappy(snap::read::FrameDecoder::new(source)),
        };
        Ok(Decoder {
            codec,
            inner,
            limits,
            produced: 0,
            state: State::Start,
        })
    }

    /// The format being decoded (`None`: plain data).
    pub fn codec(&self) -> Option<Codec> {
        self.codec
    }

    /// Decompressed bytes handed out so far.
    pub fn total_out(&self) -> u64 {
        self.produced
    }

    /// Sorts an error of the inner decoder: the reader's own error goes back as it was,
    /// anything else becomes a [`DecodeError`].
    fn classify(&mut self, err: io::Error) -> Stop {
        match self.inner.source_mut().take_io_error() {
            Some(original) => Stop::Io(original),
            None => Stop::Data(self.classify_data(err)),
        }
    }

    fn classify_data(&mut self, err: io::Error) -> DecodeError {
        if let Some(typed) = DecodeError::from_io(&err) {
            return typed.clone();
        }
        let source = self.inner.source_mut();
        let codec = self.codec;
        let detail = err.to_string();
        if err.kind() == io::ErrorKind::OutOfMemory
            || detail.contains("too much memory")
            || detail.contains("memory limit reached")
        {
            // lzma-rust2's and liblzma's memory limits and C zstd's windowLogMax all refuse
            // before allocating.
            return DecodeError::WindowTooLarge {
                codec,
                requested: None,
                limit: self.limits.max_window,
            };
        }
        if err.kind() == io::ErrorKind::UnexpectedEof || source.starved() {
            return DecodeError::Truncated { codec, detail };
        }
        DecodeError::Corrupt { codec, detail }
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize, Stop> {
        let codec = self.codec;
        if matches!(self.state, State::Start) {
            if codec.is_some() && self.at_end()? {
                return Err(Stop::Data(DecodeError::Truncated {
                    codec,
                    detail: "empty input".to_owned(),
                }));
            }
            self.state = State::Running;
        }
        // Ask for at most one byte beyond the limit: enough to detect the overflow without
        // handing out more than the limit.
        let room = self.limits.max_output.saturating_sub(self.produced);
        let want = usize::try_from(room.saturating_add(1)).map_or(buf.len(), |r| r.min(buf.len()));
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) => return Err(self.classify(e)),
        };
        if n == 0 {
            // Some decoders stop at the end of their stream without looking further.
            if !self.at_end()? {
                return Err(Stop::Data(DecodeError::TrailingData { codec }));
            }
            self.state = State::Done;
            return Ok(0);
        }
        self.produced += n as u64;
        if self.produced > self.limits.max_output {
            return Err(Stop::Data(DecodeError::OutputLimit {
                codec,
                limit: self.limits.max_output,
            }));
        }
        Ok(n)
    }

    fn at_end(&mut self) -> Result<bool, Stop> {
        match self.inner.source_mut().at_end() {
            Ok(end) => Ok(end),
            Err(e) => Err(self.classify(e)),
        }
    }
}

/// Why a read stopped with an error.
enum Stop {
    Data(DecodeError),
    /// The underlying reader's own error, returned to the caller as it was.
    Io(io::Error),
}

impl Failure {
    fn to_io(&self) -> io::Error {
        match self {
            Failure::Data(e) => e.clone().into(),
            Failure::Io(kind, msg) => io::Error::new(*kind, msg.clone()),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            State::Failed(f) => return Err(f.to_io()),
            State::Done => return Ok(0),
            State::Start | State::Running => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        match self.read_inner(buf) {
            Ok(n) => Ok(n),
            Err(Stop::Data(e)) => {
                self.state = State::Failed(Failure::Data(e.clone()));
                Err(e.into())
            }
            Err(Stop::Io(e)) => {
                self.state = State::Failed(Failure::Io(e.kind(), e.to_string()));
                Err(e)
            }
        }
    }
}

impl<R: Read> fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("codec", &self.codec)
            .field("limits", &self.limits)
            .field("total_out", &self.produced)
            .finish_non_exhaustive()
    }
}

/// C liblzma decodes concatenated streams (as `xz -d`) and refuses, before allocating, a
/// dictionary over the limit (it counts the dictionary plus under 1 MiB of state).
#[cfg(feature = "native-codecs")]
fn xz_decoder<R: Read>(
    source: Source<R>,
    max_window: u64,
) -> io::Result<liblzma::bufread::XzDecoder<Source<R>>> {
    let limit = max_window.saturating_add(1 << 20);
    let stream = liblzma::stream::Stream::new_stream_decoder(limit, liblzma::stream::CONCATENATED)
        .map_err(io::Error::from)?;
    Ok(liblzma::bufread::XzDecoder::new_stream(source, stream))
}

#[cfg(not(feature = "native-codecs"))]
fn xz_decoder<R: Read>(
    source: Source<R>,
    max_window: u64,
) -> io::Result<Box<lzma_rust2::XzReader<Source<R>>>> {
    Ok(Box::new(lzma_rust2::XzReader::new_mem_limit(
        source,
        true,
        xz_mem_limit_kib(max_window),
    )))
}

/// lzma-rust2 counts the dictionary plus about 104 KiB of decoder state against its limit.
#[cfg(not(feature = "native-codecs"))]
fn xz_mem_limit_kib(max_window: u64) -> u32 {
    u32::try_from((max_window / 1024).saturating_add(104)).unwrap_or(u32::MAX - 1)
}

#[cfg(feature = "native-codecs")]
fn zstd_decoder<R: Read>(
    source: Source<R>,
    max_window: u64,
) -> io::Result<super::zstd_native::ZstdNativeDecoder<R>> {
    super::zstd_native::ZstdNativeDecoder::new(source, max_window)
}

#[cfg(not(feature = "native-codecs"))]
fn zstd_decoder<R: Read>(
    source: Source<R>,
    max_window: u64,
) -> io::Result<super::zstd_pure::ZstdPureDecoder<R>> {
    Ok(super::zstd_pure::ZstdPureDecoder::new(source, max_window))
}
