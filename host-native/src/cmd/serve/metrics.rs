//! `/metrics`: the status document in Prometheus's text format (rendered by `serve`, which
//! owns the exposition; the document itself is the core's).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use walvault_core::report::{CatalogueSummary, Health, ServerStatus, StatusDocument};

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Metrics {
    text: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        let value = if value.is_finite() {
            format!("{value}")
        } else if value.is_nan() {
            "NaN".into()
        } else if value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{}}} {value}", labels.join(","));
        }
    }
    /// One family with one sample per server (servers where `get` gives `None` are skipped).
    fn per_server(
        &mut self,
        doc: &StatusDocument,
        name: &str,
        help: &str,
        get: impl Fn(&ServerStatus) -> Option<f64>,
    ) {
        self.family(name, "gauge", help);
        for s in &doc.servers {
            if let Some(v) = get(s) {
                self.sample(name, &[("server", &s.server)], v);
            }
        }
    }
    /// One family with, per server, one sample per value of a second label `key` (`get` gives
    /// the label values and their samples; none for a server skips it).
    fn per_server_by(
        &mut self,
        doc: &StatusDocument,
        name: &str,
        help: &str,
        key: &str,
        get: impl Fn(&ServerStatus) -> Vec<(&'static str, f64)>,
    ) {
        self.family(name, "gauge", help);
        for s in &doc.servers {
            for (value, n) in get(s) {
                self.sample(name, &[("server", &s.server), (key, value)], n);
            }
        }
    }
}

/// Counters the server keeps about itself, rendered with the status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeCounters {
    /// Requests answered, by route (`/api/status`, `/metrics`, …, `other`) and status code.
    pub requests: BTreeMap<(String, u16), u64>,
}

/// The Prometheus text exposition (format 0.0.4) of a status document.
pub fn render_metrics(doc: &StatusDocument, counters: &ServeCounters) -> String {
    let mut m = Metrics {
        text: String::new(),
    };
    m.family("walvault_info", "gauge", "walvault's version (always 1).");
    m.sample("walvault_info", &[("version", &doc.version)], 1.0);
    m.family(
        "walvault_http_requests_total",
        "counter",
        "HTTP requests answered by walvault serve, by route and status code.",
    );
    for ((route, code), n) in &counters.requests {
        m.sample(
            "walvault_http_requests_total",
            &[("route", route), ("code", &code.to_string())],
            *n as f64,
        );
    }
    m.per_server_by(
        doc,
        "walvault_health",
        "1 for the server's current health state (healthy, warning, failing), else 0.",
        "state",
        |s| {
            [Health::Healthy, Health::Warning, Health::Failing]
                .into_iter()
                .map(|h| (h.as_str(), if s.health.state == h { 1.0 } else { 0.0 }))
                .collect()
        },
    );
    fn cat(s: &ServerStatus) -> Option<&CatalogueSummary> {
        s.catalogue.as_ref()
    }
    m.per_server(
        doc,
        "walvault_catalogue_readable",
        "1 when the catalogue (<server>-xlog.db) can be read.",
        |s| Some(if s.catalogue.is_some() { 1.0 } else { 0.0 }),
    );
    m.per_server(
        doc,
        "walvault_catalogue_entries",
        "Lines in the catalogue.",
        |s| cat(s).map(|c| c.entries as f64),
    );
    m.per_server_by(
        doc,
        "walvault_archived_files",
        "Files in the catalogue by type (segment, partial, history, backup_label, other).",
        "type",
        |s| {
            cat(s).map_or_else(Vec::new, |c| {
                [
                    ("segment", c.segments),
                    ("partial", c.partials),
                    ("history", c.history_files),
                    ("backup_label", c.backup_labels),
                    ("other", c.other),
                ]
                .into_iter()
                .map(|(kind, n)| (kind, n as f64))
                .collect()
            })
        },
    );
    m.per_server(
        doc,
        "walvault_last_archived_timestamp_seconds",
        "WAL time of the newest archived segment.",
        |s| cat(s).and_then(|c| c.last_archived_time),
    );
    m.per_server(
        doc,
        "walvault_last_archived_age_seconds",
        "Seconds since the WAL time of the newest archived segment.",
        |s| {
            cat(s)
                .and_then(|c| c.last_archived_time)
                .map(|t| (doc.generated_at - t).max(0.0))
        },
    );
    m.per_server(
        doc,
        "walvault_archived_segments_last_hour",
        "Segments with a WAL time in the last hour.",
        |s| cat(s).map(|c| c.archived_last_hour as f64),
    );
    m.per_server(
        doc,
        "walvault_archived_segments_last_day",
        "Segments with a WAL time in the last 24 hours.",
        |s| cat(s).map(|c| c.archived_last_day as f64),
    );
    m.per_server(
        doc,
        "walvault_stored_bytes",
        "Bytes stored in the archive, as the catalogue records them.",
        |s| cat(s).map(|c| c.stored_bytes as f64),
    );
    m.per_server(
        doc,
        "walvault_original_bytes",
        "Uncompressed bytes of the archived segments.",
        |s| cat(s).map(|c| c.original_bytes as f64),
    );
    m.per_server(
        doc,
        "walvault_compression_ratio",
        "Uncompressed over stored bytes of the archived segments.",
        |s| cat(s).and_then(|c| c.compression_ratio),
    );
    m.per_server(
        doc,
        "walvault_timelines",
        "Timelines with archived segments.",
        |s| cat(s).map(|c| c.timelines.len() as f64),
    );
    m.per_server(
        doc,
        "walvault_gaps",
        "Runs of missing segments between the first and last archived segment of a timeline.",
        |s| cat(s).map(|c| c.gap_count() as f64),
    );
    m.per_server(
        doc,
        "walvault_missing_segments",
        "Segments missing in those gaps.",
        |s| cat(s).map(|c| c.missing_segments() as f64),
    );
    m.per_server_by(
        doc,
        "walvault_queue_files",
        "Files waiting to be archived, by queue (incoming, streaming).",
        "queue",
        |s| {
            vec![
                ("incoming", s.incoming_waiting as f64),
                ("streaming", s.streaming_waiting as f64),
            ]
        },
    );
    m.per_server_by(
        doc,
        "walvault_error_files",
        "Files in errors/ by kind (duplicate, unknown, invalid, not_relevant, other).",
        "kind",
        |s| {
            let e = &s.errors;
            [
                ("duplicate", e.duplicates),
                ("unknown", e.unknown),
                ("invalid", e.invalid),
                ("not_relevant", e.not_relevant),
                ("other", e.other),
            ]
            .into_iter()
            .map(|(kind, n)| (kind, n as f64))
            .collect()
        },
    );
    m.per_server(
        doc,
        "walvault_receive_wal_running",
        "1 when a receive-wal process holds the server's lock (streaming servers only).",
        |s| {
            s.receive_wal
                .as_ref()
                .map(|r| if r.running { 1.0 } else { 0.0 })
        },
    );
    m.per_server(
        doc,
        "walvault_receive_wal_lag_bytes",
        "Bytes between PostgreSQL's current WAL position and what pg_receivewal flushed.",
        |s| {
            s.receive_wal
                .as_ref()
                .and_then(|r| r.lag_bytes)
                .map(|b| b as f64)
        },
    );
    m.per_server(
        doc,
        "walvault_check_ok",
        "1 when every check of the last recorded 'walvault check' passed.",
        |s| s.last_check.as_ref().map(|c| if c.ok { 1.0 } else { 0.0 }),
    );
    m.per_server(
        doc,
        "walvault_check_timestamp_seconds",
        "When the last 'walvault check' ran.",
        |s| s.last_check.as_ref().map(|c| c.at),
    );
    m.per_server(
        doc,
        "walvault_dropped_segments_total",
        "Segments archive_queue_max acknowledged without archiving them (known gaps in the archive).",
        |s| Some(s.dropped_total as f64),
    );
    m.per_server(
        doc,
        "walvault_verify_ok",
        "1 when the last recorded 'walvault verify' found no error and no lost segment.",
        |s| {
            s.last_verify
                .as_ref()
                .map(|v| if v.is_clean() { 1.0 } else { 0.0 })
        },
    );
    m.per_server(
        doc,
        "walvault_verify_timestamp_seconds",
        "When the last 'walvault verify' finished.",
        |s| s.last_verify.as_ref().map(|v| v.at),
    );
    m.per_server(
        doc,
        "walvault_verify_duration_seconds",
        "How long the last 'walvault verify' took.",
        |s| s.last_verify.as_ref().map(|v| v.seconds),
    );
    m.per_server(
        doc,
        "walvault_verify_files",
        "Files the last 'walvault verify' read and verified.",
        |s| s.last_verify.as_ref().map(|v| v.files as f64),
    );
    m.per_server(
        doc,
        "walvault_verify_records",
        "WAL records whose CRC-32C the last 'walvault verify' checked.",
        |s| s.last_verify.as_ref().map(|v| v.records as f64),
    );
    m.per_server(
        doc,
        "walvault_verify_errors",
        "Errors the last 'walvault verify' found (damaged, foreign or misnamed files, broken record chains, history files that do not match).",
        |s| s.last_verify.as_ref().map(|v| v.errors as f64),
    );
    m.per_server(
        doc,
        "walvault_verify_lost_segments",
        "Segments the last 'walvault verify' found missing and nowhere on their way.",
        |s| s.last_verify.as_ref().map(|v| v.lost as f64),
    );
    m.per_server(
        doc,
        "walvault_verify_delayed_segments",
        "Segments the last 'walvault verify' found missing but waiting to be archived.",
        |s| s.last_verify.as_ref().map(|v| v.delayed as f64),
    );
    m.per_server(
        doc,
        "walvault_verify_verified_up_to_lsn",
        "The WAL position (as a number) up to which the last 'walvault verify' proved the archive replayable.",
        |s| {
            s.last_verify
                .as_ref()
                .and_then(|v| v.verified_up_to.as_ref())
                .and_then(|u| u.lsn)
                .map(|l| l.0 as f64)
        },
    );
    m.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use walvault_core::report::{ReceiveWalStatus, assess, sample_status as status};

    #[test]
    fn metrics_text() {
        let mut s = status();
        s.health = assess(&s.health_facts(), 1000.0);
        s.errors.duplicates = 2;
        s.receive_wal = Some(ReceiveWalStatus {
            running: true,
            lag_bytes: Some(8192),
            ..Default::default()
        });
        let doc = StatusDocument {
            generated_at: 1060.0,
            version: "0.1.0".into(),
            servers: vec![s],
        };
        let mut counters = ServeCounters::default();
        counters.requests.insert(("/metrics".into(), 200), 3);
        let text = render_metrics(&doc, &counters);
        for line in [
            "# TYPE walvault_http_requests_total counter",
            "walvault_http_requests_total{route=\"/metrics\",code=\"200\"} 3",
            "walvault_health{server=\"pg \\\"main\\\"\",state=\"healthy\"} 1",
            "walvault_last_archived_age_seconds{server=\"pg \\\"main\\\"\"} 60",
            "walvault_error_files{server=\"pg \\\"main\\\"\",kind=\"duplicate\"} 2",
            "walvault_receive_wal_lag_bytes{server=\"pg \\\"main\\\"\"} 8192",
            "walvault_compression_ratio{server=\"pg \\\"main\\\"\"} 167772.16",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("walvault_check_ok{"), "no check recorded");
        // Every sample line is `name{labels} value` with a finite or special value.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().expect("a value");
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
    }
}
