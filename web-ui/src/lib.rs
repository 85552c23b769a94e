//! walvault's dashboard: a leptos app rendered in the browser, compiled to
//! `wasm32-unknown-unknown` and embedded in the `walvault` binary.
//!
//! It fetches `/api/status` every few seconds and draws it. Every decision and every number
//! it shows comes from walvault-core, compiled into this module: the document type, health and
//! the catalogue summary. The wording, gap strips (recomputed from the WAL names) and bar
//! heights are [`wording`]'s, tested natively; the rest is layout.

pub mod wording;

// The app needs leptos and the browser's APIs; the wording's native tests build without them
// (`cargo test -p walvault-web-ui --lib --no-default-features`: seconds instead of minutes).
#[cfg(feature = "app")]
mod app;
