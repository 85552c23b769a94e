//! The streaming verifier of one WAL file.

use super::format::{
    CONTINUATION_HEAD, LONG_PAGE_HEADER, MAX_RECORD_LEN, RECORD_HEADER, SHORT_PAGE_HEADER,
    XLP_ALL_FLAGS, XLP_BKP_REMOVABLE, XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD,
    XLP_LONG_HEADER, align, crc_append, is_switch, record_crc, rmid_valid, supported_major, u16_at,
    u32_at, u64_at,
};
use super::report::{
    Continuation, EndReason, Finding, FindingKind, RecordRef, RecordStats, RecordsEnd,
    SegmentSummary, Unfinished,
};
use crate::wal::{Lsn, Segment, SegmentSize};

/// WAL block sizes PostgreSQL can be built with (`--with-wal-blocksize`: 1 to 64 KiB).
const BLOCK_SIZES: std::ops::RangeInclusive<u32> = 1024..=65536;

/// A record that started in this file and is not finished yet.
#[derive(Clone, Copy, Debug)]
struct Partial {
    lsn: Lsn,
    offset: u64,
    header: [u8; RECORD_HEADER],
    hdr_len: usize,
    /// `xl_tot_len`, 0 until its four bytes are in.
    total_len: u32,
    /// Bytes of the record seen, header included.
    got: u32,
    body_crc: u32,
    /// The record before it in this file, if any.
    expected_prev: Option<Lsn>,
}

/// Where the byte stream is with respect to records.
#[derive(Clone, Copy, Debug)]
enum Rec {
    /// A record starts at the next aligned position (after `pad` bytes).
    Boundary,
    /// Inside a record that started in this file.
    Record(Partial),
    /// Inside the tail of a record from an earlier file; `rem` bytes of it are still to come.
    Foreign { rem: u32 },
    /// The records have ended: the rest must be zeros and padding page headers.
    Ended(EndReason),
    /// Nothing more to check (after an error, or after stale bytes past the end).
    Done,
}

/// Verifies one WAL file fed as a byte stream in chunks of any size, keeping only a page
/// header, the current record's header and a running CRC: memory does not grow with the
/// records' sizes.
///
/// Verification of a file stops at its first error: after a corrupt page or record header
/// the next record boundary is unknown, as it is for PostgreSQL's recovery, which stops there
/// too. Only the file's length is still counted.
#[derive(Debug)]
pub struct SegmentVerifier {
    segment: Segment,
    size: SegmentSize,
    partial: bool,
    expected_sysid: Option<u64>,
    /// Bytes consumed so far: the offset of the next byte.
    pos: u64,
    /// `xlp_xlog_blcksz`, 0 until the long header is read.
    blcksz: u64,
    page_start: u64,
    in_page_header: bool,
    hdr: [u8; LONG_PAGE_HEADER],
    hdr_len: usize,
    magic: Option<u16>,
    major: u32,
    sysid: Option<u64>,
    first_tli: Option<u32>,
    last_tli: Option<u32>,
    rec: Rec,
    /// Alignment padding still to skip before the next record.
    pad: u64,
    /// The start of the last record started in this file.
    prev: Option<Lsn>,
    last_complete: Option<Lsn>,
    continuation: Option<Continuation>,
    first_record: Option<RecordRef>,
    unfinished: Option<Unfinished>,
    end: Option<RecordsEnd>,
    overwritten: u32,
    too_long: bool,
    stats: RecordStats,
    findings: Vec<Finding>,
}

impl SegmentVerifier {
    /// A verifier for the file of `segment`; `partial` for a `.partial` (records may end
    /// early, the file may be short); `expected_sysid` refuses a file of another cluster.
    pub fn new(
        segment: Segment,
        size: SegmentSize,
        partial: bool,
        expected_sysid: Option<u64>,
    ) -> Self {
        SegmentVerifier {
            segment,
            size,
            partial,
            expected_sysid,
            pos: 0,
            blcksz: 0,
            page_start: 0,
            in_page_header: true,
            hdr: [0; LONG_PAGE_HEADER],
            hdr_len: 0,
            magic: None,
            major: 0,
            sysid: None,
            first_tli: None,
            last_tli: None,
            rec: Rec::Boundary,
            pad: 0,
            prev: None,
            last_complete: None,
            continuation: None,
            first_record: None,
            unfinished: None,
            end: None,
            overwritten: 0,
            too_long: false,
            stats: RecordStats::default(),
            findings: Vec::new(),
        }
    }

    /// Verifies the next bytes of the (decompressed) file.
    pub fn feed(&mut self, mut data: &[u8]) {
        let seg_bytes = self.size.bytes();
        while !data.is_empty() {
            if self.pos >= seg_bytes {
                self.pos += data.len() as u64;
                if !self.too_long {
                    self.too_long = true;
                    self.finding(
                        seg_bytes,
                        FindingKind::TooLong {
                            bytes: self.pos,
                            expected: seg_bytes,
                        },
                    );
                }
                return;
            }
            let room = usize::try_from(seg_bytes - self.pos).unwrap_or(usize::MAX);
            if matches!(self.rec, Rec::Done) {
                let n = room.min(data.len());
                self.pos += n as u64;
                data = &data[n..];
                continue;
            }
            if self.in_page_header {
                let need = if self.page_start == 0 {
                    LONG_PAGE_HEADER
                } else {
                    SHORT_PAGE_HEADER
                };
                let take = (need - self.hdr_len).min(data.len()).min(room);
                self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&data[..take]);
                self.hdr_len += take;
                self.pos += take as u64;
                data = &data[take..];
                if self.hdr_len == need {
                    self.in_page_header = false;
                    self.page_header();
                }
                continue;
            }
            let page_end = self.page_start + self.blcksz;
            let n = usize::try_from(page_end - self.pos)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.body(&data[..n]);
            self.pos += n as u64;
            data = &data[n..];
            if self.pos == page_end {
                self.page_start = page_end;
                self.in_page_header = true;
                self.hdr_len = 0;
            }
        }
    }

    /// Ends verification: the summary of the file.
    pub fn finish(mut self) -> SegmentSummary {
        let seg_bytes = self.size.bytes();
        let header_missing = self.magic.is_none() && !matches!(self.rec, Rec::Done);
        if (self.pos < seg_bytes && !self.partial) || header_missing {
            self.finding(
                self.pos,
                FindingKind::Truncated {
                    bytes: self.pos,
                    expected: seg_bytes,
                },
            );
        }
        if let Rec::Record(p) = self.rec
            && p.hdr_len >= 4
        {
            self.unfinished = Some(unfinished(&p));
        }
        if let Rec::Record(p) = self.rec
            && p.hdr_len < 4
        {
            // A .partial cut inside a record's length: that record is not there.
            self.drop_started(&p);
        }
        let end = self.end.unwrap_or(RecordsEnd {
            offset: self.pos.min(seg_bytes),
            lsn: self.lsn_at(self.pos.min(seg_bytes)),
            reason: if self.pos >= seg_bytes {
                EndReason::SegmentEnd
            } else {
                EndReason::EndOfData
            },
        });
        SegmentSummary {
            segment: self.segment,
            segment_size: seg_bytes,
            partial: self.partial,
            bytes: self.pos,
            magic: self.magic,
            pg_major: self.magic.and_then(supported_major),
            system_identifier: self.sysid,
            block_size: (self.blcksz > 0).then_some(self.blcksz as u32),
            first_page_tli: self.first_tli,
            last_page_tli: self.last_tli,
            continuation: self.continuation,
            first_record: self.first_record,
            last_record: self.prev,
            last_complete_record: self.last_complete,
            unfinished: self.unfinished,
            end,
            overwritten_records: self.overwritten,
            stats: self.stats,
            findings: self.findings,
        }
    }

    /// Verifies a whole file in one call.
    pub fn verify(
        segment: Segment,
        size: SegmentSize,
        partial: bool,
        expected_sysid: Option<u64>,
        bytes: &[u8],
    ) -> SegmentSummary {
        let mut v = SegmentVerifier::new(segment, size, partial, expected_sysid);
        v.feed(bytes);
        v.finish()
    }

    fn lsn_at(&self, offset: u64) -> Lsn {
        Lsn(self.segment.lsn_at(0, self.size).0.wrapping_add(offset))
    }

    fn finding(&mut self, offset: u64, kind: FindingKind) {
        self.finding_at(offset, self.lsn_at(offset), kind);
    }

    fn finding_at(&mut self, offset: u64, lsn: Lsn, kind: FindingKind) {
        self.findings.push(Finding {
            segment: self.segment,
            offset,
            lsn,
            kind,
        });
    }

    /// Records an error and stops checking the file.
    fn fail(&mut self, offset: u64, lsn: Lsn, kind: FindingKind) {
        self.finding_at(offset, lsn, kind);
        if let Rec::Record(p) = self.rec {
            self.drop_started(&p);
        }
        self.rec = Rec::Done;
        self.end.get_or_insert(RecordsEnd {
            offset,
            lsn: self.lsn_at(offset),
            reason: EndReason::Error,
        });
    }

    fn fail_here(&mut self, offset: u64, kind: FindingKind) {
        self.fail(offset, self.lsn_at(offset), kind);
    }

    /// Forgets a record that turned out not to be one (the end of the records) or that was
    /// abandoned: the previous record is again the last complete one.
    fn drop_started(&mut self, p: &Partial) {
        self.prev = p.expected_prev;
        if self.first_record.is_some_and(|r| r.lsn == p.lsn) {
            self.first_record = None;
        }
    }

    /// The records end at `offset`: the rest must be padding.
    fn end_records(&mut self, offset: u64, reason: EndReason) {
        self.end = Some(RecordsEnd {
            offset,
            lsn: self.lsn_at(offset),
            reason,
        });
        self.rec = Rec::Ended(reason);
    }

    fn page_header(&mut self) {
        let start = self.page_start;
        let page_lsn = self.lsn_at(start);
        let first = start == 0;
        let h = self.hdr;
        let short_zero = h[..SHORT_PAGE_HEADER].iter().all(|&b| b == 0);
        if let Rec::Ended(reason) = self.rec {
            if !short_zero && !self.is_padding_header(&h, page_lsn) {
                self.stale_after_end(start, reason);
            }
            return;
        }
        if !first && short_zero {
            // A zeroed page: the end of the WAL written so far.
            return self.zeros_at(start, page_lsn);
        }
        let magic = u16_at(&h, 0);
        let info = u16_at(&h, 2);
        let tli = u32_at(&h, 4);
        let addr = Lsn(u64_at(&h, 8));
        let rem = u32_at(&h, 16);
        if first {
            let Some(major) = supported_major(magic) else {
                return self.fail_here(start, FindingKind::UnknownMagic { magic });
            };
            self.magic = Some(magic);
            self.major = major;
            if info & XLP_LONG_HEADER == 0 || info & !XLP_ALL_FLAGS != 0 {
                return self.fail_here(start, FindingKind::InvalidInfoBits { info });
            }
            let sysid = u64_at(&h, 24);
            let seg_size = u32_at(&h, 32);
            let blcksz = u32_at(&h, 36);
            self.sysid = Some(sysid);
            if let Some(expected) = self.expected_sysid
                && expected != sysid
            {
                return self.fail_here(
                    start,
                    FindingKind::WrongSystemIdentifier {
                        expected,
                        found: sysid,
                    },
                );
            }
            if u64::from(seg_size) != self.size.bytes() {
                return self.fail_here(
                    start,
                    FindingKind::WrongSegmentSize {
                        expected: self.size.bytes(),
                        found: seg_size,
                    },
                );
            }
            if !blcksz.is_power_of_two() || !BLOCK_SIZES.contains(&blcksz) {
                return self.fail_here(start, FindingKind::UnsupportedBlockSize { found: blcksz });
            }
            self.blcksz = u64::from(blcksz);
        } else {
            let expected = self.magic.unwrap_or(0);
            if magic != expected {
                return self.fail_here(
                    start,
                    FindingKind::MagicChanged {
                        expected,
                        found: magic,
                    },
                );
            }
            // PostgreSQL writes the long header only at a segment's start.
            if info & !XLP_ALL_FLAGS != 0 || info & XLP_LONG_HEADER != 0 {
                return self.fail_here(start, FindingKind::InvalidInfoBits { info });
            }
        }
        if addr != page_lsn {
            return self.fail_here(
                start,
                FindingKind::WrongPageAddress {
                    expected: page_lsn,
                    found: addr,
                },
            );
        }
        if tli > self.segment.timeline.0 {
            return self.fail_here(
                start,
                FindingKind::TimelineAboveFile {
                    found: tli,
                    file: self.segment.timeline.0,
                },
            );
        }
        if let Some(after) = self.last_tli
            && tli < after
        {
            return self.fail_here(
                start,
                FindingKind::TimelineOutOfSequence { found: tli, after },
            );
        }
        self.first_tli.get_or_insert(tli);
        self.last_tli = Some(tli);
        self.continuation_flags(start, info, rem);
    }

    /// Checks the page's continuation flags against the record in progress.
    fn continuation_flags(&mut self, start: u64, info: u16, rem: u32) {
        let cont = info & XLP_FIRST_IS_CONTRECORD != 0;
        let overwrite = info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0;
        match self.rec {
            Rec::Boundary => {
                self.pad = 0;
                if start == 0 && cont && rem > 0 {
                    self.continuation = Some(Continuation {
                        rem_len: rem,
                        len: 0,
                        head: Vec::with_capacity(CONTINUATION_HEAD),
                        tail_crc: 0,
                        overwritten: false,
                    });
                    self.rec = Rec::Foreign { rem };
                } else if cont {
                    self.fail_here(start, FindingKind::UnexpectedContinuation { rem_len: rem });
                } else if start == 0 && overwrite {
                    // The record the previous file left unfinished was abandoned.
                    self.continuation = Some(Continuation {
                        rem_len: 0,
                        len: 0,
                        head: Vec::new(),
                        tail_crc: 0,
                        overwritten: true,
                    });
                }
            }
            Rec::Record(p) => {
                let expected = p.total_len - p.got;
                if !cont && overwrite {
                    // PostgreSQL skips the abandoned record and reads on after this header.
                    self.overwritten += 1;
                    self.drop_started(&p);
                    self.rec = Rec::Boundary;
                    self.pad = 0;
                } else if !cont {
                    self.fail(
                        p.offset,
                        p.lsn,
                        FindingKind::MissingContinuation {
                            expected_rem: expected,
                        },
                    );
                } else if rem != expected {
                    self.fail(
                        p.offset,
                        p.lsn,
                        FindingKind::ContinuationLength {
                            expected,
                            found: rem,
                        },
                    );
                }
            }
            Rec::Foreign { rem: expected } => {
                if !cont && overwrite {
                    self.overwritten += 1;
                    if let Some(c) = self.continuation.as_mut() {
                        c.overwritten = true;
                    }
                    self.rec = Rec::Boundary;
                    self.pad = 0;
                } else if !cont {
                    self.fail_here(
                        start,
                        FindingKind::MissingContinuation {
                            expected_rem: expected,
                        },
                    );
                } else if rem != expected {
                    self.fail_here(
                        start,
                        FindingKind::ContinuationLength {
                            expected,
                            found: rem,
                        },
                    );
                }
            }
            Rec::Ended(_) | Rec::Done => {}
        }
    }

    /// Whether a page header after the end of the records is what PostgreSQL writes there:
    /// before 14, a short header with no flags but `XLP_BKP_REMOVABLE` (from 14 on the
    /// padding pages' headers are zeroed, handled by the caller).
    fn is_padding_header(&self, h: &[u8], page_lsn: Lsn) -> bool {
        Some(u16_at(h, 0)) == self.magic
            && u16_at(h, 2) & !XLP_BKP_REMOVABLE == 0
            && Lsn(u64_at(h, 8)) == page_lsn
            && u32_at(h, 16) == 0
            && self.last_tli.is_none_or(|t| u32_at(h, 4) >= t)
            && u32_at(h, 4) <= self.segment.timeline.0
            && h[20..SHORT_PAGE_HEADER].iter().all(|&b| b == 0)
    }

    fn stale_after_end(&mut self, offset: u64, after: EndReason) {
        self.finding(offset, FindingKind::NonZeroAfterEnd { after });
        self.rec = Rec::Done;
    }

    /// Zeros where a record (or a page header) should be: the end of the records.
    fn zeros_at(&mut self, offset: u64, lsn: Lsn) {
        match self.rec {
            Rec::Record(p) if self.partial => {
                // The stream stopped inside this record.
                self.unfinished = Some(unfinished(&p));
                self.end_records(offset, EndReason::Zeros);
            }
            _ if self.partial => self.end_records(offset, EndReason::Zeros),
            Rec::Boundary
                if self.first_record.is_none()
                    && self.continuation.as_ref().is_some_and(|c| {
                        c.rem_len as usize <= CONTINUATION_HEAD && !c.overwritten
                    }) =>
            {
                // Only the rest of a header came over from the previous file: a switch record
                // split across the files pads this segment (the stitcher checks it was one).
                self.end_records(offset, EndReason::SwitchContinued);
            }
            _ => self.fail(offset, lsn, FindingKind::RecordsEndEarly),
        }
    }

    /// Consumes bytes of a page's body (never across a page boundary).
    fn body(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while i < chunk.len() {
            let off = self.pos + i as u64;
            match self.rec {
                Rec::Done => return,
                Rec::Ended(reason) => {
                    if let Some(j) = chunk[i..].iter().position(|&b| b != 0) {
                        self.stale_after_end(off + j as u64, reason);
                    }
                    return;
                }
                Rec::Foreign { rem } => {
                    let take = (rem as usize).min(chunk.len() - i);
                    let bytes = &chunk[i..i + take];
                    if let Some(c) = self.continuation.as_mut() {
                        let h = (CONTINUATION_HEAD - c.head.len()).min(take);
                        c.head.extend_from_slice(&bytes[..h]);
                        c.tail_crc = crc_append(c.tail_crc, &bytes[h..]);
                        c.len += take as u32;
                    }
                    i += take;
                    let rem = rem - take as u32;
                    if rem == 0 {
                        let end = off + take as u64;
                        self.pad = align(end) - end;
                        self.rec = Rec::Boundary;
                    } else {
                        self.rec = Rec::Foreign { rem };
                    }
                }
                Rec::Boundary => {
                    if self.pad > 0 {
                        let skip = (self.pad as usize).min(chunk.len() - i);
                        self.pad -= skip as u64;
                        i += skip;
                        continue;
                    }
                    let lsn = self.lsn_at(off);
                    let expected_prev = self.prev;
                    self.prev = Some(lsn);
                    if self.first_record.is_none() {
                        self.first_record = Some(RecordRef {
                            lsn,
                            offset: off,
                            prev: None,
                        });
                    }
                    self.rec = Rec::Record(Partial {
                        lsn,
                        offset: off,
                        header: [0; RECORD_HEADER],
                        hdr_len: 0,
                        total_len: 0,
                        got: 0,
                        body_crc: 0,
                        expected_prev,
                    });
                }
                Rec::Record(mut p) => {
                    if p.hdr_len < RECORD_HEADER {
                        let take = (RECORD_HEADER - p.hdr_len).min(chunk.len() - i);
                        p.header[p.hdr_len..p.hdr_len + take].copy_from_slice(&chunk[i..i + take]);
                        p.hdr_len += take;
                        p.got += take as u32;
                        i += take;
                        if p.total_len == 0 && p.hdr_len >= 4 {
                            let tot = u32_at(&p.header, 0);
                            if tot == 0 {
                                self.drop_started(&p);
                                self.rec = Rec::Boundary;
                                self.zeros_at(p.offset, p.lsn);
                                // The first non-zero byte is the finding's offset, whatever
                                // the chunking (found by fuzzing: it was the record's start
                                // when the chunk held more than the length field).
                                if let Some(j) = p.header[4..p.hdr_len].iter().position(|&b| b != 0)
                                    && let Rec::Ended(reason) = self.rec
                                {
                                    self.stale_after_end(p.offset + 4 + j as u64, reason);
                                }
                                continue;
                            }
                            if (tot as usize) < RECORD_HEADER || tot > MAX_RECORD_LEN {
                                self.rec = Rec::Record(p);
                                return self.fail(
                                    p.offset,
                                    p.lsn,
                                    FindingKind::BadRecordLength { tot_len: tot },
                                );
                            }
                            p.total_len = tot;
                        }
                        if p.hdr_len == RECORD_HEADER {
                            self.rec = Rec::Record(p);
                            if let Err(kind) = self.check_header(&p) {
                                return self.fail(p.offset, p.lsn, kind);
                            }
                        }
                    } else {
                        let take = ((p.total_len - p.got) as usize).min(chunk.len() - i);
                        p.body_crc = crc_append(p.body_crc, &chunk[i..i + take]);
                        p.got += take as u32;
                        i += take;
                    }
                    self.rec = Rec::Record(p);
                    if p.hdr_len == RECORD_HEADER && p.got == p.total_len {
                        self.complete(&p, off_after(self.pos, i));
                    }
                }
            }
        }
    }

    /// `ValidXLogRecordHeader`: the resource manager and the back link.
    fn check_header(&mut self, p: &Partial) -> Result<(), FindingKind> {
        let rmid = p.header[17];
        if !rmid_valid(rmid, self.major) {
            return Err(FindingKind::BadResourceManager { rmid });
        }
        let found_prev = Lsn(u64_at(&p.header, 8));
        match p.expected_prev {
            Some(expected_prev) if expected_prev != found_prev => {
                return Err(FindingKind::PrevLinkBroken {
                    expected_prev,
                    found_prev,
                });
            }
            // The first record of the file: the stitcher checks the exact link.
            None if found_prev >= p.lsn => return Err(FindingKind::PrevLinkAhead { found_prev }),
            _ => {}
        }
        if let Some(first) = self.first_record.as_mut()
            && first.lsn == p.lsn
        {
            first.prev = Some(found_prev);
        }
        Ok(())
    }

    /// A record whose bytes are all in: its CRC, its statistics, and what follows it.
    fn complete(&mut self, p: &Partial, end: u64) {
        let computed = record_crc(p.body_crc, &p.header);
        let stored = u32_at(&p.header, 20);
        if computed != stored {
            return self.fail(
                p.offset,
                p.lsn,
                FindingKind::CrcMismatch {
                    expected: stored,
                    found: computed,
                },
            );
        }
        self.stats.add(p.header[17], p.total_len);
        self.last_complete = Some(p.lsn);
        let next = align(end);
        if is_switch(&p.header) {
            self.end_records(next, EndReason::Switch);
        } else {
            self.pad = next - end;
            self.rec = Rec::Boundary;
        }
    }
}

fn off_after(pos: u64, i: usize) -> u64 {
    pos + i as u64
}

fn unfinished(p: &Partial) -> Unfinished {
    Unfinished {
        lsn: p.lsn,
        offset: p.offset,
        header: p.header[..p.hdr_len].to_vec(),
        total_len: p.total_len,
        got: p.got,
        body_crc: p.body_crc,
        expected_prev: p.expected_prev,
    }
}
