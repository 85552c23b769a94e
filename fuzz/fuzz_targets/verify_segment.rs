#![no_main]
// The properties checked are in the shared body; see fuzz/Cargo.toml.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    walvault_core::fuzzing::verify_segment(data);
});
