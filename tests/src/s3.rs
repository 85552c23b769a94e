//! Real S3 servers for the tests, on 127.0.0.1: `s3s-fs` (the primary test server, installed
//! by `.ci/setup` with cargo) and `moto_server` (PyPI, in the tests' Python venv), plus a
//! fault-injecting proxy that answers 503 SlowDown for a while.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// A TCP proxy in front of an S3 server that answers the first `failures` connections'
/// first request with `503 SlowDown` (and closes them), then relays everything.
#[derive(Debug)]
pub struct FlakyProxy {
    /// `http://127.0.0.1:PORT` to use as the endpoint.
    pub endpoint: String,
    /// Requests answered with 503 so far.
    pub refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FlakyProxy {
    /// Starts the proxy in front of `upstream_port`.
    pub fn start(upstream_port: u16, failures: usize) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&refused), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                if r.load(Ordering::SeqCst) < failures {
                    r.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || refuse(client));
                } else {
                    std::thread::spawn(move || relay(client, upstream_port));
                }
            }
        });
        FlakyProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            refused,
            stop,
        }
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

/// Reads the request head (and drains a body up to what arrives quickly), answers 503.
fn refuse(mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_millis(300)));
    let mut buf = [0u8; 64 << 10];
    let _ = client.read(&mut buf);
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let _ = client.write_all(
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let _ = client.shutdown(Shutdown::Both);
}

fn relay(client: TcpStream, upstream_port: u16) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        return;
    };
    let (mut c_read, mut u_write) = (
        client.try_clone().expect("clone"),
        upstream.try_clone().expect("clone"),
    );
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let _ = std::io::copy(&mut u_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
}
