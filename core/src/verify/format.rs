//! The facts of PostgreSQL's WAL format the verifier relies on (`xlog_internal.h`,
//! `xlogrecord.h`, `rmgrlist.h`), as constants and little-endian field readers.

/// `SizeOfXLogShortPHD`: the header of every page but a segment's first.
pub const SHORT_PAGE_HEADER: usize = 24;
/// `SizeOfXLogLongPHD`: the header of a segment's first page.
pub const LONG_PAGE_HEADER: usize = 40;
/// `SizeOfXLogRecord`: the fixed record header.
pub const RECORD_HEADER: usize = 24;
/// Offset of `xl_crc` in the record header: the header goes into the CRC up to here.
pub const CRC_OFFSET: usize = 20;
/// Records start at MAXALIGN (8-byte) boundaries.
pub const ALIGN: u64 = 8;
/// The largest `xl_tot_len` PostgreSQL can read: its record buffer is allocated in one piece,
/// limited to `MaxAllocSize` (1 GiB - 1); since 16 the writer also refuses records above
/// `XLogRecordMaxSize` (1020 MiB).
pub const MAX_RECORD_LEN: u32 = 0x3FFF_FFFF;
/// How many raw bytes of a file's leading continuation its summary keeps: a record starts
/// 8-aligned, so a header split across files leaves at most 16 of its 24 bytes for the next
/// file, and the header goes into the CRC after the body.
pub const CONTINUATION_HEAD: usize = 16;

/// `XLP_FIRST_IS_CONTRECORD`.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `XLP_LONG_HEADER`.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLP_BKP_REMOVABLE`.
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// `XLP_FIRST_IS_OVERWRITE_CONTRECORD` (14.1, 13.5, 12.9 and later; the magic did not change).
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// `XLP_ALL_FLAGS`.
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// `RM_XLOG_ID`.
pub const RM_XLOG_ID: u8 = 0;
/// `XLOG_SWITCH` in the rmgr bits of `xl_info`.
pub const XLOG_SWITCH: u8 = 0x40;
/// `XLR_RMGR_INFO_MASK`: the bits of `xl_info` that belong to the resource manager.
pub const XLR_RMGR_INFO_MASK: u8 = 0xF0;
/// `RM_MIN_CUSTOM_ID` (custom resource managers exist from PostgreSQL 15 on).
pub const RM_MIN_CUSTOM_ID: u8 = 128;

/// The page magics accepted: PostgreSQL 12 to 17, and 18, whose page header, record header,
/// CRC rule and built-in resource managers are those of 17.
const MAGICS: [(u16, u32); 7] = [
    (0xD101, 12),
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
    (0xD118, 18),
];

/// The PostgreSQL major version of a supported page magic.
pub fn supported_major(magic: u16) -> Option<u32> {
    MAGICS.iter().find(|(m, _)| *m == magic).map(|(_, v)| *v)
}

/// The built-in resource managers of PostgreSQL 12 to 18, by id, named as `pg_waldump --stats`
/// names them.
pub const BUILTIN_RMGRS: [&str; 22] = [
    "XLOG",
    "Transaction",
    "Storage",
    "CLOG",
    "Database",
    "Tablespace",
    "MultiXact",
    "RelMap",
    "Standby",
    "Heap2",
    "Heap",
    "Btree",
    "Hash",
    "Gin",
    "Gist",
    "Sequence",
    "SPGist",
    "BRIN",
    "CommitTs",
    "ReplicationOrigin",
    "Generic",
    "LogicalMessage",
];

/// `pg_waldump`'s name for a resource manager id.
pub fn rmgr_name(rmid: u8) -> String {
    match BUILTIN_RMGRS.get(usize::from(rmid)) {
        Some(name) => (*name).to_owned(),
        None => format!("custom{rmid:03}"),
    }
}

/// Whether `xl_rmid` is valid for WAL of this major version (`RmgrIdIsValid`; before 15 only
/// the built-in ones).
pub fn rmid_valid(rmid: u8, major: u32) -> bool {
    usize::from(rmid) < BUILTIN_RMGRS.len() || (major >= 15 && rmid >= RM_MIN_CUSTOM_ID)
}

/// Whether a record header (`xl_rmid`, `xl_info`) is an `XLOG_SWITCH`.
pub fn is_switch(header: &[u8]) -> bool {
    header[17] == RM_XLOG_ID && header[16] & XLR_RMGR_INFO_MASK == XLOG_SWITCH
}

/// Little-endian `u16` at `at`.
pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Little-endian `u32` at `at`.
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Little-endian `u64` at `at`.
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

/// CRC-32C of `data` appended to a CRC state (`0` is the state of no bytes).
pub fn crc_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// CRC-32C of `a || b` from both CRCs and `b`'s length.
pub fn crc_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    if len_b == 0 {
        return crc_a;
    }
    // A record is at most 1 GiB, well within usize on every target.
    crc32c::crc32c_combine(crc_a, crc_b, len_b as usize)
}

/// The CRC PostgreSQL stores in `xl_crc`: the body's CRC continued over the header up to
/// `xl_crc`.
pub fn record_crc(body_crc: u32, header: &[u8]) -> u32 {
    crc_append(body_crc, &header[..CRC_OFFSET])
}

/// Rounds up to the next MAXALIGN boundary.
pub fn align(pos: u64) -> u64 {
    pos.div_ceil(ALIGN) * ALIGN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_castagnoli_and_combines() {
        // The CRC-32C check value.
        assert_eq!(crc_append(0, b"123456789"), 0xE306_9283);
        let (a, b) = (b"hello ".as_slice(), b"world".as_slice());
        let whole = crc_append(0, b"hello world");
        assert_eq!(crc_append(crc_append(0, a), b), whole);
        assert_eq!(
            crc_combine(crc_append(0, a), crc_append(0, b), b.len() as u64),
            whole
        );
        assert_eq!(crc_combine(0, whole, 11), whole);
        assert_eq!(crc_combine(whole, 0, 0), whole);
    }

    #[test]
    fn rmgr_names_and_validity() {
        assert_eq!(rmgr_name(10), "Heap");
        assert_eq!(rmgr_name(21), "LogicalMessage");
        assert_eq!(rmgr_name(130), "custom130");
        assert!(rmid_valid(21, 12));
        assert!(!rmid_valid(22, 17));
        assert!(!rmid_valid(128, 14));
        assert!(rmid_valid(128, 15));
        assert_eq!(supported_major(0xD110), Some(15));
        assert_eq!(supported_major(0xD098), None);
    }
}
