//! Cross-crate integration and end-to-end tests for walvault. The tests live in `tests/tests/`;
//! this library holds helpers they share.
