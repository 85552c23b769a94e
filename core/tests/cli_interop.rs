//! Interoperability with the reference implementations: what walvault writes, the C tools
//! (gzip, bzip2, xz, zstd, lz4) and python-snappy read back byte for byte, and what they
//! write at several levels and options, walvault reads.
//!
//! A tool that is not installed is skipped with a note on stderr (CI installs them all:
//! `apt-get install gzip bzip2 xz-utils zstd lz4` and `pip install python-snappy`).
//! Uses a real WAL segment from /tmp/peerbench/corpus when one exists, WAL-like data otherwise.

mod wal_data;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use walvault_core::compression::{Codec, DecodeLimits, Decoder, Level, decode_all, encode_all};

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("walvault-interop-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, bytes).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn python_snappy() -> bool {
    on_path("python3")
        && Command::new("python3")
            .args(["-c", "import snappy"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Skips a missing tool's checks, except where the test command installed every tool and
/// says so (`WALVAULT_REQUIRE_TOOLS=1`): there a missing tool is a failure, not a silent pass.
fn skip(what: &str) {
    assert!(
        std::env::var_os("WALVAULT_REQUIRE_TOOLS").is_none(),
        "{what} is required (WALVAULT_REQUIRE_TOOLS is set) but not available"
    );
    eprintln!("NOTE: {what} not available; skipping its interop checks");
}

/// Runs a command and returns its stdout, failing the test on a non-zero exit.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.stderr(Stdio::piped()).output().expect("spawn tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Test inputs: WAL-like data (2 MiB, several codec blocks), a tiny buffer, and a real
/// segment when the benchmark corpus exists.
fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("wal-like-2MiB".to_owned(), wal_data::wal_like(2 << 20, 42)),
        ("tiny".to_owned(), b"00000001.history\n".to_vec()),
    ];
    let corpus = Path::new("/tmp/peerbench/corpus");
    if let Some(first) = fs::read_dir(corpus).ok().and_then(|entries| {
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        files.into_iter().next()
    }) && let Ok(mut bytes) = fs::read(&first)
    {
        // The first 4 MiB of real WAL: enough variety, and the extreme levels stay quick.
        bytes.truncate(4 << 20);
        out.push((format!("segment {} (first 4 MiB)", first.display()), bytes));
    }
    out
}

fn ours(codec: Codec, level: Level, data: &[u8]) -> Vec<u8> {
    encode_all(Some(codec), level, data).expect("encode")
}

fn decode(codec: Codec, packed: &[u8]) -> Vec<u8> {
    match decode_all(Some(codec), packed, DecodeLimits::default()) {
        Ok(v) => v,
        Err(e) => panic!("walvault failed to decode {codec}: {e}"),
    }
}

/// walvault → tool: every named level plus the range ends decode with `tool -d`.
fn ours_to_tool(codec: Codec, tool: &str, dir: &TempDir) {
    let mut levels = vec![Level::Low, Level::Medium, Level::High];
    if let Some((min, max)) = codec.level_range() {
        levels.extend([Level::Number(min), Level::Number(max)]);
    }
    for (name, data) in inputs() {
        for &level in &levels {
            let path = dir.file("ours.bin", &ours(codec, level, &data));
            let back = run(Command::new(tool).args(["-d", "-c"]).arg(&path));
            assert!(
                back == data,
                "{tool} -d of walvault {codec} {level} ({name}) differs"
            );
        }
    }
}

/// tool → walvault: each argument set compresses `data` with the C tool, then we decode.
fn tool_to_ours(codec: Codec, tool: &str, arg_sets: &[&[&str]], dir: &TempDir) {
    for (name, data) in inputs() {
        let path = dir.file("input", &data);
        for args in arg_sets {
            let packed = run(Command::new(tool).args(*args).arg("-c").arg(&path));
            assert_eq!(Codec::identify(&packed), Some(codec), "{tool} {args:?}");
            assert!(
                decode(codec, &packed) == data,
                "walvault decode of {tool} {args:?} ({name}) differs"
            );
            // And through auto-detection, streaming.
            let mut dec = Decoder::auto(&packed[..], DecodeLimits::default()).expect("auto");
            let mut out = Vec::new();
            std::io::copy(&mut dec, &mut out).expect("auto decode");
            assert!(
                out == data,
                "auto decode of {tool} {args:?} ({name}) differs"
            );
        }
        // Concatenated outputs (multi-member gzip, several frames/streams) decode as one.
        let mut twice = run(Command::new(tool).args(arg_sets[0]).arg("-c").arg(&path));
        twice.extend(run(Command::new(tool)
            .args(arg_sets[arg_sets.len() - 1])
            .arg("-c")
            .arg(&path)));
        let mut expected = data.clone();
        expected.extend_from_slice(&data);
        assert!(
            decode(codec, &twice) == expected,
            "{tool}: concatenated streams ({name})"
        );
    }
}

/// Truncating a C-written stream must be an error for us, as it is for the tool.
fn tool_truncated(codec: Codec, tool: &str, dir: &TempDir) {
    let data = wal_data::wal_like(1 << 20, 7);
    let path = dir.file("input", &data);
    let packed = run(Command::new(tool).arg("-c").arg(&path));
    for cut in [packed.len() / 2, packed.len() - 1] {
        let result = decode_all(Some(codec), &packed[..cut], DecodeLimits::default());
        assert!(
            result.is_err(),
            "{tool}: stream cut at {cut}/{} decoded",
            packed.len()
        );
    }
}

#[test]
fn gzip_interop() {
    if !on_path("gzip") {
        return skip("gzip");
    }
    let dir = TempDir::new("gzip");
    ours_to_tool(Codec::Gzip, "gzip", &dir);
    // With a file argument gzip stores the name (FNAME) and mtime; -n leaves them out.
    tool_to_ours(
        Codec::Gzip,
        "gzip",
        &[&["-1"], &["-6"], &["-9"], &["-6", "-n"]],
        &dir,
    );
    tool_truncated(Codec::Gzip, "gzip", &dir);
}

#[test]
fn bzip2_interop() {
    if !on_path("bzip2") {
        return skip("bzip2");
    }
    let dir = TempDir::new("bzip2");
    ours_to_tool(Codec::Bzip2, "bzip2", &dir);
    tool_to_ours(Codec::Bzip2, "bzip2", &[&["-1"], &["-5"], &["-9"]], &dir);
    tool_truncated(Codec::Bzip2, "bzip2", &dir);
}

#[test]
fn xz_interop() {
    if !on_path("xz") {
        return skip("xz");
    }
    let dir = TempDir::new("xz");
    ours_to_tool(Codec::Xz, "xz", &dir);
    tool_to_ours(
        Codec::Xz,
        "xz",
        &[
            &["-0"],
            &["-1"],
            &["-3"],
            &["-6"],
            &["-9e"],
            // Other checks and a multi-block stream (what multi-threaded xz writes).
            &["-1", "--check=crc32"],
            &["-1", "--check=sha256"],
            &["-1", "--check=none"],
            &["-1", "--block-size=300000"],
        ],
        &dir,
    );
    tool_truncated(Codec::Xz, "xz", &dir);
}

#[test]
fn zstd_interop() {
    if !on_path("zstd") {
        return skip("zstd");
    }
    let dir = TempDir::new("zstd");
    ours_to_tool(Codec::Zstd, "zstd", &dir);
    tool_to_ours(
        Codec::Zstd,
        "zstd",
        &[
            &["-q", "-1"],
            &["-q", "-3"],
            &["-q", "-9"],
            &["-q", "-19"],
            &["-q", "--fast=5"],
            &["-q", "--ultra", "-22"],
            &["-q", "-3", "--no-check"],
            &["-q", "-3", "--long=27"],
        ],
        &dir,
    );
    tool_truncated(Codec::Zstd, "zstd", &dir);
}

#[test]
fn lz4_interop() {
    if !on_path("lz4") {
        return skip("lz4");
    }
    let dir = TempDir::new("lz4");
    ours_to_tool(Codec::Lz4, "lz4", &dir);
    tool_to_ours(
        Codec::Lz4,
        "lz4",
        &[
            &["-q", "-1"],
            &["-q", "-6"],
            &["-q", "-9"],
            &["-q", "-12"],
            // Linked blocks, 64 KiB blocks, no content checksum, block checksums, size.
            &["-q", "-1", "-BD"],
            &["-q", "-1", "-B4"],
            &["-q", "-1", "--no-frame-crc"],
            &["-q", "-9", "-BX"],
            &["-q", "-1", "--content-size"],
        ],
        &dir,
    );
    tool_truncated(Codec::Lz4, "lz4", &dir);
}

const PY_COMPRESS: &str = "import io,sys,snappy\n\
src=open(sys.argv[1],'rb'); dst=open(sys.argv[2],'wb')\n\
snappy.stream_compress(src, dst)\n";
const PY_DECOMPRESS: &str = "import io,sys,snappy\n\
src=open(sys.argv[1],'rb'); dst=open(sys.argv[2],'wb')\n\
snappy.stream_decompress(src, dst)\n";

#[test]
fn snappy_interop() {
    if !python_snappy() {
        return skip("python3 with python-snappy");
    }
    let dir = TempDir::new("snappy");
    for (name, data) in inputs() {
        // walvault → python-snappy
        let packed = dir.file("ours.snappy", &ours(Codec::Snappy, Level::Medium, &data));
        let back = dir.0.join("back");
        run(Command::new("python3")
            .args(["-c", PY_DECOMPRESS])
            .arg(&packed)
            .arg(&back));
        assert!(
            fs::read(&back).expect("read") == data,
            "python-snappy of walvault ({name}) differs"
        );
        // python-snappy → walvault
        let input = dir.file("input", &data);
        let theirs = dir.0.join("theirs.snappy");
        run(Command::new("python3")
            .args(["-c", PY_COMPRESS])
            .arg(&input)
            .arg(&theirs));
        let theirs = fs::read(&theirs).expect("read");
        assert_eq!(Codec::identify(&theirs), Some(Codec::Snappy));
        assert!(
            decode(Codec::Snappy, &theirs) == data,
            "walvault decode of python-snappy ({name})"
        );
    }
    // python-snappy reads our empty stream (a lone stream identifier) as empty.
    let empty = dir.file("empty.snappy", &ours(Codec::Snappy, Level::Medium, b""));
    let back = dir.0.join("back-empty");
    run(Command::new("python3")
        .args(["-c", PY_DECOMPRESS])
        .arg(&empty)
        .arg(&back));
    assert_eq!(fs::read(&back).expect("read"), b"");
}

#[test]
fn ruzstd_frames_decode_with_walvault_and_the_tool() {
    // What the pure-Rust (wasm) build writes must read back in every build and with `zstd -d`,
    // even when the native build decodes with C zstd.
    let data = wal_data::wal_like(1 << 20, 10);
    let mut packed =
        ruzstd::encoding::compress_to_vec(&data[..], ruzstd::encoding::CompressionLevel::Fastest);
    packed.extend(ruzstd::encoding::compress_to_vec(
        &b"tail"[..],
        ruzstd::encoding::CompressionLevel::Fastest,
    ));
    let mut expected = data.clone();
    expected.extend_from_slice(b"tail");
    assert!(
        decode(Codec::Zstd, &packed) == expected,
        "walvault decode of ruzstd frames"
    );
    if !on_path("zstd") {
        return skip("zstd");
    }
    let dir = TempDir::new("ruzstd");
    let path = dir.file("ruzstd.zst", &packed);
    let back = run(Command::new("zstd").args(["-d", "-q", "-c"]).arg(&path));
    assert!(back == expected, "zstd -d of ruzstd frames differs");
}

#[test]
fn zstd_frames_from_ruzstd_style_writers_decode_with_the_tool() {
    // Our pure-Rust build writes one zstd frame per MiB; whatever the build, a stream of
    // several frames (and a skippable frame) must satisfy `zstd -d`.
    if !on_path("zstd") {
        return skip("zstd");
    }
    let dir = TempDir::new("zstd-frames");
    let data = wal_data::wal_like(3 << 20, 9);
    let mut packed = Vec::new();
    for chunk in data.chunks(1 << 20) {
        packed.extend(ours(Codec::Zstd, Level::Low, chunk));
    }
    packed
        .write_all(&[0x50, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 0xaa, 0xbb])
        .expect("vec write");
    let path = dir.file("frames.zst", &packed);
    let back = run(Command::new("zstd").args(["-d", "-q", "-c"]).arg(&path));
    assert!(back == data, "zstd -d of concatenated frames differs");
    assert!(decode(Codec::Zstd, &packed) == data);
}
