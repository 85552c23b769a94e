//! For wasm32-wasip1 only: the libc functions liblz4 expects from lz4-sys (see csrc/).

fn main() {
    println!("cargo:rerun-if-changed=csrc/lz4_shim.c");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("wasi") {
        cc::Build::new()
            .file("csrc/lz4_shim.c")
            .compile("walvault_lz4_shim");
    }
}
