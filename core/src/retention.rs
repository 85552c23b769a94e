//! Which archived files an explicit `delete-wals --before` removes (Barman's rule for WAL
//! older than the oldest backup).

use crate::wal::WalFileName;

/// Whether `name` is removed when everything before segment `keep_from` goes: history files are
/// always kept; segments, partials and backup labels go when their 24-character segment name
/// sorts before `keep_from`'s (a backup label is compared on its segment, as Barman does).
pub fn deleted_before(name: &WalFileName, keep_from: &WalFileName) -> bool {
    match (name.segment(), keep_from.segment()) {
        (Some(segment), Some(limit)) => segment < limit,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barman_rule() {
        // docs/barman-behaviours.md#B-KEEP-16.
        let keep: WalFileName = "000000010000000000000005".parse().expect("name");
        let gone = |n: &str| deleted_before(&n.parse().expect("name"), &keep);
        assert!(!gone("00000002.history"), "history files are kept");
        assert!(gone("000000010000000000000004"));
        assert!(!gone("000000010000000000000005"));
        assert!(!gone("000000010000000000000006"));
        assert!(gone("000000010000000000000004.00000028.backup"));
        assert!(
            !gone("000000010000000000000005.00000028.backup"),
            "a label of the first kept segment stays"
        );
        assert!(gone("000000010000000000000003.partial"));
        assert!(
            !gone("000000020000000000000001"),
            "later timelines sort after"
        );
    }
}
