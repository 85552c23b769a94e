//! `serve`: the read-only status API, Prometheus metrics and the dashboard over HTTP.
//!
//! It never writes: it reads the catalogue (incrementally, as the archiver appends), lists the
//! queues and `errors/`, reads what `check` recorded, and asks PostgreSQL about streaming in a
//! background thread so a request never waits on a database. Decisions (summaries, gaps,
//! health, the metrics text) are walvault-core's, the same code the dashboard runs in the
//! browser.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
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
use walvault_core::report::ReceiveWalStatus;
use walvault_core::wal::SegmentSize;

mod facts;
mod metrics;
mod routes;

use facts::{CatalogueCache, gather_in_background};
pub use metrics::{ServeCounters, render_metrics};
#[cfg(test)]
use routes::percent_decode;
use routes::{query_pairs, route_request};

use crate::config::{Config, ConfigError, Secret};
use crate::server::ServerCtx;
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
    pub const INDEX: &[u8] = include_bytes!("../../../../web-ui/static/index.html");
    pub const STYLE: &[u8] = include_bytes!("../../../../web-ui/static/style.css");
    pub const BOOT: &[u8] = include_bytes!("../../../../web-ui/static/boot.js");
    pub const JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dashboard/walvault_web_ui.js"));
    pub const WASM: &[u8] = include_bytes!(concat!(
        env!("OUT_DIR"),
        "/dashboard/walvault_web_ui_bg.wasm"
    ));
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
        .map(|s| ServerCtx::open(s, config))
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
        tracing::info!(address = %local, "serving");
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
    // The known route, never the raw path: a client's bytes do not reach the log.
    tracing::debug!(route = %route, status = response.status().as_u16(), "request");
    *locked(&state.counters)
        .requests
        .entry((route, response.status().as_u16()))
        .or_default() += 1;
    Ok(response)
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
