//! The commands.

pub mod archive_wal;
#[cfg(feature = "native")]
pub mod check;
#[cfg(feature = "native")]
pub mod demo;
pub mod maintenance;
#[cfg(feature = "native")]
pub mod push_ahead;
#[cfg(feature = "native")]
pub mod receive_wal;
pub mod reports;
#[cfg(feature = "native")]
pub mod serve;
#[cfg(feature = "native")]
pub mod verify;
pub mod wal_io;
