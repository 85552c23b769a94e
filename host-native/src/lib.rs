//! The native host of walvault: the `walvault` command line over the file system, PostgreSQL
//! and object storage. `main.rs` is a thin entry point; the modules are a library so the
//! end-to-end tests in `tests/` can drive the same code (for example `pgcluster`), and so the
//! WASI guest (`host-wasi/guest`) runs the same file-system code: without the `native` feature
//! only those parts build, for `wasm32-wasip1`.

pub mod barman_config;
pub mod catalogue_file;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod crypto;
pub mod dropped;
pub mod faults;
pub mod fsutil;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod hooks;
#[cfg(feature = "native")]
pub mod key_agent;
pub mod lock;
pub mod log;
#[cfg(feature = "native")]
pub mod pg;
#[cfg(feature = "native")]
pub mod pgcluster;
pub mod platform;
pub mod queue_dir;
pub mod secret;
pub mod server;
pub mod store;
pub mod ui;
