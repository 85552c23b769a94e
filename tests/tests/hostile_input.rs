//! Secrets and misconfiguration at the edges (issue 15): a conninfo password never shows in
//! what `check`, `status`, `config check`, `meta/last-check.json` and `serve` print, and a
//! hook script that cannot run is reported by `config check` and `check` instead of stalling
//! `put-wal`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::{Duration, Instant};

use walvault_tests::http::get;
use walvault_tests::{SERVER, World, describe, serve};

/// Everything a command printed.
fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn conninfo_passwords_never_show() {
    // Nothing listens on port 1: every connection fails at once, and the failures name the
    // conninfo. One server writes key=value with spaces and quotes, the other a URI with the
    // password twice.
    let world = World::new(
        "conninfo = \"host=127.0.0.1 port=1 user=u password = 'hunter2 kv' dbname=postgres\"\n\
         streaming_archiver = true\n\
         archiver = true\n\
         [uri]\n\
         conninfo = \"postgresql://u:hunter2-user@127.0.0.1:1/postgres?password=hunter2-query&connect_timeout=2\"\n",
    );
    let no_secret = |what: &str, text: &str| {
        assert!(
            !text.contains("hunter2"),
            "{what} shows a password:\n{text}"
        );
    };

    let check = world.walvault(&["check", "--all"]);
    let text = printed(&check);
    assert_eq!(check.status.code(), Some(1), "{}", describe(&check));
    no_secret("check", &text);
    assert!(
        text.contains("password=***") && text.contains("postgresql://u:***@127.0.0.1:1"),
        "check still names the connection:\n{text}"
    );
    let json = world.walvault(&["check", "--all", "--format", "json"]);
    no_secret("check --format json", &printed(&json));
    for server in [SERVER, "uri"] {
        let path = world.home.join(server).join("meta/last-check.json");
        let recorded = fs::read_to_string(&path).expect("last-check.json");
        assert!(recorded.contains("cannot connect"), "{recorded}");
        no_secret("last-check.json", &recorded);
    }
    let status = world.walvault(&["status", "--all", "--format", "json"]);
    assert!(status.status.success(), "{}", describe(&status));
    no_secret("status --format json", &printed(&status));
    no_secret("status", &printed(&world.walvault(&["status", "--all"])));
    let config = world.walvault(&["config", "check"]);
    assert!(config.status.success(), "{}", describe(&config));
    no_secret("config check", &printed(&config));

    // serve: the recorded check and the streaming probe, which runs in the background.
    let served = serve(&world, &["--listen", "127.0.0.1:0", "--refresh", "1"], &[]);
    let start = Instant::now();
    let doc = loop {
        let doc = get(served.addr, "/api/status").json();
        let probed = doc["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .any(|s| s["receive_wal"]["problem"].is_string());
        if probed || start.elapsed() > Duration::from_secs(30) {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = doc.to_string();
    assert!(
        text.contains("cannot connect") && text.contains("password=***"),
        "the API shows the failures: {text}"
    );
    no_secret("GET /api/status", &text);
    no_secret("GET /metrics", &get(served.addr, "/metrics").text());
}

#[test]
fn hook_scripts_that_cannot_run_fail_config_check_and_check() {
    let world = World::new("");
    let hooks = world.path("hooks");
    fs::create_dir_all(&hooks).expect("hooks dir");
    let notify = hooks.join("notify-hook");
    fs::write(&notify, "#!/bin/sh\nexit 0\n").expect("hook");
    fs::set_permissions(&notify, fs::Permissions::from_mode(0o644)).expect("chmod");
    world.own_all();
    world.add_config(&format!(
        "path_prefix = \"{}\"\n\
         pre_archive_retry_script = \"{}/missing-hook --flag\"\n\
         post_archive_script = \"notify-hook $BARMAN_SEGMENT\"\n\
         pre_wal_delete_script = \"exit 0\"",
        hooks.display(),
        hooks.display()
    ));

    let config = world.walvault(&["config", "check"]);
    let text = printed(&config);
    assert_eq!(config.status.code(), Some(2), "{}", describe(&config));
    assert!(
        text.contains("[pg] pre_archive_retry_script: ")
            && text.contains("missing-hook: No such file"),
        "{text}"
    );
    assert!(
        text.contains("[pg] post_archive_script: ")
            && text.contains("notify-hook is not executable"),
        "{text}"
    );
    assert!(!text.contains("pre_wal_delete_script"), "{text}");
    assert!(!text.contains(": OK"), "{text}");

    let check = world.walvault(&["check", SERVER]);
    let text = printed(&check);
    assert_eq!(check.status.code(), Some(1), "{}", describe(&check));
    let line = text
        .lines()
        .find(|l| l.contains("hook scripts"))
        .unwrap_or_else(|| panic!("no hook check:\n{text}"));
    assert!(
        line.contains("hook scripts: FAILED")
            && line.contains("pre_archive_retry_script")
            && line.contains("post_archive_script"),
        "{line}"
    );

    // Once both can run, both commands are content.
    fs::set_permissions(&notify, fs::Permissions::from_mode(0o755)).expect("chmod");
    let fixed = fs::read_to_string(&world.config)
        .expect("config")
        .replace("missing-hook", "notify-hook");
    fs::write(&world.config, fixed).expect("config");
    world.own_all();
    let config = world.walvault(&["config", "check"]);
    assert_eq!(config.status.code(), Some(0), "{}", describe(&config));
    let check = world.walvault(&["check", SERVER]);
    assert!(
        printed(&check).contains("hook scripts: OK (3 configured)"),
        "{}",
        describe(&check)
    );
}
