//! The commands.

pub mod archive_wal;
pub mod check;
pub mod demo;
pub mod maintenance;
pub mod receive_wal;
pub mod reports;
pub mod wal_io;
