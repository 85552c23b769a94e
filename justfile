# Recipes mirror CI one to one; `just test` is what CI runs (.ci/run → .ci/test).

# Install tools, then run every check CI runs.
test:
    .ci/test

# Install the tools the build and tests need (idempotent).
setup:
    .ci/setup

fmt:
    cargo fmt --all

lint:
    cargo clippy --workspace --exclude walvault-web-ui --all-targets --locked -- -D warnings
    cargo clippy -p walvault-web-ui --target wasm32-unknown-unknown --locked -- -D warnings
    cargo clippy -p walvault-wasi-guest --target wasm32-wasip1 --locked -- -D warnings
    cargo clippy -p walvault-wasi-guest --target wasm32-wasip1 --features sandbox-probe --locked -- -D warnings
    cargo clippy -p walvault-core --all-targets --locked -- -D warnings

# The core for both wasm targets.
wasm:
    cargo build -p walvault-core --locked --target wasm32-wasip1
    cargo build -p walvault-core --locked --target wasm32-unknown-unknown

# Codec benchmark against the C tools on real PostgreSQL WAL (see bench/RESULTS.md).
bench-codecs:
    bench/codecs.sh

# /api/status, /metrics and /api/wals over a 100,000-line catalogue (see bench/RESULTS.md).
bench-serve:
    bench/serve.sh

# walvault verify against pg_waldump on the 64-segment corpus (see bench/RESULTS.md).
bench-verify:
    bench/verify.sh

# put-wal with and without archive_async, loopback and +20 ms, against pgBackRest 2.45
# archive-async (see bench/RESULTS.md).
bench-async:
    bench/async.sh

# The Debian package (cargo deb): target/debian/walvault_<version>-1_<arch>.deb, release build.
deb:
    host-native/debian/build-deb.sh

# Installs the package in a clean Debian 12 root (debootstrap, cached in ~/.cache/walvault),
# checks its user, directories, modes and files, runs `walvault demo` in it, then purges it.
# Needs root. Builds the package from the test build (debug) when none is there.
package-test:
    [ -n "$(ls target/debian/walvault_*.deb 2>/dev/null)" ] || host-native/debian/build-deb.sh --debug
    tests/package/install-test.sh

# From a segment renamed into incoming/ to its durable catalogue line: walvault daemon against
# a one-minute cron tick (walvault archive-wal, Barman 3.20.1; see bench/RESULTS.md).
bench-daemon:
    bench/daemon.sh

# archive-wal and get-wal with and without encryption = "gpg", against Barman 3.20.1's gpg
# encryption (see bench/RESULTS.md).
bench-encryption:
    bench/encryption.sh

# Crash trials, long run: 200 per command (archive-wal, put-wal, put-wal archive_async,
# streaming, delete-wals), each stopped at a commit failpoint or killed at random, half with a power cut, then rerun; the
# table goes to bench/results/ (see bench/RESULTS.md). Then receive-wal with real PostgreSQL
# killed `kills` times. The suite runs 20 per command and 4 kills.
crash-trials trials="200" seed="2026" kills="40":
    cargo build --locked -p walvault --features walvault/fault-injection
    WALVAULT_CRASH_TRIALS={{trials}} WALVAULT_CRASH_SEED={{seed}} WALVAULT_RECEIVE_KILLS={{kills}} \
    WALVAULT_CRASH_REPORT=bench/results/crash-trials-{{trials}}-seed{{seed}}.md \
    cargo test --locked -p walvault-tests --test crash_trials -- --nocapture

# Fuzzing, long run (installs nightly and cargo-fuzz when missing); the table goes to
# bench/results/ (see bench/RESULTS.md). The suite runs the same targets over their seed corpus.
# Every fuzz target (fuzz/) for `seconds` each, native and pure-Rust codec builds.
fuzz seconds="60":
    fuzz/run.sh {{seconds}} bench/results/$(date -u +%F)-fuzz-{{seconds}}s.md
