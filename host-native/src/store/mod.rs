//! Storage backends of the native host.

mod local;

pub use local::LocalStore;
