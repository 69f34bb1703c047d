//! Foundation: the module loads, serves, survives panics and reloads, and `nginx -t` names the
//! directive, file and line of a bad configuration.

mod common;

use std::time::Duration;

use common::*;

const OK_AND_PANIC: &str = "
    push_stream_shared_memory_size 1m;
    server {
        listen 127.0.0.1:{PORT};
        location /ok { push_stream_test_hook ok; }
        location /panic { push_stream_test_hook panic; }
        location /hold { push_stream_test_hook hold; }
        location /inbox { push_stream_test_hook inbox; }
    }";

#[test]
fn serves_a_request() {
    let n = Nginx::start(OK_AND_PANIC);
    let r = get(n.port, "/ok");
    assert_eq!(r.status, 200);
    let pid: u32 = r
        .text()
        .trim()
        .strip_prefix("ok ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        n.worker_pids().contains(&pid),
        "served by a worker of this nginx"
    );
    assert_eq!(r.header("X-Worker-Pid"), Some(pid.to_string().as_str()));
    n.stop();
}

#[test]
fn a_panic_in_a_handler_is_a_500_and_the_worker_keeps_serving() {
    let mut n = Nginx::start_with(
        OK_AND_PANIC,
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    n.allowed
        .push("push_stream: panic in content handler: test hook panic".into());
    let before = n.worker_pids();
    for _ in 0..3 {
        let r = get(n.port, "/panic");
        assert_eq!(r.status, 500);
    }
    let r = get(n.port, "/ok");
    assert_eq!(r.status, 200);
    assert_eq!(n.worker_pids(), before, "the worker was not replaced");
    let log = n.error_log();
    assert_eq!(
        log.matches("push_stream: panic in content handler: test hook panic")
            .count(),
        3,
        "{log}"
    );
    assert!(!log.contains("exited on signal"));
    n.stop();
}

#[test]
fn ten_reloads_with_held_connections_end_them_cleanly_and_old_workers_exit() {
    let mut n = Nginx::start(OK_AND_PANIC);
    for round in 0..10 {
        let mut held = Stream::open(n.port, "/hold", &[]);
        assert_eq!(held.status, 200);
        let first = held.next_chunk().expect("held greeting");
        assert!(first.starts_with(b"held "), "round {round}: {first:?}");
        let old = n.reload();
        // The held request gets its footer and a proper end of response.
        assert_eq!(held.rest(), b"bye\n".to_vec(), "round {round}");
        let took = n.wait_gone(&old, Duration::from_secs(5));
        assert!(took < Duration::from_secs(5));
        assert_eq!(get(n.port, "/ok").status, 200);
    }
    let log = n.error_log();
    assert!(!log.contains("open socket"), "{log}");
    n.stop();
}

#[test]
fn graceful_stop_ends_held_requests_with_their_footer() {
    let n = Nginx::start(OK_AND_PANIC);
    let mut held = Stream::open(n.port, "/hold", &[]);
    assert!(held.next_chunk().unwrap().starts_with(b"held "));
    let t = std::thread::spawn(move || held.rest());
    n.stop();
    assert_eq!(t.join().unwrap(), b"bye\n".to_vec());
}

#[test]
fn the_background_thread_wakes_the_event_loop_and_stops_on_reload() {
    let opts = Options {
        workers: 1,
        ..Default::default()
    };
    let conf = format!("push_stream_test_bridge_ticks 20ms;\n{OK_AND_PANIC}");
    let mut n = Nginx::start_with(&conf, opts);
    let ticks = |n: &Nginx| -> (u64, bool) {
        let r = get(n.port, "/inbox");
        assert_eq!(r.status, 200);
        let t = r.text();
        let field = |k: &str| {
            t.split(&format!("\"{k}\": "))
                .nth(1)
                .unwrap()
                .split([',', '}'])
                .next()
                .unwrap()
                .to_string()
        };
        (field("ticks").parse().unwrap(), field("bridge") == "true")
    };
    let (a, running) = ticks(&n);
    assert!(running);
    std::thread::sleep(Duration::from_millis(300));
    let (b, _) = ticks(&n);
    assert!(b > a, "ticks did not advance: {a} -> {b}");
    let old = n.reload();
    let took = n.wait_gone(&old, Duration::from_secs(4));
    assert!(took < Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(200));
    let (c, running) = ticks(&n);
    assert!(running && c > 0);
    n.stop();
}

#[test]
fn without_the_directive_no_thread_is_started() {
    let n = Nginx::start_with(
        OK_AND_PANIC,
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    let r = get(n.port, "/inbox");
    assert!(r.text().contains("\"bridge\": false"), "{}", r.text());
    let pid: u32 = r.header("X-Worker-Pid").unwrap().parse().unwrap();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert_eq!(threads, 1, "the worker runs only nginx's own thread");
    n.stop();
}

#[test]
fn nginx_t_names_directive_file_and_line() {
    assert_rejects(
        "",
        "push_stream_shared_memory_size 10k; # marker\n",
        "The push_stream_shared_memory_size value must be at least 128KiB",
        "# marker",
    );
    assert_rejects(
        "",
        "push_stream_shared_memory_size lots; # marker\n",
        "push stream module: invalid push_stream_shared_memory_size",
        "# marker",
    );
    assert_rejects(
        "",
        "push_stream_shared_memory_size 1m;\npush_stream_shared_memory_size 2m; # marker\n",
        "\"push_stream_shared_memory_size\" directive is duplicate",
        "# marker",
    );
    assert_rejects(
        "",
        "push_stream_test_bridge_ticks 0; # marker\npush_stream_shared_memory_size 1m;\n",
        "push stream module: push_stream_test_bridge_ticks cannot be zero.",
        "# marker",
    );
    assert_rejects(
        "",
        "server { listen 127.0.0.1:1; location / { push_stream_test_hook sideways; # marker\n } }",
        "push stream module: invalid push_stream_test_hook value: sideways",
        "# marker",
    );
    assert_rejects(
        "",
        "push_stream_no_such_thing on; # marker\n",
        "unknown directive \"push_stream_no_such_thing\"",
        "# marker",
    );
}

#[test]
fn a_location_using_the_module_requires_the_shared_memory_size() {
    let prefix = temp_prefix("nginx-t");
    let text = full_config(
        &prefix,
        1,
        "",
        "server { listen 127.0.0.1:1; location / { push_stream_test_hook ok; } }",
        1,
    );
    let (ok, stderr, _) = nginx_t(&text);
    assert!(!ok);
    assert!(
        stderr.contains("push stream module: push_stream_shared_memory_size must be set."),
        "{stderr}"
    );
}

#[test]
fn an_unused_module_says_so_and_stays_inert() {
    let mut n = Nginx::start_with(
        "server { listen 127.0.0.1:{PORT}; location / { return 204; } }",
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    assert_eq!(get(n.port, "/").status, 204);
    assert!(n
        .error_log()
        .contains("ngx_http_push_stream_module will not be used with this configuration."));
    n.check_log();
    n.stop();
}

#[test]
fn a_shared_memory_size_change_on_reload_is_ignored_with_a_warning() {
    let mut n = Nginx::start(OK_AND_PANIC);
    let changed = OK_AND_PANIC.replace(
        "push_stream_shared_memory_size 1m;",
        "push_stream_shared_memory_size 2m;",
    );
    let old = n.reload_with(&changed, &Options::default());
    n.wait_gone(&old, Duration::from_secs(5));
    assert!(n.error_log().contains("Cannot change memory area size without restart, ignoring change on zone: push_stream_module"));
    assert_eq!(get(n.port, "/ok").status, 200);
    n.stop();
}

#[test]
fn the_module_signature_check_refuses_a_module_built_for_another_nginx() {
    let module = module_path();
    let dir = temp_prefix("sig");
    let foreign = dir.join("nginx-foreign");
    std::fs::write(
        &foreign,
        b"\0\x008,4,8,0000000000000000000000000000000000\0",
    )
    .unwrap();
    let out = std::process::Command::new(repo().join("ci/check-signature"))
        .arg(&module)
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("does not match") && msg.contains("8,4,8,0000000000000000000000000000000000"),
        "{msg}"
    );
    let out = std::process::Command::new(repo().join("ci/check-signature"))
        .arg(&module)
        .arg(nginx_bin())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
