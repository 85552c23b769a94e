//! A WAL writer for tests: pages with long and short headers, records of any size (across
//! pages and segments, headers split across pages), switch records and correct CRCs, laid out
//! as PostgreSQL lays them out.

use super::format::{
    CRC_OFFSET, LONG_PAGE_HEADER, RECORD_HEADER, SHORT_PAGE_HEADER, XLOG_SWITCH,
    XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER, align, crc_append,
};
use crate::wal::{Lsn, Segment, SegmentSize};

/// One record the writer wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrittenRecord {
    /// Its start.
    pub lsn: Lsn,
    /// `xl_tot_len`.
    pub total_len: u32,
    /// `xl_rmid`.
    pub rmid: u8,
    /// The stream offset just after its last byte.
    pub end: u64,
}

/// Writes a WAL stream from the start of a segment.
#[derive(Clone, Debug)]
pub struct WalWriter {
    first: Segment,
    size: SegmentSize,
    blcksz: u64,
    sysid: u64,
    tli: u32,
    magic: u16,
    start: Lsn,
    buf: Vec<u8>,
    prev: Lsn,
    records: Vec<WrittenRecord>,
    /// PostgreSQL 14 and later zero the page headers after a switch record; 12 and 13 keep
    /// short headers.
    pub zero_headers_after_switch: bool,
}

impl WalWriter {
    /// A writer of the stream starting at `first`, 8 KiB pages, PostgreSQL 15's magic.
    pub fn new(first: Segment, size: SegmentSize, sysid: u64) -> Self {
        let start = first.lsn_at(0, size);
        WalWriter {
            first,
            size,
            blcksz: 8192,
            sysid,
            tli: first.timeline.0,
            magic: 0xD110,
            start,
            buf: Vec::new(),
            // A previous record somewhere before the stream.
            prev: Lsn(start.0.saturating_sub(0x58)),
            records: Vec::new(),
            zero_headers_after_switch: true,
        }
    }

    /// Uses another page magic.
    pub fn magic(mut self, magic: u16) -> Self {
        self.magic = magic;
        self
    }

    /// The position of the next byte.
    pub fn pos(&self) -> Lsn {
        Lsn(self.start.0 + self.buf.len() as u64)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The records written, in order.
    pub fn records(&self) -> &[WrittenRecord] {
        &self.records
    }

    /// The whole stream.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    fn page_header(&mut self, rem: u32) {
        let info = if rem > 0 { XLP_FIRST_IS_CONTRECORD } else { 0 };
        self.page_header_with(rem, info);
    }

    fn page_header_with(&mut self, rem: u32, mut info: u16) {
        let off = self.buf.len() as u64;
        let long = off.is_multiple_of(self.size.bytes());
        if long {
            info |= XLP_LONG_HEADER;
        }
        let mut h = [0u8; LONG_PAGE_HEADER];
        h[0..2].copy_from_slice(&self.magic.to_le_bytes());
        h[2..4].copy_from_slice(&info.to_le_bytes());
        h[4..8].copy_from_slice(&self.tli.to_le_bytes());
        h[8..16].copy_from_slice(&(self.start.0 + off).to_le_bytes());
        h[16..20].copy_from_slice(&rem.to_le_bytes());
        if long {
            h[24..32].copy_from_slice(&self.sysid.to_le_bytes());
            h[32..36].copy_from_slice(&(self.size.bytes() as u32).to_le_bytes());
            h[36..40].copy_from_slice(&(self.blcksz as u32).to_le_bytes());
            self.buf.extend_from_slice(&h);
        } else {
            self.buf.extend_from_slice(&h[..SHORT_PAGE_HEADER]);
        }
    }

    fn at_page_start(&self) -> bool {
        (self.buf.len() as u64).is_multiple_of(self.blcksz)
    }

    /// Writes a record of resource manager `rmid` with `body` after the header; its start.
    pub fn record(&mut self, rmid: u8, info: u8, body: &[u8]) -> Lsn {
        let rec = record_bytes(self.prev, rmid, info, body);
        self.raw_record(&rec, rmid)
    }

    /// Writes `rec` as a record's bytes, as they are (a test may pass a broken record).
    pub fn raw_record(&mut self, rec: &[u8], rmid: u8) -> Lsn {
        if self.at_page_start() {
            self.page_header(0);
        }
        let lsn = self.pos();
        let mut written = 0;
        while written < rec.len() {
            if self.at_page_start() {
                self.page_header((rec.len() - written) as u32);
            }
            let page_left = (self.blcksz - self.buf.len() as u64 % self.blcksz) as usize;
            let n = page_left.min(rec.len() - written);
            self.buf.extend_from_slice(&rec[written..written + n]);
            written += n;
        }
        let end = self.buf.len() as u64;
        self.buf.resize(align(end) as usize, 0);
        self.prev = lsn;
        self.records.push(WrittenRecord {
            lsn,
            total_len: rec.len() as u32,
            rmid,
            end,
        });
        lsn
    }

    /// Writes the start of a record of `total` bytes up to the end of the page and abandons
    /// it, as a crash in the middle of writing it leaves it: the next page says it overwrites
    /// the continuation (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`) and the next record links to the
    /// one before the abandoned one. Its start.
    pub fn abandoned_record(&mut self, total: usize) -> Lsn {
        if self.at_page_start() {
            self.page_header(0);
        }
        let lsn = self.pos();
        let page_left = (self.blcksz - self.buf.len() as u64 % self.blcksz) as usize;
        assert!(total > page_left, "the record must cross the page");
        let rec = record_bytes(self.prev, 10, 0, &vec![0x5A; total - RECORD_HEADER]);
        self.buf.extend_from_slice(&rec[..page_left]);
        self.page_header_with(0, XLP_FIRST_IS_OVERWRITE_CONTRECORD);
        lsn
    }

    /// Writes filler records (of `rmid`) until the next record starts at stream offset
    /// `target`, which must lie at least 128 bytes ahead: to put a record header across a page
    /// or segment boundary.
    pub fn land_at(&mut self, target: u64, rmid: u8) {
        while self.len() < target {
            let pos = self.len();
            // Where the next record starts: after the page header if one is due.
            let p = match (pos % self.blcksz, pos % self.size.bytes()) {
                (0, 0) => pos + LONG_PAGE_HEADER as u64,
                (0, _) => pos + SHORT_PAGE_HEADER as u64,
                _ => pos,
            };
            let page_end = (p / self.blcksz + 1) * self.blcksz;
            let total = if target < page_end {
                assert!(target >= p + 24, "cannot land at {target} from {p}");
                target - p
            } else if page_end - p >= 24 {
                // Fill the page exactly.
                page_end - p
            } else {
                64
            };
            self.record(rmid, 0, &vec![0x33; total as usize - RECORD_HEADER]);
        }
        assert_eq!(self.len(), target);
    }

    /// Writes an `XLOG_SWITCH` record and pads the rest of the segment as PostgreSQL does.
    pub fn switch(&mut self) -> Lsn {
        let lsn = self.record(0, XLOG_SWITCH, &[]);
        let seg = self.size.bytes();
        let end = (self.buf.len() as u64).div_ceil(seg) * seg;
        while (self.buf.len() as u64) < end {
            if self.at_page_start() {
                if self.zero_headers_after_switch {
                    self.buf.resize(self.buf.len() + SHORT_PAGE_HEADER, 0);
                } else {
                    self.page_header(0);
                }
            }
            let next = (self.buf.len() as u64 / self.blcksz + 1) * self.blcksz;
            self.buf.resize(next as usize, 0);
        }
        lsn
    }

    /// The complete segments written so far, each with its segment.
    pub fn segments(&self) -> Vec<(Segment, Vec<u8>)> {
        let seg = self.size.bytes() as usize;
        let mut out = Vec::new();
        let mut segment = self.first;
        for chunk in self.buf.chunks_exact(seg) {
            out.push((segment, chunk.to_vec()));
            match segment.next(self.size) {
                Some(next) => segment = next,
                None => break,
            }
        }
        out
    }

    /// The incomplete last segment, zero-padded to a segment's size (a `.partial` as
    /// `pg_receivewal` leaves it), if there is one.
    pub fn partial_segment(&self) -> Option<(Segment, Vec<u8>)> {
        let seg = self.size.bytes() as usize;
        let full = self.buf.len() / seg;
        let rest = &self.buf[full * seg..];
        if rest.is_empty() {
            return None;
        }
        let mut segment = self.first;
        for _ in 0..full {
            segment = segment.next(self.size)?;
        }
        let mut bytes = rest.to_vec();
        bytes.resize(seg, 0);
        Some((segment, bytes))
    }
}

/// A record's bytes with a correct CRC: header (`xl_prev` = `prev`) and `body`.
pub fn record_bytes(prev: Lsn, rmid: u8, info: u8, body: &[u8]) -> Vec<u8> {
    let total = RECORD_HEADER + body.len();
    let mut rec = Vec::with_capacity(total);
    rec.extend_from_slice(&(total as u32).to_le_bytes());
    rec.extend_from_slice(&0x2A2Au32.to_le_bytes());
    rec.extend_from_slice(&prev.0.to_le_bytes());
    rec.push(info);
    rec.push(rmid);
    rec.extend_from_slice(&[0, 0]);
    let crc = crc_append(crc_append(0, body), &rec[..CRC_OFFSET]);
    rec.extend_from_slice(&crc.to_le_bytes());
    rec.extend_from_slice(body);
    rec
}
