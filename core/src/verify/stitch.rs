//! Joining per-file summaries into one verified stream.

use serde::{Deserialize, Serialize};

use super::format::{
    RECORD_HEADER, crc_append, crc_combine, is_switch, record_crc, rmid_valid, u32_at, u64_at,
};
use super::report::{
    Continuation, EndReason, Finding, FindingKind, RecordStats, SegmentSummary, Severity,
};
use crate::wal::{Lsn, Segment, SegmentSize};

/// A record that started in an earlier file and goes on in the next ones.
#[derive(Clone, Debug)]
struct Pending {
    segment: Segment,
    lsn: Lsn,
    offset: u64,
    header: Vec<u8>,
    total_len: u32,
    got: u32,
    body_crc: u32,
    /// Bytes of the body (after the header) covered by `body_crc`.
    body_len: u64,
    expected_prev: Option<Lsn>,
}

/// What the previous file left for the next one.
#[derive(Clone, Copy, Debug)]
struct Previous {
    segment: Segment,
    size: u64,
    /// Whether its end can be trusted for linking (no error in it).
    linkable: bool,
    last_page_tli: Option<u32>,
}

/// The verdict on a sequence of files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReport {
    /// Files given.
    pub files: u64,
    /// Every file's findings and the chain's, in WAL order.
    pub findings: Vec<Finding>,
    /// Records verified (within files and across them), per resource manager.
    pub stats: RecordStats,
    /// The first record verified.
    pub first_record: Option<Lsn>,
    /// The last record verified.
    pub last_record: Option<Lsn>,
    /// A record still unfinished at the end of the last file (it goes on in a file not given).
    pub unfinished: Option<Lsn>,
    /// Records abandoned by PostgreSQL after a crash (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`).
    pub overwritten_records: u64,
}

impl StreamReport {
    /// No finding of [`Severity::Error`].
    pub fn is_clean(&self) -> bool {
        self.findings
            .iter()
            .all(|f| f.severity() != Severity::Error)
    }
}

/// Joins [`SegmentSummary`]s given in WAL order: `xl_prev` across files, records spanning
/// files (their CRC from the per-file CRC states, so no record's bytes are ever held), the
/// continuation lengths, system identifiers and page timelines. The host verifies files in
/// parallel and pushes their summaries in order; where it knows of a gap (a missing segment,
/// a timeline switch it handles itself) it calls [`StreamVerifier::gap`] so the chain
/// restarts instead of linking unrelated files.
#[derive(Debug, Default)]
pub struct StreamVerifier {
    report: StreamReport,
    previous: Option<Previous>,
    pending: Option<Pending>,
    /// The start of the last record of the chain.
    chain_prev: Option<Lsn>,
    sysid: Option<u64>,
    /// Bytes still to come of a record whose start was in no file given (the first file
    /// began inside it and it went on into the next one): only their count can be checked.
    orphan_rem: Option<u32>,
}

impl StreamVerifier {
    /// An empty stream.
    pub fn new() -> Self {
        StreamVerifier::default()
    }

    /// The chain is broken here (the host knows a file is missing or starts anew): the next
    /// file is not linked to the previous one, and a record spanning the gap is not checked.
    pub fn gap(&mut self) {
        self.previous = None;
        self.pending = None;
        self.chain_prev = None;
        self.orphan_rem = None;
    }

    /// Adds the next file's summary.
    pub fn push(&mut self, s: &SegmentSummary) {
        self.report.files += 1;
        self.report.findings.extend(s.findings.iter().cloned());
        self.report.stats.merge(&s.stats);
        self.report.overwritten_records += u64::from(s.overwritten_records);
        let clean = s.is_clean() && s.magic.is_some();
        let linked = match self.previous {
            Some(prev) if !self.consecutive(&prev, s) => {
                self.chain_finding(
                    s,
                    0,
                    FindingKind::NotConsecutive {
                        previous: prev.segment,
                    },
                );
                false
            }
            Some(prev) if prev.linkable && clean => self.link(&prev, s),
            _ => false,
        };
        if !linked {
            self.pending = None;
            self.chain_prev = None;
            self.orphan_rem = None;
            if clean {
                self.sysid = s.system_identifier;
                // Without the previous file only the record's start can be checked.
                self.check_first_record(s, None);
            }
        }
        if let Some(first) = s.first_record
            && self.report.first_record.is_none()
            && clean
        {
            self.report.first_record = Some(first.lsn);
        }
        if clean {
            if let Some(last) = s.last_complete_record {
                self.report.last_record = Some(last);
            }
            if let Some(u) = &s.unfinished {
                self.pending = Some(Pending {
                    segment: s.segment,
                    lsn: u.lsn,
                    offset: u.offset,
                    header: u.header.clone(),
                    total_len: u.total_len,
                    got: u.got,
                    body_crc: u.body_crc,
                    body_len: u64::from(u.got).saturating_sub(RECORD_HEADER as u64),
                    expected_prev: u.expected_prev.or(self.chain_prev),
                });
            }
            if s.last_record.is_some() {
                self.chain_prev = s.last_record;
            }
        }
        self.orphan_rem = match &s.continuation {
            Some(c) if clean && self.pending.is_none() && !c.overwritten && c.len < c.rem_len => {
                Some(c.rem_len - c.len)
            }
            _ => None,
        };
        self.previous = Some(Previous {
            segment: s.segment,
            size: s.segment_size,
            linkable: clean && !s.partial,
            last_page_tli: s.last_page_tli,
        });
    }

    /// The report on everything pushed.
    pub fn finish(mut self) -> StreamReport {
        self.report.unfinished = self.pending.map(|p| p.lsn);
        self.report
    }

    fn consecutive(&self, prev: &Previous, s: &SegmentSummary) -> bool {
        let Ok(size) = SegmentSize::new(prev.size) else {
            return false;
        };
        prev.size == s.segment_size
            && s.segment.timeline >= prev.segment.timeline
            && prev
                .segment
                .next(size)
                .is_some_and(|n| (n.log, n.seg) == (s.segment.log, s.segment.seg))
    }

    fn chain_finding(&mut self, s: &SegmentSummary, offset: u64, kind: FindingKind) {
        let lsn = Lsn(s.end.lsn.0 - s.end.offset + offset);
        self.report.findings.push(Finding {
            segment: s.segment,
            offset,
            lsn,
            kind,
        });
    }

    /// Joins `s` to the chain; false if the chain breaks at it.
    fn link(&mut self, prev: &Previous, s: &SegmentSummary) -> bool {
        if let (Some(expected), Some(found)) = (self.sysid, s.system_identifier)
            && expected != found
        {
            self.chain_finding(s, 0, FindingKind::WrongSystemIdentifier { expected, found });
            return false;
        }
        if let (Some(after), Some(found)) = (prev.last_page_tli, s.first_page_tli)
            && found < after
        {
            self.chain_finding(s, 0, FindingKind::TimelineOutOfSequence { found, after });
            return false;
        }
        let mut prev_record = self.chain_prev;
        match (self.pending.take(), &s.continuation) {
            (Some(_), Some(c)) if c.overwritten => {
                // PostgreSQL abandoned the record; the next one links to the one before it.
                self.report.overwritten_records += 1;
                prev_record = self.report.last_record;
            }
            (Some(p), Some(c)) => {
                let expected = p.total_len - p.got;
                if c.rem_len != expected {
                    // Named at the record's start: its length or the next file is wrong.
                    self.record_finding(
                        &p,
                        FindingKind::ContinuationLength {
                            expected,
                            found: c.rem_len,
                        },
                    );
                    return false;
                }
                if !self.absorb(p, c, s) {
                    return false;
                }
            }
            (Some(p), None) => {
                self.record_finding(
                    &p,
                    FindingKind::MissingContinuation {
                        expected_rem: p.total_len - p.got,
                    },
                );
                return false;
            }
            (None, Some(c)) if c.rem_len > 0 => match self.orphan_rem {
                Some(expected) if c.rem_len != expected => {
                    self.chain_finding(
                        s,
                        0,
                        FindingKind::ContinuationLength {
                            expected,
                            found: c.rem_len,
                        },
                    );
                    return false;
                }
                Some(_) => {}
                None => {
                    self.chain_finding(
                        s,
                        0,
                        FindingKind::UnexpectedContinuation { rem_len: c.rem_len },
                    );
                    return false;
                }
            },
            (None, _) => {
                if s.end.reason == EndReason::SwitchContinued {
                    self.chain_finding(s, s.end.offset, FindingKind::RecordsEndEarly);
                    return false;
                }
            }
        }
        self.check_first_record(s, prev_record);
        true
    }

    /// `xl_prev` of the file's first record against the record before it (when known).
    fn check_first_record(&mut self, s: &SegmentSummary, expected: Option<Lsn>) {
        let Some(first) = s.first_record else { return };
        let Some(found_prev) = first.prev else { return };
        if let Some(expected_prev) = expected
            && expected_prev != found_prev
        {
            self.chain_finding(
                s,
                first.offset,
                FindingKind::PrevLinkBroken {
                    expected_prev,
                    found_prev,
                },
            );
        }
    }

    /// Adds the continuation `c` of file `s` to the pending record `p`; checks the record once
    /// it is whole. False if the chain breaks.
    fn absorb(&mut self, mut p: Pending, c: &Continuation, s: &SegmentSummary) -> bool {
        // The rest of a split header comes first, then body bytes.
        let need = RECORD_HEADER - p.header.len().min(RECORD_HEADER);
        if c.head.len() < need.min(c.len as usize) {
            return false;
        }
        let from_head = need.min(c.head.len());
        p.header.extend_from_slice(&c.head[..from_head]);
        let head_body = &c.head[from_head..];
        let tail_len = u64::from(c.len) - c.head.len() as u64;
        let part_crc = crc_combine(crc_append(0, head_body), c.tail_crc, tail_len);
        let part_len = head_body.len() as u64 + tail_len;
        p.body_crc = crc_combine(p.body_crc, part_crc, part_len);
        p.body_len += part_len;
        p.got += c.len;
        let header_whole = p.header.len() == RECORD_HEADER;
        if header_whole && need > 0 {
            // The header was split across the files: check what the file could not.
            let rmid = p.header[17];
            let major = s.pg_major.unwrap_or(0);
            let found_prev = Lsn(u64_at(&p.header, 8));
            let kind = if !rmid_valid(rmid, major) {
                Some(FindingKind::BadResourceManager { rmid })
            } else {
                match p.expected_prev {
                    Some(expected_prev) if expected_prev != found_prev => {
                        Some(FindingKind::PrevLinkBroken {
                            expected_prev,
                            found_prev,
                        })
                    }
                    None if found_prev >= p.lsn => Some(FindingKind::PrevLinkAhead { found_prev }),
                    _ => None,
                }
            };
            if let Some(kind) = kind {
                self.record_finding(&p, kind);
                return false;
            }
        }
        if p.got < p.total_len {
            // The record goes on in the next file.
            self.pending = Some(p);
            return true;
        }
        let computed = record_crc(p.body_crc, &p.header);
        let stored = u32_at(&p.header, 20);
        if computed != stored {
            self.record_finding(
                &p,
                FindingKind::CrcMismatch {
                    expected: stored,
                    found: computed,
                },
            );
            return false;
        }
        if s.end.reason == EndReason::SwitchContinued && !is_switch(&p.header) {
            self.chain_finding(s, s.end.offset, FindingKind::RecordsEndEarly);
            return false;
        }
        self.report.stats.add(p.header[17], p.total_len);
        self.report.last_record = Some(p.lsn);
        if self.report.first_record.is_none() {
            self.report.first_record = Some(p.lsn);
        }
        true
    }

    fn record_finding(&mut self, p: &Pending, kind: FindingKind) {
        self.report.findings.push(Finding {
            segment: p.segment,
            offset: p.offset,
            lsn: p.lsn,
            kind,
        });
    }
}
