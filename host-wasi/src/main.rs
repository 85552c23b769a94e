//! `walvault-wasi`: runs walvault-core compiled to `wasm32-wasip1` under wasmtime, sandboxed to
//! the directories it is given. The runner and its guest module are built in the WASI host
//! work; until then this binary only checks that the core links into it.

fn main() {
    let codecs: Vec<&str> = walvault_core::compression::Codec::ALL
        .iter()
        .map(|c| c.name())
        .collect();
    println!(
        "walvault-wasi {} (core codecs: {})",
        env!("CARGO_PKG_VERSION"),
        codecs.join(", ")
    );
}
