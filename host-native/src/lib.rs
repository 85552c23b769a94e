//! The native host of walvault: the `walvault` command line over the file system, PostgreSQL
//! and (later) object storage. `main.rs` is a thin entry point; the modules are a library so
//! the end-to-end tests in `tests/` can drive the same code (for example [`pgcluster`]).

pub mod catalogue_file;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod fsutil;
pub mod hooks;
pub mod lock;
pub mod pg;
pub mod pgcluster;
pub mod queue_dir;
pub mod server;
pub mod store;
pub mod ui;
