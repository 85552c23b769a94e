//! Typed errors of the compression module.
//!
//! Decoders report failures as `io::Error` (they implement `Read`), with kind
//! [`InvalidData`](std::io::ErrorKind::InvalidData) and a [`DecodeError`] inside; use
//! [`DecodeError::from_io`] to get it back.

use std::io;

use thiserror::Error;

use super::codec::Codec;

/// A name that is not in the codec registry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown compression {name:?}: expected one of gzip, bzip2, xz, zstd, lz4, snappy")]
pub struct UnknownCodec {
    /// The rejected value, as given.
    pub name: String,
}

/// A `compression_level` value that is neither a level name nor an integer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid compression level {value:?}: expected low, medium, high or an integer")]
pub struct ParseLevelError {
    /// The rejected value, as given.
    pub value: String,
}

/// Why a compressed stream could not be decoded. `codec` is `None` for plain pass-through.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The data is not a valid stream of the format (bad header, checksum, block…).
    #[error("{}: corrupt compressed data: {detail}", label(*.codec))]
    Corrupt {
        /// Format being decoded.
        codec: Option<Codec>,
        /// The decoder's own description.
        detail: String,
    },
    /// The input ended before the compressed stream did (this includes empty input).
    #[error("{}: truncated compressed data: {detail}", label(*.codec))]
    Truncated {
        /// Format being decoded.
        codec: Option<Codec>,
        /// Where the end was hit.
        detail: String,
    },
    /// Bytes follow the end of the last complete stream.
    #[error("{}: unexpected data after the end of the compressed stream", label(*.codec))]
    TrailingData {
        /// Format being decoded.
        codec: Option<Codec>,
    },
    /// The decompressed data is larger than [`DecodeLimits::max_output`](super::DecodeLimits).
    #[error("{}: decompressed data exceeds the limit of {limit} bytes", label(*.codec))]
    OutputLimit {
        /// Format being decoded.
        codec: Option<Codec>,
        /// The limit that was hit.
        limit: u64,
    },
    /// The stream asks for a larger window/dictionary than
    /// [`DecodeLimits::max_window`](super::DecodeLimits) allows; refused before allocating it.
    #[error(
        "{}: stream needs a {} window, above the limit of {limit} bytes",
        label(*.codec),
        requested.map_or_else(|| "larger".to_owned(), |r| format!("{r}-byte"))
    )]
    WindowTooLarge {
        /// Format being decoded.
        codec: Option<Codec>,
        /// Window the stream declares, when the decoder reports it.
        requested: Option<u64>,
        /// The limit in bytes.
        limit: u64,
    },
}

fn label(codec: Option<Codec>) -> &'static str {
    codec.map_or("plain", Codec::name)
}

impl DecodeError {
    /// The `DecodeError` inside an `io::Error` returned by a decoder, if it carries one
    /// (errors of the underlying reader are passed through unchanged and do not).
    pub fn from_io(err: &io::Error) -> Option<&DecodeError> {
        err.get_ref().and_then(|e| e.downcast_ref::<DecodeError>())
    }

    /// The codec the failing stream was decoded as (`None`: plain pass-through).
    pub fn codec(&self) -> Option<Codec> {
        match self {
            DecodeError::Corrupt { codec, .. }
            | DecodeError::Truncated { codec, .. }
            | DecodeError::TrailingData { codec }
            | DecodeError::OutputLimit { codec, .. }
            | DecodeError::WindowTooLarge { codec, .. } => *codec,
        }
    }
}

impl From<DecodeError> for io::Error {
    fn from(err: DecodeError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}
