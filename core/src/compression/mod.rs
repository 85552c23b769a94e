//! Compression codecs (being written).
