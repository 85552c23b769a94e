//! Registry facts: names, extensions, magic bytes, detection and Barman's level table
//! (cases 75–79 of the Barman reference, section 8.G).

use super::*;

#[test]
fn names_round_trip_and_aliases() {
    for codec in Codec::ALL {
        assert_eq!(Codec::from_name(codec.name()), Some(codec));
        assert_eq!(Codec::from_name(&codec.name().to_uppercase()), Some(codec));
        assert_eq!(codec.to_string(), codec.name());
        assert_eq!(codec.name().parse::<Codec>(), Ok(codec));
    }
    assert_eq!(Codec::from_name("pigz"), Some(Codec::Gzip));
    assert_eq!(Codec::from_name("PyGzip"), Some(Codec::Gzip));
    assert_eq!(Codec::from_name("pybzip2"), Some(Codec::Bzip2));
    assert_eq!(Codec::from_name("custom"), None);
    assert_eq!(Codec::from_name("test_compression"), None);
    assert_eq!(Codec::from_name(""), None);
    let err = "lzo".parse::<Codec>().err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("unknown compression \"lzo\": expected one of gzip, bzip2, xz, zstd, lz4, snappy")
    );
}

#[test]
fn all_is_in_barmans_alphabetical_order() {
    let names: Vec<_> = Codec::ALL.iter().map(|c| c.name()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
}

#[test]
fn extensions_as_barman_cloud() {
    let expected = [
        (Codec::Gzip, ".gz"),
        (Codec::Bzip2, ".bz2"),
        (Codec::Xz, ".xz"),
        (Codec::Zstd, ".zst"),
        (Codec::Lz4, ".lz4"),
        (Codec::Snappy, ".snappy"),
    ];
    for (codec, ext) in expected {
        assert_eq!(codec.extension(), ext);
        assert_eq!(Codec::from_extension(ext), Some(codec));
        assert_eq!(Codec::from_extension(&ext[1..]), Some(codec));
    }
    for bad in ["", ".", "gzip", ".zstd", ".GZ", "..gz", ".tar.gz"] {
        assert_eq!(Codec::from_extension(bad), None, "{bad}");
    }
}

#[test]
fn magic_bytes_case_76() {
    let hex =
        |codec: Codec| -> String { codec.magic().iter().map(|b| format!("{b:02x}")).collect() };
    assert_eq!(hex(Codec::Gzip), "1f8b08");
    assert_eq!(hex(Codec::Bzip2), "425a68");
    assert_eq!(hex(Codec::Xz), "fd377a585a00");
    assert_eq!(hex(Codec::Zstd), "28b52ffd");
    assert_eq!(hex(Codec::Lz4), "04224d18");
    assert_eq!(hex(Codec::Snappy), "ff060000734e61507059");
    let longest = Codec::ALL.iter().map(|c| c.magic().len()).max();
    assert_eq!(longest, Some(MAGIC_MAX_LEN));
}

#[test]
fn identify_case_75() {
    for codec in Codec::ALL {
        let packed = encode_all(Some(codec), Level::Medium, b"some WAL bytes").unwrap_or_default();
        assert_eq!(Codec::identify(&packed), Some(codec));
        assert_eq!(
            Codec::identify(&packed[..MAGIC_MAX_LEN.min(packed.len())]),
            Some(codec)
        );
        assert_eq!(Codec::identify(codec.magic()), Some(codec));
    }
    assert_eq!(Codec::identify(b""), None);
    assert_eq!(Codec::identify(&[0u8; 64]), None);
    // Deterministic "random" bytes that start with none of the magics.
    let noise: Vec<u8> = (0u32..64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(Codec::identify(&noise), None);
}

#[test]
fn identify_partial_magic_case_77() {
    // Barman's validate(): a full magic matches, a wrong byte or a short prefix does not.
    assert_eq!(
        Codec::identify(&[0x42, 0x5a, 0x68, 0xff, 0x12, 0x00]),
        Some(Codec::Bzip2)
    );
    assert_eq!(Codec::identify(&[0x42, 0x5b, 0x68, 0xff]), None);
    assert_eq!(Codec::identify(&[0x42]), None);
    assert_eq!(Codec::identify(&[0x1f, 0x8b]), None);
    assert_eq!(Codec::identify(&Codec::Snappy.magic()[..9]), None);
}

#[test]
fn plain_wal_page_is_not_compressed() {
    // XLogPageHeaderData of a PostgreSQL 15 segment: xlp_magic 0xD110, xlp_info 2 (long header).
    let mut page = vec![0x10, 0xd1, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00];
    page.extend_from_slice(&[0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00, 0x00]);
    page.resize(8192, 0);
    assert_eq!(Codec::identify(&page), None);
    // PostgreSQL 13's magic too.
    assert_eq!(
        Codec::identify(&[0x06, 0xd1, 0x02, 0x00, 0, 0, 0, 0, 0, 0]),
        None
    );
}

#[test]
fn gzip_levels_case_79() {
    let g = |l| Codec::Gzip.level(l);
    assert_eq!(g(Level::Number(10)), 9);
    assert_eq!(g(Level::Number(0)), 1);
    assert_eq!(g(Level::Number(7)), 7);
    assert_eq!(g(Level::Low), 1);
    assert_eq!(g(Level::Medium), 6);
    assert_eq!(g(Level::High), 9);
    assert_eq!(g(Level::Number(i32::MIN)), 1);
    assert_eq!(g(Level::Number(i32::MAX)), 9);
}

#[test]
fn level_tables_of_every_codec() {
    use Level::{High, Low, Medium, Number};
    // codec, low, medium, high, (below min → min), (above max → max), in-range value kept
    let cases = [
        (Codec::Bzip2, 1, 5, 9, (0, 1), (10, 9), 3),
        (Codec::Xz, 1, 3, 5, (0, 1), (10, 9), 7),
        (Codec::Zstd, 1, 4, 9, (-23, -22), (23, 22), 19),
        (Codec::Lz4, 0, 6, 10, (-1, 0), (17, 16), 12),
    ];
    for (codec, low, medium, high, (under, min), (over, max), kept) in cases {
        assert_eq!(codec.level(Low), low, "{codec}");
        assert_eq!(codec.level(Medium), medium, "{codec}");
        assert_eq!(codec.level(High), high, "{codec}");
        assert_eq!(codec.level(Number(under)), min, "{codec}");
        assert_eq!(codec.level(Number(over)), max, "{codec}");
        assert_eq!(codec.level(Number(kept)), kept, "{codec}");
        assert_eq!(codec.level_range(), Some((min, max)), "{codec}");
    }
    assert_eq!(Codec::Zstd.level(Number(0)), 0);
    assert_eq!(Codec::Zstd.level(Number(-5)), -5);
    for level in [Low, Medium, High, Number(-100), Number(100)] {
        assert_eq!(Codec::Snappy.level(level), 0);
    }
    assert_eq!(Codec::Snappy.level_range(), None);
}

#[test]
fn level_parse_and_display() {
    for (text, level) in [
        ("low", Level::Low),
        ("MEDIUM", Level::Medium),
        ("High", Level::High),
        ("7", Level::Number(7)),
        ("-3", Level::Number(-3)),
        (" 4 ", Level::Number(4)),
    ] {
        assert_eq!(text.parse::<Level>(), Ok(level), "{text}");
        assert_eq!(level.to_string().parse::<Level>(), Ok(level));
    }
    assert_eq!(Level::Low.to_string(), "low");
    assert_eq!(Level::Number(-3).to_string(), "-3");
    assert_eq!(Level::default(), Level::Medium);
    for bad in ["", "fast", "1.5", "99999999999", "mediumm"] {
        let err = bad.parse::<Level>();
        assert_eq!(
            err,
            Err(ParseLevelError {
                value: bad.to_owned()
            })
        );
    }
    let msg = "best".parse::<Level>().err().map(|e| e.to_string());
    assert_eq!(
        msg.as_deref(),
        Some("invalid compression level \"best\": expected low, medium, high or an integer")
    );
}

#[test]
fn serde_forms() {
    let json = |v: &dyn erased::Ser| v.json();
    assert_eq!(json(&Codec::Zstd), "\"zstd\"");
    assert_eq!(json(&Level::High), "\"high\"");
    assert_eq!(json(&Level::Number(-2)), "-2");
    let codec: Result<Codec, _> = serde_json::from_str("\"pigz\"");
    assert_eq!(codec.ok(), Some(Codec::Gzip));
    let codec: Result<Codec, _> = serde_json::from_str("\"pybzip2\"");
    assert_eq!(codec.ok(), Some(Codec::Bzip2));
    assert!(serde_json::from_str::<Codec>("\"custom\"").is_err());
    for (text, level) in [
        ("\"low\"", Level::Low),
        ("9", Level::Number(9)),
        ("\"-1\"", Level::Number(-1)),
    ] {
        assert_eq!(
            serde_json::from_str::<Level>(text).ok(),
            Some(level),
            "{text}"
        );
    }
    assert!(serde_json::from_str::<Level>("\"max\"").is_err());
    assert!(serde_json::from_str::<Level>("4294967296").is_err());
}

/// Lets the serde test serialise values of different types through one helper.
mod erased {
    pub trait Ser {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

#[test]
fn decode_limits_default() {
    let limits = DecodeLimits::default();
    assert_eq!(limits.max_output, 1 << 30);
    assert_eq!(limits.max_window, 1 << 27);
}

#[test]
fn decode_error_messages_name_the_codec() {
    let e = DecodeError::OutputLimit {
        codec: Some(Codec::Lz4),
        limit: 5,
    };
    assert_eq!(
        e.to_string(),
        "lz4: decompressed data exceeds the limit of 5 bytes"
    );
    let e = DecodeError::WindowTooLarge {
        codec: Some(Codec::Zstd),
        requested: Some(1 << 30),
        limit: 1 << 27,
    };
    assert_eq!(
        e.to_string(),
        "zstd: stream needs a 1073741824-byte window, above the limit of 134217728 bytes"
    );
    let e = DecodeError::TrailingData { codec: None };
    assert_eq!(
        e.to_string(),
        "plain: unexpected data after the end of the compressed stream"
    );
    let io: std::io::Error = e.clone().into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(DecodeError::from_io(&io), Some(&e));
}
