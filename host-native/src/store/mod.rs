//! Storage backends of the native host.

pub mod aws_profile;
mod local;
pub mod s3;

pub use local::LocalStore;
pub use s3::S3Store;
