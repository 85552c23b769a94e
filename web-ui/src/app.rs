//! The leptos app: fetching `/api/status` and the layout (the `app` feature).

use std::time::Duration;

use leptos::prelude::*;
use walvault_core::report::{
    CatalogueSummary, CheckRun, ErrorFileStatus, ServerStatus, StatusDocument, TimelineSummary,
};
use walvault_core::verify::archive::VerifySummary;
use walvault_core::wal::SegmentSize;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen_futures::JsFuture;

use crate::wording;

/// How often the page asks for a fresh status.
const REFRESH: Duration = Duration::from_secs(5);
/// A gap keeps at least this share of its strip, so one missing segment stays visible.
const MIN_GAP_SHARE: f64 = 0.02;
/// Height of the tallest bar of the per-hour chart, in pixels.
const CHART_HEIGHT: u32 = 80;

/// Entry point: called by the wasm-bindgen glue once the module is loaded.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

fn js_error(e: wasm_bindgen::JsValue) -> String {
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// The bearer token, when the page was opened as `/#token=…` (the fragment never reaches a
/// server or a log).
fn token() -> Option<String> {
    let hash = web_sys::window()?.location().hash().ok()?;
    hash.strip_prefix("#token=")
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

async fn fetch_status() -> Result<StatusDocument, String> {
    let window = web_sys::window().ok_or("no window")?;
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    let headers = web_sys::Headers::new().map_err(js_error)?;
    if let Some(token) = token() {
        headers
            .set("Authorization", &format!("Bearer {token}"))
            .map_err(js_error)?;
    }
    init.set_headers(&headers);
    let request =
        web_sys::Request::new_with_str_and_init("/api/status", &init).map_err(js_error)?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(js_error)?
        .dyn_into()
        .map_err(js_error)?;
    let text = JsFuture::from(response.text().map_err(js_error)?)
        .await
        .map_err(js_error)?
        .as_string()
        .unwrap_or_default();
    if !response.ok() {
        return Err(format!(
            "/api/status answered {}: {text}",
            response.status()
        ));
    }
    serde_json::from_str(&text).map_err(|e| format!("/api/status: {e}"))
}

#[component]
fn App() -> impl IntoView {
    let (doc, set_doc) = signal(None::<StatusDocument>);
    let (problem, set_problem) = signal(None::<String>);
    let refresh = move || {
        leptos::task::spawn_local(async move {
            match fetch_status().await {
                Ok(d) => {
                    set_doc.set(Some(d));
                    set_problem.set(None);
                }
                // Keep showing the last good status, and say it is stale.
                Err(e) => set_problem.set(Some(e)),
            }
        });
    };
    refresh();
    set_interval(refresh, REFRESH);
    view! {
        <header>
            <h1>"walvault"</h1>
            <span class="meta">
                {move || doc.get().map(|d| format!(
                    "version {} · updated {}",
                    d.version,
                    wording::format_time(d.generated_at)
                ))}
            </span>
        </header>
        <main>
            {move || problem.get().map(|p| view! {
                <div class="banner" data-test="problem">
                    "Cannot refresh the status: " {p}
                </div>
            })}
            {move || match doc.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(d) if d.servers.is_empty() => {
                    view! { <p>"No servers are configured."</p> }.into_any()
                }
                Some(d) => {
                    let now = d.generated_at;
                    d.servers
                        .into_iter()
                        .map(|s| server_card(s, now))
                        .collect_view()
                        .into_any()
                }
            }}
        </main>
    }
}

fn fact(label: &'static str, test: &'static str, value: String) -> impl IntoView {
    view! {
        <div>
            <dt>{label}</dt>
            <dd data-test=test>{value}</dd>
        </div>
    }
}

fn server_card(s: ServerStatus, now: f64) -> impl IntoView {
    let state = s.health.state.as_str();
    let size = SegmentSize::new(s.wal_segment_size).unwrap_or_default();
    let reasons = s
        .health
        .reasons
        .iter()
        .map(|r| view! { <li>{r.clone()}</li> })
        .collect_view();
    let cat = s.catalogue.clone();
    let last_wal = cat
        .as_ref()
        .and_then(|c| c.last_archived_wal.clone())
        .unwrap_or_else(|| "none yet".into());
    let last_time = cat
        .as_ref()
        .and_then(|c| c.last_archived_time)
        .map_or_else(|| "–".to_owned(), |t| wording::describe_time(t, now));
    let facts = view! {
        <dl class="facts">
            {fact("Last archived WAL", "last-wal", last_wal)}
            {fact("WAL time", "last-time", last_time)}
            {fact("Archived, last hour / day", "rate",
                cat.as_ref().map_or_else(|| "–".into(), wording::describe_rates))}
            {fact("Waiting in incoming / streaming", "queues",
                format!("{} / {}", s.incoming_waiting, s.streaming_waiting))}
            {fact("Catalogue", "catalogue",
                wording::describe_catalogue(cat.as_ref(), s.catalogue_problem.as_deref()))}
            {fact("Compression", "ratio", format!(
                "{} · {}",
                s.compression.clone().unwrap_or_else(|| "none".into()),
                wording::format_ratio(cat.as_ref().and_then(|c| c.compression_ratio)),
            ))}
            {fact("Archive", "archive", s.archive.clone())}
            {s.receive_wal.as_ref().map(|rw| fact("receive-wal", "receive-wal",
                wording::describe_receive_wal(rw)))}
        </dl>
    };
    view! {
        <section class=format!("server {state}") data-server=s.server.clone() data-health=state>
            <h2>
                {s.server.clone()}
                <span class=format!("badge {state}") data-test="health">{state}</span>
            </h2>
            {s.description.clone().map(|d| view! { <p class="muted">{d}</p> })}
            <ul class="reasons" data-test="reasons">{reasons}</ul>
            {facts}
            {cat.clone().map(chart)}
            {cat.map(|c| timelines(c, size))}
            {errors(s.error_files.clone(), s.errors.total())}
            {checks(s.last_check.clone(), now)}
            {verification(s.last_verify.clone(), now)}
        </section>
    }
}

fn chart(cat: CatalogueSummary) -> impl IntoView {
    let counts: Vec<u64> = cat.per_hour.iter().map(|h| h.segments).collect();
    let heights = wording::bar_heights(&counts, CHART_HEIGHT);
    let bars = cat
        .per_hour
        .iter()
        .zip(heights)
        .map(|(h, px)| {
            let title = format!(
                "{}: {} segments",
                wording::hour_label(h.hour_start),
                h.segments
            );
            view! {
                <div class="col" title=title>
                    <div class="bar" style=format!("height:{px}px")></div>
                </div>
            }
        })
        .collect_view();
    let axis = cat
        .per_hour
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let text = if i % 6 == 0 {
                wording::hour_label(h.hour_start)
            } else {
                String::new()
            };
            view! { <span>{text}</span> }
        })
        .collect_view();
    view! {
        <h3>"Archived segments per hour (UTC, last 24 hours)"</h3>
        <div class="chart" data-test="chart">{bars}</div>
        <div class="axis">{axis}</div>
    }
}

fn timelines(cat: CatalogueSummary, size: SegmentSize) -> impl IntoView {
    let rows = cat
        .timelines
        .into_iter()
        .map(|tl| timeline_row(tl, size))
        .collect_view();
    view! {
        <h3>"Timelines"</h3>
        <div data-test="timelines">{rows}</div>
    }
}

fn timeline_row(tl: TimelineSummary, size: SegmentSize) -> impl IntoView {
    let cells = wording::timeline_strip(&tl, size, MIN_GAP_SHARE)
        .into_iter()
        .map(|c| {
            let class = if c.missing { "missing" } else { "present" };
            let title = format!(
                "{} {} – {} ({} segments)",
                if c.missing { "missing" } else { "archived" },
                c.first,
                c.last,
                c.segments
            );
            view! {
                <div class=class title=title style=format!("width:{:.3}%", c.share * 100.0)></div>
            }
        })
        .collect_view();
    let gaps = tl
        .gaps
        .iter()
        .map(|g| view! { <li data-test="gap">{format!("missing {}", g.describe())}</li> })
        .collect_view();
    view! {
        <div class="timeline" data-timeline=tl.timeline>
            <div class="label">{wording::timeline_label(&tl)}</div>
            <div class="strip" data-test="strip">{cells}</div>
            <ul class="gaps">{gaps}</ul>
        </div>
    }
}

fn errors(files: Vec<ErrorFileStatus>, total: usize) -> impl IntoView {
    if files.is_empty() {
        return view! { <h3>"Errors"</h3><p class="muted" data-test="no-errors">"errors/ is empty."</p> }
            .into_any();
    }
    let shown = files.len();
    let rows = files
        .into_iter()
        .map(|e| {
            view! {
                <tr data-test="error-file">
                    <td><code>{e.file}</code></td>
                    <td>{e.kind}</td>
                    <td>{e.moved_at.unwrap_or_default()}</td>
                    <td>{e.reason}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h3>{wording::errors_heading(total, shown)}</h3>
        <table data-test="errors">
            <thead><tr><th>"File"</th><th>"Kind"</th><th>"Moved"</th><th>"Reason"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}

fn verification(last: Option<VerifySummary>, now: f64) -> impl IntoView {
    let Some(run) = last else {
        return view! {
            <h3>"Verification"</h3>
            <p class="muted" data-test="verify">"No verification recorded yet: run 'walvault verify'."</p>
        }
        .into_any();
    };
    let class = if run.is_clean() { "ok" } else { "failed" };
    let line = wording::describe_verify(&run, now);
    let failures = run
        .failures
        .iter()
        .map(|f| {
            view! {
                <tr data-test="verify-failure">
                    <td><code>{f.file.clone()}</code></td>
                    <td>{f.offset.map(|o| o.to_string()).unwrap_or_default()}</td>
                    <td>{f.lsn.map(|l| l.to_string()).unwrap_or_default()}</td>
                    <td>{f.message.clone()}</td>
                </tr>
            }
        })
        .collect_view();
    let lost = run
        .lost_ranges
        .iter()
        .map(|m| {
            view! {
                <tr data-test="verify-failure">
                    <td><code>{format!("{} – {}", m.first, m.last)}</code></td>
                    <td></td>
                    <td>{format!("{} – {}", m.start_lsn, m.end_lsn)}</td>
                    <td>{format!("{} segment(s) lost", m.count)}</td>
                </tr>
            }
        })
        .collect_view();
    let table = (!run.failures.is_empty() || !run.lost_ranges.is_empty()).then(|| {
        view! {
            <table data-test="verify-failures">
                <thead><tr><th>"File"</th><th>"Offset"</th><th>"LSN"</th><th>"Problem"</th></tr></thead>
                <tbody>{failures}{lost}</tbody>
            </table>
        }
    });
    view! {
        <h3>"Verification"</h3>
        <p class=class data-test="verify">{line}</p>
        {table}
    }
    .into_any()
}

fn checks(last: Option<CheckRun>, now: f64) -> impl IntoView {
    let Some(run) = last else {
        return view! {
            <h3>"Checks"</h3>
            <p class="muted" data-test="checks">"No check recorded yet: run 'walvault check'."</p>
        }
        .into_any();
    };
    let rows = run
        .checks
        .into_iter()
        .map(|c| {
            let (class, verdict) = if c.ok {
                ("ok", "OK")
            } else {
                ("failed", "FAILED")
            };
            view! {
                <tr>
                    <td>{c.name}</td>
                    <td class=class>{verdict}</td>
                    <td>{c.hint.unwrap_or_default()}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h3>{format!("Checks ({})", wording::format_age(run.at, now))}</h3>
        <table data-test="checks">
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}
