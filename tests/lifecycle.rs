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

/// The C specs' configuration (`push_stream_store_messages` in the publisher location), with
/// the short timings above; `http_extra` may set others.
fn conf(http_extra: &str, store: bool) -> String {
    let timings = format!(
        "push_stream_message_ttl {TTL}s;\n\
         push_stream_channel_inactivity_time {INACTIVITY}s;\n\
         push_stream_test_trash_delay {TRASH}s;"
    );
    conf_with(&timings, http_extra, store)
}

fn conf_with(timings: &str, http_extra: &str, store: bool) -> String {
    let store = if store { "on" } else { "off" };
    format!(
        r#"
    push_stream_shared_memory_size 129k;
    {timings}
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
        }}
        location ~ /footer/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "{{\"id\":\"~id~\", \"channel\":\"~channel~\", \"text\":\"~text~\"}}";
            push_stream_footer_template "FOOTER";
        }}
    }}"#
    )
}

fn start(http_extra: &str, store: bool) -> Nginx {
    start_conf(&conf(http_extra, store))
}

fn start_conf(conf: &str) -> Nginx {
    let mut n = Nginx::start_with(
        conf,
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

// ---- Deleted and idle channels, one by one -----------------------------------------------------

/// The C module's timings: 10 s trash delay (no test directive), 30 s inactivity unless set.
fn start_real_trash(http_extra: &str) -> Nginx {
    start_conf(&conf_with("", http_extra, true))
}

/// (channels, channels_in_delete, channels_in_trash)
fn states(port: u16) -> (u64, u64, u64) {
    let s = stats(port);
    (
        num(&s, "channels"),
        num(&s, "channels_in_delete"),
        num(&s, "channels_in_trash"),
    )
}

/// The summarized `subscribers` (the workers' counts, refreshed every second) once it is `n`.
fn wait_subscribers(port: u16, n: u64) {
    wait_for(&format!("{n} subscribers"), Duration::from_secs(3), || {
        num(&stats(port), "subscribers") == n
    });
}

/// Polls the statistics every 100 ms until `want`; the time it took.
fn wait_states(port: u16, want: (u64, u64, u64), limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = states(port);
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "not {want:?} within {limit:?}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// "should return the number of channels in the trash in summarized channels statistics": a
/// deleted channel without subscribers is in delete at once, in the trash a few seconds
/// later (the C module: at its next cleanup, within 4 s), for the 10 s trash delay, then gone.
#[test]
fn a_deleted_channel_is_in_delete_then_in_the_trash_for_ten_seconds_then_gone() {
    let n = start_real_trash("push_stream_wildcard_channel_prefix bd_;");
    let p = n.port;
    for ch in ["ch", "ch_1", "bd_ch_1"] {
        assert_eq!(post(p, &format!("/pub?id={ch}"), BODY).status, 200);
    }
    assert_eq!(num(&stats(p), "wildcard_channels"), 1);
    assert_eq!(states(p), (2, 0, 0));
    let r = request(p, "DELETE", "/pub?id=ch", &[], b"");
    assert_eq!((r.status, explain(&r)), (200, Some("Channel deleted.")));
    assert_eq!(r.body, b"");
    let deleted = Instant::now();
    assert_eq!(states(p), (1, 1, 0), "in delete right after the DELETE");
    assert_eq!(num(&stats(p), "wildcard_channels"), 1);
    let moved = wait_states(p, (1, 0, 1), Duration::from_secs(5));
    assert!(
        moved >= Duration::from_millis(900),
        "left the delete state after {moved:?}"
    );
    let gone = wait_states(p, (1, 0, 0), Duration::from_secs(14));
    assert!(
        gone >= Duration::from_secs(9),
        "in the trash for only {gone:?} (the trash delay is 10 s)"
    );
    assert!(deleted.elapsed() <= Duration::from_secs(16));
    n.stop();
}

/// "should delete channels on same request" (two in delete, none in the trash), "… even when
/// one of them does not exists" (the others go, the rest stays as it was).
#[test]
fn a_delete_of_several_channels_counts_each_in_delete() {
    let n = start_real_trash("");
    let p = n.port;
    for ch in ["ch1", "ch2"] {
        assert_eq!(post(p, &format!("/pub?id={ch}"), BODY).status, 200);
    }
    let r = request(p, "DELETE", "/pub?id=ch1/ch2", &[], b"");
    assert_eq!((r.status, explain(&r)), (200, Some("Channel deleted.")));
    assert_eq!(states(p), (0, 2, 0));
    for ch in ["ch1", "ch2", "ch3"] {
        assert_eq!(post(p, &format!("/pub?id={ch}"), BODY).status, 200);
    }
    let r = request(p, "DELETE", "/pub?id=ch3/ch4/ch1", &[], b"");
    assert_eq!((r.status, explain(&r)), (200, Some("Channel deleted.")));
    let all = json(&get(p, "/channels-stats?id=ALL"));
    assert_eq!(all["channels"], 1, "{all}");
    let info = &all["infos"][0];
    assert_eq!(
        (
            &info["channel"],
            &info["published_messages"],
            &info["stored_messages"]
        ),
        (&Value::from("ch2"), &Value::from(1), &Value::from(1)),
        "{all}"
    );
    assert_eq!(states(p), (1, 4, 0));
    n.stop();
}

/// "should delete channels with subscribers": each subscriber gets the deleted message and
/// the footer; the channels are in delete half a second later and in the trash three and a
/// half seconds later.
#[test]
fn deleted_channels_with_subscribers_are_in_delete_then_in_the_trash() {
    let n = start_real_trash("");
    let p = n.port;
    let subs: Vec<_> = ["c1", "c2"]
        .iter()
        .map(|c| {
            let mut s = Stream::open(p, &format!("/footer/{c}"), &[]);
            assert_eq!(s.status, 200);
            std::thread::spawn(move || String::from_utf8(s.rest()).unwrap())
        })
        .collect();
    wait_for("two subscribers", Duration::from_secs(5), || {
        let s = stats(p);
        num(&s, "subscribers") == 2 && num(&s, "channels") == 2
    });
    for c in ["c1", "c2"] {
        let r = request(p, "DELETE", &format!("/pub?id={c}"), &[], b"");
        assert_eq!((r.status, explain(&r)), (200, Some("Channel deleted.")));
    }
    let deleted = Instant::now();
    for (c, sub) in ["c1", "c2"].iter().zip(subs) {
        assert_eq!(
            sub.join().unwrap(),
            format!(r#"{{"id":"-2", "channel":"{c}", "text":"Channel deleted"}}FOOTER"#)
        );
    }
    std::thread::sleep(Duration::from_millis(500).saturating_sub(deleted.elapsed()));
    assert_eq!(states(p), (0, 2, 0), "half a second after the deletes");
    wait_subscribers(p, 0);
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(deleted.elapsed()));
    assert_eq!(
        states(p),
        (0, 0, 2),
        "three and a half seconds after the deletes"
    );
    n.stop();
}

/// "should receive custom delete message text when channel is deleted": the DELETE body, else
/// `push_stream_channel_deleted_message_text`, is the deleted message's text.
#[test]
fn the_delete_body_or_the_configured_text_reaches_the_subscriber() {
    let n =
        start_real_trash(r#"push_stream_channel_deleted_message_text "Channel has gone away.";"#);
    let p = n.port;
    for (ch, body, text) in [
        (
            "ch_a",
            &b"custom channel delete message"[..],
            "custom channel delete message",
        ),
        ("ch_b", &b""[..], "Channel has gone away."),
    ] {
        let mut s = Stream::open(p, &format!("/json/{ch}"), &[]);
        assert_eq!(s.next_chunk().unwrap(), b" ");
        assert_eq!(num(&channel_stats(p, ch), "subscribers"), 1);
        let r = request(p, "DELETE", &format!("/pub?id={ch}"), &[], body);
        assert_eq!((r.status, explain(&r)), (200, Some("Channel deleted.")));
        assert_eq!(
            String::from_utf8(s.rest()).unwrap(),
            format!(r#"{{"id":"-2", "channel":"{ch}", "text":"{text}"}}|"#)
        );
        let s = stats(p);
        assert_eq!(num(&s, "channels"), 0);
        assert!(num(&s, "channels_in_delete") >= 1, "{s}");
        assert_eq!(num(&s, "channels_in_trash"), 0, "{s}");
        wait_subscribers(p, 0);
    }
    n.stop();
}

/// "should delete a channel with subscriber in two channels": the subscriber stays for the
/// other channel, gets its messages, then its delete.
#[test]
fn a_subscriber_of_two_channels_gets_each_delete() {
    let n = start_real_trash("");
    let p = n.port;
    let mut s = Stream::open(p, "/json/c1/c2", &[]);
    assert_eq!(s.next_chunk().unwrap(), b" ");
    assert_eq!(num(&stats(p), "channels"), 2);
    wait_subscribers(p, 1);
    assert_eq!(request(p, "DELETE", "/pub?id=c1", &[], b"").status, 200);
    assert_eq!(
        String::from_utf8(s.next_chunk().unwrap()).unwrap(),
        r#"{"id":"-2", "channel":"c1", "text":"Channel deleted"}|"#
    );
    assert_eq!(num(&channel_stats(p, "c2"), "subscribers"), 1);
    assert_eq!(states(p), (1, 1, 0));
    assert_eq!(post(p, "/pub?id=c2", b"published message").status, 200);
    assert_eq!(
        String::from_utf8(s.next_chunk().unwrap()).unwrap(),
        r#"{"id":"1", "channel":"c2", "text":"published message"}|"#
    );
    assert_eq!(request(p, "DELETE", "/pub?id=c2", &[], b"").status, 200);
    assert_eq!(
        String::from_utf8(s.rest()).unwrap(),
        r#"{"id":"-2", "channel":"c2", "text":"Channel deleted"}|"#
    );
    assert_eq!(states(p), (0, 2, 0));
    wait_subscribers(p, 0);
    n.stop();
}

/// "should delete a channel with long polling subscriber in multiple channels": the
/// long-poll of twenty channels is answered with the deleted message of the one deleted.
#[test]
fn a_long_poll_of_twenty_channels_is_answered_by_a_delete_of_one() {
    let n = start_real_trash("");
    let p = n.port;
    let channels: Vec<String> = (0..20).map(|i| format!("ch_{i}")).collect();
    let mut c = connect(p);
    send_request(
        &mut c,
        "GET",
        &format!("/lp/{}", channels.join("/")),
        &[],
        b"",
        false,
    );
    wait_for("the long-poll", Duration::from_secs(5), || {
        let s = stats(p);
        num(&s, "channels") == 20 && num(&s, "subscribers") == 1
    });
    assert_eq!(num(&channel_stats(p, "ch_9"), "subscribers"), 1);
    let r = request(p, "DELETE", "/pub?id=ch_9", &[], b"");
    assert_eq!((r.status, explain(&r)), (200, Some("Channel deleted.")));
    let lp = read_response(&mut BufReader::new(c), false);
    assert_eq!(lp.status, 200);
    assert_eq!(lp.text(), "channel: ch_9\ntext: Channel deleted\n");
    assert_eq!(states(p), (19, 1, 0));
    assert_eq!(num(&channel_stats(p, "ch_0"), "subscribers"), 0);
    wait_subscribers(p, 0);
    n.stop();
}

/// "should be possible change the default value" (of the inactivity time) and, before it, an
/// unstored publish creates its channel: the channel answers with its `published_messages`
/// until its inactivity time has passed, then goes to the trash.
#[test]
fn an_unstored_publish_creates_its_channel_until_the_inactivity_time() {
    const IDLE: u64 = 3;
    let n = start_conf(&conf_with(
        &format!("push_stream_channel_inactivity_time {IDLE}s;"),
        "",
        false,
    ));
    let p = n.port;
    assert_eq!(post(p, "/pub?id=idle", BODY).status, 200);
    let published = Instant::now();
    let info = json(&get(p, "/pub?id=idle"));
    assert_eq!(
        (
            num(&info, "published_messages"),
            num(&info, "stored_messages")
        ),
        (1, 0)
    );
    assert_eq!(states(p), (1, 0, 0));
    let removed = wait_states(p, (0, 0, 1), Duration::from_secs(IDLE + 4));
    assert!(
        removed + Duration::from_millis(100) >= Duration::from_secs(IDLE),
        "removed after {removed:?}, before its inactivity time"
    );
    assert!(published.elapsed() <= Duration::from_secs(IDLE + 3));
    assert_eq!(get(p, "/pub?id=idle").status, 404);
    n.stop();
}
