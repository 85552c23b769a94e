//! placeholder
pub mod compression;
