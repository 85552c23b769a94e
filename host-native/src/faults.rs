//! Test-only fault injection, compiled in with the `fault-injection` feature (the test suite's
//! build; release builds contain none of it), as neon's pageserver wraps its remote storage
//! in an unreliable wrapper: the shipped commands run over real stores while the tests make
//! them fail.
//!
//! - `WALVAULT_FAULTS`: faults for the store's operations, as
//!   `OP=FAULT[,FAULT…][;OP=…]` with OP one of `head get put list delete sync` and FAULT one
//!   of `transient permanent pass`, optionally `*N` (`put=pass*2,transient;sync=permanent`):
//!   each call of an operation takes the next fault scripted for it.
//! - `WALVAULT_CRASH_AFTER`: the process aborts right after the first commit step of that
//!   kind is carried out (`sync`, `catalogue`, `release`, `errors`), as a kill or a power cut
//!   between two steps would leave it.
//!
//! Without the feature both functions do nothing and read no environment.

// A release build must never be able to fail on purpose.
#[cfg(all(feature = "fault-injection", not(debug_assertions)))]
compile_error!("the fault-injection feature is for test builds only (debug assertions on)");

use walvault_core::batch::CommitStep;
use walvault_core::storage::WalStore;

/// The store the commands use: `store` itself, or with the feature and `WALVAULT_FAULTS` set,
/// `store` behind the core's fault injector.
pub fn wrap_store<'a>(
    store: Box<dyn WalStore + Sync + 'a>,
) -> anyhow::Result<Box<dyn WalStore + Sync + 'a>> {
    #[cfg(feature = "fault-injection")]
    if let Ok(spec) = std::env::var("WALVAULT_FAULTS") {
        let faulty = walvault_core::storage::FaultyStore::new(store);
        for (op, faults) in parse(&spec)? {
            faulty.script(op, &faults);
        }
        return Ok(Box::new(faulty));
    }
    Ok(store)
}

/// Called after each commit step is carried out: aborts the process when
/// `WALVAULT_CRASH_AFTER` names the step (with the feature).
pub fn after_step(step: &CommitStep) {
    #[cfg(feature = "fault-injection")]
    if let Ok(wanted) = std::env::var("WALVAULT_CRASH_AFTER") {
        let kind = match step {
            CommitStep::SyncStore => "sync",
            CommitStep::FindMissing(_) => "find",
            CommitStep::AppendCatalogue(_) => "catalogue",
            CommitStep::Release { .. } => "release",
            CommitStep::MoveToErrors { .. } => "errors",
        };
        if kind == wanted {
            eprintln!("walvault: WALVAULT_CRASH_AFTER={wanted}: aborting");
            std::process::abort();
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = step;
}

#[cfg(feature = "fault-injection")]
type Script = Vec<(
    walvault_core::storage::Op,
    Vec<walvault_core::storage::Fault>,
)>;

#[cfg(feature = "fault-injection")]
fn parse(spec: &str) -> anyhow::Result<Script> {
    use anyhow::{Context, bail};
    use walvault_core::storage::{Fault, Op};
    let mut script = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (op, faults) = part
            .split_once('=')
            .with_context(|| format!("WALVAULT_FAULTS: {part:?} is not OP=FAULTS"))?;
        let op = match op.trim() {
            "head" => Op::Head,
            "get" => Op::Get,
            "put" => Op::Put,
            "list" => Op::List,
            "delete" => Op::Delete,
            "sync" => Op::Sync,
            other => bail!("WALVAULT_FAULTS: unknown operation {other:?}"),
        };
        let mut list = Vec::new();
        for fault in faults.split(',').map(str::trim) {
            let (name, count) = match fault.split_once('*') {
                Some((name, n)) => (name, n.parse::<usize>().context("WALVAULT_FAULTS: count")?),
                None => (fault, 1),
            };
            let fault = match name {
                "transient" => Fault::Transient,
                "permanent" => Fault::Permanent,
                "pass" => Fault::Pass,
                other => bail!("WALVAULT_FAULTS: unknown fault {other:?}"),
            };
            list.extend(std::iter::repeat_n(fault, count));
        }
        script.push((op, list));
    }
    Ok(script)
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;
    use walvault_core::storage::{Fault, Op};

    #[test]
    fn fault_scripts_parse() {
        let script = parse("put=pass*2,transient; sync=permanent").expect("parses");
        assert_eq!(
            script,
            [
                (Op::Put, vec![Fault::Pass, Fault::Pass, Fault::Transient]),
                (Op::Sync, vec![Fault::Permanent])
            ]
        );
        assert!(parse("put=sometimes").is_err());
        assert!(parse("fly=pass").is_err());
    }
}
