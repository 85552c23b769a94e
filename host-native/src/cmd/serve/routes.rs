//! The routes: `/api/status`, `/api/wals`, `/metrics` and the dashboard's files.

use std::collections::HashMap;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use walvault_core::report;

use super::facts::{catalogue, status_document};
use super::metrics::render_metrics;
use super::{MAX_PAGE, Reply, State, assets, json, json_error, locked, reply};

pub(super) fn route_request(state: &State, route: &str, query: &HashMap<String, String>) -> Reply {
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
                render_metrics(&doc, &counters),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        _ => json_error(StatusCode::NOT_FOUND, "no such page"),
    }
}

pub(super) fn wals(state: &State, query: &HashMap<String, String>) -> Reply {
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
pub(super) fn query_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(super) fn percent_decode(text: &str) -> String {
    crate::secret::percent_decode_with(text, true)
}
