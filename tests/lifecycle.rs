//! The lifecycle of channels and messages in shared memory, as the C module's statistics
//! show it (its `misc/spec/mix/cleanup_memory_spec.rb` and the delete cases of
//! `publisher/properties_spec.rb` and `mix/channel_statistics_spec.rb`):
//!
//! * a publish creates its channel, stored or not; a channel with no stored message and no
//!   subscriber is removed once its `push_stream_channel_inactivity_time` has passed, into the
//!   trash, and freed after the trash delay;
//! * a deleted channel is counted in `channels_in_delete` (also without subscribers), then in
//!   `channels_in_trash` for the trash delay, then it is gone;
//! * "fill the zone until publishing answers 500, wait for the cleanup, fill again: the same
//!   numbers fit", for stored messages, unstored messages, channels created by publishing,
//!   deleted channels and deleted-and-recreated channels, in three settings: nothing happens
//!   in between, `nginx -s reload` in between, `kill -9` of the workers in between.
//!
//! The C module's specs wait its fixed 10 s trash delay and 30 s inactivity time; these tests
//! set short times (`push_stream_channel_inactivity_time`, `push_stream_message_ttl` and the
//! test build's `push_stream_test_trash_delay`) and check the same transitions and that the
//! cleanup takes the time those settings say, neither less nor much more. One test keeps the
//! real 10 s trash delay.

mod common;

use std::collections::HashSet;
use std::io::BufReader;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The message the C module's specs publish.
const BODY: &[u8] = b"message to create a channel";

/// Test timings (seconds): short, so that a fill-clean-fill-clean-fill run takes seconds.
const TTL: u64 = 3;
const INACTIVITY: u64 = 3;
const TRASH: u64 = 2;
/// Deleted channels stay "in delete" for 1 to 3 s (`DELETE_HOLD` 2 s, collections every 1 s).
const DELETE_HOLD: u64 = 2;

/// The C specs' configuration (`push_stream_store_messages` in the publisher location).
fn conf(http_extra: &str, store: bool) -> String {
    let store = if store { "on" } else { "off" };
    format!(
        r#"
    push_stream_shared_memory_size 129k;
    push_stream_message_ttl {TTL}s;
    push_stream_channel_inactivity_time {INACTIVITY}s;
    push_stream_test_trash_delay {TRASH}s;
    {http_extra}
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{{PORT}};
        location /channels-stats {{ push_stream_channels_statistics; push_stream_channels_path $arg_id; }}
        location /pub {{ push_stream_publisher admin; push_stream_channels_path $arg_id; push_stream_store_messages {store}; }}
        location ~ /sub/(.*) {{ push_stream_subscriber; push_stream_channels_path $1; }}
        location ~ /lp/(.*) {{
            push_stream_subscriber long-polling;
            push_stream_channels_path $1;
            push_stream_message_template "channel: ~channel~\ntext: ~text~\n";
        }}
        location ~ /json/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_header_template " ";
            push_stream_message_template "{{\"id\":\"~id~\", \"channel\":\"~channel~\", \"text\":\"~text~\"}}|";
            push_stream_footer_template "FOOTER";
        }}
    }}"#
    )
}

fn start(http_extra: &str, store: bool) -> Nginx {
    let mut n = Nginx::start_with(
        &conf(http_extra, store),
        Options {
            workers: 2,
            ..Default::default()
        },
    );
    n.allowed.push("exited on signal 9".into());
    // nginx's master releases the zone's mutex if a killed worker held it, and says so.
    n.allowed.push("was locked by".into());
    n
}

fn stats(port: u16) -> Value {
    json(&get(port, "/channels-stats"))
}

fn channel_stats(port: u16, ch: &str) -> Value {
    let r = get(port, &format!("/channels-stats?id={ch}"));
    assert_eq!(r.status, 200, "channel {ch}: {r:?}");
    json(&r)
}

fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

/// A keep-alive connection for requests in a tight loop (publishing until the zone is full).
struct Client {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    fn new(port: u16) -> Client {
        Client { port, conn: None }
    }

    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Response {
        let conn = self
            .conn
            .get_or_insert_with(|| BufReader::new(connect(self.port)));
        send_request(conn.get_mut(), method, path, &[], body, false);
        let r = read_response(conn, false);
        if r.header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            self.conn = None;
        }
        r
    }
}

/// Publishes `BODY` until the zone is full (500), to `channel` or, with `%d` in it, to one
/// new channel per publish (numbered from 0); returns how many publishes were accepted.
fn fill(port: u16, channel: &str) -> u64 {
    let mut c = Client::new(port);
    let mut i = 0u64;
    loop {
        let id = channel.replace("%d", &i.to_string());
        let r = c.request("POST", &format!("/pub?id={id}"), BODY);
        match r.status {
            200 => i += 1,
            500 => return i,
            s => panic!("publish {i} to {id}: {s} {r:?}"),
        }
        assert!(i < 1_000_000, "the zone never filled up");
    }
}

/// DELETE with the C spec's retry: a 500 (zone full) is retried after a second.
fn delete(port: u16, channel: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = request(port, "DELETE", &format!("/pub?id={channel}"), &[], b"");
        match r.status {
            500 => {
                assert!(
                    Instant::now() < deadline,
                    "delete of {channel} kept failing"
                );
                std::thread::sleep(Duration::from_secs(1));
            }
            200 | 404 => return,
            s => panic!("delete {channel}: {s} {r:?}"),
        }
    }
}

/// What the C spec's `wait_until_trash_is_empty` waits for: nothing in the trash, and (as
/// asked) no stored message, and no channel live or in delete. Checked every 200 ms; returns
/// the time from `start` (the end of a fill) until it held, which must lie in `window`.
fn wait_clear(
    port: u16,
    start: Instant,
    window: (u64, u64),
    check_stored: bool,
    check_channels: bool,
) -> Duration {
    loop {
        let s = stats(port);
        let clear = num(&s, "messages_in_trash") == 0
            && num(&s, "channels_in_trash") == 0
            && (!check_stored || num(&s, "stored_messages") == 0)
            && (!check_channels
                || (num(&s, "channels") == 0 && num(&s, "channels_in_delete") == 0));
        let t = start.elapsed();
        if clear {
            assert!(
                t >= Duration::from_secs(window.0),
                "cleaned up after {t:?}, before the {}s the timings allow: {s}",
                window.0
            );
            return t;
        }
        assert!(
            t <= Duration::from_secs(window.1),
            "not cleaned up within {}s: {s}",
            window.1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What happens between the fills.
#[derive(Clone, Copy, Debug)]
enum Env {
    /// "when nothing strange occur"
    Normal,
    /// "when the server is reloaded": `nginx -s reload`, the old workers gone.
    Reload,
    /// "when a worker is killed": `kill -9` of the workers the statistics list (this test's
    /// own nginx's), all gone and respawned.
    Kill,
}

fn change(n: &mut Nginx, env: Env) {
    let listed = || -> HashSet<u32> {
        stats(n.port)["by_worker"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["pid"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    match env {
        Env::Normal => {}
        Env::Reload => {
            let before = listed();
            assert_eq!(before.len(), n.workers);
            let old = n.reload();
            assert_eq!(old, before);
            n.wait_gone(&old, Duration::from_secs(10));
        }
        Env::Kill => {
            let pids = listed();
            assert_eq!(pids.len(), n.workers);
            assert_eq!(
                pids,
                n.worker_pids(),
                "the statistics list this nginx's workers"
            );
            for &pid in &pids {
                // SAFETY: a worker of the nginx this test started.
                assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
            }
            n.wait_gone(&pids, Duration::from_secs(10));
            wait_for("respawned workers", Duration::from_secs(10), || {
                let now = n.worker_pids();
                now.len() == n.workers && now.is_disjoint(&pids)
            });
        }
    }
}

/// A streaming subscriber that keeps a channel alive ("ensure channel will not be cleaned
/// up"), answered (so counted) before the test goes on.
fn keep_alive(port: u16, ch: &str) -> Stream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = Stream::open(port, &format!("/sub/{ch}"), &[]);
        if s.status == 200 {
            return s;
        }
        // A respawned worker refuses subscribers (503) until it has registered.
        assert!(
            s.status == 503 && Instant::now() < deadline,
            "subscriber: {}",
            s.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- the C module's "Cleanup Memory" behaviours ---------------------------------------------

/// Clean-up windows (seconds after a fill ended), from the timings above: a message expires
/// at its ttl, an idle channel and the trash are collected once their time has passed
/// (strictly, on whole seconds), collections run every second. The lower bounds are one
/// second short of the earliest possible time (nginx's clock is whole seconds, cached per
/// event-loop turn); the upper bounds leave 5 s, as the C specs do.
const STORED_CLEAR: (u64, u64) = (TTL + TRASH - 1, TTL + TRASH + 2 + 5);
const UNSTORED_CLEAR: (u64, u64) = (TRASH - 1, TRASH + 2 + 5);
const CHANNELS_CLEAR: (u64, u64) = (INACTIVITY + TRASH, INACTIVITY + TRASH + 3 + 5);
const DELETED_CLEAR: (u64, u64) = (DELETE_HOLD + TRASH - 1, DELETE_HOLD + TRASH + 3 + 5);

/// "should cleanup memory used for published message"
fn published_message(env: Env) {
    let mut n = start("push_stream_max_messages_stored_per_channel 100;", true);
    let p = n.port;
    let ch = "ch_test_message_cleanup";
    let _sub = keep_alive(p, ch);
    fill(p, ch);
    let start = Instant::now();
    let s = stats(p);
    let (stored_1, published_1) = (num(&s, "stored_messages"), num(&s, "published_messages"));
    assert_eq!(stored_1, 100, "{s}");
    assert!(published_1 > 100, "{s}");
    assert_eq!(published_1, stored_1 + num(&s, "messages_in_trash"), "{s}");
    wait_clear(p, start, STORED_CLEAR, true, false);
    change(&mut n, env);
    let _sub = keep_alive(p, ch);
    fill(p, ch);
    let start = Instant::now();
    let published_2 = num(&stats(p), "published_messages");
    assert!(published_2 > published_1);
    wait_clear(p, start, STORED_CLEAR, true, false);
    fill(p, ch);
    let s = stats(p);
    assert_eq!(num(&s, "stored_messages"), stored_1, "{s}");
    assert_eq!(
        num(&s, "published_messages") - published_2,
        published_1,
        "the same number fits again: {s}"
    );
    n.stop();
}

/// "should discard old messages": stored messages survive the change and are not discarded
/// before their time.
fn discard_old_messages(env: Env) {
    let mut n = start("", true);
    let p = n.port;
    let ch = "ch_test_discard_old_messages";
    for _ in 0..10 {
        assert_eq!(post(p, &format!("/pub?id={ch}"), BODY).status, 200);
        std::thread::sleep(Duration::from_millis(80));
    }
    let stored_1 = num(&channel_stats(p, ch), "stored_messages");
    assert_eq!(stored_1, 10);
    change(&mut n, env);
    std::thread::sleep(Duration::from_millis(1500)); // "wait cleanup timer to be executed"
    let stored_2 = num(&channel_stats(p, ch), "stored_messages");
    assert!(stored_2 <= stored_1 && stored_2 > 0, "{stored_2}");
    n.stop();
}

/// "should cleanup message memory without max messages stored per channel"
fn without_max_stored(env: Env) {
    let mut n = start("", true);
    let p = n.port;
    let ch = "ch_test_message_cleanup_without_max_messages_stored_per_channel";
    let _sub = keep_alive(p, ch);
    fill(p, ch);
    let start = Instant::now();
    let s = stats(p);
    let (stored_1, published_1) = (num(&s, "stored_messages"), num(&s, "published_messages"));
    assert!(
        stored_1 > 100,
        "the number of stored messages was limited: {s}"
    );
    change(&mut n, env);
    let _sub = keep_alive(p, ch);
    wait_clear(p, start, STORED_CLEAR, true, false);
    fill(p, ch);
    let start = Instant::now();
    let published_2 = num(&channel_stats(p, ch), "published_messages");
    assert_ne!(published_1, published_2, "nothing more was published");
    wait_clear(p, start, STORED_CLEAR, true, false);
    fill(p, ch);
    let c = channel_stats(p, ch);
    assert_eq!(num(&c, "stored_messages"), stored_1, "{c}");
    assert_eq!(
        num(&c, "published_messages") - published_2,
        published_1,
        "{c}"
    );
    n.stop();
}

/// "should cleanup memory used for create channels"
fn created_channels(env: Env) {
    let mut n = start("", true);
    let p = n.port;
    let ch = "ch_test_channel_cleanup_%d";
    fill(p, ch);
    let start = Instant::now();
    let s = stats(p);
    let (channels_1, published_1) = (num(&s, "channels"), num(&s, "published_messages"));
    assert!(channels_1 > 0, "{s}");
    change(&mut n, env);
    wait_clear(p, start, CHANNELS_CLEAR, true, true);
    fill(p, ch);
    let start = Instant::now();
    assert_ne!(num(&stats(p), "published_messages"), published_1);
    wait_clear(p, start, CHANNELS_CLEAR, true, true);
    fill(p, ch);
    let s = stats(p);
    assert_eq!(
        num(&s, "channels"),
        channels_1,
        "the same number fits again: {s}"
    );
    n.stop();
}

/// "should cleanup memory used for publish messages with store 'off' and with subscriber"
fn unstored_with_subscriber(env: Env) {
    let mut n = start("", false);
    let p = n.port;
    let ch = "ch_test_message_cleanup_with_store_off_with_subscriber";
    let _sub = keep_alive(p, ch);
    fill(p, ch);
    let start = Instant::now();
    let published_1 = num(&channel_stats(p, ch), "published_messages");
    change(&mut n, env);
    let _sub = keep_alive(p, ch);
    wait_clear(p, start, UNSTORED_CLEAR, true, false);
    fill(p, ch);
    let start = Instant::now();
    let published_2 = num(&channel_stats(p, ch), "published_messages");
    assert_ne!(published_2, published_1);
    wait_clear(p, start, UNSTORED_CLEAR, true, false);
    fill(p, ch);
    let c = channel_stats(p, ch);
    assert_eq!(
        num(&c, "published_messages") - published_2,
        published_1,
        "{c}"
    );
    n.stop();
}

/// "should cleanup memory used for publish messages with store 'off' and without
/// subscriber": every publish creates its channel, which stays until its inactivity time.
fn unstored_without_subscriber(env: Env) {
    let mut n = start("", false);
    let p = n.port;
    let ch = "ch_test_message_cleanup_with_store_off_without_subscriber_%d";
    fill(p, ch);
    let start = Instant::now();
    let s = stats(p);
    let published_1 = num(&s, "published_messages");
    // One channel per publish (the refused publish may have created its channel).
    let channels = num(&s, "channels");
    assert!(
        channels == published_1 || channels == published_1 + 1,
        "one channel per publish: {s}"
    );
    change(&mut n, env);
    wait_clear(p, start, CHANNELS_CLEAR, true, true);
    fill(p, ch);
    let start = Instant::now();
    let published_2 = num(&stats(p), "published_messages");
    assert_ne!(published_1, published_2);
    wait_clear(p, start, CHANNELS_CLEAR, true, true);
    fill(p, ch);
    let s = stats(p);
    assert_eq!(
        num(&s, "published_messages") - published_2,
        published_1,
        "{s}"
    );
    n.stop();
}

/// Every channel the statistics list.
fn all_channels(port: u16) -> Vec<String> {
    json(&get(port, "/channels-stats?id=ALL"))["infos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["channel"].as_str().unwrap().to_string())
        .collect()
}

/// "should cleanup memory used after delete created channels"
fn deleted_channels(env: Env) {
    let mut n = start("", true);
    let p = n.port;
    let ch = "ch_test_channel_cleanup_after_delete%d";
    let placeholder = BODY.repeat(200);
    assert_eq!(post(p, "/pub?id=pub_placeholder", &placeholder).status, 200);
    fill(p, ch);
    let channels = all_channels(p);
    let started = Instant::now();
    for c in &channels {
        delete(p, c);
    }
    let start = Instant::now();
    let s = stats(p);
    let published_1 = num(&s, "published_messages");
    assert!(published_1 > 0, "{s}");
    assert_eq!(num(&s, "channels"), 0, "some channel left: {s}");
    // Deleted channels are "in delete" first (the deletes above took {started:?}).
    assert!(
        num(&s, "channels_in_delete") > 0,
        "none in delete after {:?}: {s}",
        started.elapsed()
    );
    assert_eq!(num(&s, "channels_in_trash"), 0, "already in the trash: {s}");
    change(&mut n, env);
    wait_clear(p, start, DELETED_CLEAR, true, true);
    assert_eq!(post(p, "/pub?id=pub_placeholder", &placeholder).status, 200);
    fill(p, ch);
    let s = stats(p);
    assert_eq!(num(&s, "published_messages") / 2, published_1, "{s}");
    n.stop();
}

/// Publishes to and deletes `ch` until one of them fails; then deletes it (retrying on 500).
fn create_and_delete_in_loop(port: u16, ch: &str) {
    let mut c = Client::new(port);
    let path = format!("/pub?id={ch}");
    loop {
        let published = c.request("POST", &path, BODY).status;
        let deleted = c.request("DELETE", &path, b"").status;
        if published != 200 || deleted != 200 {
            break;
        }
    }
    delete(port, ch);
}

/// "should cleanup memory used after delete created channels with same id"
fn deleted_same_id(env: Env) {
    let mut n = start("", true);
    let p = n.port;
    let ch = "ch_test_channel_cleanup_after_delete_same_id";
    create_and_delete_in_loop(p, ch);
    let s = stats(p);
    let published_1 = num(&s, "published_messages");
    assert!(published_1 > 0, "{s}");
    assert!(num(&s, "channels_in_delete") > 0, "{s}");
    assert_eq!(num(&s, "channels_in_trash"), 0, "{s}");
    change(&mut n, env);
    wait_clear(p, Instant::now(), (0, DELETED_CLEAR.1), true, true);
    create_and_delete_in_loop(p, ch);
    let s = stats(p);
    assert_eq!(num(&s, "published_messages") / 2, published_1, "{s}");
    n.stop();
}

macro_rules! in_three_settings {
    ($($case:ident),* $(,)?) => {
        mod when_nothing_strange_occurs {
            $( #[test] fn $case() { super::$case(super::Env::Normal) } )*
        }
        mod when_the_server_is_reloaded {
            $( #[test] fn $case() { super::$case(super::Env::Reload) } )*
        }
        mod when_the_workers_are_killed {
            $( #[test] fn $case() { super::$case(super::Env::Kill) } )*
        }
    };
}

in_three_settings!(
    published_message,
    discard_old_messages,
    without_max_stored,
    created_channels,
    unstored_with_subscriber,
    unstored_without_subscriber,
    deleted_channels,
    deleted_same_id,
);
