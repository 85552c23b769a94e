//! `serve`: the read-only status API, Prometheus metrics and the dashboard over HTTP.
//!
//! It never writes: it reads the catalogue (incrementally, as the archiver appends), lists the
//! queues and `errors/`, reads what `check` recorded, and asks PostgreSQL about streaming in a
//! background thread so a request never waits on a database. Decisions (summaries, gaps,
//! health, the metrics text) are walvault-core's, the same code the dashboard runs in the
//! browser.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use walvault_core::catalogue::{CatalogueEntry, CatalogueError};
use walvault_core::duplicate::summarise_errors;
use walvault_core::queue::QueueKind;
use walvault_core::report::{
    self, CheckRun, ErrorFileStatus, HealthVerdict, MAX_ERROR_FILES, ReceiveWalStatus,
    ServeCounters, ServerStatus, StatusDocument,
};
use walvault_core::wal::SegmentSize;

use super::{receive_wal, reports};
use crate::config::{Config, ConfigError, Secret};
use crate::server::ServerCtx;
use crate::server::now;
use crate::ui::Ui;

/// The environment variable that can hold the bearer token (else `serve_token` in
/// `[walvault]`).
pub const TOKEN_ENV: &str = "WALVAULT_SERVE_TOKEN";
/// `/api/wals` pages hold at most this many lines.
pub const MAX_PAGE: usize = 10_000;

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Required as `Authorization: Bearer …` on the API and metrics when set; without it only
    /// loopback host names are answered.
    pub token: Option<Secret>,
    /// How often PostgreSQL is asked about streaming.
    pub refresh: Duration,
}

/// The dashboard bundle, built from `web-ui/` by build.rs.
mod assets {
    pub const INDEX: &[u8] = include_bytes!("../../../web-ui/static/index.html");
    pub const STYLE: &[u8] = include_bytes!("../../../web-ui/static/style.css");
    pub const BOOT: &[u8] = include_bytes!("../../../web-ui/static/boot.js");
    pub const JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dashboard/walvault_web_ui.js"));
    pub const WASM: &[u8] = include_bytes!(concat!(
        env!("OUT_DIR"),
        "/dashboard/walvault_web_ui_bg.wasm"
    ));
}

/// What identifies one version of the catalogue file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileId {
    dev: u64,
    ino: u64,
}

/// The catalogue as read so far: lines up to `read_to` (always a line end), sorted by name.
#[derive(Debug, Default)]
struct CatalogueCache {
    id: Option<FileId>,
    read_to: u64,
    entries: Arc<Vec<CatalogueEntry>>,
}

#[derive(Debug)]
struct State {
    // Leaked: they live as long as the process, and a `&` to them crosses threads (the
    // stores are Sync, not Send).
    servers: &'static [ServerCtx<'static>],
    token: Option<Secret>,
    catalogues: Mutex<HashMap<String, CatalogueCache>>,
    segment_sizes: Mutex<HashMap<String, SegmentSize>>,
    streaming: Mutex<HashMap<String, ReceiveWalStatus>>,
    counters: Mutex<ServeCounters>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking request must not take the server down with it: the data stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The bearer token: `WALVAULT_SERVE_TOKEN` when set (even empty: an empty token is refused,
/// not silently dropped), else `serve_token` (checked when the configuration was read).
pub fn token(config: &Config) -> Result<Option<Secret>, ConfigError> {
    let env_error = |message: String| ConfigError {
        section: None,
        key: Some(TOKEN_ENV.into()),
        message,
    };
    match std::env::var(TOKEN_ENV) {
        Ok(text) => Secret::token(&text).map(Some).map_err(env_error),
        Err(std::env::VarError::NotUnicode(_)) => Err(env_error("is not valid UTF-8".into())),
        Err(std::env::VarError::NotPresent) => Ok(config.serve_token.clone()),
    }
}

/// `serve`: answers until killed.
pub fn run(config: &'static Config, opts: Options, ui: &Ui) -> anyhow::Result<u8> {
    if !opts.listen.ip().is_loopback() && opts.token.is_none() {
        return Err(ConfigError {
            section: Some("walvault".into()),
            key: Some("serve_token".into()),
            message: format!(
                "refusing to listen on {} without a bearer token: it is not a loopback address; set serve_token in [walvault] or {TOKEN_ENV}",
                opts.listen
            ),
        }
        .into());
    }
    let servers = config
        .servers
        .values()
        .map(|s| ServerCtx::open(s, &config.path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let state = Arc::new(State {
        servers: Box::leak(servers.into_boxed_slice()),
        token: opts.token.clone(),
        catalogues: Mutex::default(),
        segment_sizes: Mutex::default(),
        streaming: Mutex::default(),
        counters: Mutex::default(),
    });
    {
        let state = Arc::clone(&state);
        std::thread::Builder::new()
            .name("walvault-serve-facts".into())
            .spawn(move || gather_in_background(&state, opts.refresh))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("walvault-serve")
        .enable_io()
        .enable_time()
        .build()
        .context("starting the HTTP runtime")?;
    // The address goes to stdout so scripts (and tests binding port 0) can read it; a reader
    // that goes away afterwards must not take the server down, so write errors are ignored.
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "walvault serve: listening on http://{local}/");
        let _ = writeln!(
            out,
            "serving {} server(s): /api/status, /api/wals, /metrics and the dashboard at /",
            state.servers.len()
        );
        let _ = out.flush();
    }
    runtime.block_on(accept_loop(listener, state, ui))
}

async fn accept_loop(
    listener: std::net::TcpListener,
    state: Arc<State>,
    ui: &Ui,
) -> anyhow::Result<u8> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let connections = Arc::new(tokio::sync::Semaphore::new(256));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                ui.warn(format_args!("accepting a connection: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).acquire_owned().await else {
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(Arc::clone(&state), req));
            // Malformed requests, slow clients and clients that go away end here, one
            // connection at a time; the result says nothing the server must act on.
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(code: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn json_error(code: StatusCode, message: &str) -> Reply {
    let body = serde_json::json!({ "error": message }).to_string();
    reply(code, "application/json", body)
}

fn json<T: serde::Serialize>(value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = reply(StatusCode::OK, "application/json", body);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorised(state: &State, req: &Request<Incoming>) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same_secret(given.trim().as_bytes(), token.expose().as_bytes()))
}

/// Whether a `Host` value (`name[:port]`) names this machine's loopback: `localhost`, or a
/// loopback address (`127.0.0.1`, `[::1]`). A web page can point its own host name at
/// 127.0.0.1 (DNS rebinding) and read what the browser fetches from it, but its requests then
/// carry that name.
fn loopback_host(host: &str) -> bool {
    let bracketed = host.starts_with('[');
    // `name[:port]` or `[v6][:port]`.
    let (name, port) = if bracketed {
        match host[1..].split_once(']') {
            Some(split) => split,
            None => return false,
        }
    } else {
        host.find(':').map_or((host, ""), |i| host.split_at(i))
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok
        && if bracketed {
            name.parse::<std::net::Ipv6Addr>()
                .is_ok_and(|ip| ip.is_loopback())
        } else {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
}

/// Without a token, a request must name a loopback host, both in `Host` and in an
/// absolute-form target. Returns what is wrong.
fn misdirected(state: &State, req: &Request<Incoming>) -> Option<String> {
    if state.token.is_some() {
        return None;
    }
    let hosts = req
        .headers()
        .get_all(header::HOST)
        .iter()
        .map(|v| v.to_str().unwrap_or("?"));
    let names: Vec<&str> = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .into_iter()
        .chain(hosts)
        .collect();
    if names.is_empty() {
        return Some("no Host header: without a bearer token, a loopback Host is required".into());
    }
    names.into_iter().find(|n| !loopback_host(n)).map(|name| {
        format!(
            "without a bearer token this server answers only to 127.0.0.1, [::1] and \
             localhost, not to host {name:?}: use one of those, or set serve_token"
        )
    })
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let path = req.uri().path().to_owned();
    let route = match path.as_str() {
        "/" | "/index.html" => "/",
        "/api/status"
        | "/api/wals"
        | "/metrics"
        | "/healthz"
        | "/style.css"
        | "/boot.js"
        | "/walvault_web_ui.js"
        | "/walvault_web_ui_bg.wasm" => path.as_str(),
        _ => "other",
    }
    .to_owned();
    let response = if let Some(problem) = misdirected(&state, &req) {
        json_error(StatusCode::MISDIRECTED_REQUEST, &problem)
    } else if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET or HEAD");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else if (route.starts_with("/api/") || route == "/metrics") && !authorised(&state, &req) {
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "this server needs 'Authorization: Bearer <token>'",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        let query = query_pairs(req.uri().query().unwrap_or(""));
        let state2 = Arc::clone(&state);
        let route2 = route.clone();
        // File reads and parsing block: keep them off the I/O threads.
        tokio::task::spawn_blocking(move || route_request(&state2, &route2, &query))
            .await
            .unwrap_or_else(|e| {
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("the request failed: {e}"),
                )
            })
    };
    *locked(&state.counters)
        .requests
        .entry((route, response.status().as_u16()))
        .or_default() += 1;
    Ok(response)
}

fn route_request(state: &State, route: &str, query: &HashMap<String, String>) -> Reply {
    let asset = |ct: &'static str, body: &'static [u8]| {
        let mut r = reply(StatusCode::OK, ct, Bytes::from_static(body));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'",
            ),
        );
        r
    };
    match route {
        "/" => asset("text/html; charset=utf-8", assets::INDEX),
        "/style.css" => asset("text/css; charset=utf-8", assets::STYLE),
        "/boot.js" => asset("text/javascript; charset=utf-8", assets::BOOT),
        "/walvault_web_ui.js" => asset("text/javascript; charset=utf-8", assets::JS),
        "/walvault_web_ui_bg.wasm" => asset("application/wasm", assets::WASM),
        "/healthz" => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        "/api/status" => match query.get("server") {
            None => json(&status_document(state, None)),
            Some(name) if state.servers.iter().any(|s| &s.cfg.name == name) => {
                json(&status_document(state, Some(name)))
            }
            Some(name) => json_error(StatusCode::NOT_FOUND, &format!("no server '{name}'")),
        },
        "/api/wals" => wals(state, query),
        "/metrics" => {
            let doc = status_document(state, None);
            let counters = locked(&state.counters).clone();
            let mut r = reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                report::render_metrics(&doc, &counters),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        _ => json_error(StatusCode::NOT_FOUND, "no such page"),
    }
}

fn wals(state: &State, query: &HashMap<String, String>) -> Reply {
    let ctx = match query.get("server") {
        Some(name) => state.servers.iter().find(|s| &s.cfg.name == name),
        None if state.servers.len() == 1 => state.servers.first(),
        None => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "more than one server: say which with ?server=",
            );
        }
    };
    let Some(ctx) = ctx else {
        return json_error(StatusCode::NOT_FOUND, "no such server");
    };
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("limit must be a number from 1 to {MAX_PAGE}"),
            );
        }
    };
    match catalogue(state, ctx) {
        Ok(entries) => json(&report::wal_page(
            &ctx.cfg.name,
            &entries,
            query.get("after").map(String::as_str),
            limit,
        )),
        Err(problem) => json_error(StatusCode::SERVICE_UNAVAILABLE, &problem),
    }
}

/// `a=1&b=x%20y` → map; later keys win.
fn query_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn file_id(meta: &fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// The catalogue sorted by name, reading only what was appended since the last call (a new
/// file, as `rebuild-xlogdb` and retention write, is read whole). A line still being written
/// is left for the next call.
fn catalogue(state: &State, ctx: &ServerCtx<'_>) -> Result<Arc<Vec<CatalogueEntry>>, String> {
    let path = ctx.catalogue.path();
    let mut caches = locked(&state.catalogues);
    let cache = caches.entry(ctx.cfg.name.clone()).or_default();
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            *cache = CatalogueCache::default();
            return Ok(Arc::clone(&cache.entries));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let id = file_id(&meta);
    if cache.id != Some(id) || meta.len() < cache.read_to {
        *cache = CatalogueCache {
            id: Some(id),
            ..CatalogueCache::default()
        };
    }
    if meta.len() == cache.read_to {
        return Ok(Arc::clone(&cache.entries));
    }
    let mut tail = Vec::with_capacity((meta.len() - cache.read_to) as usize);
    file.seek(SeekFrom::Start(cache.read_to))
        .and_then(|_| file.take(meta.len() - cache.read_to).read_to_end(&mut tail))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete == 0 {
        return Ok(Arc::clone(&cache.entries));
    }
    let text = String::from_utf8_lossy(&tail[..complete]);
    let first_line = 1 + cache.entries.len();
    let mut added = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry =
            CatalogueEntry::parse_line(line, first_line + i).map_err(|e: CatalogueError| {
                format!("{e}: run 'walvault rebuild-xlogdb {}'", ctx.cfg.name)
            })?;
        added.push(entry);
    }
    added.sort_by(|a, b| a.name.cmp(&b.name));
    let entries = Arc::make_mut(&mut cache.entries);
    let in_order = match (entries.last(), added.first()) {
        (Some(last), Some(first)) => last.name <= first.name,
        _ => true,
    };
    entries.extend(added);
    if !in_order {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
    }
    cache.read_to += complete as u64;
    Ok(Arc::clone(&cache.entries))
}

fn segment_size(state: &State, ctx: &ServerCtx<'_>) -> SegmentSize {
    if let Some(size) = ctx.cfg.wal_segment_size {
        return size;
    }
    locked(&state.segment_sizes)
        .get(&ctx.cfg.name)
        .copied()
        .unwrap_or_default()
}

fn status_document(state: &State, only: Option<&str>) -> StatusDocument {
    let now = now();
    StatusDocument {
        generated_at: now,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        servers: state
            .servers
            .iter()
            .filter(|s| only.is_none_or(|name| s.cfg.name == name))
            .map(|ctx| server_status(state, ctx, now))
            .collect(),
    }
}

fn server_status(state: &State, ctx: &ServerCtx<'_>, now: f64) -> ServerStatus {
    let cfg = ctx.cfg;
    let size = segment_size(state, ctx);
    let (summary, catalogue_problem) = match catalogue(state, ctx) {
        Ok(entries) => (Some(report::summarise_catalogue(&entries, size, now)), None),
        Err(problem) => (None, Some(problem)),
    };
    let mut error_files: Vec<ErrorFileStatus> = reports::error_entries(ctx, false)
        .unwrap_or_default()
        .into_iter()
        .map(|e| ErrorFileStatus {
            reason: e.recorded_reason.unwrap_or(e.reason),
            file: e.file,
            original: e.original,
            kind: e.kind,
            moved_at: e.moved_at,
            size: e.size,
        })
        .collect();
    let names: Vec<&str> = error_files.iter().map(|e| e.file.as_str()).collect();
    let errors = summarise_errors(&names);
    error_files.sort_by(|a, b| b.moved_at.cmp(&a.moved_at).then(a.file.cmp(&b.file)));
    error_files.truncate(MAX_ERROR_FILES);
    let receive_wal = cfg.streaming_archiver.then(|| {
        let holder = receive_wal::holder(cfg);
        let mut st = locked(&state.streaming)
            .get(&cfg.name)
            .cloned()
            .unwrap_or_default();
        st.running = holder.is_some();
        st.pid = holder.flatten();
        st
    });
    let last_check = fs::read(ctx.last_check_path())
        .ok()
        .and_then(|bytes| serde_json::from_slice::<CheckRun>(&bytes).ok());
    let mut status = ServerStatus {
        server: cfg.name.clone(),
        description: cfg.description.clone(),
        archive: ctx.archive_location(),
        compression: cfg.compression.map(|c| c.name().to_owned()),
        wal_segment_size: size.bytes(),
        last_wal_maximum_age: cfg.last_wal_maximum_age,
        max_incoming_wals_queue: cfg.max_incoming_wals_queue,
        health: HealthVerdict {
            state: report::Health::Healthy,
            reasons: Vec::new(),
        },
        catalogue: summary,
        catalogue_problem,
        incoming_waiting: ServerCtx::waiting(&cfg.incoming, QueueKind::Incoming),
        streaming_waiting: if cfg.streaming_archiver {
            ServerCtx::waiting(&cfg.streaming, QueueKind::Streaming)
        } else {
            0
        },
        errors,
        error_files,
        receive_wal,
        last_check,
        archive_wal_stalled: crate::server::stalled_archive_wal(cfg),
    };
    status.health = report::assess(&status, now);
    status
}

/// Detects segment sizes once, then asks PostgreSQL about streaming every `refresh`.
fn gather_in_background(state: &State, refresh: Duration) {
    for ctx in state.servers {
        if ctx.cfg.wal_segment_size.is_none() {
            // Local archives answer at once; object storage may take a listing.
            let size = ctx.segment_size(&[]);
            locked(&state.segment_sizes).insert(ctx.cfg.name.clone(), size);
        }
    }
    loop {
        for ctx in state.servers.iter().filter(|s| s.cfg.streaming_archiver) {
            let mut st = ReceiveWalStatus {
                observed_at: Some(now()),
                ..ReceiveWalStatus::default()
            };
            match receive_wal::facts(ctx.cfg) {
                Ok(f) => {
                    st.slot_active = f.slot.as_ref().map(|s| s.active);
                    st.slot_restart_lsn = f.slot.and_then(|s| s.restart_lsn);
                    st.sender_state = f.receiver.as_ref().map(|r| r.state.clone());
                    st.lag_bytes = f
                        .receiver
                        .and_then(|r| r.lag_bytes)
                        .and_then(|b| u64::try_from(b).ok());
                }
                Err(e) => st.problem = Some(format!("{e:#}")),
            }
            locked(&state.streaming).insert(ctx.cfg.name.clone(), st);
        }
        std::thread::sleep(refresh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        let q = query_pairs("server=pg%2Dmain&after=0000000100000000000000AB&limit=5&flag&x=a+b");
        assert_eq!(q["server"], "pg-main");
        assert_eq!(q["after"], "0000000100000000000000AB");
        assert_eq!(q["limit"], "5");
        assert_eq!(q["flag"], "");
        assert_eq!(q["x"], "a b");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }

    #[test]
    fn only_loopback_names_pass_without_a_token() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost",
            "LocalHost:80",
            "[::1]",
            "[::1]:65535",
            "127.0.0.2:1",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "localhost.",
            "127.0.0.1.nip.io",
            "10.0.0.1",
            "0.0.0.0",
            "[::]",
            "[::ffff:127.0.0.1]",
            "::1",
            "[::1",
            "127.0.0.1:",
            "127.0.0.1:80x",
            "127.0.0.1:123456",
            "localhost:80:81",
            "",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
