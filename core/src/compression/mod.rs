//! Compression codecs: Barman's registry (names, magic bytes, levels, cloud extensions) and
//! streaming encoders/decoders over `std::io::Read`/`Write`.
//!
//! Formats are the standard ones, so files move freely between walvault, Barman and the
//! command-line tools. Everything here works on caller-supplied readers and writers in
//! bounded chunks; nothing touches files, clocks or threads.
//!
//! Two builds:
//! - default (all pure Rust, builds for wasm): flate2 + zlib-rs, bzip2 (libbz2-rs-sys),
//!   lzma-rust2, ruzstd, lz4_flex, snap;
//! - `native-codecs`: zstd, LZ4 HC and xz through the C libraries, for their full level
//!   range and C speed. Streams are interchangeable between the two builds.
//!
//! Decoding untrusted data is bounded by [`DecodeLimits`]; all data errors are
//! [`DecodeError`]s inside `io::Error`s of kind `InvalidData`.

mod codec;
mod decoder;
mod encoder;
mod error;
mod frames;
mod level;
mod lz4;
mod source;
#[cfg(feature = "native-codecs")]
mod zstd_native;
#[cfg(not(feature = "native-codecs"))]
mod zstd_pure;

#[cfg(test)]
mod tests;

use std::io::{self, Read, Write};

pub use codec::{Codec, MAGIC_MAX_LEN};
pub use decoder::{DecodeLimits, Decoder};
pub use encoder::Encoder;
pub use error::{DecodeError, ParseLevelError, UnknownCodec};
pub use level::Level;

/// Decodes a whole in-memory stream (`None`: plain, returned as is within the limits).
pub fn decode_all(
    codec: Option<Codec>,
    input: &[u8],
    limits: DecodeLimits,
) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = Decoder::new(codec, input, limits).map_err(|e| internal(codec, &e))?;
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).map_err(|e| {
        DecodeError::from_io(&e)
            .cloned()
            .unwrap_or_else(|| internal(codec, &e))
    })?;
    Ok(out)
}

/// Compresses a whole in-memory buffer (`None`: copied).
pub fn encode_all(codec: Option<Codec>, level: Level, input: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = Encoder::new(codec, level, Vec::new())?;
    encoder.write_all(input)?;
    encoder.finish()
}

/// Reading a slice cannot fail, so an untyped error here comes from the codec library
/// itself (e.g. a failed context allocation in C zstd).
fn internal(codec: Option<Codec>, err: &io::Error) -> DecodeError {
    DecodeError::Corrupt {
        codec,
        detail: err.to_string(),
    }
}
