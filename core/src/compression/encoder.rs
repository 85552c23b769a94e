//! Streaming encoders.

use std::fmt;
use std::io::{self, Write};

use super::codec::Codec;
use super::level::Level;
use super::lz4;

/// Compresses everything written to it into `W`, in the standard format of the codec (what
/// `gzip -d`, `bzip2 -d`, `xz -d`, `zstd -d`, `lz4 -d` and python-snappy read).
///
/// Data is compressed in bounded chunks as it arrives. Call [`Encoder::finish`]: dropping
/// the encoder leaves the stream unterminated.
///
/// Levels follow [`Codec::level`]. How each codec uses it:
/// - gzip: zlib-rs, calibrated so each level compresses like zlib's (see `zlib_rs_level`).
/// - bzip2: the block size of libbzip2 (pure-Rust port).
/// - xz: liblzma's presets with CRC64 (as `xz`): C liblzma with `native-codecs`, else
///   lzma-rust2 (hash-chain match finder from preset 4, see `xz_options`).
/// - zstd: with the `native-codecs` feature, C libzstd at that level (0 = its default, 3).
///   Without it (wasm), ruzstd's only implemented mode (`Fastest`) for every level: a valid
///   stream of 1 MiB frames, but on WAL about half the ratio of C zstd -1 and slower.
/// - lz4: levels 0–2 are LZ4's fast mode (lz4_flex). Levels 3 and up are LZ4 HC through C
///   liblz4 with `native-codecs`; without it (wasm) they fall back to lz4_flex's fast mode.
/// - snappy: no levels.
pub struct Encoder<W: Write> {
    codec: Option<Codec>,
    inner: Inner<W>,
}

enum Inner<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    #[cfg(feature = "native-codecs")]
    Xz(liblzma::write::XzEncoder<W>),
    #[cfg(not(feature = "native-codecs"))]
    Xz(lzma_rust2::XzWriter<W>),
    #[cfg(feature = "native-codecs")]
    Zstd(zstd::stream::write::Encoder<'static, W>),
    #[cfg(not(feature = "native-codecs"))]
    Zstd(super::zstd_pure::ZstdPureEncoder<W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
    #[cfg(feature = "native-codecs")]
    Lz4Hc(::lz4::Encoder<W>),
    /// The flag records whether any byte was written: snap writes the stream identifier
    /// with the first chunk, and nothing at all for empty input.
    Snappy(Box<snap::write::FrameEncoder<W>>, bool),
}

impl<W: Write> Encoder<W> {
    /// Starts a stream of `codec` at `level` (see [`Codec::level`]); `None` copies the bytes
    /// unchanged. Some formats write their header here.
    pub fn new(codec: Option<Codec>, level: Level, w: W) -> io::Result<Self> {
        let Some(codec) = codec else {
            return Ok(Encoder {
                codec,
                inner: Inner::Plain(w),
            });
        };
        let n = codec.level(level);
        // Every table range is within 0..=22 except zstd's negative levels, handled below.
        let unsigned = u32::try_from(n).unwrap_or(0);
        let inner = match codec {
            Codec::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::new(zlib_rs_level(unsigned)),
            )),
            Codec::Bzip2 => Inner::Bzip2(bzip2::write::BzEncoder::new(
                w,
                bzip2::Compression::new(unsigned),
            )),
            Codec::Xz => Inner::Xz(xz_encoder(w, unsigned)?),
            Codec::Zstd => Inner::Zstd(zstd_encoder(w, n)?),
            Codec::Lz4 => lz4_encoder(w, n)?,
            Codec::Snappy => Inner::Snappy(Box::new(snap::write::FrameEncoder::new(w)), false),
        };
        Ok(Encoder {
            codec: Some(codec),
            inner,
        })
    }

    /// The format being written (`None`: pass-through).
    pub fn codec(&self) -> Option<Codec> {
        self.codec
    }

    /// Writes the end of the stream (trailer, checksums, last block), flushes, and returns
    /// the writer.
    pub fn finish(self) -> io::Result<W> {
        let mut w = match self.inner {
            Inner::Plain(w) => w,
            Inner::Gzip(e) => e.finish()?,
            Inner::Bzip2(e) => e.finish()?,
            Inner::Xz(e) => e.finish()?,
            Inner::Zstd(e) => e.finish()?,
            Inner::Lz4(e) => e.finish().map_err(io::Error::from)?,
            #[cfg(feature = "native-codecs")]
            Inner::Lz4Hc(e) => {
                let (w, result) = e.finish();
                result?;
                w
            }
            Inner::Snappy(e, wrote) => {
                let mut w = e
                    .into_inner()
                    .map_err(|e| io::Error::new(e.error().kind(), e.to_string()))?;
                if !wrote {
                    // A lone stream identifier is the valid empty stream.
                    w.write_all(Codec::Snappy.magic())?;
                }
                w
            }
        };
        w.flush()?;
        Ok(w)
    }
}

#[cfg(feature = "native-codecs")]
fn xz_encoder<W: Write>(w: W, preset: u32) -> io::Result<liblzma::write::XzEncoder<W>> {
    let stream = liblzma::stream::Stream::new_easy_encoder(preset, liblzma::stream::Check::Crc64)
        .map_err(io::Error::from)?;
    Ok(liblzma::write::XzEncoder::new_stream(w, stream))
}

#[cfg(not(feature = "native-codecs"))]
fn xz_encoder<W: Write>(w: W, preset: u32) -> io::Result<lzma_rust2::XzWriter<W>> {
    lzma_rust2::XzWriter::new(w, xz_options(preset))
}

/// liblzma's preset, except the match finder from preset 4 up: lzma-rust2's binary-tree
/// finder (BT4, what liblzma uses there) runs at half liblzma's speed, while its hash chain
/// (HC4) is faster than liblzma and compresses WAL as well (bench/RESULTS.md).
#[cfg(not(feature = "native-codecs"))]
fn xz_options(preset: u32) -> lzma_rust2::XzOptions {
    let mut options = lzma_rust2::XzOptions::with_preset(preset);
    if preset >= 4 {
        options.lzma_options.mf = lzma_rust2::MfType::Hc4;
    }
    options
}

/// The zlib-rs level that compresses like zlib (and GNU gzip) at `level`.
///
/// zlib-rs follows zlib-ng, whose low and middle levels trade ratio for speed more than
/// zlib's: on PostgreSQL WAL its level 1 is 21% and level 6 is 6% larger than zlib's. This
/// table (measured on WAL, see bench/RESULTS.md) picks the zlib-rs level with zlib's ratio;
/// each is still faster than zlib at the level it stands for.
fn zlib_rs_level(level: u32) -> u32 {
    const TABLE: [u32; 10] = [0, 2, 3, 4, 5, 7, 7, 9, 9, 9];
    TABLE.get(level as usize).copied().unwrap_or(9)
}

#[cfg(feature = "native-codecs")]
fn zstd_encoder<W: Write>(
    w: W,
    level: i32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(w, level)?;
    // The zstd CLI writes a content checksum by default; so do we, for integrity on restore.
    encoder.include_checksum(true)?;
    Ok(encoder)
}

#[cfg(not(feature = "native-codecs"))]
fn zstd_encoder<W: Write>(w: W, _level: i32) -> io::Result<super::zstd_pure::ZstdPureEncoder<W>> {
    Ok(super::zstd_pure::ZstdPureEncoder::new(w))
}

#[cfg(feature = "native-codecs")]
fn lz4_encoder<W: Write>(w: W, level: i32) -> io::Result<Inner<W>> {
    Ok(if level >= lz4::HC_MIN_LEVEL {
        Inner::Lz4Hc(lz4::hc_encoder(w, level)?)
    } else {
        Inner::Lz4(lz4::fast_encoder(w))
    })
}

#[cfg(not(feature = "native-codecs"))]
fn lz4_encoder<W: Write>(w: W, _level: i32) -> io::Result<Inner<W>> {
    Ok(Inner::Lz4(lz4::fast_encoder(w)))
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(w) => w.write(buf),
            Inner::Gzip(e) => e.write(buf),
            Inner::Bzip2(e) => e.write(buf),
            Inner::Xz(e) => e.write(buf),
            Inner::Zstd(e) => e.write(buf),
            Inner::Lz4(e) => e.write(buf),
            #[cfg(feature = "native-codecs")]
            Inner::Lz4Hc(e) => e.write(buf),
            Inner::Snappy(e, wrote) => {
                *wrote |= !buf.is_empty();
                e.write(buf)
            }
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // Forward so encoders with a faster bulk path (lz4_flex, snap) get whole buffers.
        match &mut self.inner {
            Inner::Plain(w) => w.write_all(buf),
            Inner::Gzip(e) => e.write_all(buf),
            Inner::Bzip2(e) => e.write_all(buf),
            Inner::Xz(e) => e.write_all(buf),
            Inner::Zstd(e) => e.write_all(buf),
            Inner::Lz4(e) => e.write_all(buf),
            #[cfg(feature = "native-codecs")]
            Inner::Lz4Hc(e) => e.write_all(buf),
            Inner::Snappy(e, wrote) => {
                *wrote |= !buf.is_empty();
                e.write_all(buf)
            }
        }
    }

    /// Flushes what the codec can flush without ending the stream (for zstd without
    /// `native-codecs` this ends the current frame; the stream stays valid).
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.flush(),
            Inner::Gzip(e) => e.flush(),
            Inner::Bzip2(e) => e.flush(),
            Inner::Xz(e) => e.flush(),
            Inner::Zstd(e) => e.flush(),
            Inner::Lz4(e) => e.flush(),
            #[cfg(feature = "native-codecs")]
            Inner::Lz4Hc(e) => e.flush(),
            Inner::Snappy(e, _) => e.flush(),
        }
    }
}

impl<W: Write> fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}
