//! The bodies of the fuzz targets (`fuzz/`, cargo-fuzz), in one place for both runners: the
//! fuzzer calls them on generated inputs, and `core/tests/fuzz_corpus.rs` calls them on the
//! checked-in seed corpus (`fuzz/corpus/<target>/`) as an ordinary test on stable.
//!
//! Each body asserts the properties that matter for that parser, not only that it returns:
//! a name that parses prints back to itself, a catalogue re-parses equal from what it renders,
//! a header passes the check only for the segment it describes, a decoder never hands out
//! more than its limit and gives the same answer however its input is split. A broken
//! property panics, which is what both runners report. Errors on bad input are fine.
//!
//! Each body returns whether the input was accepted (parsed, decoded): the corpus test uses
//! it to prove the seeds reach past the first check.

use std::io::{self, Read};
use std::mem::discriminant;

use crate::catalogue::{CatalogueEntry, CatalogueReader, parse_catalogue, render_catalogue};
use crate::compression::{
    Codec, DecodeError, DecodeLimits, Decoder, Level, decode_all, encode_all,
};
use crate::restore::header_segment_size;
use crate::wal::{
    HeaderError, LONG_PAGE_HEADER_LEN, Lsn, PageHeader, Segment, SegmentSize, TimelineId,
    WalFileName, check_segment_header, parse_history, parse_page_header, synthetic_page_header,
};

/// A fuzz target of the core; its [`name`](Target::name) is the cargo-fuzz target and the
/// corpus directory. (The configuration parser's target, `config`, lives in the native host.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// [`wal_name`].
    WalName,
    /// [`catalogue`].
    Catalogue,
    /// [`history`].
    History,
    /// [`page_header`].
    PageHeader,
    /// [`verify_segment`].
    VerifySegment,
    /// [`decompress`] with one codec.
    Decompress(Codec),
}

impl Target {
    /// Every core target.
    pub const ALL: [Target; 11] = [
        Target::WalName,
        Target::Catalogue,
        Target::History,
        Target::PageHeader,
        Target::VerifySegment,
        Target::Decompress(Codec::Gzip),
        Target::Decompress(Codec::Bzip2),
        Target::Decompress(Codec::Xz),
        Target::Decompress(Codec::Zstd),
        Target::Decompress(Codec::Lz4),
        Target::Decompress(Codec::Snappy),
    ];

    /// The cargo-fuzz target name, also the corpus directory's name.
    pub fn name(self) -> &'static str {
        match self {
            Target::WalName => "wal_name",
            Target::Catalogue => "catalogue",
            Target::History => "history",
            Target::PageHeader => "page_header",
            Target::VerifySegment => "verify_segment",
            Target::Decompress(Codec::Gzip) => "decompress_gzip",
            Target::Decompress(Codec::Bzip2) => "decompress_bzip2",
            Target::Decompress(Codec::Xz) => "decompress_xz",
            Target::Decompress(Codec::Zstd) => "decompress_zstd",
            Target::Decompress(Codec::Lz4) => "decompress_lz4",
            Target::Decompress(Codec::Snappy) => "decompress_snappy",
        }
    }

    /// Runs the target's body on one input; true when the input was accepted.
    pub fn run(self, data: &[u8]) -> bool {
        match self {
            Target::WalName => wal_name(data),
            Target::Catalogue => catalogue(data),
            Target::History => history(data),
            Target::PageHeader => page_header(data),
            Target::VerifySegment => verify_segment(data),
            Target::Decompress(codec) => decompress(codec, data),
        }
    }
}

/// The input of [`verify_segment`]: a flags byte (bit 0: a `.partial`; bit 1: the stitcher
/// sees the file twice), a chunk size, then the file, which claims to be segment
/// `000000010000000000000001` of 1 MiB.
pub fn verify_segment_input(partial: bool, twice: bool, chunk: u8, file: &[u8]) -> Vec<u8> {
    let mut data = vec![u8::from(partial) | (u8::from(twice) << 1), chunk];
    data.extend_from_slice(file);
    data
}

/// The record-level verifier over hostile bytes (`walvault verify` reads whatever the archive
/// holds). Whatever the input: no panic; the same summary fed whole, in `chunk`-byte pieces or
/// (up to 16 KiB) one byte at a time; findings in file order and inside the bytes fed; the
/// stitcher joins it (to itself, or after a gap) without panicking.
pub fn verify_segment(data: &[u8]) -> bool {
    use crate::verify::{SegmentVerifier, StreamVerifier};
    let [flags, chunk, file @ ..] = data else {
        return false;
    };
    let (partial, twice) = (flags & 1 == 1, flags & 2 == 2);
    let size = SegmentSize::MIN;
    let segment = Segment::new(1, 0, 1);
    let whole = SegmentVerifier::verify(segment, size, partial, None, file);
    let mut pieces = SegmentVerifier::new(segment, size, partial, None);
    for piece in file.chunks(usize::from(*chunk).max(1)) {
        pieces.feed(piece);
    }
    assert_eq!(pieces.finish(), whole, "chunked feed differs");
    if file.len() <= 16 << 10 {
        let mut bytes = SegmentVerifier::new(segment, size, partial, None);
        for b in file {
            bytes.feed(std::slice::from_ref(b));
        }
        assert_eq!(bytes.finish(), whole, "byte-by-byte feed differs");
    }
    assert_eq!(whole.bytes, file.len() as u64);
    let offsets: Vec<u64> = whole.findings.iter().map(|f| f.offset).collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert!(
        offsets.iter().all(|&o| o <= file.len() as u64),
        "a finding past the end: {offsets:?}"
    );
    let mut stream = StreamVerifier::new();
    stream.push(&whole);
    if twice {
        stream.push(&whole);
    } else {
        stream.gap();
        stream.push(&whole);
    }
    let report = stream.finish();
    assert_eq!(report.files, 2);
    whole.stats.records > 0
}

/// WAL file names. The input is one or more names separated by `\n` (so the fuzzer also
/// compares pairs); the whole input is parsed as one name too.
pub fn wal_name(data: &[u8]) -> bool {
    // Directory listings hand hosts UTF-8 names (others are skipped before parsing).
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let whole = check_name(text).is_some();
    let names: Vec<WalFileName> = text.split('\n').filter_map(check_name).collect();
    for pair in names.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Sorting parsed names sorts them as a listing of PostgreSQL's names would.
        assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()), "{a} vs {b}");
        assert_eq!(a == b, a.to_string() == b.to_string(), "{a} vs {b}");
    }
    whole || !names.is_empty()
}

fn check_name(text: &str) -> Option<WalFileName> {
    let parsed = text.parse::<WalFileName>();
    // A path is judged by its last component alone.
    let base = text.rsplit('/').next().unwrap_or(text);
    assert_eq!(
        WalFileName::from_path(text).ok(),
        base.parse::<WalFileName>().ok(),
        "from_path({text:?})"
    );
    let name = parsed.ok()?;
    let shown = name.to_string();
    // Fixed-width hex: what parses is the name, case aside, and prints back to itself.
    assert!(
        shown.eq_ignore_ascii_case(text),
        "{text:?} shown as {shown}"
    );
    assert_eq!(shown.parse::<WalFileName>().as_ref(), Ok(&name));
    let kinds = [
        name.is_segment(),
        name.is_partial(),
        name.is_backup_label(),
        name.is_history(),
    ];
    assert_eq!(
        kinds.iter().filter(|k| **k).count(),
        1,
        "{shown}: {kinds:?}"
    );
    match name.hash_dir() {
        Some(dir) => {
            assert!(shown.starts_with(&dir), "{shown} not under {dir}");
            assert_eq!(name.relative_path(), format!("{dir}/{shown}"));
        }
        None => {
            assert!(name.is_history());
            assert_eq!(name.relative_path(), shown);
        }
    }
    if let Some(segment) = name.segment() {
        assert_eq!(segment.timeline, name.timeline());
        for size in segment_sizes() {
            check_segment_arithmetic(segment, size);
        }
    }
    Some(name)
}

/// Every segment size PostgreSQL allows, 1 MiB to 1 GiB.
fn segment_sizes() -> impl Iterator<Item = SegmentSize> {
    (20..=30).filter_map(|shift| SegmentSize::new(1u64 << shift).ok())
}

fn check_segment_arithmetic(segment: Segment, size: SegmentSize) {
    if !segment.fits(size) {
        // No LSN lies in a segment number that does not exist at this size.
        return;
    }
    let start = segment.lsn_at(0, size);
    let last = u32::try_from(size.bytes() - 1).expect("segment sizes fit in u32");
    assert_eq!(
        Segment::from_lsn(segment.timeline, start, size),
        (segment, 0)
    );
    assert_eq!(
        Segment::from_lsn(segment.timeline, segment.lsn_at(last, size), size),
        (segment, last)
    );
    if let Some(next) = segment.next(size) {
        assert!(next.fits(size) && next > segment, "{segment} → {next}");
        assert_eq!(next.prev(size), Some(segment), "{segment} at {size}");
        assert_eq!(next.segno(size), segment.segno(size) + 1);
        assert_eq!(next.lsn_at(0, size).0, start.0 + size.bytes());
    }
    if let Some(prev) = segment.prev(size) {
        assert_eq!(prev.next(size), Some(segment), "{segment} at {size}");
    }
}

/// Barman's catalogue (`<server>-xlog.db`) as the hosts read it: whole, streamed line by
/// line, and each line alone.
pub fn catalogue(data: &[u8]) -> bool {
    let streamed: Vec<_> = CatalogueReader::new(data).collect();
    // The reader reports a line that is not UTF-8 as that line's error and reads on.
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(
            streamed.iter().any(Result::is_err),
            "non-UTF-8 read cleanly"
        );
        return false;
    };
    let whole = parse_catalogue(text);
    // Both readers agree on the entries and on the first bad line.
    let first_bad = streamed.iter().position(Result::is_err);
    let good: Vec<&CatalogueEntry> = streamed.iter().map_while(|r| r.as_ref().ok()).collect();
    match &whole {
        Ok(entries) => {
            assert_eq!(
                first_bad, None,
                "the reader failed where parse_catalogue did not"
            );
            assert_eq!(good, entries.iter().collect::<Vec<_>>());
        }
        Err(e) => {
            assert_eq!(first_bad.map(|i| i + 1), Some(e.line), "{e}");
            assert_eq!(good.len() + 1, e.line);
        }
    }
    for line in text.lines() {
        if let Ok(entry) = CatalogueEntry::parse_line(line, 1) {
            check_catalogue_entry(line, &entry);
        }
    }
    let Ok(entries) = whole else {
        return false;
    };
    // What walvault writes, it (and Barman, whose format this is) reads back equal.
    let rendered = render_catalogue(&entries);
    let again = parse_catalogue(&rendered).expect("a rendered catalogue parses");
    assert_eq!(again, entries);
    assert_eq!(render_catalogue(&again), rendered);
    true
}

fn check_catalogue_entry(line: &str, entry: &CatalogueEntry) {
    assert!(entry.time.is_finite(), "{line:?}");
    assert_eq!(
        line.split_whitespace().next(),
        Some(entry.name.as_str()),
        "{line:?}"
    );
    let rendered = entry.to_line();
    assert!(rendered.ends_with('\n') && rendered.matches('\t').count() == 4);
    let back = CatalogueEntry::parse_line(&rendered, 1).expect("a rendered line parses");
    assert_eq!(&back, entry, "{line:?} → {rendered:?}");
    assert_eq!(back.to_line(), rendered);
    // The name column is kept as text; when it is a WAL name, it is that name.
    if let Ok(name) = entry.wal_name() {
        assert!(name.to_string().eq_ignore_ascii_case(&entry.name));
    }
}

/// A timeline history file's content (the timeline it names does not change the parsing).
pub fn history(data: &[u8]) -> bool {
    let timeline = TimelineId(2);
    let Ok(entries) = parse_history(timeline, data) else {
        return false;
    };
    assert!(!entries.is_empty());
    let lines = data.split(|&b| b == b'\n').count();
    assert!(
        entries.len() <= lines,
        "{} entries from {lines} lines",
        entries.len()
    );
    for entry in &entries {
        assert_eq!(entry.timeline, timeline);
        assert!(!entry.reason.contains(['\t', '\n']), "{:?}", entry.reason);
        // Each entry is its line: written back in PostgreSQL's form, it reads the same.
        let line = format!(
            "{}\t{}\t{}",
            entry.parent.0, entry.switch_point, entry.reason
        );
        let back = parse_history(timeline, line.as_bytes()).expect("a written entry parses");
        assert_eq!(back, vec![entry.clone()], "{line:?}");
        assert_eq!(
            entry.switch_point.to_string().parse::<Lsn>(),
            Ok(entry.switch_point)
        );
    }
    true
}

/// The start of [`page_header`]'s input: the segment the page is checked against and the
/// segment size, before the page itself.
pub const PAGE_HEADER_PREFIX_LEN: usize = 13;

/// Builds a [`page_header`] input: timeline, log and segment number (little-endian `u32`s),
/// the segment size as a power of two over 1 MiB (`0` is 1 MiB, `4` is 16 MiB; the fuzzer's
/// other bytes wrap modulo 11), then the page.
pub fn page_header_input(segment: Segment, size: SegmentSize, page: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(PAGE_HEADER_PREFIX_LEN + page.len());
    input.extend_from_slice(&segment.timeline.0.to_le_bytes());
    input.extend_from_slice(&segment.log.to_le_bytes());
    input.extend_from_slice(&segment.seg.to_le_bytes());
    input.push((size.bytes().trailing_zeros() - 20) as u8);
    input.extend_from_slice(page);
    input
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// The long page header: parsed alone, and checked against a segment name and size (see
/// [`page_header_input`] for the input's layout).
pub fn page_header(data: &[u8]) -> bool {
    let Some((prefix, page)) = data.split_at_checked(PAGE_HEADER_PREFIX_LEN) else {
        // Too short for the prefix: still a page to parse.
        return check_parsed_header(data).is_ok();
    };
    let parsed = check_parsed_header(page);
    let segment = Segment::new(
        le_u32(&prefix[0..4]),
        le_u32(&prefix[4..8]),
        le_u32(&prefix[8..12]),
    );
    // Any byte selects one of the 11 sizes PostgreSQL allows.
    let size = SegmentSize::new(1 << (20 + u32::from(prefix[12]) % 11)).expect("a valid size");
    let checked = check_segment_header(segment, size, page);
    match &checked {
        Ok(header) => {
            assert_eq!(Ok(header), parsed.as_ref());
            assert_eq!(u64::from(header.segment_size), size.bytes());
            // The header places the page at the start of this very segment: a segment stored
            // under another name never passes.
            assert_eq!(
                Segment::from_lsn(segment.timeline, header.page_address, size),
                (segment, 0),
                "{segment} accepted a page at {}",
                header.page_address
            );
        }
        Err(HeaderError::TooShort(n)) => assert_eq!(*n, page.len()),
        Err(HeaderError::NotWal { .. }) => {
            assert!(matches!(parsed, Err(HeaderError::NotWal { .. })));
        }
        Err(HeaderError::WrongSegmentSize { found, .. }) => {
            assert!(parsed.is_ok_and(|h| h.segment_size == *found));
        }
        Err(HeaderError::WrongAddress { found, .. }) => {
            assert!(parsed.is_ok_and(|h| h.page_address == *found));
        }
        Err(HeaderError::NoSuchSegment { .. }) => {
            assert!(parsed.is_ok() && !segment.fits(size));
        }
    }
    if segment.fits(size) {
        // The header PostgreSQL would write for this segment passes, with its identifier.
        let system_identifier = le_u64(&prefix[..8]);
        let built = synthetic_page_header(&WalFileName::Segment(segment), size, system_identifier);
        let header = check_segment_header(segment, size, &built)
            .unwrap_or_else(|e| panic!("{segment} at {size}: its own header fails: {e}"));
        assert_eq!(header.system_identifier, system_identifier);
        assert_eq!(header.pg_major(), Some(15));
        assert_eq!(header_segment_size(&built), Some(size));
    }
    checked.is_ok()
}

/// `parse_page_header` reads the documented little-endian fields and nothing else.
fn check_parsed_header(page: &[u8]) -> Result<PageHeader, HeaderError> {
    let parsed = parse_page_header(page);
    assert_eq!(
        matches!(parsed, Err(HeaderError::TooShort(_))),
        page.len() < LONG_PAGE_HEADER_LEN
    );
    if let Ok(h) = &parsed {
        assert_eq!(h.magic, u16::from_le_bytes([page[0], page[1]]));
        assert!(page[2] & 0x02 != 0, "accepted without XLP_LONG_HEADER");
        assert_eq!(h.timeline, le_u32(&page[4..8]));
        assert_eq!(h.page_address, Lsn(le_u64(&page[8..16])));
        assert_eq!(h.system_identifier, le_u64(&page[24..32]));
        assert_eq!(h.segment_size, le_u32(&page[32..36]));
        assert_eq!(h.block_size, le_u32(&page[36..40]));
        assert_eq!(
            header_segment_size(page),
            SegmentSize::new(u64::from(h.segment_size)).ok()
        );
    }
    parsed
}

/// The limits the fuzz targets decode under: small enough for fast runs, large enough for
/// every seed (1 MiB of output, an 8 MiB window: xz preset 5, zstd up to level 9 on WAL).
pub const LIMITS: DecodeLimits = DecodeLimits {
    max_output: 1 << 20,
    max_window: 8 << 20,
};

/// Decompresses untrusted input as `codec`: in one call, streamed from input that arrives in
/// odd pieces (with interruptions) and read out in odd pieces, sniffed, and again at the
/// exact output limit.
pub fn decompress(codec: Codec, data: &[u8]) -> bool {
    let whole = decode_all(Some(codec), data, LIMITS);
    check_decoded(codec, &whole, LIMITS);
    let streamed = decode_streaming(codec, Trickle::new(data));
    same_outcome(codec, &whole, &streamed, "input in pieces");
    if Codec::identify(data) == Some(codec) {
        let sniffed = Decoder::auto(data, LIMITS).map_err(|e| sniff_error(codec, &e));
        let sniffed = sniffed.and_then(|mut d| {
            assert_eq!(d.codec(), Some(codec));
            let mut out = Vec::new();
            d.read_to_end(&mut out)
                .map(|_| out)
                .map_err(|e| sniff_error(codec, &e))
        });
        same_outcome(codec, &whole, &sniffed, "sniffed");
    }
    let Ok(out) = &whole else {
        return false;
    };
    // The limit is exact: the output fits a limit of its own length and not one byte less.
    let len = out.len() as u64;
    let exact = DecodeLimits {
        max_output: len,
        ..LIMITS
    };
    assert_eq!(decode_all(Some(codec), data, exact).as_ref(), Ok(out));
    if let Some(less) = len.checked_sub(1) {
        let short = DecodeLimits {
            max_output: less,
            ..LIMITS
        };
        assert_eq!(
            decode_all(Some(codec), data, short),
            Err(DecodeError::OutputLimit {
                codec: Some(codec),
                limit: less
            })
        );
    }
    true
}

fn sniff_error(codec: Codec, e: &io::Error) -> DecodeError {
    DecodeError::from_io(e)
        .cloned()
        .unwrap_or_else(|| panic!("{codec}: untyped error from a slice: {e}"))
}

fn check_decoded(codec: Codec, result: &Result<Vec<u8>, DecodeError>, limits: DecodeLimits) {
    match result {
        Ok(out) => assert!(out.len() as u64 <= limits.max_output),
        Err(e) => {
            assert_eq!(e.codec(), Some(codec), "{e}");
            match e {
                DecodeError::OutputLimit { limit, .. } => assert_eq!(*limit, limits.max_output),
                DecodeError::WindowTooLarge {
                    requested, limit, ..
                } => {
                    assert_eq!(*limit, limits.max_window);
                    assert!(requested.is_none_or(|r| r > *limit), "{e}");
                }
                _ => {}
            }
        }
    }
}

/// The same decision whatever path led to it: equal output, or the same kind of error.
///
/// Truncated and corrupt count as one kind, damaged: input cut short after a damaged part is
/// both, and which one a decoder notices first depends on how much of the input it held when
/// it failed (found by fuzzing gzip: given a short damaged stream whole, zlib-rs takes in all
/// of it, the source runs dry, then the bad distance shows; given it in pieces, it fails
/// first). No caller treats the two differently.
fn same_outcome(
    codec: Codec,
    expected: &Result<Vec<u8>, DecodeError>,
    got: &Result<Vec<u8>, DecodeError>,
    how: &str,
) {
    let kind = |e: &DecodeError| match e {
        DecodeError::Truncated { .. } | DecodeError::Corrupt { .. } => None,
        other => Some(discriminant(other)),
    };
    match (expected, got) {
        (Ok(a), Ok(b)) => assert!(a == b, "{codec} {how}: different output"),
        (Err(a), Err(b)) => assert_eq!(kind(a), kind(b), "{codec} {how}: {a} / {b}"),
        _ => panic!("{codec} {how}: {expected:?} / {got:?}"),
    }
}

/// Reads through a [`Decoder`] in buffers of varying sizes, checking the limit on every read
/// and that the end and failures are sticky.
fn decode_streaming(codec: Codec, input: Trickle<'_>) -> Result<Vec<u8>, DecodeError> {
    let mut decoder =
        Decoder::new(Some(codec), input, LIMITS).map_err(|e| sniff_error(codec, &e))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4099];
    let mut step = 0usize;
    loop {
        step = step % 17 + 1;
        let want = if step.is_multiple_of(4) {
            buf.len()
        } else {
            step * 61
        };
        match decoder.read(&mut buf[..want]) {
            Ok(0) => {
                assert_eq!(
                    decoder.read(&mut buf).ok(),
                    Some(0),
                    "{codec}: end not sticky"
                );
                return Ok(out);
            }
            Ok(n) => {
                assert!(n <= want);
                out.extend_from_slice(&buf[..n]);
                assert_eq!(decoder.total_out(), out.len() as u64);
                assert!(
                    decoder.total_out() <= LIMITS.max_output,
                    "{codec}: past the limit"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                panic!("{codec}: an interruption of the input reached the caller")
            }
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{codec}: {e}");
                let typed = sniff_error(codec, &e);
                let again = decoder.read(&mut buf).expect_err("failure not sticky");
                assert_eq!(again.to_string(), e.to_string());
                return Err(typed);
            }
        }
    }
}

/// A reader over a slice that hands out a few bytes at a time and is interrupted now and
/// then, as pipes, sockets and signals make real readers do.
#[derive(Debug)]
struct Trickle<'a> {
    data: &'a [u8],
    calls: usize,
}

impl<'a> Trickle<'a> {
    fn new(data: &'a [u8]) -> Self {
        Trickle { data, calls: 0 }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(5) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = (self.calls % 13 + 1).min(buf.len()).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        buf[..n].copy_from_slice(head);
        self.data = rest;
        Ok(n)
    }
}

/// One generated seed-corpus file.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target whose corpus holds it.
    pub target: Target,
    /// The file name under `fuzz/corpus/<target>/`.
    pub name: &'static str,
    /// Its content.
    pub data: Vec<u8>,
}

/// The seed corpus, generated from the crate's own fixtures and encoders (written to
/// `fuzz/corpus/` by the ignored test `write_seed_corpus` in `core/tests/fuzz_corpus.rs`).
pub fn seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target, name, data: &[u8]| {
        seeds.push(Seed {
            target,
            name,
            data: data.to_vec(),
        })
    };
    for (name, text) in [
        ("segment", "000000010000000000000001"),
        ("segment-lower-case", "0000000a0000000b0000000c"),
        ("segment-last", "FFFFFFFFFFFFFFFF000000FF"),
        ("partial", "000000010000000200000003.partial"),
        ("backup-label", "00000001000000000000000A.00000020.backup"),
        ("history", "0000000A.history"),
        ("path", "incoming/000000020000000100000000"),
        (
            "listing",
            "00000001.history\n000000010000000000000001\n000000010000000000000001.00000028.backup\n000000010000000000000001.partial\n0000000100000000000000FF\n000000010000000100000000",
        ),
        ("compressed-name", "000000010000000000000001.gz"),
        (
            "backup-label-partial",
            "000000010000000000000001.00000028.backup.partial",
        ),
    ] {
        add(Target::WalName, name, text.as_bytes());
    }
    for (name, text) in [
        (
            "barman-lines",
            "000000010000000000000001\t16777216\t1733775204.2337587\tNone\tNone\n\
             000000010000000000000002\t1234\t1733775205.0\tgzip\tNone\n\
             00000002.history\t42\t1733775206.5\tzstd\tgpg\n\
             000000010000000000000003.00000028.backup\t300\t1.7e+16\tNone\tNone\n\
             000000010000000000000004.partial\t512\t0.0001\tlz4\tNone\n",
        ),
        (
            "three-and-four-fields",
            "000000010000000000000001 42 43\n000000010000000000000002\t42\t43.5\tgzip\n",
        ),
        ("crlf", "000000010000000000000001\t1\t1.0\tNone\tNone\r\n"),
        (
            "foreign-name",
            "test.0000000100000000000000AA.backup\t7\t-3.5e-7\tNone\tNone\n",
        ),
        (
            "bad-second-line",
            "000000010000000000000001\t1\t1.0\tNone\tNone\n000000010000000000000002\t1\n",
        ),
        ("bad-time", "000000010000000000000001\t1\tinf\tNone\tNone\n"),
    ] {
        add(Target::Catalogue, name, text.as_bytes());
    }
    let history_file: &[u8] = b"1\t0/3000000\tno recovery target specified\n\n2\t0/5000060\tbefore 2026-11-21 10:00:00+00\n";
    for (name, text) in [
        (
            "restore-point",
            &b"# Comment\n\n1\t2/83000168\tat restore point \"myrp\"\n"[..],
        ),
        ("two-switches", history_file),
        ("comments-only", b"# only a comment\n\n"),
        ("two-fields", b"1\t2/83000168\n"),
        ("bad-lsn", b"1\tnope\treason\n"),
    ] {
        add(Target::History, name, text);
    }
    let size16 = SegmentSize::DEFAULT;
    let size1 = SegmentSize::MIN;
    let segment = Segment::new(1, 0xA, 0xFE);
    let own = synthetic_page_header(
        &WalFileName::Segment(segment),
        size16,
        7_345_678_901_234_567_890,
    );
    // The first page of 000000010000000000000001 as PostgreSQL 15 writes it.
    let mut pg15 = [0u8; LONG_PAGE_HEADER_LEN];
    pg15[..16].copy_from_slice(&[
        0x10, 0xD1, 0x06, 0, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0,
    ]);
    pg15[24..40].copy_from_slice(&[
        0xD2, 0x02, 0x96, 0x49, 0xE7, 0x2F, 0x5A, 0x65, 0, 0, 0, 0x01, 0, 0x20, 0, 0,
    ]);
    let one = Segment::new(1, 0, 1);
    let next_log = synthetic_page_header(&WalFileName::Segment(Segment::new(1, 1, 0)), size16, 1);
    let small = synthetic_page_header(&WalFileName::Segment(Segment::new(3, 2, 0xFFF)), size1, 1);
    for (name, data) in [
        ("synthetic", page_header_input(segment, size16, &own)),
        ("pg15", page_header_input(one, size16, &pg15)),
        (
            "wrong-segment",
            page_header_input(Segment::new(1, 0xA, 0xFD), size16, &own),
        ),
        ("wrong-size", page_header_input(segment, size1, &own)),
        (
            "1mib-last-of-log",
            page_header_input(Segment::new(3, 2, 0xFFF), size1, &small),
        ),
        ("too-short", page_header_input(one, size16, &pg15[..39])),
        (
            "gzip-not-wal",
            page_header_input(one, size16, &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0].repeat(8)),
        ),
        // Fuzzing findings: a segment number past the last of its log at this size, once
        // accepted with the page of the segment its start aliases, and at the top of the LSN
        // space an overflow.
        (
            "regression-segment-alias",
            page_header_input(Segment::new(1, 0, 0x100), size16, &next_log),
        ),
        (
            "regression-segment-overflow",
            page_header_input(Segment::new(1, u32::MAX, u32::MAX), size16, &own),
        ),
    ] {
        add(Target::PageHeader, name, &data);
    }
    // Real-looking WAL from the test writer: records across pages, a switch, a partial.
    {
        use crate::verify::testing::WalWriter;
        let mut w = WalWriter::new(
            Segment::new(1, 0, 1),
            SegmentSize::MIN,
            7_400_000_000_000_000_001,
        );
        for n in 0..40usize {
            w.record(10, 0, &vec![n as u8; [30, 200, 9000][n % 3]]);
        }
        let stream = w.bytes().to_vec();
        let head = &stream[..stream.len().min(40_000)];
        add(
            Target::VerifySegment,
            "records",
            &verify_segment_input(true, false, 200, head),
        );
        add(
            Target::VerifySegment,
            "records-twice",
            &verify_segment_input(true, true, 7, head),
        );
        let mut flipped = head.to_vec();
        flipped[20_000] ^= 0x10;
        add(
            Target::VerifySegment,
            "crc-mismatch",
            &verify_segment_input(true, false, 64, &flipped),
        );
        w.switch();
        let switched = w.bytes();
        let cut = switched.len().min(60_000);
        add(
            Target::VerifySegment,
            "switch",
            &verify_segment_input(false, false, 255, &switched[..cut]),
        );
        add(
            Target::VerifySegment,
            "empty",
            &verify_segment_input(false, false, 1, &[]),
        );
    }
    // Segment-like content: a page header, then repetitive records, zeros and text.
    let mut wal = own.to_vec();
    for i in 0u32..48 {
        wal.extend_from_slice(&[0x1a, 0, 0, 0, 0, 0, 0x18, 0]);
        wal.extend_from_slice(&i.to_le_bytes());
        wal.extend_from_slice(b"INSERT INTO t VALUES ($1, 'walvault')");
        wal.extend_from_slice(&[0; 24]);
    }
    for codec in Codec::ALL {
        let target = Target::Decompress(codec);
        let encode = |data: &[u8], level| {
            encode_all(Some(codec), level, data).expect("encoding into memory cannot fail")
        };
        add(target, "wal-like", &encode(&wal, Level::Low));
        add(target, "history-high", &encode(history_file, Level::High));
        add(target, "empty", &encode(b"", Level::Medium));
        let mut two = encode(b"first stream ", Level::Low);
        two.extend(encode(b"second stream", Level::Low));
        add(target, "concatenated", &two);
        let mut cut = encode(&wal, Level::Medium);
        cut.truncate(cut.len() * 2 / 3);
        add(target, "truncated", &cut);
        if codec == Codec::Zstd {
            // Fuzzing findings: frames declaring 38 bytes that end with an empty last block
            // after none or 10 of them, once decoded without an error by C libzstd.
            let mut empty = vec![0x28, 0xb5, 0x2f, 0xfd, 0x24, 38, 0x01, 0x00, 0x00];
            empty.extend_from_slice(&[0x99, 0xe9, 0xd8, 0x51]);
            add(target, "regression-declared-size-empty", &empty);
            let mut ten = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, 38, 10 << 3, 0x00, 0x00];
            ten.extend_from_slice(b"0123456789");
            ten.extend_from_slice(&[0x01, 0x00, 0x00]);
            add(target, "regression-declared-size-short", &ten);
        }
        if matches!(codec, Codec::Zstd | Codec::Lz4) {
            let mut skippable = vec![0x53, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9];
            skippable.extend(encode(b"after a skippable frame", Level::Low));
            add(target, "skippable-frame", &skippable);
        }
    }
    seeds
}
