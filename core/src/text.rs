//! Names from untrusted places (queue directories, object listings) made safe to show and to
//! reuse as file names.
//!
//! A queued file's name is chosen by whoever can write to the queue. Printed raw, escape
//! sequences in it reach the operator's terminal; reused raw in `errors/`, a name that is not
//! UTF-8 or is near the 255-byte limit cannot be moved there at all.

use std::borrow::Cow;
use std::fmt::Write;

/// Escapes a name's bytes for display and records: valid UTF-8 is kept, except control
/// characters and `\`, which are escaped as Rust does (`\x1b`, `\u{9b}`, `\\`); bytes that are
/// not UTF-8 become `\xHH`. Reversible: the escaped form names exactly one byte string.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        push_escaped(&mut out, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// [`escape_bytes`] for a string: borrowed when there is nothing to escape.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if text.chars().any(needs_escape) {
        let mut out = String::with_capacity(text.len() + 8);
        push_escaped(&mut out, text);
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// Escapes control characters in a whole message, keeping its line breaks and tabs (the
/// message's own layout); for text made of names and words, before it reaches a terminal.
pub fn escape_message(text: &str) -> Cow<'_, str> {
    if text
        .chars()
        .any(|c| c != '\n' && c != '\t' && c.is_control())
    {
        let mut out = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            if c != '\n' && c != '\t' && c.is_control() {
                push_char_escape(&mut out, c);
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\'
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() {
            push_char_escape(out, c);
        } else {
            out.push(c);
        }
    }
}

fn push_char_escape(out: &mut String, c: char) {
    if (c as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

/// The longest base a name keeps in `errors/`: with the stamp, a counter and the suffix the
/// whole name stays well under the 255-byte limit of common file systems.
pub const MAX_ERROR_BASE: usize = 200;

/// A queued name made safe to use as the base of an `errors/` name: printable ASCII is kept
/// (but `\`), anything else becomes `_`; a base longer than [`MAX_ERROR_BASE`] is cut and
/// ends in `~` and a hash of the whole name, so two long names never share a base. Valid WAL
/// names come through unchanged (Barman's `errors/` names).
pub fn safe_file_name(name: &str) -> Cow<'_, str> {
    let clean = |c: char| c.is_ascii_graphic() && c != '\\' && c != '/';
    if name.len() <= MAX_ERROR_BASE && !name.is_empty() && name.chars().all(clean) {
        return Cow::Borrowed(name);
    }
    let mut out: String = name
        .chars()
        .map(|c| if clean(c) { c } else { '_' })
        .collect();
    if out.len() > MAX_ERROR_BASE || out.is_empty() {
        // FNV-1a: stable, and enough to keep apart names that share their first bytes.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut cut = MAX_ERROR_BASE - 17;
        while !out.is_char_boundary(cut.min(out.len())) {
            cut -= 1;
        }
        out.truncate(cut.min(out.len()));
        let _ = write!(out, "~{hash:016x}");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_backslashes_and_bad_bytes() {
        assert_eq!(
            escape_bytes(b"000000010000000000000001"),
            "000000010000000000000001"
        );
        assert_eq!(escape_bytes(b"a\x1b[31mb"), "a\\x1b[31mb");
        assert_eq!(escape_bytes(b"x\xffy\\z"), "x\\xffy\\\\z");
        assert_eq!(escape_bytes("c\u{9b}d".as_bytes()), "c\\u{9b}d");
        assert_eq!(escape_controls("plain"), Cow::Borrowed("plain"));
        assert_eq!(escape_controls("a\rb"), "a\\x0db");
        assert_eq!(
            escape_message("line one\n\tname\x1b]0;owned\x07"),
            "line one\n\tname\\x1b]0;owned\\x07"
        );
    }

    #[test]
    fn error_bases_are_safe_and_distinct() {
        assert_eq!(
            safe_file_name("000000010000000000000001"),
            Cow::Borrowed("000000010000000000000001")
        );
        assert_eq!(safe_file_name("bad\\xffname"), "bad_xffname");
        assert_eq!(safe_file_name("a b\u{e9}"), "a_b_");
        let long_a = "a".repeat(250);
        let long_b = format!("{}b", "a".repeat(249));
        let (a, b) = (safe_file_name(&long_a), safe_file_name(&long_b));
        assert!(a.len() <= MAX_ERROR_BASE && b.len() <= MAX_ERROR_BASE);
        assert_ne!(a, b);
        let wide = "\u{e9}".repeat(150);
        assert!(safe_file_name(&wide).len() <= MAX_ERROR_BASE);
    }
}
