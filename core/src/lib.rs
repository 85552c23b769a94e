#![warn(missing_docs)]
//! # walvault-core
//!
//! The sans-IO heart of walvault, a PostgreSQL WAL archiver that keeps Barman's on-disk and
//! cloud layouts. This crate **decides**; hosts **do**. It never touches a file system, a
//! network, a clock, the environment, threads or async runtimes, so the same code runs in the
//! native CLI, under wasmtime (`wasm32-wasip1`) and in the browser (`wasm32-unknown-unknown`).
//!
//! Inputs come in as values (directory listings, file sizes, mtimes, the current time) or
//! through small synchronous traits ([`storage::WalStore`], [`archive::SourceFile`], …) that
//! each host implements over its own I/O.
//!
//! - [`wal`]: WAL file names, LSNs, segment sizes and arithmetic, history files, page headers.
//! - [`catalogue`]: Barman's `<server>-xlog.db` line format.
//! - [`compression`]: gzip, bzip2, xz, zstd, lz4 and snappy as streaming codecs.
//! - [`queue`]: which files of `incoming/` and `streaming/` to archive now;
//!   [`queue_limit`]: `archive_queue_max`, when PostgreSQL's ready WAL must be dropped.
//! - [`duplicate`]: what to do when a WAL is already archived.
//! - [`storage`]: the object-store-shaped storage trait, an in-memory store and the
//!   conformance suite every backend runs.
//! - [`layout`]: local and cloud key schemes.
//! - [`archive`]: the archive flow over those traits; [`batch`]: the batch policy as a
//!   state machine every host pumps; [`restore`]: serving WAL back.
//! - [`encryption`]: recognising and opening encrypted copies.
//! - [`daemon`]: when `walvault daemon` archives each queue, restarts its children and runs
//!   `check`.
//! - [`streaming`]: partial repair, `--reset` planning and compatibility for `pg_receivewal`.
//! - [`report`]: what `walvault serve` reports (status document, gaps, health, metrics) and
//!   the dashboard's layout and formatting functions.
//! - [`text`]: untrusted names made safe to print and to reuse in `errors/`.
//! - [`verify`]: record-level WAL verification (page headers, records, CRC-32C, `xl_prev`)
//!   of one file at a time, and the stitcher that joins files into one checked stream.
//! - [`status`]: the checks and status model shared by the CLI, the HTTP API and the dashboard.
//! - `fuzzing` (feature `testing`): the fuzz targets' bodies, shared by `fuzz/` and the
//!   seed-corpus test.

pub mod archive;
pub mod batch;
pub mod catalogue;
pub mod compression;
pub mod daemon;
pub mod duplicate;
pub mod encryption;
#[cfg(feature = "testing")]
pub mod fuzzing;
pub mod layout;
pub mod push_ahead;
pub mod queue;
pub mod queue_limit;
pub mod report;
pub mod restore;
pub mod retention;
pub mod status;
pub mod storage;
pub mod streaming;
pub mod text;
pub mod time;
pub mod verify;
pub mod wal;
