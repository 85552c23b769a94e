//! Storage backends of the native host.

#[cfg(feature = "native")]
pub mod aws_profile;
mod local;
pub mod object_url;
#[cfg(feature = "native")]
pub mod s3;

pub use local::LocalStore;
#[cfg(feature = "native")]
pub use s3::S3Store;
