//! `walvault`: the native command-line host of walvault-core.
//!
//! The archiving commands (archive-wal, put-wal, get-wal, …) are built on the core's archive
//! flow and land with the native CLI work; this entry point already reports its version and
//! the codecs compiled in.

use std::process::ExitCode;

use walvault_core::compression::Codec;

const USAGE: &str = "usage: walvault [--version | --help | codecs]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["--version" | "-V"] => {
            println!("walvault {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        [] | ["--help" | "-h"] => {
            println!("walvault {}: a PostgreSQL WAL archiver\n{USAGE}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["codecs"] => {
            for codec in Codec::ALL {
                println!("{}\t{}", codec.name(), codec.extension());
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("walvault: unknown arguments {args:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
