//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`), with
//! the few commands the dashboard test needs. Everything stays on loopback.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::http;

/// A browser session; the driver and the browser end with it.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Browser {
    /// Starts chromedriver on loopback and a headless Chromium session.
    pub fn start() -> Browser {
        let chromium = Path::new("/usr/bin/chromium");
        assert!(
            chromium.exists(),
            "Chromium is missing: .ci/setup installs the Debian packages chromium and chromium-driver"
        );
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (Debian package chromium-driver)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http::request(addr, "GET", "/status", &[], None)
            .map(|r| r.json()["value"]["ready"] != json!(true))
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-dev-shm-usage", "--window-size=1280,1600",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
        }}});
        let value = browser.command("POST", "/session", Some(caps));
        browser.session = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {value}"))
            .to_owned();
        browser
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let response = http::request(
            self.addr,
            method,
            path,
            &[],
            body.as_deref().map(str::as_bytes),
        )
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let json = response.json();
        assert!(
            response.status == 200,
            "WebDriver {method} {path}: {} {json}",
            response.status
        );
        json["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens a URL.
    pub fn goto(&self, url: &str) {
        self.command(
            "POST",
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        );
    }

    /// The visible text of every element matching a CSS selector.
    pub fn texts(&self, css: &str) -> Vec<String> {
        let found = self.command(
            "POST",
            &self.session_path("/elements"),
            Some(json!({ "using": "css selector", "value": css })),
        );
        found
            .as_array()
            .map(|elements| {
                elements
                    .iter()
                    .filter_map(|e| e.as_object()?.values().next()?.as_str().map(str::to_owned))
                    .map(|id| {
                        self.command(
                            "GET",
                            &self.session_path(&format!("/element/{id}/text")),
                            None,
                        )
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until an element matching `css` has non-empty text, and returns the texts of all.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let texts = self.texts(css);
            if texts.iter().any(|t| !t.trim().is_empty()) {
                return texts;
            }
            assert!(
                Instant::now() < deadline,
                "nothing shows '{css}' after {timeout:?}; the page says: {}",
                self.texts("body").join(" ")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.command("GET", &self.session_path("/screenshot"), None);
        let png = base64_decode(b64.as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http::request(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (what WebDriver returns screenshots in).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
