//! What walvault asks PostgreSQL (for check, status and segment-size detection).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use postgres::{Client, NoTls};
use serde::Serialize;
use walvault_core::status::ArchiverStats;

use crate::secret::Conninfo;

/// Facts read from a running server.
#[derive(Debug, Clone, Serialize)]
pub struct PgFacts {
    /// `server_version_num`.
    pub version_num: i32,
    /// `archive_mode`.
    pub archive_mode: String,
    /// `archive_command`.
    pub archive_command: String,
    /// `archive_library` (PostgreSQL 15+; empty otherwise).
    pub archive_library: String,
    /// `wal_segment_size` in bytes.
    pub wal_segment_size: u64,
    /// `pg_control_system().system_identifier`.
    pub system_identifier: u64,
    /// Whether the server is a standby.
    pub in_recovery: bool,
    /// The WAL segment being written (primary only).
    pub current_wal: Option<String>,
    /// `pg_stat_archiver`.
    pub archiver: ArchiverStats,
}

/// Connects with a timeout (the check must not hang on an unreachable server). Errors show the
/// conninfo without its password.
pub fn connect(conninfo: &Conninfo) -> anyhow::Result<Client> {
    // The parser's messages name keys, never values, so it cannot echo a password.
    let mut config =
        postgres::Config::from_str(conninfo.expose()).with_context(|| "invalid conninfo")?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("walvault");
    }
    config
        .connect(NoTls)
        .with_context(|| format!("cannot connect to PostgreSQL ({conninfo})"))
}

/// Reads everything walvault needs in one round of queries.
pub fn facts(client: &mut Client) -> anyhow::Result<PgFacts> {
    let setting = |client: &mut Client, name: &str| -> anyhow::Result<String> {
        let row = client.query_opt("SELECT setting FROM pg_settings WHERE name = $1", &[&name])?;
        Ok(row.map(|r| r.get::<_, String>(0)).unwrap_or_default())
    };
    let version_num: i32 = setting(client, "server_version_num")?
        .parse()
        .context("server_version_num")?;
    let archive_mode = setting(client, "archive_mode")?;
    let archive_command = setting(client, "archive_command")?;
    let archive_library = setting(client, "archive_library")?;
    let wal_segment_size: u64 = setting(client, "wal_segment_size")?
        .parse()
        .context("wal_segment_size")?;
    let row = client.query_one(
        "SELECT system_identifier::text, pg_is_in_recovery() FROM pg_control_system()",
        &[],
    )?;
    let system_identifier: u64 = row
        .get::<_, String>(0)
        .parse()
        .context("system_identifier")?;
    let in_recovery: bool = row.get(1);
    let current_wal = if in_recovery {
        None
    } else {
        Some(
            client
                .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])?
                .get(0),
        )
    };
    let row = client.query_one(
        "SELECT archived_count, last_archived_wal, extract(epoch from last_archived_time)::float8, \
         failed_count, last_failed_wal, extract(epoch from last_failed_time)::float8, extract(epoch from stats_reset)::float8 \
         FROM pg_stat_archiver",
        &[],
    )?;
    let archiver = ArchiverStats {
        archived_count: row.get(0),
        last_archived_wal: row.get(1),
        last_archived_time: row.get(2),
        failed_count: row.get(3),
        last_failed_wal: row.get(4),
        last_failed_time: row.get(5),
        stats_reset: row.get(6),
    };
    Ok(PgFacts {
        version_num,
        archive_mode,
        archive_command,
        archive_library,
        wal_segment_size,
        system_identifier,
        in_recovery,
        current_wal,
        archiver,
    })
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SlotInfo {
    /// `slot_type`: `physical` or `logical`.
    pub slot_type: String,
    /// Whether a connection is streaming from it now.
    pub active: bool,
    /// The streaming process, when active.
    pub active_pid: Option<i32>,
    /// Where the slot keeps WAL from; `None` until something streamed (or reserved WAL).
    pub restart_lsn: Option<String>,
}

/// The receiver as `pg_stat_replication` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiverInfo {
    /// The walsender's state (`streaming`, `catchup`, …).
    pub state: String,
    /// `sync_state`: `async`, `sync`, `potential`, `quorum`.
    pub sync_state: String,
    /// Bytes between the server's current WAL position and what the receiver flushed.
    pub lag_bytes: Option<i64>,
}

/// What receive-wal and the streaming checks ask PostgreSQL.
#[derive(Debug, Clone, Serialize)]
pub struct StreamingFacts {
    /// `server_version_num`.
    pub version_num: i32,
    /// `wal_segment_size` in bytes.
    pub wal_segment_size: u64,
    /// Whether the server is a standby.
    pub in_recovery: bool,
    /// The timeline the server writes (primary) or replays (standby).
    pub timeline: u32,
    /// The current WAL position (primary) or the last received one (standby).
    pub current_lsn: Option<String>,
    /// `synchronous_standby_names`.
    pub synchronous_standby_names: String,
    /// The configured slot, when it exists.
    pub slot: Option<SlotInfo>,
    /// Our receiver's `pg_stat_replication` row, matched by `application_name`.
    pub receiver: Option<ReceiverInfo>,
}

/// Reads the streaming facts for `slot` and the receiver named `application_name`.
pub fn streaming_facts(
    client: &mut Client,
    slot: Option<&str>,
    application_name: &str,
) -> anyhow::Result<StreamingFacts> {
    let row = client.query_one(
        "SELECT current_setting('server_version_num')::int, pg_is_in_recovery(), \
         current_setting('synchronous_standby_names'), \
         (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
        &[],
    )?;
    let version_num: i32 = row.get(0);
    let in_recovery: bool = row.get(1);
    let synchronous_standby_names: String = row.get(2);
    let wal_segment_size: i64 = row.get(3);
    // On a primary the current WAL file name carries the insert timeline (the checkpoint's
    // timeline lags right after a promotion).
    let row = if in_recovery {
        client.query_one(
            "SELECT (SELECT timeline_id FROM pg_control_checkpoint()), \
             pg_last_wal_receive_lsn()::text",
            &[],
        )?
    } else {
        client.query_one(
            "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int, \
             pg_current_wal_lsn()::text",
            &[],
        )?
    };
    let timeline: i32 = row.get(0);
    let current_lsn: Option<String> = row.get(1);
    let slot = match slot {
        None => None,
        Some(name) => client
            .query_opt(
                "SELECT slot_type, active, active_pid, restart_lsn::text \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )?
            .map(|r| SlotInfo {
                slot_type: r.get(0),
                active: r.get(1),
                active_pid: r.get(2),
                restart_lsn: r.get(3),
            }),
    };
    let lag_expr = if in_recovery {
        "NULL::bigint"
    } else {
        "pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::bigint"
    };
    let receiver = client
        .query_opt(
            &format!(
                "SELECT state, sync_state, {lag_expr} FROM pg_stat_replication \
                 WHERE application_name = $1 ORDER BY backend_start DESC LIMIT 1"
            ),
            &[&application_name],
        )?
        .map(|r| ReceiverInfo {
            state: r.get::<_, Option<String>>(0).unwrap_or_default(),
            sync_state: r.get::<_, Option<String>>(1).unwrap_or_default(),
            lag_bytes: r.get(2),
        });
    Ok(StreamingFacts {
        version_num,
        wal_segment_size: u64::try_from(wal_segment_size).unwrap_or(0),
        in_recovery,
        timeline: u32::try_from(timeline).unwrap_or(0),
        current_lsn,
        synchronous_standby_names,
        slot,
        receiver,
    })
}
