//! Real S3 servers for the tests, on 127.0.0.1: `s3s-fs` (the primary test server, installed
//! by `.ci/setup` with cargo) and `moto_server` (PyPI, in the tests' Python venv), plus a
//! fault-injecting proxy in front of them ([`FaultProxy`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use walvault::pgcluster::free_port;

/// Credentials the test servers accept.
pub const ACCESS_KEY: &str = "walvault-test-key";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "walvault-test-secret";

/// The Python venv with Barman 3.20.1 (cloud extras) and moto, made by `.ci/setup`.
pub fn python_venv() -> PathBuf {
    std::env::var_os("WALVAULT_PY_VENV").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/walvault/py-venv")
        },
        PathBuf::from,
    )
}

/// A tool the test needs: its path, or `None` (the test then says why it is skipped), and a
/// panic instead when `WALVAULT_REQUIRE_TOOLS=1` (CI), so a missing tool fails the run.
pub fn tool(path: &Path, what: &str) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_owned());
    }
    let message = format!(
        "{what} not found at {} (run .ci/setup to install it)",
        path.display()
    );
    if std::env::var("WALVAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    None
}

/// `s3s-fs` as installed by `cargo install` (or on PATH).
pub fn s3s_fs_binary() -> Option<PathBuf> {
    let cargo_bin = PathBuf::from(std::env::var_os("CARGO_HOME").unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cargo")
            .into_os_string()
    }))
    .join("bin/s3s-fs");
    tool(&cargo_bin, "s3s-fs 0.14.1")
}

/// A running S3 server, killed on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The port.
    pub port: u16,
    /// Where s3s-fs keeps buckets (moto: none).
    pub root: Option<PathBuf>,
    command: Vec<String>,
}

impl S3Server {
    /// Starts `s3s-fs` over `root` (buckets are its directories), with the test credentials.
    pub fn s3s_fs(root: &Path) -> Option<S3Server> {
        let bin = s3s_fs_binary()?;
        std::fs::create_dir_all(root).expect("s3 root");
        let port = free_port().expect("port");
        let command = vec![
            bin.display().to_string(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--access-key".into(),
            ACCESS_KEY.into(),
            "--secret-key".into(),
            SECRET_KEY.into(),
            root.display().to_string(),
        ];
        Some(Self::spawn(command, port, Some(root.to_owned())))
    }

    /// Starts `moto_server` (any credentials are accepted).
    pub fn moto() -> Option<S3Server> {
        let bin = tool(&python_venv().join("bin/moto_server"), "moto_server")?;
        let port = free_port().expect("port");
        let command = vec![
            bin.display().to_string(),
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        Some(Self::spawn(command, port, None))
    }

    fn spawn(command: Vec<String>, port: u16, root: Option<PathBuf>) -> S3Server {
        let server = S3Server {
            child: start(&command),
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            root,
            command,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("S3 server {:?} did not listen", self.command);
    }

    /// Creates a bucket (a directory for s3s-fs; an unsigned `PUT /bucket` for moto, which
    /// does not check signatures).
    pub fn create_bucket(&self, bucket: &str) {
        if let Some(root) = &self.root {
            std::fs::create_dir_all(root.join(bucket)).expect("bucket dir");
            return;
        }
        let response = http(
            self.port,
            &format!(
                "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    /// Stops the server (SIGKILL: an outage, not a shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.child = start(&self.command);
        self.wait_ready();
    }

    /// Every object key in `bucket` of an s3s-fs server, sorted (its hidden metadata files
    /// left out).
    pub fn object_keys(&self, bucket: &str) -> Vec<String> {
        let root = self.root.as_ref().expect("s3s-fs root").join(bucket);
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else if !e.file_name().to_string_lossy().starts_with('.') {
                    let key = e.path().strip_prefix(&root).expect("under root").to_owned();
                    out.push(key.display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    /// The `[pg]` configuration lines for an archive at `s3://bucket/prefix` on this server.
    pub fn config(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "wals_directory = \"s3://{bucket}/{prefix}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n",
            self.endpoint
        )
    }
}

/// Runs a server command line, quietly.
fn start(command: &[String]) -> Child {
    Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"))
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn http(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// What the [`FaultProxy`] does to a request a [`Rule`] selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers this status with S3's error body for it (500 `InternalError`, 503 and 429
    /// `SlowDown`); the server never sees the request.
    Status(u16),
    /// Reads the request head and up to this many bytes of its body, then resets the
    /// connection (RST); the server never sees the request.
    ResetMidRequest(usize),
    /// Forwards the request (the server acts on it), then resets the connection before any
    /// answer: the client cannot tell whether it succeeded.
    AnswerLost,
    /// Forwards the request, sends the response head and this many bytes of its body, then
    /// resets the connection.
    ResetMidResponse(usize),
    /// Never answers (nothing is forwarded); the connection stays open until the client gives
    /// up or the proxy stops.
    Stall,
    /// Forwards the request, sends the response head and this many bytes of its body, then
    /// never sends more.
    StallMidResponse(usize),
    /// Forwards the request, sends the response head with its full `Content-Length` but only
    /// this many bytes of the body, then closes the connection cleanly (FIN).
    Truncate(usize),
}

impl Fault {
    /// `500 InternalError`.
    pub const INTERNAL_ERROR: Fault = Fault::Status(500);
    /// `503 SlowDown`.
    pub const SLOW_DOWN: Fault = Fault::Status(503);
    /// `429`, with S3's throttling code.
    pub const TOO_MANY_REQUESTS: Fault = Fault::Status(429);
}

/// Selects requests for a fault: by method, a substring of the request target, and count.
#[derive(Debug)]
pub struct Rule {
    method: String,
    path: String,
    fault: Fault,
    skip: usize,
    times: usize,
    matched: usize,
    fired: Arc<AtomicUsize>,
}

impl Rule {
    /// `fault` for the next request of `method` whose target (path and query) contains
    /// `path`. `method` is an HTTP method, `""` for any, or `"LIST"` for a bucket listing
    /// (`GET` then means an object download only).
    pub fn new(method: &str, path: &str, fault: Fault) -> Rule {
        Rule {
            method: method.to_owned(),
            path: path.to_owned(),
            fault,
            skip: 0,
            times: 1,
            matched: 0,
            fired: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// For the next `n` matching requests instead of one.
    pub fn times(self, n: usize) -> Rule {
        Rule { times: n, ..self }
    }

    /// For every matching request.
    pub fn always(self) -> Rule {
        self.times(usize::MAX)
    }

    /// Lets the first `n` matching requests through first.
    pub fn skip(self, n: usize) -> Rule {
        Rule { skip: n, ..self }
    }

    fn selects(&mut self, method: &str, target: &str) -> bool {
        if !(self.method.is_empty() || self.method == method) || !target.contains(&self.path) {
            return false;
        }
        self.matched += 1;
        if self.matched <= self.skip || self.matched - self.skip > self.times {
            return false;
        }
        self.fired.fetch_add(1, Ordering::SeqCst);
        true
    }
}

/// One request the proxy received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When its head arrived.
    pub at: Instant,
    /// Its method, `LIST` for a bucket listing.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// What was done to it (`None`: relayed).
    pub fault: Option<Fault>,
}

/// An HTTP/1.1 proxy in front of an S3 server that injects [`Fault`]s into the requests its
/// [`Rule`]s select, and can hide new objects from listings for a while
/// ([`FaultProxy::set_list_lag`]). It relays one request at a time per client connection
/// (keep-alive, as the S3 client pools them), each over a fresh upstream connection, and
/// holds each response whole: what the client gets is decided byte by byte.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT` to use as the endpoint.
    pub endpoint: String,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    upstream: u16,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    list_lag: Mutex<Duration>,
    /// Added before every request is relayed (an object store's round trip).
    latency: Mutex<Duration>,
    /// Objects stored through the proxy (request path) and when.
    puts: Mutex<Vec<(String, Instant)>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultProxy {
    /// Starts the proxy in front of the server on `upstream_port`, relaying everything.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            upstream: upstream_port,
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            list_lag: Mutex::new(Duration::ZERO),
            latency: Mutex::new(Duration::ZERO),
            puts: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve_client(client, &s));
            }
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            shared,
        }
    }

    /// Adds a rule (the first rule that selects a request decides its fault); returns the
    /// count of requests it has faulted.
    pub fn add(&self, rule: Rule) -> Arc<AtomicUsize> {
        let fired = Arc::clone(&rule.fired);
        lock(&self.shared.rules).push(rule);
        fired
    }

    /// Removes every rule: everything is relayed again.
    pub fn clear(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Listings leave out objects stored through the proxy less than `lag` ago (a store
    /// whose listing is eventually consistent); zero turns it off.
    pub fn set_list_lag(&self, lag: Duration) {
        *lock(&self.shared.list_lag) = lag;
    }

    /// Every request waits `latency` before it is relayed: the round trip of a real object
    /// store, tens of milliseconds away, in front of a loopback server.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.latency) = latency;
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// `server`'s `[pg]` configuration lines for `s3://bucket/prefix`, through this proxy.
    pub fn config(&self, server: &S3Server, bucket: &str, prefix: &str) -> String {
        server
            .config(bucket, prefix)
            .replace(&server.endpoint, &self.endpoint)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop; connection threads notice within a poll interval.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

/// A [`FaultProxy`] that answers the first `failures` requests with `503 SlowDown`, then
/// relays everything.
#[derive(Debug)]
pub struct FlakyProxy {
    /// `http://127.0.0.1:PORT` to use as the endpoint.
    pub endpoint: String,
    /// Requests answered with 503 so far.
    pub refused: Arc<AtomicUsize>,
    _proxy: FaultProxy,
}

impl FlakyProxy {
    /// Starts the proxy in front of `upstream_port`.
    pub fn start(upstream_port: u16, failures: usize) -> FlakyProxy {
        let proxy = FaultProxy::start(upstream_port);
        let refused = proxy.add(Rule::new("", "", Fault::SLOW_DOWN).times(failures));
        FlakyProxy {
            endpoint: proxy.endpoint.clone(),
            refused,
            _proxy: proxy,
        }
    }
}

/// How often a blocked read looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A request head, parsed.
struct Request {
    head: Vec<u8>,
    /// `LIST` for a bucket listing, else the HTTP method.
    method: String,
    target: String,
    body: Framing,
    close: bool,
}

enum Framing {
    Length(usize),
    Chunked,
}

/// Reads more of `stream` into `buf`; `None` at its end, on an error, or once the proxy stops.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, shared: &Shared) -> Option<()> {
    let mut chunk = [0u8; 64 << 10];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Some(());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn find(data: &[u8], needle: &[u8]) -> Option<usize> {
    data.windows(needle.len()).position(|w| w == needle)
}

/// A header's value from a head's lines (`name` lower-case).
fn header<'a>(lines: &[&'a str], name: &str) -> Option<&'a str> {
    lines.iter().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn read_request(client: &mut TcpStream, pending: &mut Vec<u8>, shared: &Shared) -> Option<Request> {
    let end = loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            break end + 4;
        }
        fill(client, pending, shared)?;
    };
    let head: Vec<u8> = pending.drain(..end).collect();
    let text = String::from_utf8_lossy(&head).into_owned();
    let lines: Vec<&str> = text.split("\r\n").collect();
    let mut first = lines[0].split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let list =
        method == "GET" && (target.contains("?list-type=") || target.contains("&list-type="));
    let body = if header(&lines, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        Framing::Chunked
    } else {
        Framing::Length(
            header(&lines, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        )
    };
    let close = header(&lines, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    Some(Request {
        head,
        method: if list { "LIST".into() } else { method },
        target,
        body,
        close,
    })
}

/// The raw length of a complete chunked body at the start of `data`, if it is all there.
fn chunked_len(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line = find(&data[at..], b"\r\n")?;
        let text = String::from_utf8_lossy(&data[at..at + line]);
        let size = usize::from_str_radix(text.split(';').next()?.trim(), 16).ok()?;
        at += line + 2;
        if size == 0 {
            // Trailers, then an empty line.
            return find(&data[at - 2..], b"\r\n\r\n").map(|e| at - 2 + e + 4);
        }
        at += size + 2;
        if data.len() < at {
            return None;
        }
    }
}

fn dechunk(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(line) = find(&data[at..], b"\r\n") {
        let text = String::from_utf8_lossy(&data[at..at + line]);
        let size = text
            .split(';')
            .next()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        at += line + 2;
        if size == 0 || data.len() < at + size {
            break;
        }
        out.extend_from_slice(&data[at..at + size]);
        at += size + 2;
    }
    out
}

/// Reads the request's body (raw, as framed) once it is all there.
fn read_body(
    client: &mut TcpStream,
    pending: &mut Vec<u8>,
    request: &Request,
    shared: &Shared,
) -> Option<Vec<u8>> {
    loop {
        let len = match request.body {
            Framing::Length(n) => (pending.len() >= n).then_some(n),
            Framing::Chunked => chunked_len(pending),
        };
        if let Some(len) = len {
            return Some(pending.drain(..len).collect());
        }
        fill(client, pending, shared)?;
    }
}

/// Closes with a reset (RST) instead of a clean FIN.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Holds the connection without answering until the client gives up or the proxy stops.
fn stall(mut client: TcpStream, shared: &Shared) {
    let mut sink = Vec::new();
    while fill(&mut client, &mut sink, shared).is_some() {
        sink.clear();
    }
}

fn serve_client(mut client: TcpStream, shared: &Shared) {
    let _ = client.set_read_timeout(Some(POLL));
    let mut pending = Vec::new();
    while let Some(request) = read_request(&mut client, &mut pending, shared) {
        let fault = {
            let mut rules = lock(&shared.rules);
            rules.iter_mut().find_map(|r| {
                r.selects(&request.method, &request.target)
                    .then_some(r.fault)
            })
        };
        lock(&shared.seen).push(Seen {
            at: Instant::now(),
            method: request.method.clone(),
            target: request.target.clone(),
            fault,
        });
        if let Some(Fault::ResetMidRequest(n)) = fault {
            let wanted = match request.body {
                Framing::Length(len) => n.min(len),
                Framing::Chunked => n,
            };
            while pending.len() < wanted && fill(&mut client, &mut pending, shared).is_some() {}
            return reset(client);
        }
        let Some(body) = read_body(&mut client, &mut pending, &request, shared) else {
            return;
        };
        let head_only = request.method == "HEAD";
        let latency = *lock(&shared.latency);
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        match fault {
            Some(Fault::Status(code)) => {
                if client
                    .write_all(&error_response(code, head_only, request.close))
                    .is_err()
                    || request.close
                {
                    return;
                }
                continue;
            }
            Some(Fault::Stall) => return stall(client, shared),
            _ => {}
        }
        let Some(response) = forward(shared, &request, &body) else {
            let _ = client.write_all(&error_response(502, head_only, true));
            return;
        };
        let head = response.head(request.close);
        let sent = |n: usize| [&head[..], &response.body[..n.min(response.body.len())]].concat();
        match fault {
            Some(Fault::AnswerLost) => return reset(client),
            Some(Fault::ResetMidResponse(n)) => {
                let _ = client.write_all(&sent(n));
                return reset(client);
            }
            Some(Fault::StallMidResponse(n)) => {
                let _ = client.write_all(&sent(n));
                return stall(client, shared);
            }
            Some(Fault::Truncate(n)) => {
                let _ = client.write_all(&sent(n));
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            _ => {}
        }
        if client.write_all(&sent(usize::MAX)).is_err() || request.close {
            return;
        }
    }
}

/// S3's error document for `code`.
fn error_response(code: u16, head_only: bool, close: bool) -> Vec<u8> {
    let (reason, s3_code, message) = match code {
        500 => (
            "Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        503 => (
            "Service Unavailable",
            "SlowDown",
            "Please reduce your request rate.",
        ),
        429 => (
            "Too Many Requests",
            "SlowDown",
            "Please reduce your request rate.",
        ),
        _ => ("Bad Gateway", "InternalError", "The fault proxy failed."),
    };
    let body = if head_only {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3_code}</Code><Message>{message}</Message></Error>"
        )
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

/// A response from the server, whole.
struct Response {
    /// Status line and headers, without framing and connection headers (but a HEAD
    /// response's `Content-Length`).
    lines: Vec<String>,
    body: Vec<u8>,
    head_only: bool,
}

impl Response {
    /// The head as sent to the client, framed by `Content-Length`.
    fn head(&self, close: bool) -> Vec<u8> {
        let mut head = self.lines.join("\r\n");
        if !self.head_only {
            head.push_str(&format!("\r\nContent-Length: {}", self.body.len()));
        }
        if close {
            head.push_str("\r\nConnection: close");
        }
        head.push_str("\r\n\r\n");
        head.into_bytes()
    }
}

/// Sends the request to the server on a connection of its own and reads the whole answer.
fn forward(shared: &Shared, request: &Request, body: &[u8]) -> Option<Response> {
    let mut upstream = TcpStream::connect(("127.0.0.1", shared.upstream)).ok()?;
    upstream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let text = String::from_utf8_lossy(&request.head).into_owned();
    let mut head: String = text
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    head.push_str("Connection: close\r\n\r\n");
    upstream.write_all(head.as_bytes()).ok()?;
    upstream.write_all(body).ok()?;
    let mut raw = Vec::new();
    upstream.read_to_end(&mut raw).ok()?;
    let end = find(&raw, b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let all: Vec<&str> = text.split("\r\n").collect();
    let status: u16 = all[0].split(' ').nth(1)?.parse().ok()?;
    let head_only = request.method == "HEAD" || matches!(status, 100..=199 | 204 | 304);
    let rest = &raw[end + 4..];
    let mut body = if head_only {
        Vec::new()
    } else if header(&all, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)
    } else {
        let len = header(&all, "content-length").and_then(|v| v.parse().ok());
        rest[..len.unwrap_or(rest.len()).min(rest.len())].to_vec()
    };
    let lines = all
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            let l = l.to_ascii_lowercase();
            *i == 0
                || !(l.starts_with("connection:")
                    || l.starts_with("transfer-encoding:")
                    || (!head_only && l.starts_with("content-length:")))
        })
        .map(|(_, l)| (*l).to_owned())
        .collect();
    let ok = (200..300).contains(&status);
    let path = request.target.split('?').next().unwrap_or("").to_owned();
    if ok && request.method == "PUT" && !request.target.contains("uploadId=") {
        lock(&shared.puts).push((path, Instant::now()));
    } else if ok && request.method == "LIST" {
        let lag = *lock(&shared.list_lag);
        let hidden: Vec<String> = lock(&shared.puts)
            .iter()
            .filter(|(_, at)| at.elapsed() < lag)
            .map(|(p, _)| p.clone())
            .collect();
        if !hidden.is_empty() {
            body = hide(&body, &hidden);
        }
    }
    Some(Response {
        lines,
        body,
        head_only,
    })
}

/// A `ListObjectsV2` result without the `<Contents>` of objects whose request path is in
/// `hidden`, its `<KeyCount>` adjusted.
fn hide(body: &[u8], hidden: &[String]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    let mut removed = 0;
    while let Some(start) = rest.find("<Contents>") {
        let Some(len) = rest[start..].find("</Contents>") else {
            break;
        };
        let end = start + len + "</Contents>".len();
        let block = &rest[start..end];
        let key = block
            .split_once("<Key>")
            .and_then(|(_, k)| k.split_once("</Key>"))
            .map(|(k, _)| format!("/{k}"));
        out.push_str(&rest[..start]);
        if key.is_some_and(|k| hidden.iter().any(|p| p.ends_with(&k))) {
            removed += 1;
        } else {
            out.push_str(block);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    if let Some((before, after)) = out.split_once("<KeyCount>")
        && let Some((count, tail)) = after.split_once("</KeyCount>")
        && let Ok(count) = count.parse::<usize>()
    {
        out = format!(
            "{before}<KeyCount>{}</KeyCount>{tail}",
            count.saturating_sub(removed)
        );
    }
    out.into_bytes()
}
