//! walvault's browser dashboard (leptos, compiled to `wasm32-unknown-unknown`). It reuses
//! walvault-core's types in the browser; the UI itself is built in the dashboard work.

pub use walvault_core::wal::WalFileName;
