//! What walvault asks PostgreSQL (for check, status and segment-size detection).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use postgres::{Client, NoTls};
use serde::Serialize;
use walvault_core::status::ArchiverStats;

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

/// Connects with a timeout (the check must not hang on an unreachable server).
pub fn connect(conninfo: &str) -> anyhow::Result<Client> {
    let mut config = postgres::Config::from_str(conninfo).with_context(|| "invalid conninfo")?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("walvault");
    }
    config
        .connect(NoTls)
        .with_context(|| format!("cannot connect to PostgreSQL ({})", redact(conninfo)))
}

/// The conninfo without its password.
pub fn redact(conninfo: &str) -> String {
    conninfo
        .split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
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
