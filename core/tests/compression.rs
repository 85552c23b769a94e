//! Behaviour of the compression module through its public API: round trips at every level,
//! format details the C tools rely on, and bounded, panic-free decoding of bad input.
//! Run both with and without `--features native-codecs`.

mod wal_data;

use std::io::{self, Read, Write};

use proptest::prelude::*;
use walvault_core::compression::{
    Codec, DecodeError, DecodeLimits, Decoder, Encoder, Level, decode_all, encode_all,
};

use wal_data::{random, wal_like};

fn encode(codec: Codec, level: Level, data: &[u8]) -> Vec<u8> {
    match encode_all(Some(codec), level, data) {
        Ok(v) => v,
        Err(e) => panic!("{codec} {level}: encode failed: {e}"),
    }
}

fn decode(codec: Option<Codec>, data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    decode_all(codec, data, DecodeLimits::default())
}

/// Every named level plus each codec's range ends and values outside them.
fn levels(codec: Codec) -> Vec<Level> {
    let mut out = vec![
        Level::Low,
        Level::Medium,
        Level::High,
        Level::Number(0),
        Level::Number(-1),
    ];
    if let Some((min, max)) = codec.level_range() {
        out.extend([min, max, min - 5, max + 5].map(Level::Number));
    }
    out
}

#[test]
fn round_trip_every_codec_and_level() {
    let data = wal_like(1 << 20, 1);
    for codec in Codec::ALL {
        for level in levels(codec) {
            let packed = encode(codec, level, &data);
            assert!(packed.starts_with(codec.magic()), "{codec} {level}: magic");
            assert_eq!(Codec::identify(&packed), Some(codec), "{codec} {level}");
            assert!(
                packed.len() < data.len() / 2,
                "{codec} {level}: ratio {}",
                packed.len()
            );
            assert_eq!(
                decode(Some(codec), &packed).as_deref(),
                Ok(&data[..]),
                "{codec} {level}"
            );
        }
    }
}

#[test]
fn round_trip_small_random_and_empty() {
    for codec in Codec::ALL {
        for data in [Vec::new(), vec![7u8], b"hello".to_vec(), random(200_000, 2)] {
            let packed = encode(codec, Level::Medium, &data);
            assert_eq!(
                decode(Some(codec), &packed),
                Ok(data.clone()),
                "{codec} len {}",
                data.len()
            );
        }
    }
}

#[test]
fn streaming_in_odd_pieces() {
    let data = wal_like(3 << 20, 3);
    for codec in Codec::ALL {
        let mut enc = Encoder::new(Some(codec), Level::Low, Vec::new()).expect("encoder");
        let mut rest = &data[..];
        let mut step = 1;
        while !rest.is_empty() {
            let n = step.min(rest.len());
            enc.write_all(&rest[..n]).expect("write");
            rest = &rest[n..];
            step = step * 7 % 100_003 + 1;
        }
        enc.flush().expect("flush");
        let packed = enc.finish().expect("finish");

        let mut dec =
            Decoder::new(Some(codec), &packed[..], DecodeLimits::default()).expect("decoder");
        let mut out = Vec::new();
        let mut buf = [0u8; 777];
        loop {
            let n = dec.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(dec.total_out(), data.len() as u64);
        assert!(out == data, "{codec}: streamed round trip differs");
        // End of stream is sticky.
        assert_eq!(dec.read(&mut buf).ok(), Some(0));
    }
}

#[test]
fn pass_through() {
    let data = wal_like(100_000, 4);
    assert_eq!(
        encode_all(None, Level::High, &data).ok(),
        Some(data.clone())
    );
    assert_eq!(decode(None, &data), Ok(data.clone()));
    assert_eq!(decode(None, b""), Ok(Vec::new()));
    let enc = Encoder::new(None, Level::Low, Vec::new()).expect("encoder");
    assert_eq!(enc.codec(), None);
}

#[test]
fn empty_input_is_truncated_for_every_codec() {
    for codec in Codec::ALL {
        assert!(
            matches!(decode(Some(codec), b""), Err(DecodeError::Truncated { codec: Some(c), .. }) if c == codec),
            "{codec}"
        );
    }
}

#[test]
fn truncated_streams_error() {
    let data = wal_like(600_000, 5);
    for codec in Codec::ALL {
        let packed = encode(codec, Level::Medium, &data);
        let len = packed.len();
        let mut cuts = vec![
            1,
            2,
            codec.magic().len(),
            12,
            len / 3,
            len / 2,
            len - 8,
            len - 4,
            len - 1,
        ];
        // Snappy framing has no end marker: a cut between chunks is a valid shorter stream.
        let chunk_starts = if codec == Codec::Snappy {
            snappy_chunk_starts(&packed)
        } else {
            Vec::new()
        };
        cuts.retain(|&c| c > 0 && c < len && !chunk_starts.contains(&c));
        for cut in cuts {
            let result = decode(Some(codec), &packed[..cut]);
            let err = match result {
                Err(e) => e,
                Ok(out) => panic!(
                    "{codec}: cut at {cut}/{len} decoded {} bytes without error",
                    out.len()
                ),
            };
            assert_eq!(err.codec(), Some(codec), "{codec} cut {cut}: {err}");
            assert!(err.to_string().starts_with(codec.name()), "{err}");
            assert!(
                matches!(
                    err,
                    DecodeError::Truncated { .. } | DecodeError::Corrupt { .. }
                ),
                "{codec} cut {cut}: {err:?}"
            );
        }
    }
}

/// Offsets where snappy chunks start (header: type byte, 24-bit little-endian length).
fn snappy_chunk_starts(stream: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut pos = 0;
    while pos + 4 <= stream.len() {
        starts.push(pos);
        let len = usize::from(stream[pos + 1])
            | usize::from(stream[pos + 2]) << 8
            | usize::from(stream[pos + 3]) << 16;
        pos += 4 + len;
    }
    starts
}

#[test]
fn truncation_at_the_end_is_reported_as_truncated() {
    let data = wal_like(300_000, 6);
    for codec in Codec::ALL {
        let packed = encode(codec, Level::Low, &data);
        let err = decode(Some(codec), &packed[..packed.len() - 1]);
        assert!(
            matches!(err, Err(DecodeError::Truncated { .. })),
            "{codec}: {err:?}"
        );
    }
}

#[test]
fn corrupted_payload_is_detected() {
    let data = wal_like(400_000, 7);
    for codec in Codec::ALL {
        let packed = encode(codec, Level::Medium, &data);
        for at in [packed.len() / 2, packed.len() * 3 / 4] {
            let mut bad = packed.clone();
            bad[at] ^= 0x55;
            let result = decode(Some(codec), &bad);
            // All six formats carry checksums; corruption must never yield different data.
            assert!(result.is_err(), "{codec}: flipped byte {at} went unnoticed");
        }
    }
}

#[test]
fn errors_are_invalid_data_naming_the_codec() {
    for codec in Codec::ALL {
        let mut bad = codec.magic().to_vec();
        bad.extend_from_slice(&[0xA5; 64]);
        let mut dec =
            Decoder::new(Some(codec), &bad[..], DecodeLimits::default()).expect("decoder");
        let mut out = Vec::new();
        let err = dec.read_to_end(&mut out).expect_err("garbage must fail");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{codec}");
        assert!(err.to_string().starts_with(codec.name()), "{codec}: {err}");
        let typed = DecodeError::from_io(&err).expect("typed error");
        assert_eq!(typed.codec(), Some(codec));
        // The failure is sticky.
        let again = dec.read(&mut [0u8; 16]).expect_err("still failed");
        assert_eq!(again.to_string(), err.to_string());
    }
}

#[test]
fn wrong_codec_is_an_error() {
    let data = wal_like(50_000, 8);
    for codec in Codec::ALL {
        let packed = encode(codec, Level::Medium, &data);
        for other in Codec::ALL.into_iter().filter(|&c| c != codec) {
            assert!(
                decode(Some(other), &packed).is_err(),
                "{codec} read as {other}"
            );
        }
    }
}

#[test]
fn trailing_data_is_an_error() {
    let data = wal_like(50_000, 9);
    for codec in Codec::ALL {
        let mut packed = encode(codec, Level::Medium, &data);
        packed.extend_from_slice(b"GARBAGE!");
        assert!(decode(Some(codec), &packed).is_err(), "{codec}");
    }
}

#[test]
fn concatenated_streams_decode_as_one() {
    // gzip members, bzip2 and xz streams, zstd and lz4 frames, snappy streams: the C tools
    // all decode concatenations (`cat a.gz b.gz | gzip -d`).
    let a = wal_like(200_000, 10);
    let b = random(5_000, 11);
    for codec in Codec::ALL {
        let mut packed = encode(codec, Level::Low, &a);
        packed.extend(encode(codec, Level::High, &b));
        let mut expected = a.clone();
        expected.extend_from_slice(&b);
        assert_eq!(decode(Some(codec), &packed), Ok(expected), "{codec}");
    }
}

#[test]
fn skippable_frames_are_skipped() {
    let data = wal_like(100_000, 12);
    let skippable = [0x53, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9];
    for codec in [Codec::Zstd, Codec::Lz4] {
        let mut packed = skippable.to_vec();
        packed.extend(encode(codec, Level::Medium, &data));
        packed.extend_from_slice(&skippable);
        assert_eq!(decode(Some(codec), &packed), Ok(data.clone()), "{codec}");
        // A skippable frame cut short is truncation.
        let cut = &packed[..packed.len() - 1];
        assert!(
            matches!(decode(Some(codec), cut), Err(DecodeError::Truncated { .. })),
            "{codec}"
        );
    }
}

#[test]
fn max_output_is_enforced() {
    let data = wal_like(500_000, 13);
    for codec in Codec::ALL {
        let packed = encode(codec, Level::Medium, &data);
        let exact = DecodeLimits {
            max_output: data.len() as u64,
            ..DecodeLimits::default()
        };
        assert_eq!(
            decode_all(Some(codec), &packed, exact),
            Ok(data.clone()),
            "{codec}"
        );
        let short = DecodeLimits {
            max_output: data.len() as u64 - 1,
            ..DecodeLimits::default()
        };
        assert_eq!(
            decode_all(Some(codec), &packed, short),
            Err(DecodeError::OutputLimit {
                codec: Some(codec),
                limit: data.len() as u64 - 1
            }),
        );
    }
    let tiny = DecodeLimits {
        max_output: 10,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_all(None, &data, tiny),
        Err(DecodeError::OutputLimit { codec: None, .. })
    ));
}

#[test]
fn decompression_bomb_stops_at_the_limit() {
    // 64 MiB of zeros compress to a few KiB; decoding with a 1 MiB limit must stop early.
    let zeros = vec![0u8; 64 << 20];
    let limits = DecodeLimits {
        max_output: 1 << 20,
        ..DecodeLimits::default()
    };
    for codec in Codec::ALL {
        let packed = encode(codec, Level::Low, &zeros);
        let mut dec = Decoder::new(Some(codec), &packed[..], limits).expect("decoder");
        let mut out = Vec::new();
        let err = dec.read_to_end(&mut out).expect_err("limit");
        assert!(
            matches!(
                DecodeError::from_io(&err),
                Some(DecodeError::OutputLimit { .. })
            ),
            "{codec}: {err}"
        );
        assert!(
            out.len() as u64 <= 1 << 20,
            "{codec}: handed out {} bytes",
            out.len()
        );
    }
}

#[test]
fn zstd_frame_short_of_its_declared_size_is_corrupt() {
    // Found by fuzzing (fuzz/corpus/decompress_zstd/regression-*): libzstd's streaming
    // decoder skips the declared-size check when a frame's last block is empty, so these
    // decoded to fewer bytes than declared without an error (unless the caller's buffer held
    // the whole frame). Single-segment frames declaring 38 bytes (descriptor 0x20/0x24).
    let mut empty_checksummed = vec![0x28, 0xb5, 0x2f, 0xfd, 0x24, 38];
    // An empty raw last block, then the checksum of no content (XXH64 of "", low 32 bits).
    empty_checksummed.extend_from_slice(&[0x01, 0x00, 0x00, 0x99, 0xe9, 0xd8, 0x51]);
    let mut ten_of_38 = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, 38];
    // A raw block of 10 bytes, then an empty raw last block; no checksum.
    ten_of_38.extend_from_slice(&[10 << 3, 0x00, 0x00]);
    ten_of_38.extend_from_slice(b"0123456789");
    ten_of_38.extend_from_slice(&[0x01, 0x00, 0x00]);
    for frame in [&empty_checksummed, &ten_of_38] {
        assert!(
            matches!(
                decode(Some(Codec::Zstd), frame),
                Err(DecodeError::Corrupt { .. })
            ),
            "{frame:02x?}"
        );
        // Read in small pieces too: the size of the caller's buffer must not matter.
        let mut dec =
            Decoder::new(Some(Codec::Zstd), &frame[..], DecodeLimits::default()).expect("decoder");
        let mut buf = [0u8; 7];
        let result = loop {
            match dec.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        assert!(result.is_err(), "{frame:02x?} read without an error");
    }
}

#[test]
fn lz4_independent_frame_after_a_linked_one() {
    // Found by fuzzing (fuzz/corpus/decompress_lz4/regression-*): one lz4_flex decoder for
    // all frames kept a linked-block (or legacy) frame's larger buffers, and its debug
    // assertion failed at the next independent-block frame: a panic in test builds.
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    let a = wal_like(100_000, 16);
    let b = wal_like(50_000, 17);
    let info = FrameInfo::new()
        .block_size(BlockSize::Max4MB)
        .block_mode(BlockMode::Linked);
    let mut linked = FrameEncoder::with_frame_info(info, Vec::new());
    linked.write_all(&a).expect("encode");
    let mut packed = linked.finish().expect("finish");
    // walvault writes independent 4 MiB blocks.
    packed.extend(encode(Codec::Lz4, Level::Low, &b));
    let mut expected = a;
    expected.extend_from_slice(&b);
    assert!(decode(Some(Codec::Lz4), &packed) == Ok(expected));
}

#[test]
fn zstd_window_above_the_limit_is_refused() {
    // A frame header announcing a 1 GiB window (descriptor 0, window byte (30-10)<<3), then
    // nothing: the refusal must come from the header alone, before any allocation.
    let header = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 20 << 3, 0x01, 0x00, 0x00];
    assert_eq!(
        decode(Some(Codec::Zstd), &header),
        Err(DecodeError::WindowTooLarge {
            codec: Some(Codec::Zstd),
            requested: Some(1 << 30),
            limit: 128 << 20
        })
    );
    // A real stream with a window larger than a small limit.
    let data = wal_like(4 << 20, 14);
    let packed = encode(Codec::Zstd, Level::Medium, &data);
    let small = DecodeLimits {
        max_window: 64 << 10,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_all(Some(Codec::Zstd), &packed, small),
        Err(DecodeError::WindowTooLarge { .. })
    ));
}

#[test]
fn xz_dictionary_above_the_limit_is_refused() {
    let data = wal_like(100_000, 15);
    // Preset 5 uses an 8 MiB dictionary.
    let packed = encode(Codec::Xz, Level::Number(5), &data);
    let small = DecodeLimits {
        max_window: 1 << 20,
        ..DecodeLimits::default()
    };
    let err = decode_all(Some(Codec::Xz), &packed, small);
    assert!(
        matches!(
            err,
            Err(DecodeError::WindowTooLarge {
                codec: Some(Codec::Xz),
                ..
            })
        ),
        "{err:?}"
    );
    let enough = DecodeLimits {
        max_window: 8 << 20,
        ..DecodeLimits::default()
    };
    assert_eq!(decode_all(Some(Codec::Xz), &packed, enough), Ok(data));
}

#[test]
fn auto_detects_every_codec_and_plain_data() {
    let data = wal_like(300_000, 16);
    for codec in Codec::ALL {
        let packed = encode(codec, Level::Medium, &data);
        let mut dec = Decoder::auto(&packed[..], DecodeLimits::default()).expect("auto");
        assert_eq!(dec.codec(), Some(codec));
        let mut out = Vec::new();
        dec.read_to_end(&mut out).expect("decode");
        assert!(out == data, "{codec}");
    }
    for plain in [data.clone(), b"short".to_vec(), Vec::new(), vec![0u8; 9000]] {
        let mut dec = Decoder::auto(&plain[..], DecodeLimits::default()).expect("auto");
        assert_eq!(dec.codec(), None);
        let mut out = Vec::new();
        dec.read_to_end(&mut out).expect("plain");
        assert_eq!(out, plain);
    }
}

/// A reader that fails after handing out `ok` bytes.
struct FailingReader<'a> {
    data: &'a [u8],
    ok: usize,
}

impl Read for FailingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "disk on fire",
            ));
        }
        let n = buf.len().min(self.ok).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.ok -= n;
        Ok(n)
    }
}

#[test]
fn reader_errors_pass_through_unchanged() {
    let data = wal_like(300_000, 17);
    for codec in Codec::ALL {
        let packed = encode(codec, Level::Medium, &data);
        for ok in [0, 100, packed.len() / 2] {
            let reader = FailingReader { data: &packed, ok };
            let mut dec =
                Decoder::new(Some(codec), reader, DecodeLimits::default()).expect("decoder");
            let mut out = Vec::new();
            let err = dec.read_to_end(&mut out).expect_err("reader fails");
            assert_eq!(
                err.kind(),
                io::ErrorKind::ConnectionReset,
                "{codec} at {ok}: {err}"
            );
            assert!(DecodeError::from_io(&err).is_none());
        }
    }
}

/// A writer that fails after accepting `ok` bytes.
struct FailingWriter {
    ok: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.ok);
        self.ok -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn writer_errors_propagate_without_panic() {
    let data = wal_like(2 << 20, 18);
    for codec in Codec::ALL {
        for ok in [0, 5, 1000, 100_000] {
            let result = Encoder::new(Some(codec), Level::Medium, FailingWriter { ok }).and_then(
                |mut enc| {
                    enc.write_all(&data)?;
                    enc.finish().map(drop)
                },
            );
            let err = result.expect_err("writer fails");
            assert!(
                err.to_string().contains("disk full"),
                "{codec} at {ok}: {err}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_round_trip(data in prop::collection::vec(any::<u8>(), 0..20_000), level in -3i32..25) {
        for codec in Codec::ALL {
            let packed = encode_all(Some(codec), Level::Number(level), &data);
            let packed = packed.map_err(|e| TestCaseError::fail(format!("{codec}: {e}")))?;
            prop_assert_eq!(decode(Some(codec), &packed), Ok(data.clone()), "{}", codec);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(data in prop::collection::vec(any::<u8>(), 0..4_000)) {
        let limits = DecodeLimits { max_output: 1 << 20, max_window: 1 << 20 };
        for codec in Codec::ALL {
            // With and without the real magic in front, so the decoders get past it.
            let _ = decode_all(Some(codec), &data, limits);
            let mut framed = codec.magic().to_vec();
            framed.extend_from_slice(&data);
            let _ = decode_all(Some(codec), &framed, limits);
        }
        let _ = Decoder::auto(&data[..], limits).and_then(|mut d| d.read_to_end(&mut Vec::new()));
    }

    #[test]
    fn mutated_streams_never_panic_a_decoder(
        seed in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let data = wal_like(20_000, seed);
        let limits = DecodeLimits { max_output: 1 << 20, max_window: 1 << 20 };
        for codec in Codec::ALL {
            let mut packed = encode(codec, Level::Medium, &data);
            for (at, byte) in &flips {
                let i = at.index(packed.len());
                packed[i] ^= byte | 1;
            }
            let _ = decode_all(Some(codec), &packed, limits);
            let _ = decode_all(Some(codec), &packed[..cut.index(packed.len())], limits);
        }
    }
}
