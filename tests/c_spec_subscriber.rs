//! The C module's subscriber acceptance specs (`misc/spec/subscriber/*.rb` of
//! wandenberg/nginx-push-stream-module), case by case, where no other test file already checks
//! the same observable behaviour. Each test names its spec case (`it "..."`) and states what
//! the C module answers. The configuration is the specs' default one
//! (`misc/spec/nginx_configuration.rb`: 2 workers, `/channels-stats`, `/pub`, `/sub/(.*)`)
//! with each spec's overrides; a `nil` in a spec leaves the directive out, as here.
//!
//! Waits the C specs count in many seconds (a 17 s connection ttl, a 10 s long-polling
//! timeout, a 12 s message ttl) are shortened to a few seconds; the proportions the specs
//! check (e.g. the number of pings before the ttl, each timeout within half a second of its
//! value) are kept.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

// ---- the C specs' configuration -----------------------------------------------------------

/// The C specs' configuration: each key is a `push_stream_*` directive written at the `http{}`
/// level (value quoted, as the specs' `write_directive` does), or one of the special keys
/// `subscriber_mode`, `publisher_mode`, `content_type` (the `/sub` location's
/// `default_type`), `store_messages`, `gzip`, `extra_location`, `sub_extra` (more lines in
/// `/sub`).
#[derive(Clone)]
struct Spec(BTreeMap<&'static str, Option<String>>);

/// The specs' default header template, shortened (no spec case checks its text).
const DEFAULT_HEADER: &str =
    "<html><head><script>parent.PushStream.register(this);</script></head><body>";

fn spec() -> Spec {
    let mut m = BTreeMap::new();
    let mut set = |k: &'static str, v: &str| {
        m.insert(k, Some(v.to_string()));
    };
    set("content_type", "text/html");
    set("gzip", "off");
    set("push_stream_ping_message_interval", "10s");
    set("push_stream_header_template", DEFAULT_HEADER);
    set(
        "push_stream_message_template",
        "<script>p(~id~,'~channel~','~text~');</script>",
    );
    set("push_stream_footer_template", "</body></html>");
    set("store_messages", "on");
    set("push_stream_timeout_with_body", "off");
    set("push_stream_message_ttl", "50m");
    set("push_stream_max_channel_id_length", "200");
    set("push_stream_max_messages_stored_per_channel", "20");
    set("push_stream_wildcard_channel_max_qtd", "3");
    set("push_stream_wildcard_channel_prefix", "broad_");
    set("push_stream_shared_memory_size", "10m");
    set("push_stream_authorized_channels_only", "off");
    Spec(m)
}

impl Spec {
    /// `key` set to `value`; `None` leaves the directive out.
    fn with(mut self, key: &'static str, value: Option<&str>) -> Spec {
        let key = match key {
            "subscriber_mode" | "publisher_mode" | "content_type" | "store_messages" | "gzip"
            | "extra_location" | "sub_extra" => key,
            k if k.starts_with("push_stream_") => k,
            k => panic!("unknown spec key {k}"),
        };
        self.0.insert(key, value.map(str::to_string));
        self
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.as_deref())
    }

    fn conf(&self) -> String {
        let mut http = String::new();
        for (k, v) in &self.0 {
            if let (true, Some(v)) = (k.starts_with("push_stream_"), v) {
                http.push_str(&format!("    {k} \"{v}\";\n"));
            }
        }
        let sub_mode = self.get("subscriber_mode").unwrap_or("");
        let pub_mode = self.get("publisher_mode").unwrap_or("");
        let gzip = self.get("gzip").unwrap_or("off");
        let store = self
            .get("store_messages")
            .map(|v| format!("push_stream_store_messages {v};"))
            .unwrap_or_default();
        let ct = self
            .get("content_type")
            .map(|v| format!("default_type \"{v}\";"))
            .unwrap_or_default();
        let extra = self.get("extra_location").unwrap_or("");
        let sub_extra = self.get("sub_extra").unwrap_or("");
        format!(
            r#"
    default_type application/octet-stream;
    gzip {gzip};
    gzip_buffers 16 4k;
    gzip_proxied any;
    gzip_types text/plain text/css application/x-javascript text/xml application/xml application/xml+rss text/javascript application/json;
    gzip_comp_level 9;
    gzip_http_version 1.0;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 100;
    send_timeout 10;
    client_body_timeout 10;
    client_header_timeout 10;
    sendfile on;
    client_header_buffer_size 1k;
    large_client_header_buffers 2 4k;
    client_max_body_size 1k;
    client_body_buffer_size 1k;
    ignore_invalid_headers on;
    client_body_in_single_buffer on;
{http}
    server {{
        listen 127.0.0.1:{{PORT}};
        location /channels-stats {{
            push_stream_channels_statistics;
            push_stream_channels_path $arg_id;
        }}
        location /pub {{
            push_stream_publisher {pub_mode};
            push_stream_channels_path $arg_id;
            {store}
            push_stream_channel_info_on_publish on;
            client_max_body_size 32k;
            client_body_buffer_size 32k;
        }}
        location ~ /sub/(.*)? {{
            push_stream_subscriber {sub_mode};
            push_stream_channels_path $1;
            {ct}
            {sub_extra}
        }}
        {extra}
    }}"#
        )
    }

    fn start(&self) -> Nginx {
        Nginx::start_with(
            &self.conf(),
            Options {
                workers: 2,
                ..Default::default()
            },
        )
    }
}

// ---- helpers ------------------------------------------------------------------------------

/// `publish_message`: a POST to `/pub?id=` that must answer 200.
fn publish(port: u16, ch: &str, headers: &[&str], body: &str) {
    let r = request(
        port,
        "POST",
        &format!("/pub?id={ch}"),
        headers,
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "publish to {ch}: {r:?}");
}

/// Subscribers of a channel, from the statistics location (0 when it does not exist).
fn subscribers_of(port: u16, ch: &str) -> u64 {
    let r = get(port, &format!("/channels-stats?id={ch}"));
    match r.status {
        404 => 0,
        200 => json(&r)["subscribers"].as_u64().unwrap(),
        s => panic!("channel stats of {ch}: {s}"),
    }
}

/// Waits until `ch` has `n` subscribers (a held request is in the store).
fn wait_subscribers(port: u16, ch: &str, n: u64) {
    wait_for(
        &format!("{n} subscriber(s) of {ch}"),
        Duration::from_secs(5),
        || subscribers_of(port, ch) == n,
    );
}

/// A header-only answer: the status, no body, and the explain header.
fn assert_refused(r: &Response, status: u16, explain_text: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.body.is_empty(), "body {:?}", r.text());
    assert_eq!(explain(r), Some(explain_text), "{r:?}");
}

/// The chunks of a streaming response until it ends (or the connection does).
fn chunks_until_end(s: &mut Stream) -> Vec<Vec<u8>> {
    let mut out = vec![];
    while let Some(c) = s.try_next_chunk() {
        out.push(c);
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Wall-clock seconds (what nginx stamps messages and `Last-Modified` with).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Days since the epoch of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// An HTTP date, as Ruby's `strftime("%a, %d %b %Y %T %Z")` writes it in UTC.
fn http_date(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the epoch of an HTTP date (`Thu, 01 Jan 1970 00:00:01 GMT`).
fn parse_http_date(s: &str) -> i64 {
    let parts: Vec<&str> = s.split_whitespace().collect();
    assert_eq!(parts.len(), 6, "{s:?}");
    let day: i64 = parts[1].parse().unwrap();
    let month = MONTHS.iter().position(|m| *m == parts[2]).unwrap() as i64 + 1;
    let year: i64 = parts[3].parse().unwrap();
    let hms: Vec<i64> = parts[4].split(':').map(|x| x.parse().unwrap()).collect();
    days_from_civil(year, month, day) * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
}

/// `Last-Modified` is "now": within [now - 1, now] (the C specs' check).
fn assert_last_modified_now(r: &Response) {
    let lm = parse_http_date(r.header("Last-Modified").expect("Last-Modified"));
    let now = unix_now() as i64;
    assert!(
        (now - 1..=now).contains(&lm),
        "Last-Modified {lm} not within a second of {now}"
    );
}

/// Sleeps until the wall clock is `margin` past the start of a second, so that what follows
/// runs inside one second (messages published then share their time).
fn align_to_second(margin: Duration) {
    let now = unix_now();
    let into = now - now.floor();
    let target = margin.as_secs_f64();
    let wait = if into <= target {
        target - into
    } else {
        1.0 - into + target
    };
    std::thread::sleep(Duration::from_secs_f64(wait));
}

/// Sleeps until second `second` has begun (plus `margin`).
fn sleep_until_second(second: i64, margin: Duration) {
    let target = second as f64 + margin.as_secs_f64();
    let now = unix_now();
    if target > now {
        std::thread::sleep(Duration::from_secs_f64(target - now));
    }
}

fn gunzip(b: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(b)
        .read_to_string(&mut out)
        .expect("gzip body");
    out
}

/// A request in a thread, so that a test can act while it is held.
fn spawn_request(
    port: u16,
    path: String,
    headers: Vec<String>,
) -> std::thread::JoinHandle<(Response, Duration)> {
    std::thread::spawn(move || {
        let t = Instant::now();
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        let r = request(port, "GET", &path, &h, b"");
        (r, t.elapsed())
    })
}

/// `elapsed` is within [from, to] (the C specs' `be_in_the_interval`), less 50 ms at the low
/// end: nginx arms its timers from its cached clock, which may be a few milliseconds behind
/// the moment the client started counting.
fn assert_within(elapsed: Duration, from: f64, to: f64, what: &str) {
    let s = elapsed.as_secs_f64();
    assert!(
        (from - 0.05..=to).contains(&s),
        "{what}: {s:.3} s, expected within [{from}, {to}]"
    );
}

// ---- subscriber/properties_spec.rb ----------------------------------------------------------

/// properties_spec's configuration.
fn properties() -> Spec {
    spec()
        .with("push_stream_authorized_channels_only", Some("off"))
        .with(
            "push_stream_header_template",
            Some("HEADER\\r\\nTEMPLATE\\r\\n1234\\r\\n"),
        )
        .with("content_type", Some("custom content type"))
        .with("push_stream_subscriber_connection_ttl", Some("1s"))
        .with("push_stream_ping_message_interval", Some("2s"))
}

/// "should not accept access without a channel path", "should not accept access to a
/// channel with id 'ALL'", "should not accept access to a channel with id containing
/// wildcard", "should not accept access with a big channel id": header-only refusals (no
/// body) with the C module's explains.
#[test]
fn properties_refusals_of_the_channel_path_are_header_only() {
    let n = properties().start();
    assert_refused(&get(n.port, "/sub/"), 400, "No channel id provided.");
    assert_refused(
        &get(n.port, "/sub/ALL"),
        403,
        "Channel id not authorized for this method.",
    );
    for ch in ["abcd*efgh", "*abcdefgh", "abcdefgh*"] {
        assert_refused(
            &get(n.port, &format!("/sub/{ch}")),
            403,
            "Channel id not authorized for this method.",
        );
    }
    n.stop();
    let n = properties()
        .with("push_stream_max_channel_id_length", Some("5"))
        .start();
    assert_refused(&get(n.port, "/sub/123456"), 400, "Channel id is too large.");
    n.stop();
}

/// "should check accepted methods": `OPTIONS` (HTTP/1.0) answers `HTTP/1.1 200 OK` with
/// `Content-Length: 0`; `HEAD`, `PUT`, `POST` and `DELETE` answer 405 with `Allow: GET`; `GET`
/// is not 405.
#[test]
fn properties_should_check_accepted_methods() {
    let n = properties().start();
    let mut s = connect(n.port);
    s.write_all(b"OPTIONS /sub/ch_test_accepted_methods_0 HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let raw = text(&raw);
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.contains("\r\nContent-Length: 0\r\n"), "{raw}");
    for (i, m) in ["HEAD", "PUT", "POST", "DELETE"].iter().enumerate() {
        let body: &[u8] = if *m == "PUT" { b"body" } else { b"" };
        let path = format!("/sub/ch_test_accepted_methods_{}", i + 1);
        let r = request(n.port, m, &path, &[], body);
        assert_eq!((r.status, r.header("Allow")), (405, Some("GET")), "{m}");
    }
    let s = Stream::open(n.port, "/sub/ch_test_accepted_methods_5", &[]);
    assert_ne!(s.status, 405);
    n.stop();
}

/// "should accept access to multiple channels": every path form answers 200 (`.bN` on any
/// channel, `.b` without a number).
#[test]
fn properties_should_accept_access_to_multiple_channels() {
    let n = properties().start();
    for path in [
        "/sub/ch_multi_channels_1",
        "/sub/ch_multi_channels_1.b10",
        "/sub/ch_multi_channels_2/ch_multi_channels_3",
        "/sub/ch_multi_channels_2.b2/ch_multi_channels_3",
        "/sub/ch_multi_channels_2/ch_multi_channels_3.b3",
        "/sub/ch_multi_channels_2.b2/ch_multi_channels_3.b3",
        "/sub/ch_multi_channels_4.b",
    ] {
        let s = Stream::open(n.port, path, &[]);
        assert_eq!(s.status, 200, "{path}");
    }
    n.stop();
}

/// "should not accept access to a wildcard channel without a normal channel" (prefix `bd_`,
/// the default `push_stream_wildcard_channel_max_qtd 3`): `bd_…` alone and `bd_` alone are
/// 403 without body; `bd1` and `bd` are normal channels (200).
#[test]
fn properties_wildcard_channel_without_a_normal_channel() {
    let n = properties()
        .with("push_stream_wildcard_channel_prefix", Some("bd_"))
        .start();
    for path in [
        "/sub/bd_test_wildcard_channels_without_common_channel",
        "/sub/bd_",
    ] {
        assert_refused(
            &get(n.port, path),
            403,
            "Subscribed too much wildcard channels.",
        );
    }
    for path in ["/sub/bd1", "/sub/bd"] {
        assert_eq!(Stream::open(n.port, path, &[]).status, 200, "{path}");
    }
    n.stop();
}

/// "should accept access to a wildcard channel with a normal channel"
/// (`push_stream_wildcard_channel_max_qtd 2`): three wildcard channels are 403 without body;
/// two or one next to normal channels, or none, are 200.
#[test]
fn properties_wildcard_channel_with_a_normal_channel() {
    let n = properties()
        .with("push_stream_wildcard_channel_prefix", Some("bd_"))
        .with("push_stream_wildcard_channel_max_qtd", Some("2"))
        .start();
    assert_refused(
        &get(n.port, "/sub/bd1/bd2/bd3/bd4/bd_1/bd_2/bd_3"),
        403,
        "Subscribed too much wildcard channels.",
    );
    for path in ["/sub/bd1/bd2/bd_1/bd_2", "/sub/bd1/bd_1", "/sub/bd1/bd2"] {
        assert_eq!(Stream::open(n.port, path, &[]).status, 200, "{path}");
    }
    n.stop();
}

/// Stored messages of a channel, from the statistics location (0 when it does not exist).
fn stored_of(port: u16, ch: &str) -> u64 {
    let r = get(port, &format!("/channels-stats?id={ch}"));
    match r.status {
        404 => 0,
        200 => json(&r)["stored_messages"].as_u64().unwrap(),
        s => panic!("channel stats of {ch}: {s}"),
    }
}

/// With `push_stream_authorized_channels_only on`: "should not accept access to an
/// nonexistent channel" (403 without body), "should accept access to an existent channel"
/// (one a publisher created), "should accept access to an existing channel and a nonexistent
/// wildcard channel" (prefix `bd_`, max qtd 1).
#[test]
fn properties_authorized_channels_only_on() {
    let n = properties()
        .with("push_stream_authorized_channels_only", Some("on"))
        .with("push_stream_wildcard_channel_prefix", Some("bd_"))
        .with("push_stream_wildcard_channel_max_qtd", Some("1"))
        .start();
    let absent = "ch_test_subscribe_an_absent_channel_with_authorized_only_on";
    assert_refused(
        &get(n.port, &format!("/sub/{absent}")),
        403,
        "Subscriber could not create channels.",
    );
    let ch = "ch_test_subscribe_an_existing_channel_with_authorized_only_on";
    publish(n.port, ch, &[], "body");
    assert_eq!(Stream::open(n.port, &format!("/sub/{ch}"), &[]).status, 200);
    let wild = "bd_test_subscribe_an_existing_channel_and_absent_wildcard_channel";
    let s = Stream::open(n.port, &format!("/sub/{ch}/{wild}"), &[]);
    assert_eq!(s.status, 200);
    n.stop();
}

/// With `push_stream_authorized_channels_only on` and `push_stream_message_ttl 1s`: "should not
/// accept access to an existing channel without messages" and "... without messages and an
/// nonexistent wildcard channel": once its message expired (the C spec waits 5 s), the channel
/// no longer lets a subscriber in (403 without body).
#[test]
fn properties_authorized_channels_only_on_and_a_channel_whose_messages_expired() {
    let n = properties()
        .with("push_stream_authorized_channels_only", Some("on"))
        .with("push_stream_message_ttl", Some("1s"))
        .with("push_stream_wildcard_channel_prefix", Some("bd_"))
        .with("push_stream_wildcard_channel_max_qtd", Some("1"))
        .start();
    let ch = "ch_test_subscribe_an_existing_channel_without_messages";
    publish(n.port, ch, &[], "body");
    wait_for("the message to expire", Duration::from_secs(5), || {
        stored_of(n.port, ch) == 0
    });
    assert_refused(
        &get(n.port, &format!("/sub/{ch}")),
        403,
        "Subscriber could not create channels.",
    );
    assert_refused(
        &get(
            n.port,
            &format!("/sub/{ch}/bd_test_absent_wildcard_channel"),
        ),
        403,
        "Subscriber could not create channels.",
    );
    n.stop();
}

/// "should receive new messages in a multi channel subscriber": six channels, one message
/// each, in publish order, each with id 1.
#[test]
fn properties_should_receive_new_messages_in_a_multi_channel_subscriber() {
    let n = properties()
        .with("push_stream_header_template", None)
        .with(
            "push_stream_message_template",
            Some(r#"{\"channel\":\"~channel~\", \"id\":\"~id~\", \"message\":\"~text~\"}|"#),
        )
        .start();
    let chs = [
        "test_retreive_new_messages_in_multichannel_subscribe_1",
        "test_retreive_new_messages_in_multich_subscribe_2",
        "test_retreive_new_messages_in_multchannel_subscribe_3",
        "test_retreive_new_msgs_in_multichannel_subscribe_4",
        "test_retreive_new_messages_in_multichannel_subs_5",
        "test_retreive_new_msgs_in_multichannel_subs_6",
    ];
    let mut s = Stream::open(n.port, &format!("/sub/{}", chs.join("/")), &[]);
    assert_eq!(s.status, 200);
    wait_subscribers(n.port, chs[5], 1);
    for ch in chs {
        publish(n.port, ch, &[], &format!("body{ch}"));
    }
    let mut got = String::new();
    while got.matches('|').count() < 6 {
        got.push_str(&text(&s.next_chunk().expect("six messages")));
    }
    let lines: Vec<Value> = got
        .split('|')
        .take(6)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (line, ch) in lines.iter().zip(chs) {
        assert_eq!(line["channel"], ch);
        assert_eq!(line["message"], format!("body{ch}"));
        assert_eq!(line["id"], "1");
    }
    n.stop();
}

/// "should limit the number of channels" (`push_stream_max_number_of_channels 1`) and "should
/// limit the number of wildcard channels" (`push_stream_max_number_of_wildcard_channels 1`):
/// a subscriber that would create one more is 403 without body.
#[test]
fn properties_should_limit_the_number_of_channels_and_of_wildcard_channels() {
    let n = properties()
        .with("push_stream_max_number_of_channels", Some("1"))
        .start();
    let mut s = Stream::open(n.port, "/sub/ch_test_max_number_of_channels_1", &[]);
    assert_eq!(s.status, 200);
    assert!(s.next_chunk().is_some());
    assert_refused(
        &get(n.port, "/sub/ch_test_max_number_of_channels_2"),
        403,
        "Number of channels were exceeded.",
    );
    n.stop();
    let n = properties()
        .with("push_stream_max_number_of_wildcard_channels", Some("1"))
        .with("push_stream_wildcard_channel_prefix", Some("bd_"))
        .with("push_stream_wildcard_channel_max_qtd", Some("1"))
        .start();
    let ch = "bd_test_max_number_of_wildcard_channels_";
    let mut s = Stream::open(n.port, &format!("/sub/ch1/{ch}1"), &[]);
    assert_eq!(s.status, 200);
    assert!(s.next_chunk().is_some());
    assert_refused(
        &get(n.port, &format!("/sub/ch1/{ch}2")),
        403,
        "Number of channels were exceeded.",
    );
    n.stop();
}

/// "should accept different message templates in each location": `/sub` renders
/// `{"text":…}`, `/sub2` (its own `push_stream_message_template`) `{"msg":…}`, live and as an
/// old message (`.b1`).
#[test]
fn properties_should_accept_different_message_templates_in_each_location() {
    let n = properties()
        .with(
            "push_stream_message_template",
            Some(r#"{\"text\":\"~text~\"}"#),
        )
        .with("push_stream_header_template", None)
        .with(
            "extra_location",
            Some(
                r#"location ~ /sub2/(.*)? {
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "{\"msg\":\"~text~\"}";
        }"#,
            ),
        )
        .start();
    let ch = "ch_test_different_message_templates";
    let json_chunk = |s: &mut Stream| -> Value {
        serde_json::from_slice(&s.next_chunk().expect("a message")).unwrap()
    };
    let mut sub_1 = Stream::open(n.port, &format!("/sub/{ch}"), &[]);
    let mut sub_2 = Stream::open(n.port, &format!("/sub2/{ch}.b1"), &[]);
    wait_subscribers(n.port, ch, 2);
    publish(n.port, ch, &[], "body");
    let v = json_chunk(&mut sub_1);
    assert_eq!((v.get("msg"), v["text"].as_str()), (None, Some("body")));
    let v = json_chunk(&mut sub_2);
    assert_eq!((v.get("text"), v["msg"].as_str()), (None, Some("body")));
    let v = json_chunk(&mut Stream::open(n.port, &format!("/sub/{ch}.b1"), &[]));
    assert_eq!((v.get("msg"), v["text"].as_str()), (None, Some("body")));
    let v = json_chunk(&mut Stream::open(n.port, &format!("/sub2/{ch}.b1"), &[]));
    assert_eq!((v.get("text"), v["msg"].as_str()), (None, Some("body")));
    n.stop();
}

/// "should use default message template": without a message template a message is its text.
#[test]
fn properties_should_use_default_message_template() {
    let n = properties()
        .with("push_stream_message_template", None)
        .with("push_stream_header_template", None)
        .start();
    let ch = "ch_test_default_message_template";
    let mut s = Stream::open(n.port, &format!("/sub/{ch}"), &[]);
    wait_subscribers(n.port, ch, 1);
    publish(n.port, ch, &[], "body");
    assert_eq!(text(&s.next_chunk().unwrap()), "body");
    n.stop();
}

/// "should receive default ping message with default message template" (` `), "custom ping
/// message with default message template" (the ping text), "default ping message with custom
/// message template" (`~id~:~text~` → `-1: `) and "custom ping message with custom message
/// template" (`-1:pinging you!!!`), with `push_stream_ping_message_interval 1s`.
#[test]
fn properties_ping_messages_with_default_and_custom_text_and_template() {
    for (template, ping_text, expected) in [
        (None, None, " "),
        (None, Some("pinging you!!!"), "pinging you!!!"),
        (Some("~id~:~text~"), None, "-1: "),
        (
            Some("~id~:~text~"),
            Some("pinging you!!!"),
            "-1:pinging you!!!",
        ),
    ] {
        let n = properties()
            .with("push_stream_subscriber_connection_ttl", None)
            .with("push_stream_message_template", template)
            .with("push_stream_header_template", None)
            .with("push_stream_ping_message_interval", Some("1s"))
            .with("push_stream_ping_message_text", ping_text)
            .start();
        let mut s = Stream::open(n.port, "/sub/ch_test_ping_message", &[]);
        assert_eq!(
            text(&s.next_chunk().unwrap()),
            expected,
            "template {template:?}, ping text {ping_text:?}"
        );
        n.stop();
    }
}

/// "should limit the number of subscribers to one channel"
/// (`push_stream_max_subscribers_per_channel 3`): the fourth is 403 without body; another
/// channel still takes one.
#[test]
fn properties_should_limit_the_number_of_subscribers_to_one_channel() {
    let n = properties()
        .with("push_stream_max_subscribers_per_channel", Some("3"))
        .with("push_stream_subscriber_connection_ttl", Some("3s"))
        .start();
    let ch = "ch_test_cannot_add_more_subscriber_to_one_channel_than_allowed";
    let mut held = vec![];
    for _ in 0..3 {
        let mut s = Stream::open(n.port, &format!("/sub/{ch}"), &[]);
        assert_eq!(s.status, 200);
        assert!(s.next_chunk().is_some());
        held.push(s);
    }
    assert_refused(
        &get(n.port, &format!("/sub/{ch}")),
        403,
        "Subscribers limit per channel has been exceeded.",
    );
    let s = Stream::open(n.port, &format!("/sub/{ch}_2"), &[]);
    assert_eq!(s.status, 200);
    n.stop();
}

/// "should accept channels with '.b' in the name": `room.b18.beautiful.b3` is the channel
/// `room.b18.beautiful` with a backtrack of 3 (`msg 2msg 3msg 4` until the 1 s ttl), and
/// `room.b18.beautiful` a channel whose next message arrives live.
#[test]
fn properties_should_accept_channels_with_dot_b_in_the_name() {
    let n = properties()
        .with("push_stream_ping_message_interval", None)
        .with("push_stream_header_template", None)
        .with("push_stream_footer_template", None)
        .with("push_stream_message_template", None)
        .start();
    let ch = "room.b18.beautiful";
    for i in 1..=4 {
        publish(n.port, ch, &["Accept: text/html"], &format!("msg {i}"));
    }
    let mut s = Stream::open(n.port, &format!("/sub/{ch}.b3"), &[]);
    assert_eq!(text(&s.rest()), "msg 2msg 3msg 4");
    let mut s = Stream::open(n.port, &format!("/sub/{ch}"), &[]);
    wait_subscribers(n.port, ch, 1);
    publish(n.port, ch, &["Accept: text/html"], "msg 5");
    assert_eq!(text(&s.rest()), "msg 5");
    n.stop();
}

/// "should not receive acess control allow headers by default", and with
/// `push_stream_allowed_origins`: "should receive acess control allow headers" (the origin,
/// `GET`, and the C module's list of headers) and "should accept a complex value"
/// (`$arg_domain`).
#[test]
fn properties_access_control_allow_headers() {
    let n = properties().start();
    let s = Stream::open(n.port, "/sub/test_access_control_allow_headers", &[]);
    for h in [
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers",
    ] {
        assert_eq!(s.header(h), None, "{h}");
    }
    n.stop();
    const HEADERS: &str = "If-Modified-Since,If-None-Match,Etag,Event-Id,Event-Type,Last-Event-Id";
    for (origin, query, expected) in [
        ("custom.domain.com", "", "custom.domain.com"),
        ("$arg_domain", "?domain=test.com", "test.com"),
    ] {
        let n = properties()
            .with("push_stream_allowed_origins", Some(origin))
            .start();
        let s = Stream::open(
            n.port,
            &format!("/sub/test_access_control_allow_origin{query}"),
            &[],
        );
        assert_eq!(s.header("Access-Control-Allow-Origin"), Some(expected));
        assert_eq!(s.header("Access-Control-Allow-Methods"), Some("GET"));
        assert_eq!(s.header("Access-Control-Allow-Headers"), Some(HEADERS));
        n.stop();
    }
}

/// "should receive the configured header template" (the first chunk), "should receive the
/// configured content type" (`default_type` of the location: the C specs' `content_type`) and
/// "should receive transfer enconding as 'chunked'".
#[test]
fn properties_header_template_content_type_and_chunked() {
    let n = properties().start();
    let mut s = Stream::open(n.port, "/sub/ch_test_header_template", &[]);
    assert_eq!(s.header("Content-Type"), Some("custom content type"));
    assert_eq!(s.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(
        text(&s.next_chunk().unwrap()),
        "HEADER\r\nTEMPLATE\r\n1234\r\n"
    );
    n.stop();
}

/// "when header template file is set": "should receive the file content", "should accept
/// header_template_file and header_template on different levels" and "should accept
/// header_template and header_template_file on different levels" (the inner level wins). The
/// `nginx -t` cases of this context are in tests/config_errors.rs
/// (`header_template_and_header_template_file_at_one_level`,
/// `header_template_file_that_cannot_be_opened`).
#[test]
fn properties_header_template_file() {
    let dir = temp_prefix("header-file");
    let file = dir.join("header_template.txt");
    std::fs::write(&file, "Header\nTemplate\ninside a file").unwrap();
    let file = file.display().to_string();
    let first_chunk = |n: &Nginx, path: &str| {
        let mut s = Stream::open(n.port, path, &[]);
        assert_eq!(s.status, 200, "{path}");
        text(&s.next_chunk().unwrap())
    };
    let n = properties()
        .with("push_stream_header_template", None)
        .with("push_stream_header_template_file", Some(&file))
        .start();
    assert_eq!(
        first_chunk(&n, "/sub/ch_test_header_template_file"),
        "Header\nTemplate\ninside a file"
    );
    n.stop();
    let n = properties()
        .with("push_stream_header_template", None)
        .with("push_stream_header_template_file", Some(&file))
        .with(
            "extra_location",
            Some(
                r#"location ~ /sub2/(.*) {
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_header_template 'inline header template';
        }"#,
            ),
        )
        .start();
    let ch = "ch_test_override_header_template_file";
    assert_eq!(
        first_chunk(&n, &format!("/sub/{ch}")),
        "Header\nTemplate\ninside a file"
    );
    assert_eq!(
        first_chunk(&n, &format!("/sub2/{ch}")),
        "inline header template"
    );
    n.stop();
    let extra = format!(
        r#"location ~ /sub2/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_header_template_file {file};
        }}"#
    );
    let n = properties()
        .with(
            "push_stream_header_template",
            Some("inline header template"),
        )
        .with("extra_location", Some(&extra))
        .start();
    assert_eq!(
        first_chunk(&n, &format!("/sub/{ch}")),
        "inline header template"
    );
    assert_eq!(
        first_chunk(&n, &format!("/sub2/{ch}")),
        "Header\nTemplate\ninside a file"
    );
    n.stop();
}

/// "should receive ping message on the configured ping message interval": the header, then
/// pings at a steady interval (the C spec: 2 s; the first interval equals the third, rounded
/// to the second).
#[test]
fn properties_should_receive_ping_message_on_the_configured_ping_message_interval() {
    let n = properties()
        .with("push_stream_subscriber_connection_ttl", None)
        .start();
    let mut s = Stream::open(n.port, "/sub/ch_test_ping_message_interval", &[]);
    let mut at = vec![];
    for _ in 0..4 {
        assert!(s.next_chunk().is_some());
        at.push(Instant::now());
    }
    let d1 = (at[1] - at[0]).as_secs_f64();
    let d3 = (at[3] - at[2]).as_secs_f64();
    assert_eq!((d1.round(), d3.round()), (2.0, 2.0), "{d1:.3} s, {d3:.3} s");
    n.stop();
}

/// "should not cache the response": `Expires: Thu, 01 Jan 1970 00:00:01 GMT` and
/// `Cache-Control: no-cache, no-store, must-revalidate` on a streaming subscriber.
#[test]
fn properties_should_not_cache_the_response() {
    let n = properties().start();
    let r = get(n.port, "/sub/ch_test_not_cache_the_response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Expires"), Some("Thu, 01 Jan 1970 00:00:01 GMT"));
    assert_eq!(
        r.header("Cache-Control"),
        Some("no-cache, no-store, must-revalidate")
    );
    n.stop();
}

/// "should accept return content gzipped": with `gzip on` a streaming subscriber that accepts
/// gzip gets `Content-Encoding: gzip`, and the body inflates to header, message and footer.
#[test]
fn properties_should_accept_return_content_gzipped() {
    let n = properties()
        .with("gzip", Some("on"))
        .with("content_type", Some("text/html"))
        .start();
    let ch = "ch_test_get_content_gzipped";
    let t = spawn_request(
        n.port,
        format!("/sub/{ch}"),
        vec!["Accept-Encoding: gzip, compressed".into()],
    );
    wait_subscribers(n.port, ch, 1);
    publish(n.port, ch, &[], "body");
    let (r, _) = t.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    assert_eq!(
        gunzip(&r.body),
        format!("HEADER\r\nTEMPLATE\r\n1234\r\n<script>p(1,'{ch}','body');</script></body></html>")
    );
    n.stop();
}

// ---- subscriber/comunication_properties_spec.rb ---------------------------------------------

/// comunication_properties_spec's configuration.
fn communication() -> Spec {
    spec()
        .with("push_stream_authorized_channels_only", Some("off"))
        .with("push_stream_header_template", Some("connected"))
        .with("push_stream_message_ttl", Some("12s"))
        .with("push_stream_message_template", Some("~text~"))
        .with("push_stream_ping_message_interval", Some("1s"))
}

/// "should not block to connected to a nonexistent channel" (the header template comes at
/// once) and "should block to connected to a nonexistent channel when authorized only is
/// 'on'" (403 without body until a publisher created it, then the header template).
#[test]
fn communication_connecting_to_a_nonexistent_channel() {
    let n = communication().start();
    let mut s = Stream::open(n.port, "/sub/ch_test_all_authorized", &[]);
    assert_eq!(text(&s.next_chunk().unwrap()), "connected");
    n.stop();
    let n = communication()
        .with("push_stream_authorized_channels_only", Some("on"))
        .start();
    let ch = "ch_test_only_authorized";
    assert_refused(
        &get(n.port, &format!("/sub/{ch}")),
        403,
        "Subscriber could not create channels.",
    );
    publish(n.port, ch, &[], "message to create a channel");
    let mut s = Stream::open(n.port, &format!("/sub/{ch}"), &[]);
    assert_eq!(text(&s.next_chunk().unwrap()), "connected");
    n.stop();
}

/// "should discard messages published a more time than the value configured to message ttl":
/// a `.b1` subscriber gets the message while it is younger than `push_stream_message_ttl`
/// and only the header once it is older (the C spec: ttl 12 s, subscribers at 2 s and 6 s
/// get it, one at 16 s does not; here ttl 3 s, subscribers at 0.3 s and 1 s, and at 7 s).
#[test]
fn communication_should_discard_messages_older_than_the_message_ttl() {
    let n = communication()
        .with("push_stream_message_ttl", Some("3s"))
        .start();
    let ch = "ch_test_message_ttl";
    let body = "message to test buffer timeout ";
    let start = Instant::now();
    publish(n.port, ch, &[], body);
    let first_two = |s: &mut Stream| {
        let a = text(&s.next_chunk().unwrap());
        let b = text(&s.next_chunk().unwrap());
        (a, b)
    };
    for at in [0.3, 1.0] {
        let at = Duration::from_secs_f64(at);
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        let mut s = Stream::open(n.port, &format!("/sub/{ch}.b1"), &[]);
        // Subscribed (its response head came) while the message was younger than its ttl.
        assert!(start.elapsed() < Duration::from_secs(3), "too slow to test");
        let got = first_two(&mut s);
        assert_eq!(got, ("connected".into(), body.into()), "at {at:?}");
    }
    std::thread::sleep(Duration::from_secs(7).saturating_sub(start.elapsed()));
    let mut s = Stream::open(n.port, &format!("/sub/{ch}.b1"), &[]);
    // The header, then nothing but the next ping (` `, the ping of template `~text~`).
    assert_eq!(first_two(&mut s), ("connected".into(), " ".into()));
    n.stop();
}

/// "should apply the message template to published message with the available keyworkds":
/// every `~channel~` of the template is replaced, and a ping renders the same template with
/// an empty channel, the text ` ` and id -1.
#[test]
fn communication_should_apply_the_message_template_with_the_available_keywords() {
    let n = communication()
        .with(
            "push_stream_message_template",
            Some(r#"|{\"duplicated\":\"~channel~\", \"channel\":\"~channel~\", \"message\":\"~text~\", \"message_id\":\"~id~\"}"#),
        )
        .start();
    let ch = "ch_test_message_template";
    let body = "message to create a channel";
    publish(n.port, ch, &[], body);
    let mut s = Stream::open(n.port, &format!("/sub/{ch}.b1"), &[]);
    let mut got = String::new();
    while got.split('|').count() < 4 {
        got.push_str(&text(&s.next_chunk().unwrap()));
    }
    let lines: Vec<&str> = got.split('|').collect();
    assert_eq!(lines[0], "connected");
    assert_eq!(
        lines[1],
        format!(
            r#"{{"duplicated":"{ch}", "channel":"{ch}", "message":"{body}", "message_id":"1"}}"#
        )
    );
    assert_eq!(
        lines[2],
        r#"{"duplicated":"", "channel":"", "message":" ", "message_id":"-1"}"#
    );
    n.stop();
}

/// "should not be in loop when channel or published message contains one of the keywords":
/// `~channel~` and `~text~` inside the channel id and the text are left as they are.
#[test]
fn communication_keywords_inside_the_channel_and_the_text_are_not_replaced() {
    let n = communication()
        .with(
            "push_stream_message_template",
            Some(
                r#"|{\"channel\":\"~channel~\", \"message\":\"~text~\", \"message_id\":\"~id~\"}"#,
            ),
        )
        .start();
    let ch = "ch_test_message_and_channel_with_same_pattern_of_the_template~channel~~channel~~channel~~text~~text~~text~";
    let body = "~channel~~channel~~channel~~text~~text~~text~";
    publish(n.port, ch, &[], body);
    let mut s = Stream::open(n.port, &format!("/sub/{ch}.b1"), &[]);
    let mut got = String::new();
    while got.split('|').count() < 4 {
        got.push_str(&text(&s.next_chunk().unwrap()));
    }
    let lines: Vec<&str> = got.split('|').collect();
    assert_eq!(lines[0], "connected");
    assert_eq!(
        lines[1],
        format!(r#"{{"channel":"{ch}", "message":"{body}", "message_id":"1"}}"#)
    );
    assert_eq!(
        lines[2],
        r#"{"channel":"", "message":" ", "message_id":"-1"}"#
    );
    n.stop();
}

// ---- subscriber/connection_cleanup_spec.rb --------------------------------------------------

/// connection_cleanup_spec's configuration, with the connection ttl the test chooses (the C
/// spec's is 17 s).
fn cleanup(ttl: &str) -> Spec {
    spec()
        .with("push_stream_subscriber_connection_ttl", Some(ttl))
        .with("push_stream_header_template", Some("HEADER_TEMPLATE"))
        .with("push_stream_footer_template", Some("FOOTER_TEMPLATE"))
        .with("push_stream_ping_message_interval", Some("3s"))
}

/// "should disconnect the subscriber after the configured connection ttl be reached": the
/// response has the header and the footer and ends within [ttl, ttl + 0.5 s] (C: 17 s; here
/// 3 s).
#[test]
fn cleanup_should_disconnect_the_subscriber_after_the_connection_ttl() {
    let n = cleanup("3s")
        .with("push_stream_ping_message_interval", None)
        .start();
    let (r, took) = spawn_request(
        n.port,
        "/sub/ch_test_subscriber_connection_timeout".into(),
        vec![],
    )
    .join()
    .unwrap();
    assert_within(took, 3.0, 3.5, "connection ttl");
    let body = r.text();
    assert!(
        body.contains("HEADER_TEMPLATE") && body.contains("FOOTER_TEMPLATE"),
        "{body}"
    );
    n.stop();
}

/// "should disconnect the subscriber after the configured connection ttl be reached with ping
/// message": no header or footer template, so the chunks are the pings before the ttl (C:
/// ttl 17 s, ping 3 s, 5 chunks; here ttl 5 s, ping 2 s, 2 chunks), and the end within
/// [ttl, ttl + 0.5 s].
#[test]
fn cleanup_should_disconnect_the_subscriber_after_the_connection_ttl_with_ping_message() {
    let n = cleanup("5s")
        .with("push_stream_header_template", None)
        .with("push_stream_footer_template", None)
        .with("push_stream_ping_message_interval", Some("2s"))
        .start();
    let t = Instant::now();
    let mut s = Stream::open(
        n.port,
        "/sub/ch_test_subscriber_connection_timeout_with_ping_message",
        &[],
    );
    let chunks = chunks_until_end(&mut s);
    assert_within(t.elapsed(), 5.0, 5.5, "connection ttl");
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    n.stop();
}

/// "should disconnect each subscriber after the configured connection ttl be reached starting
/// when it connects": each subscriber gets header and footer, its ttl counted from its own
/// connection (C: ttl 5 s, subscribers at 0, 2 and 8 s and one when the second ends; here ttl
/// 2 s, at 0, 1 and 3.2 s and one when the second ends).
#[test]
fn cleanup_each_subscriber_ttl_starts_when_it_connects() {
    let n = cleanup("2s")
        .with("push_stream_ping_message_interval", None)
        .start();
    let path = "/sub/ch_test_multiple_subscribers_connection_timeout".to_string();
    let sub = || spawn_request(n.port, path.clone(), vec![]);
    let check = |(r, took): (Response, Duration), who: &str| {
        assert_within(took, 2.0, 2.5, who);
        let body = r.text();
        assert!(
            body.starts_with("HEADER_TEMPLATE") && body.ends_with("FOOTER_TEMPLATE"),
            "{who}: {body}"
        );
    };
    let start = Instant::now();
    let sub_1 = sub();
    std::thread::sleep(Duration::from_secs(1));
    let sub_2 = sub();
    check(sub_1.join().unwrap(), "first subscriber");
    check(sub_2.join().unwrap(), "second subscriber");
    let sub_4 = sub();
    std::thread::sleep(Duration::from_secs_f64(3.2).saturating_sub(start.elapsed()));
    let sub_3 = sub();
    check(sub_4.join().unwrap(), "subscriber after the second");
    check(sub_3.join().unwrap(), "third subscriber");
    n.stop();
}

// ---- subscriber/event_source_spec.rb --------------------------------------------------------

/// event_source_spec's configuration.
fn eventsource() -> Spec {
    spec()
        .with("subscriber_mode", Some("eventsource"))
        .with("push_stream_header_template", None)
        .with("push_stream_message_template", None)
        .with("push_stream_footer_template", None)
        .with("push_stream_ping_message_interval", None)
}

/// "should split header lines and prefix them by a colon" (LF, CR and CRLF all end a line)
/// and "should treat escaped new lines on header as single lines" (a `\n` written as two
/// characters stays).
#[test]
fn eventsource_header_lines_are_comments() {
    for (header, expected) in [
        (
            "header line 1\\nheader line 2\\rheader line 3\\r\\nheader line 4",
            ": header line 1\n: header line 2\n: header line 3\n: header line 4\n",
        ),
        (
            "header line 1\\\\nheader line 2",
            ": header line 1\\nheader line 2\n",
        ),
    ] {
        let n = eventsource()
            .with("push_stream_header_template", Some(header))
            .start();
        let mut s = Stream::open(n.port, "/sub/ch_test_header_lines", &[]);
        assert_eq!(text(&s.next_chunk().unwrap()), expected, "{header}");
        n.stop();
    }
}

/// "should split footer lines and prefix them by a colon" and "should treat escaped new lines
/// on footer as single lines": until the 1 s ttl, the whole response is the empty header's
/// comment and the footer's comment lines.
#[test]
fn eventsource_footer_lines_are_comments() {
    for (footer, expected) in [
        (
            "footer line 1\\nfooter line 2\\rfooter line 3\\r\\nfooter line 4",
            ": \n: footer line 1\n: footer line 2\n: footer line 3\n: footer line 4\n",
        ),
        (
            "footer line 1\\\\nfooter line 2",
            ": \n: footer line 1\\nfooter line 2\n",
        ),
    ] {
        let n = eventsource()
            .with("push_stream_subscriber_connection_ttl", Some("1s"))
            .with("push_stream_footer_template", Some(footer))
            .start();
        let r = get(n.port, "/sub/ch_test_footer_lines");
        assert_eq!(r.text(), expected, "{footer}");
        n.stop();
    }
}

/// "should use default message template without event id", "... without event type", "...
/// with event id", "... with event type", and the same four with the custom template
/// `{"id":"~id~", "message":"~text~"}`: `data:` with the rendered message, `id:` / `event:`
/// lines only when the publisher sent `Event-Id` / `Event-Type`.
#[test]
fn eventsource_default_and_custom_message_template_with_and_without_event_id_and_type() {
    let body = "test message";
    for template in [None, Some(r#"{\"id\":\"~id~\", \"message\":\"~text~\"}"#)] {
        let n = eventsource()
            .with("push_stream_message_template", template)
            .start();
        let data = match template {
            None => body.to_string(),
            Some(_) => format!(r#"{{"id":"1", "message":"{body}"}}"#),
        };
        for (i, (header, line)) in [
            (None, String::new()),
            (
                Some("Event-Id: event_id_with_generic_text_01"),
                "id: event_id_with_generic_text_01\n".to_string(),
            ),
            (
                Some("Event-type: event_type_with_generic_text_01"),
                "event: event_type_with_generic_text_01\n".to_string(),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let ch = format!("ch_test_message_template_{i}");
            let mut s = Stream::open(n.port, &format!("/sub/{ch}"), &[]);
            wait_subscribers(n.port, &ch, 1);
            publish(n.port, &ch, header.as_slice(), body);
            let mut got = String::new();
            while !got.contains("data: ") {
                got.push_str(&text(&s.next_chunk().unwrap()));
            }
            assert_eq!(
                got,
                format!(": \n{line}data: {data}\n\n"),
                "{template:?} {header:?}"
            );
        }
        n.stop();
    }
}

/// "should apply the message template to each line on posted message" (LF, CR and CRLF) and
/// "should treat escaped new lines on posted message as single lines".
#[test]
fn eventsource_each_line_of_a_message_is_a_data_line() {
    let n = eventsource().start();
    for (i, (body, expected)) in [
        (
            "line 1\nline 2\rline 3\r\nline 4",
            "data: line 1\ndata: line 2\ndata: line 3\ndata: line 4\n\n",
        ),
        ("line 1\\nline 2", "data: line 1\\nline 2\n\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let ch = format!("ch_test_each_line_{i}");
        let mut s = Stream::open(n.port, &format!("/sub/{ch}"), &[]);
        assert_eq!(text(&s.next_chunk().unwrap()), ": \n");
        wait_subscribers(n.port, &ch, 1);
        publish(n.port, &ch, &[], body);
        assert_eq!(text(&s.next_chunk().unwrap()), expected, "{body:?}");
    }
    n.stop();
}

/// "should receive ping message": an EventSource ping is the comment `: -1` whatever the
/// message template.
#[test]
fn eventsource_should_receive_ping_message() {
    let n = eventsource()
        .with("push_stream_ping_message_interval", Some("1s"))
        .with(
            "push_stream_message_template",
            Some(r#"{\"id\":\"~id~\", \"message\":\"~text~\"}"#),
        )
        .start();
    let mut s = Stream::open(n.port, "/sub/ch_test_ping_message_on_event_source", &[]);
    loop {
        let c = text(&s.next_chunk().unwrap());
        if c.contains("-1") {
            assert_eq!(c, ": -1\n");
            break;
        }
    }
    n.stop();
}

// ---- subscriber/long_polling_spec.rb and subscriber/polling_spec.rb -------------------------

/// The two contexts the polling and long-polling specs run every case in: "when using
/// subscriber push mode config" (the location's mode) and "when using push mode header"
/// (a streaming location and `X-Nginx-PushStream-Mode`).
#[derive(Clone, Copy, Debug)]
enum Via {
    Location,
    Header,
}

const VIAS: [Via; 2] = [Via::Location, Via::Header];

/// The (long-)polling specs' configuration for a context.
fn polling_spec(via: Via, mode: &str) -> Spec {
    spec()
        .with("push_stream_ping_message_interval", None)
        .with("push_stream_header_template", None)
        .with("push_stream_footer_template", None)
        .with("push_stream_message_template", None)
        .with(
            "subscriber_mode",
            match via {
                Via::Location => Some(mode),
                Via::Header => None,
            },
        )
}

/// The request headers of a context (`Accept: text/html`, and the mode header).
fn polling_headers(via: Via, mode: &str, more: &[String]) -> Vec<String> {
    let mut h = vec!["Accept: text/html".to_string()];
    if let Via::Header = via {
        h.push(format!("X-Nginx-PushStream-Mode: {mode}"));
    }
    h.extend_from_slice(more);
    h
}

fn lp_spec(via: Via) -> Spec {
    polling_spec(via, "long-polling")
}

fn lp_headers(via: Via, more: &[String]) -> Vec<String> {
    polling_headers(via, "long-polling", more)
}

fn poll_spec(via: Via) -> Spec {
    polling_spec(via, "polling")
}

fn poll_headers(via: Via, more: &[String]) -> Vec<String> {
    polling_headers(via, "polling", more)
}

/// A request with the given headers, answered at once.
fn get_with(port: u16, path: &str, headers: &[String]) -> Response {
    let h: Vec<&str> = headers.iter().map(String::as_str).collect();
    request(port, "GET", path, &h, b"")
}

/// A long-poll on `ch` (path `path`) held until `publish` has run.
fn held_long_poll(
    n: &Nginx,
    ch: &str,
    path: &str,
    headers: Vec<String>,
    publish_then: impl FnOnce(),
) -> Response {
    let t = spawn_request(n.port, path.to_string(), headers);
    wait_subscribers(n.port, ch, 1);
    publish_then();
    t.join().unwrap().0
}

/// long_polling_spec "should disconnect after receive a message": the answer is the message;
/// a long-poll sent with its `Last-Modified` and `Etag` waits for, and gets, the next one.
#[test]
fn long_polling_should_disconnect_after_receive_a_message() {
    for via in VIAS {
        let n = lp_spec(via).start();
        let ch = "ch_test_disconnect_after_receive_a_message_when_longpolling_is_on";
        let path = format!("/sub/{ch}");
        let r = held_long_poll(&n, ch, &path, lp_headers(via, &[]), || {
            publish(n.port, ch, &[], "body")
        });
        assert_eq!((r.status, r.text()), (200, "body".to_string()), "{via:?}");
        let more = [
            format!("If-Modified-Since: {}", r.header("Last-Modified").unwrap()),
            format!("If-None-Match: {}", r.header("Etag").unwrap()),
        ];
        let r = held_long_poll(&n, ch, &path, lp_headers(via, &more), || {
            publish(n.port, ch, &[], "body 1")
        });
        assert_eq!((r.status, r.text()), (200, "body 1".to_string()), "{via:?}");
        n.stop();
    }
}

/// long_polling_spec "should disconnect after receive old messages": with `Last-Event-Id`
/// the answer is every message after that event id, at once.
#[test]
fn long_polling_should_disconnect_after_receive_old_messages() {
    for via in VIAS {
        let n = lp_spec(via).start();
        let ch = "ch_test_disconnect_after_receive_old_messages_by_last_event_id";
        publish(n.port, ch, &["Event-Id: event 1"], "msg 1");
        publish(n.port, ch, &["Event-Id: event 2"], "msg 2");
        publish(n.port, ch, &[], "msg 3");
        publish(n.port, ch, &["Event-Id: event 3"], "msg 4");
        let r = get_with(
            n.port,
            &format!("/sub/{ch}"),
            &lp_headers(via, &["Last-Event-Id: event 2".into()]),
        );
        assert_eq!(
            (r.status, r.text()),
            (200, "msg 3msg 4".to_string()),
            "{via:?}"
        );
        n.stop();
    }
}

/// A long-poll that gets nothing: 304 without body within [ttl, ttl + 0.5 s], `Last-Modified`
/// now and `Etag: W/0`.
fn assert_long_poll_timeout(n: &Nginx, via: Via, ttl: f64) {
    let (r, took) = spawn_request(
        n.port,
        "/sub/ch_test_disconnect_long_polling_subscriber".into(),
        lp_headers(via, &[]),
    )
    .join()
    .unwrap();
    assert_within(took, ttl, ttl + 0.5, &format!("{via:?} long-poll timeout"));
    assert_eq!(r.status, 304, "{via:?}");
    assert!(r.body.is_empty(), "{via:?}");
    assert_last_modified_now(&r);
    assert_eq!(r.header("Etag"), Some("W/0"), "{via:?}");
}

/// long_polling_spec "should disconnect after timeout is reached" (only
/// `push_stream_subscriber_connection_ttl`: C 10 s, here 2 s), "should overwrite subscriber
/// timeout with long polling timeout" (C 10 s and 5 s, here 4 s and 2 s) and "should disconnet
/// after timeout be reached when only long polling timeout is set" (3 s).
#[test]
fn long_polling_timeouts() {
    for via in VIAS {
        for (sub_ttl, lp_ttl, expected) in [
            (Some("2s"), None, 2.0),
            (Some("4s"), Some("2s"), 2.0),
            (None, Some("3s"), 3.0),
        ] {
            let n = lp_spec(via)
                .with("push_stream_subscriber_connection_ttl", sub_ttl)
                .with("push_stream_longpolling_connection_ttl", lp_ttl)
                .start();
            assert_long_poll_timeout(&n, via, expected);
            n.stop();
        }
    }
}

/// long_polling_spec "should not receive ping message": with a 1 s ping interval a long-poll
/// still ends at its ttl with 304 and no body (C: ttl 5 s, here 2 s).
#[test]
fn long_polling_should_not_receive_ping_message() {
    for via in VIAS {
        let n = lp_spec(via)
            .with("push_stream_subscriber_connection_ttl", Some("2s"))
            .with("push_stream_ping_message_interval", Some("1s"))
            .start();
        assert_long_poll_timeout(&n, via, 2.0);
        n.stop();
    }
}

/// long_polling_spec "should receive a timed out message when timeout_with_body is on": 200
/// within [1, 1.5] s with the timeout message (id -3, `Timed out`, empty channel, tag 0, the
/// epoch), `Last-Modified` now and `Etag: W/0`; with `?callback=` the same in JSONP.
#[test]
fn long_polling_should_receive_a_timed_out_message_when_timeout_with_body_is_on() {
    for via in VIAS {
        let n = lp_spec(via)
            .with("push_stream_subscriber_connection_ttl", Some("1s"))
            .with("push_stream_timeout_with_body", Some("on"))
            .with(
                "push_stream_message_template",
                Some(r#"{\"id\":\"~id~\", \"message\":\"~text~\", \"channel\":\"~channel~\", \"tag\":\"~tag~\", \"time\":\"~time~\"}"#),
            )
            .start();
        let path = "/sub/ch_test_timeout_with_body".to_string();
        let (r, took) = spawn_request(n.port, path.clone(), lp_headers(via, &[]))
            .join()
            .unwrap();
        assert_within(took, 1.0, 1.5, "timeout");
        assert_eq!(r.status, 200, "{via:?}");
        let v = json(&r);
        assert_eq!(v["id"], "-3");
        assert_eq!(v["message"], "Timed out");
        assert_eq!(v["channel"], "");
        assert_eq!(v["tag"], "0");
        assert_eq!(v["time"], "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_last_modified_now(&r);
        assert_eq!(r.header("Etag"), Some("W/0"));
        let r = get_with(
            n.port,
            &format!("{path}?callback=callback_function"),
            &lp_headers(via, &[]),
        );
        assert_eq!(
            r.text(),
            r#"callback_function([{"id":"-3", "message":"Timed out", "channel":"", "tag":"0", "time":"Thu, 01 Jan 1970 00:00:00 GMT"}]);"#,
            "{via:?}"
        );
        n.stop();
    }
}

/// long_polling_spec "should receive messages when connected in more than one channel": a
/// long-poll on two channels (`If-Modified-Since` the epoch written with a one-digit day,
/// `If-None-Match: 0`) gets the first channel's message; one sent with that answer's
/// `Last-Modified` and `Etag` gets the second's at once, whose `Etag` is one more.
#[test]
fn long_polling_should_receive_messages_when_connected_in_more_than_one_channel() {
    for via in VIAS {
        let n = lp_spec(via)
            .with("store_messages", Some("on"))
            .with(
                "push_stream_message_template",
                Some(r#"{\"id\":\"~id~\", \"message\":\"~text~\", \"channel\":\"~channel~\"}"#),
            )
            .start();
        let ch_1 = "ch_test_receiving_messages_when_connected_in_more_then_one_channel_1";
        let ch_2 = "ch_test_receiving_messages_when_connected_in_more_then_one_channel_2";
        let path = format!("/sub/{ch_1}/{ch_2}");
        let first = [
            "If-Modified-Since: Thu, 1 Jan 1970 00:00:00 GMT".to_string(),
            "If-None-Match: 0".to_string(),
        ];
        let r1 = held_long_poll(&n, ch_2, &path, lp_headers(via, &first), || {
            // Both in one second, so that their tags follow each other.
            align_to_second(Duration::from_millis(50));
            publish(n.port, ch_1, &[], "published message");
            publish(n.port, ch_2, &[], "published message");
        });
        assert_eq!(r1.status, 200, "{via:?}");
        assert_eq!(json(&r1)["channel"], ch_1);
        let more = [
            format!("If-Modified-Since: {}", r1.header("Last-Modified").unwrap()),
            format!("If-None-Match: {}", r1.header("Etag").unwrap()),
        ];
        let r2 = get_with(n.port, &path, &lp_headers(via, &more));
        assert_eq!(r2.status, 200, "{via:?}");
        assert_eq!(json(&r2)["channel"], ch_2);
        let tag = |r: &Response| -> u64 {
            r.header("Etag")
                .unwrap()
                .trim_start_matches("W/")
                .parse()
                .unwrap()
        };
        assert_eq!(tag(&r2), tag(&r1) + 1, "{via:?}");
        n.stop();
    }
}

/// long_polling_spec "should accept delete a channel with a long polling subscriber": the
/// `DELETE` answers 200 without body (`Channel deleted.`); each long-poll gets the deleted
/// message (id -2, `Channel deleted`), the one with `?callback=` in JSONP.
#[test]
fn long_polling_should_accept_delete_a_channel_with_a_long_polling_subscriber() {
    for via in VIAS {
        let n = lp_spec(via)
            .with("publisher_mode", Some("admin"))
            .with(
                "push_stream_message_template",
                Some(r#"{\"id\":\"~id~\", \"message\":\"~text~\", \"channel\":\"~channel~\"}"#),
            )
            .start();
        let ch = "ch_test_delete_channel_with_long_polling_subscriber";
        let sub_1 = spawn_request(n.port, format!("/sub/{ch}"), lp_headers(via, &[]));
        let sub_2 = spawn_request(
            n.port,
            format!("/sub/{ch}?callback=callback_function"),
            lp_headers(via, &[]),
        );
        wait_subscribers(n.port, ch, 2);
        let r = request(n.port, "DELETE", &format!("/pub?id={ch}"), &[], b"");
        assert_refused(&r, 200, "Channel deleted.");
        let (r1, _) = sub_1.join().unwrap();
        assert_eq!(r1.status, 200, "{via:?}");
        let v = json(&r1);
        assert_eq!(
            (v["channel"].as_str(), v["id"].as_str()),
            (Some(ch), Some("-2"))
        );
        let (r2, _) = sub_2.join().unwrap();
        assert_eq!(
            r2.text(),
            format!(
                r#"callback_function([{{"id":"-2", "message":"Channel deleted", "channel":"{ch}"}}]);"#
            ),
            "{via:?}"
        );
        n.stop();
    }
}

/// long_polling_spec "should accept a callback parameter to be used with JSONP" (the message
/// in `callback([…]);`) and "should force content_type to be application/javascript when
/// using function name specified in callback parameter" (whatever `default_type` and
/// `Accept` say).
#[test]
fn long_polling_jsonp_callback_and_its_content_type() {
    for via in VIAS {
        let n = lp_spec(via)
            .with("content_type", Some("anything/value"))
            .start();
        let ch = "ch_test_return_message_using_function_name_specified_in_callback_parameter";
        let mut headers = lp_headers(via, &[]);
        headers[0] = "Accept: otherknown/value".into();
        let r = held_long_poll(
            &n,
            ch,
            &format!("/sub/{ch}?callback=callback_function"),
            headers,
            || publish(n.port, ch, &[], "body"),
        );
        assert_eq!(r.text(), "callback_function([body]);", "{via:?}");
        assert_eq!(r.header("Content-Type"), Some("application/javascript"));
        n.stop();
    }
}

/// "should return old messages using function name specified in callback parameter grouping
/// in one answer" (long_polling_spec and polling_spec): `.b2`, `Last-Event-Id` and
/// `If-Modified-Since` the epoch each answer their old messages in one JSONP call.
fn jsonp_groups_old_messages(n: &Nginx, headers: impl Fn(&[String]) -> Vec<String>) {
    let ch = "ch_test_return_old_messages_grouping_in_one_answer";
    publish(n.port, ch, &["Event-Id: event_id"], "body");
    publish(n.port, ch, &[], "body1");
    let cb = "?callback=callback_function";
    let r = get_with(n.port, &format!("/sub/{ch}.b2{cb}"), &headers(&[]));
    assert_eq!(r.text(), "callback_function([body,body1]);");
    let r = get_with(
        n.port,
        &format!("/sub/{ch}{cb}"),
        &headers(&["Last-Event-Id: event_id".into()]),
    );
    assert_eq!(r.text(), "callback_function([body1]);");
    let r = get_with(
        n.port,
        &format!("/sub/{ch}{cb}"),
        &headers(&[format!("If-Modified-Since: {}", http_date(0))]),
    );
    assert_eq!(r.text(), "callback_function([body,body1]);");
}

#[test]
fn long_polling_should_return_old_messages_in_one_jsonp_answer() {
    for via in VIAS {
        let n = lp_spec(via).start();
        jsonp_groups_old_messages(&n, |more| lp_headers(via, more));
        n.stop();
    }
}

/// long_polling_spec "should return messages from different channels on JSONP response": the
/// old messages of each channel in turn, in one JSONP call.
#[test]
fn long_polling_should_return_messages_from_different_channels_on_jsonp_response() {
    for via in VIAS {
        let n = lp_spec(via).start();
        let chs = [
            "ch_test_jsonp_ch1",
            "ch_test_jsonp_ch2",
            "ch_test_jsonp_ch3",
        ];
        for i in 1..=3 {
            for (c, ch) in chs.iter().enumerate() {
                publish(n.port, ch, &[], &format!("body{i}_{}", c + 1));
            }
        }
        let r = get_with(
            n.port,
            &format!(
                "/sub/{}.b3/{}.b3/{}.b3?callback=callback_function",
                chs[0], chs[1], chs[2]
            ),
            &lp_headers(via, &[]),
        );
        assert_eq!(
            r.text(),
            "callback_function([body1_1,body2_1,body3_1,body1_2,body2_2,body3_2,body1_3,body2_3,body3_3]);",
            "{via:?}"
        );
        n.stop();
    }
}

/// "should not cache the response" (long_polling_spec on a long-poll's 304 after its 1 s ttl,
/// polling_spec on a poll's 304): `Expires` and `Cache-Control` as on every subscriber.
#[test]
fn long_polling_and_polling_should_not_cache_the_response() {
    for via in VIAS {
        let n = lp_spec(via)
            .with("push_stream_longpolling_connection_ttl", Some("1s"))
            .start();
        let r = get_with(
            n.port,
            "/sub/ch_test_not_cache_the_response",
            &lp_headers(via, &[]),
        );
        assert_eq!(r.status, 304);
        assert_eq!(r.header("Expires"), Some("Thu, 01 Jan 1970 00:00:01 GMT"));
        assert_eq!(
            r.header("Cache-Control"),
            Some("no-cache, no-store, must-revalidate")
        );
        n.stop();
        let n = poll_spec(via).start();
        let r = get_with(
            n.port,
            "/sub/ch_test_not_cache_the_response",
            &poll_headers(via, &[]),
        );
        assert_eq!(r.status, 304);
        assert_eq!(r.header("Expires"), Some("Thu, 01 Jan 1970 00:00:01 GMT"));
        assert_eq!(
            r.header("Cache-Control"),
            Some("no-cache, no-store, must-revalidate")
        );
        n.stop();
    }
}

/// "should accept return content gzipped" (long_polling_spec and polling_spec): with `gzip on`
/// the answer has `Etag: W/<n>` and `Content-Encoding: gzip`, and inflates to the message.
#[test]
fn long_polling_and_polling_should_accept_return_content_gzipped() {
    let check = |r: &Response, via: Via| {
        assert_eq!(r.status, 200, "{via:?}");
        let etag = r.header("Etag").unwrap();
        assert!(
            etag.strip_prefix("W/")
                .is_some_and(|t| t.parse::<u64>().is_ok()),
            "{etag}"
        );
        assert_eq!(r.header("Content-Encoding"), Some("gzip"), "{via:?}");
        assert_eq!(gunzip(&r.body), "body");
    };
    let gz = "Accept-Encoding: gzip, compressed".to_string();
    for via in VIAS {
        let n = lp_spec(via).with("gzip", Some("on")).start();
        let ch = "ch_test_get_content_gzipped";
        let r = held_long_poll(
            &n,
            ch,
            &format!("/sub/{ch}"),
            lp_headers(via, std::slice::from_ref(&gz)),
            || publish(n.port, ch, &[], "body"),
        );
        check(&r, via);
        n.stop();
        let n = poll_spec(via).with("gzip", Some("on")).start();
        publish(n.port, ch, &[], "body");
        let ims = format!("If-Modified-Since: {}", http_date(0));
        let r = get_with(
            n.port,
            &format!("/sub/{ch}"),
            &poll_headers(via, &[gz.clone(), ims]),
        );
        check(&r, via);
        n.stop();
    }
}

/// polling_spec "when has no messages": "should receive a 304" (no body, no `Last-Modified`,
/// no `Etag`) and "should receive a 304 keeping sent headers" (`Last-Modified` and `Etag`
/// echo `If-Modified-Since` and `If-None-Match`).
#[test]
fn polling_when_has_no_messages_should_receive_a_304() {
    for via in VIAS {
        let n = poll_spec(via).start();
        let r = get_with(
            n.port,
            "/sub/ch_test_receive_a_304_when_has_no_messages",
            &poll_headers(via, &[]),
        );
        assert_eq!(r.status, 304, "{via:?}");
        assert!(r.body.is_empty());
        assert_eq!(
            (r.header("Last-Modified"), r.header("Etag")),
            (None, None),
            "{via:?}"
        );
        let since = unix_now() as i64;
        let more = [
            format!("If-Modified-Since: {}", http_date(since)),
            "If-None-Match: W/3".to_string(),
        ];
        let r = get_with(
            n.port,
            "/sub/ch_test_receive_a_304_when_has_no_messages_keeping_headers",
            &poll_headers(via, &more),
        );
        assert_eq!(r.status, 304, "{via:?}");
        assert!(r.body.is_empty());
        assert_eq!(parse_http_date(r.header("Last-Modified").unwrap()), since);
        assert_eq!(r.header("Etag"), Some("W/3"), "{via:?}");
        n.stop();
    }
}

/// polling_spec "when has messages": "should receive specific headers" (200, `Last-Modified`,
/// `Etag: W/1`, the message), "should accept a callback parameter to works with JSONP",
/// "should return old messages using function name specified in callback parameter grouping
/// in one answer" and "should force content_type to be application/javascript when using
/// function name specified in callback parameter" (also on a 304).
#[test]
fn polling_when_has_messages() {
    for via in VIAS {
        let n = poll_spec(via)
            .with("content_type", Some("anything/value"))
            .start();
        let ch = "ch_test_receive_specific_headers_when_has_messages";
        publish(n.port, ch, &[], "body");
        let epoch = format!("If-Modified-Since: {}", http_date(0));
        let r = get_with(
            n.port,
            &format!("/sub/{ch}"),
            &poll_headers(via, std::slice::from_ref(&epoch)),
        );
        assert_eq!(r.status, 200, "{via:?}");
        assert!(r.header("Last-Modified").is_some_and(|v| !v.is_empty()));
        assert_eq!(r.header("Etag"), Some("W/1"), "{via:?}");
        assert_eq!(r.text(), "body");
        let cb = "?callback=callback_function";
        let r = get_with(
            n.port,
            &format!("/sub/{ch}{cb}"),
            &poll_headers(via, &[epoch]),
        );
        assert_eq!(r.text(), "callback_function([body]);", "{via:?}");
        let mut headers = poll_headers(via, &[]);
        headers[0] = "Accept: otherknown/value".into();
        let r = get_with(n.port, &format!("/sub/{ch}{cb}"), &headers);
        assert_eq!(r.status, 304, "{via:?}");
        assert_eq!(r.header("Content-Type"), Some("application/javascript"));
        jsonp_groups_old_messages(&n, |more| poll_headers(via, more));
        n.stop();
    }
}

// ---- subscriber/padding_by_user_agent_spec.rb -----------------------------------------------

/// The two contexts of padding_by_user_agent_spec: "for non EventSource mode" (padding of
/// `\r\n`, nothing added around a template) and "for EventSource mode" (padding of `:`
/// ending in a line break; the header becomes a comment line, 3 more bytes, a message a
/// `data:` event, 8 more bytes).
#[derive(Clone, Copy, Debug)]
enum Padded {
    Stream,
    EventSource,
}

impl Padded {
    fn spec(self) -> Spec {
        spec()
            .with(
                "push_stream_padding_by_user_agent",
                Some("[T|t]est 1,0,508"),
            )
            .with("push_stream_user_agent", None)
            .with("push_stream_subscriber_connection_ttl", Some("1s"))
            .with("push_stream_header_template", None)
            .with("push_stream_message_template", None)
            .with("push_stream_footer_template", None)
            .with(
                "subscriber_mode",
                match self {
                    Padded::Stream => None,
                    Padded::EventSource => Some("eventsource"),
                },
            )
    }

    fn header_delta(self) -> usize {
        match self {
            Padded::Stream => 0,
            Padded::EventSource => 3,
        }
    }

    fn body_delta(self) -> usize {
        match self {
            Padded::Stream => 0,
            Padded::EventSource => 8,
        }
    }

    /// The C spec's `padding_pattern`: `/(\r\n)+\r\n\r\n\r\n$/` or `/(:::)+\n$/`.
    fn assert_padded(self, body: &str) {
        let ok = match self {
            Padded::Stream => body.ends_with("\r\n\r\n\r\n\r\n"),
            Padded::EventSource => body.ends_with(":::\n"),
        };
        assert!(ok, "{self:?}: no padding at the end of {body:?}");
    }
}

const PADDED: [Padded; 2] = [Padded::Stream, Padded::EventSource];

/// A subscriber with `User-Agent: ua` that gets `body` (published once it is subscribed),
/// until its 1 s ttl; its whole response.
fn padded_response(n: &Nginx, ch: &str, ua: &str, body: &str) -> String {
    // A channel of its own per call: the previous call's subscriber is uncounted when its
    // worker has finished ending its request, which can come just after its client read the
    // end of the response; on the same channel, "1 subscriber" could still be that one, and
    // the message would be published before this subscriber is there.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let ch = format!(
        "{ch}_{}",
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let ch = ch.as_str();
    let t = spawn_request(
        n.port,
        format!("/sub/{ch}"),
        vec![format!("User-Agent: {ua}")],
    );
    wait_subscribers(n.port, ch, 1);
    publish(n.port, ch, &[], body);
    let (r, _) = t.join().unwrap();
    assert_eq!(r.status, 200);
    r.text()
}

/// "should apply a padding to the header": with `[T|t]est 1,1024,508:[T|t]est 2,4097,0` a
/// 10-byte header gets 1100 bytes of padding for `Test 1`, 4097 for `Test 2` and none for
/// `Test 3`.
#[test]
fn padding_should_apply_a_padding_to_the_header() {
    for mode in PADDED {
        let n = mode
            .spec()
            .with("push_stream_header_template", Some("0123456789"))
            .with(
                "push_stream_padding_by_user_agent",
                Some("[T|t]est 1,1024,508:[T|t]est 2,4097,0"),
            )
            .start();
        let expected = 10 + mode.header_delta();
        let ua = |ua: &str| {
            let h = format!("User-Agent: {ua}");
            let r = request(
                n.port,
                "GET",
                "/sub/ch_test_header_padding",
                &[h.as_str()],
                b"",
            );
            assert_eq!(r.status, 200);
            r.text()
        };
        let r = ua("Test 1");
        assert_eq!(r.len(), 1100 + expected, "{mode:?}");
        mode.assert_padded(&r);
        assert_eq!(ua("Test 2").len(), 4097 + expected, "{mode:?}");
        assert_eq!(ua("Test 3").len(), expected, "{mode:?}");
        n.stop();
    }
}

/// "should apply a padding to the message": with `[T|t]est 1,0,508` a 10-byte message gets
/// 500 bytes of padding for `Test 1`, none for `Test 2` or `Test 3`.
#[test]
fn padding_should_apply_a_padding_to_the_message() {
    for mode in PADDED {
        let n = mode.spec().start();
        let ch = "ch_test_message_padding";
        let expected = 10 + mode.header_delta() + mode.body_delta();
        let r = padded_response(&n, ch, "Test 1", "0123456789");
        assert_eq!(r.len(), 500 + expected, "{mode:?}");
        mode.assert_padded(&r);
        for ua in ["Test 2", "Test 3"] {
            assert_eq!(
                padded_response(&n, ch, ua, "0123456789").len(),
                expected,
                "{mode:?} {ua}"
            );
        }
        n.stop();
    }
}

/// "should apply a padding to the message with different sizes": with `[T|t]est 1,0,545`
/// the padding is 545 for a 1-byte message, then `600 - (len / 100) * 100` (500, 400, 300,
/// 200, 100 for 105, 221, 331, 435, 502 bytes), and none for 550 bytes.
#[test]
fn padding_should_apply_a_padding_to_the_message_with_different_sizes() {
    for mode in PADDED {
        let n = mode
            .spec()
            .with(
                "push_stream_padding_by_user_agent",
                Some("[T|t]est 1,0,545"),
            )
            .start();
        let ch = "ch_test_message_padding_with_different_sizes";
        let expected = mode.header_delta() + mode.body_delta();
        for (len, padding) in [
            (1, 545),
            (105, 500),
            (221, 400),
            (331, 300),
            (435, 200),
            (502, 100),
            (550, 0),
        ] {
            let r = padded_response(&n, ch, "Test 1", &"_".repeat(len));
            assert_eq!(r.len(), padding + len + expected, "{mode:?}, {len} bytes");
            if padding > 0 {
                mode.assert_padded(&r);
            }
        }
        n.stop();
    }
}

/// "should accept the user agent set by a complex value": `push_stream_user_agent $arg_ua`
/// (URL-unescaped) chooses the rule: `?ua=test%201` gets 1024 bytes of header padding,
/// `?ua=test%202` none.
#[test]
fn padding_should_accept_the_user_agent_set_by_a_complex_value() {
    for mode in PADDED {
        let n = mode
            .spec()
            .with(
                "push_stream_padding_by_user_agent",
                Some("[T|t]est 1,1024,512"),
            )
            .with("push_stream_user_agent", Some("$arg_ua"))
            .with("push_stream_header_template", Some("0123456789"))
            .start();
        let expected = 10 + mode.header_delta();
        let r = get(
            n.port,
            "/sub/ch_test_user_agent_by_complex_value?ua=test%201",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.text().len(), 1024 + expected, "{mode:?}");
        mode.assert_padded(&r.text());
        let r = get(
            n.port,
            "/sub/ch_test_user_agent_by_complex_value?ua=test%202",
        );
        assert_eq!(r.text().len(), expected, "{mode:?}");
        n.stop();
    }
}

// ---- subscriber/receive_old_message_spec.rb -------------------------------------------------

/// The five contexts of receive_old_message_spec ("in stream mode", "in pooling mode", "in
/// long-pooling mode", "in event source mode", "in websocket mode"). One nginx serves them
/// all: the spec's `/sub` location in each mode (`/sub/` streaming, `/sub-<mode>/` the
/// others), so a case publishes once and asks every mode.
const OLD_MODES: [&str; 5] = [
    "streaming",
    "polling",
    "long-polling",
    "eventsource",
    "websocket",
];

fn old_messages_spec() -> Spec {
    let mut extra = String::new();
    for mode in &OLD_MODES[1..] {
        extra.push_str(&format!(
            "location ~ /sub-{mode}/(.*)? {{ push_stream_subscriber {mode}; push_stream_channels_path $1; default_type text/html; }}\n        "
        ));
    }
    spec()
        .with("push_stream_header_template", None)
        .with("push_stream_footer_template", None)
        .with(
            "push_stream_message_template",
            Some(r#"{\"channel\":\"~channel~\", \"id\":\"~id~\", \"message\":\"~text~\"}\r\n"#),
        )
        .with("push_stream_ping_message_interval", Some("1s"))
        .with("extra_location", Some(&extra))
}

/// The spec's `get_content`: the response's lines (split on `\r\n`, `\n` in EventSource mode;
/// `: ` and `data: ` removed from their start, `id: …` lines and empty lines dropped) once
/// there are `lines` of them, and the response headers. WebSocket mode connects as the spec
/// does (HTTP/1.0, `Sec-WebSocket-Version: 8`) and reads the text frames until the first ping
/// frame.
fn get_content(
    port: u16,
    mode: &str,
    channels: &str,
    lines: usize,
    headers: &[String],
) -> (Vec<String>, Vec<(String, String)>) {
    let path = match mode {
        "streaming" => format!("/sub/{channels}"),
        m => format!("/sub-{m}/{channels}"),
    };
    let eol = if mode == "eventsource" { "\n" } else { "\r\n" };
    let split = |raw: &str| -> Vec<String> {
        raw.split(eol)
            .map(|l| {
                let l = l.strip_prefix(": ").unwrap_or(l);
                let l = l.strip_prefix("data: ").unwrap_or(l);
                if l.starts_with("id: ") {
                    String::new()
                } else {
                    l.to_string()
                }
            })
            .filter(|l| !l.is_empty())
            .collect()
    };
    let mut h: Vec<String> = vec!["Accept: text/html".into()];
    h.extend_from_slice(headers);
    match mode {
        "polling" | "long-polling" => {
            let r = get_with(port, &path, &h);
            assert_eq!(r.status, 200, "{mode}: {r:?}");
            let got = split(&r.text());
            assert!(got.len() >= lines, "{mode}: {got:?}");
            (got, r.headers)
        }
        "websocket" => {
            let mut s = connect(port);
            let mut req = format!(
                "GET {path} HTTP/1.0\r\nConnection: Upgrade\r\nSec-WebSocket-Key: /mQoZf6pRiv8+6o72GncLQ==\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\n"
            );
            for line in &h {
                req.push_str(line);
                req.push_str("\r\n");
            }
            req.push_str("\r\n");
            s.write_all(req.as_bytes()).unwrap();
            let mut buf = vec![];
            let mut tmp = [0u8; 4096];
            let end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let k = read_some(&mut s, &mut tmp).unwrap();
                assert!(k > 0, "websocket: closed during the handshake");
                buf.extend_from_slice(&tmp[..k]);
            };
            let head = text(&buf[..end]);
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            let mut rest = buf[end..].to_vec();
            let mut texts = String::new();
            loop {
                // A server frame: FIN/opcode, then a 7-bit, 16-bit or 64-bit length.
                let frame = (rest.len() >= 2).then(|| {
                    let (len, at) = match rest[1] & 0x7f {
                        126 if rest.len() >= 4 => {
                            (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4)
                        }
                        127 if rest.len() >= 10 => (
                            u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize,
                            10,
                        ),
                        126 | 127 => (usize::MAX, 0),
                        n => (n as usize, 2),
                    };
                    (len != usize::MAX && rest.len() >= at + len).then_some((at, len))
                });
                if let Some(Some((at, len))) = frame {
                    let op = rest[0] & 0x0f;
                    let payload = rest[at..at + len].to_vec();
                    rest.drain(..at + len);
                    match op {
                        1 => {
                            // Each old message (and the header) is a frame of its own, as
                            // the C module sends them: the spec's parser reads the frame
                            // headers between them.
                            let t = text(&payload);
                            assert_eq!(split(&t).len(), 1, "one line per frame: {t:?}");
                            texts.push_str(&t);
                        }
                        // The spec reads until the bytes of an empty ping frame, `\x89\x00`.
                        9 => {
                            assert!(payload.is_empty(), "ping payload {payload:?}");
                            break;
                        }
                        op => panic!("websocket: unexpected opcode {op}"),
                    }
                    continue;
                }
                let k = read_some(&mut s, &mut tmp).unwrap();
                assert!(k > 0, "websocket: closed before the ping; got {texts:?}");
                rest.extend_from_slice(&tmp[..k]);
            }
            let got = split(&texts);
            assert!(got.len() >= lines, "{mode}: {got:?}");
            let headers = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            (got, headers)
        }
        _ => {
            let h: Vec<&str> = h.iter().map(String::as_str).collect();
            let mut s = Stream::open(port, &path, &h);
            assert_eq!(s.status, 200, "{mode}");
            let mut raw = String::new();
            while split(&raw).len() < lines {
                raw.push_str(&text(&s.next_chunk().expect("more lines")));
            }
            (split(&raw), s.headers)
        }
    }
}

/// What each mode received, checked as the spec's block does: in the polling modes
/// `Last-Modified` and `Etag` are set (and the `Etag` is `etag` when given); the lines are
/// `expected`. In EventSource mode a message template ending in `\r\n` becomes
/// `data: <template>\n` (the C module's rewrite), so there the lines of the messages (those
/// after the first `header` lines) keep the template's `\r`, as with the C module: the spec's
/// comparisons hold with it (`JSON.parse` ignores it, and the lines, joined with `\n`, are
/// compared with text written with `\r\n`).
fn assert_old(
    n: &Nginx,
    channels: &str,
    headers: &[String],
    (header, expected): (usize, &[String]),
    etag: Option<&str>,
) {
    for mode in OLD_MODES {
        let (lines, h) = get_content(n.port, mode, channels, expected.len(), headers);
        let expected: Vec<String> = expected
            .iter()
            .enumerate()
            .map(|(i, l)| match (mode, i >= header) {
                ("eventsource", true) => format!("{l}\r"),
                _ => l.clone(),
            })
            .collect();
        assert_eq!(lines, expected, "{mode}");
        if mode == "polling" || mode == "long-polling" {
            let header = |name: &str| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            };
            assert!(
                header("Last-Modified").is_some_and(|v| !v.is_empty()),
                "{mode}"
            );
            assert!(header("Etag").is_some_and(|v| !v.is_empty()), "{mode}");
            if let Some(etag) = etag {
                assert_eq!(header("Etag"), Some(etag), "{mode}");
            }
        }
    }
}

/// A line of the spec's JSON message template.
fn json_line(ch: &str, id: u64, message: &str) -> String {
    format!(r#"{{"channel":"{ch}", "id":"{id}", "message":"{message}"}}"#)
}

/// "should receive old messages in a multi channel subscriber using backtrack": the header
/// template, then `.b5` of the second channel (all three) and `.b2` of the third, nothing of
/// the first.
#[test]
fn old_messages_in_a_multi_channel_subscriber_using_backtrack() {
    let n = old_messages_spec()
        .with("push_stream_header_template", Some("HEADER\\r\\n"))
        .start();
    let ch = |i: usize| format!("ch_test_retreive_old_messages_in_multichannel_subscribe_{i}");
    for i in 1..=3 {
        for c in 1..=3 {
            publish(n.port, &ch(c), &[], &format!("body{i}"));
        }
    }
    let expected = vec![
        "HEADER".to_string(),
        json_line(&ch(2), 1, "body1"),
        json_line(&ch(2), 2, "body2"),
        json_line(&ch(2), 3, "body3"),
        json_line(&ch(3), 2, "body2"),
        json_line(&ch(3), 3, "body3"),
    ];
    assert_old(
        &n,
        &format!("{}/{}.b5/{}.b2", ch(1), ch(2), ch(3)),
        &[],
        (1, &expected),
        None,
    );
    n.stop();
}

/// Publishes the three rounds of the `If-Modified-Since` cases so that a time falls strictly
/// between them (the C spec spreads them over 18 s and asks for "less than 10 seconds ago"):
/// the first channel's `body1`, `body2`, the second's `body1`, `body2` and the third's
/// `body1` in one second; nothing the next second (the time returned); the rest after it.
fn publish_rounds_around_a_second(n: &Nginx, ch: &dyn Fn(usize) -> String) -> i64 {
    align_to_second(Duration::from_millis(20));
    for (c, i) in [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2)] {
        publish(n.port, &ch(c), &[], &format!("body{i}"));
    }
    let between = unix_now() as i64 + 1;
    sleep_until_second(between + 1, Duration::from_millis(20));
    for (c, i) in [(3, 2), (1, 3), (2, 3), (3, 3)] {
        publish(n.port, &ch(c), &[], &format!("body{i}"));
    }
    between
}

/// "should receive old messages in a multi channel subscriber using 'if_modified_since'
/// header": the messages of each channel published after that time.
#[test]
fn old_messages_in_a_multi_channel_subscriber_using_if_modified_since() {
    let n = old_messages_spec()
        .with("push_stream_header_template", Some("HEADER\\r\\n"))
        .start();
    let ch = |i: usize| {
        format!("ch_test_retreive_old_messages_in_multichannel_subscribe_using_if_modified_since_header_{i}")
    };
    let since = publish_rounds_around_a_second(&n, &ch);
    let expected = vec![
        "HEADER".to_string(),
        json_line(&ch(1), 3, "body3"),
        json_line(&ch(2), 3, "body3"),
        json_line(&ch(3), 2, "body2"),
        json_line(&ch(3), 3, "body3"),
    ];
    assert_old(
        &n,
        &format!("{}/{}/{}", ch(1), ch(2), ch(3)),
        &[format!("If-Modified-Since: {}", http_date(since))],
        (1, &expected),
        None,
    );
    n.stop();
}

/// "should receive old messages in a multi channel subscriber using 'if_modified_since'
/// header and backtrack mixed": `.b5` of the second channel wins over the time for it.
#[test]
fn old_messages_in_a_multi_channel_subscriber_using_if_modified_since_and_backtrack_mixed() {
    let n = old_messages_spec()
        .with("push_stream_header_template", Some("HEADER\\r\\n"))
        .start();
    let ch = |i: usize| {
        format!("ch_test_retreive_old_messages_in_multichannel_subscribe_using_if_modified_since_header_and_backtrack_mixed_{i}")
    };
    let since = publish_rounds_around_a_second(&n, &ch);
    let expected = vec![
        "HEADER".to_string(),
        json_line(&ch(1), 3, "body3"),
        json_line(&ch(2), 1, "body1"),
        json_line(&ch(2), 2, "body2"),
        json_line(&ch(2), 3, "body3"),
        json_line(&ch(3), 2, "body2"),
        json_line(&ch(3), 3, "body3"),
    ];
    assert_old(
        &n,
        &format!("{}/{}.b5/{}", ch(1), ch(2), ch(3)),
        &[format!("If-Modified-Since: {}", http_date(since))],
        (1, &expected),
        None,
    );
    n.stop();
}

/// The four messages of the `Last-Event-Id` cases.
fn publish_event_ids(n: &Nginx, ch: &str) {
    publish(n.port, ch, &["Event-Id: event 1"], "msg 1");
    publish(n.port, ch, &["Event-Id: event 2"], "msg 2");
    publish(n.port, ch, &[], "msg 3");
    publish(n.port, ch, &["Event-Id: event 3"], "msg 4");
}

/// "should receive old messages by 'last_event_id'" and "should accept event id value not
/// using headers" (`push_stream_last_event_id $arg_event_id`): the messages after that event
/// id.
#[test]
fn old_messages_by_last_event_id_from_the_header_or_a_variable() {
    let expected = vec!["msg 3".to_string(), "msg 4".to_string()];
    let n = old_messages_spec()
        .with("push_stream_message_template", Some("~text~\\r\\n"))
        .start();
    let ch = "ch_test_receive_old_messages_by_last_event_id";
    publish_event_ids(&n, ch);
    assert_old(
        &n,
        ch,
        &["Last-Event-Id: event 2".into()],
        (0, &expected),
        None,
    );
    n.stop();
    let n = old_messages_spec()
        .with("push_stream_message_template", Some("~text~\\r\\n"))
        .with("push_stream_last_event_id", Some("$arg_event_id"))
        .start();
    let ch = "ch_test_send_event_id_value_not_using_headers";
    publish_event_ids(&n, ch);
    assert_old(
        &n,
        &format!("{ch}?event_id=event%202"),
        &[],
        (0, &expected),
        None,
    );
    n.stop();
}

/// Publishes `msg 0` … `msg 9` in one second and returns that second (the time the C spec
/// takes before `msg 5`); retries on a fresh channel if the second changed meanwhile.
fn publish_ten_in_one_second(n: &Nginx, base: &str) -> (String, i64) {
    for attempt in 0..3 {
        let ch = format!("{base}_{attempt}");
        align_to_second(Duration::from_millis(20));
        let second = unix_now() as i64;
        for i in 0..10 {
            publish(n.port, &ch, &[], &format!("msg {i}"));
        }
        if unix_now() as i64 == second {
            return (ch, second);
        }
    }
    panic!("could not publish ten messages within one second");
}

/// "should receive old messages with equals 'if_modified_since' header untie them by the
/// 'if_none_match' header" and "should accept modified since and none match values not using
/// headers" (`push_stream_last_received_message_time $arg_time`, `…_tag $arg_tag`): ten
/// messages in one second have the tags 1 to 10; the time of that second with tag 6 gives
/// `msg 6` to `msg 9`, and the polling modes answer `Etag: W/10`.
#[test]
fn old_messages_with_equal_if_modified_since_untied_by_if_none_match() {
    let expected: Vec<String> = (6..10).map(|i| format!("msg {i}")).collect();
    let n = old_messages_spec()
        .with("push_stream_message_template", Some("~text~\\r\\n"))
        .start();
    let (ch, second) = publish_ten_in_one_second(&n, "ch_test_receiving_messages_untie_by_etag");
    let headers = [
        format!("If-Modified-Since: {}", http_date(second)),
        "If-None-Match: 6".to_string(),
    ];
    assert_old(&n, &ch, &headers, (0, &expected), Some("W/10"));
    n.stop();
    let n = old_messages_spec()
        .with("push_stream_message_template", Some("~text~\\r\\n"))
        .with("push_stream_last_received_message_time", Some("$arg_time"))
        .with("push_stream_last_received_message_tag", Some("$arg_tag"))
        .start();
    let (ch, second) = publish_ten_in_one_second(
        &n,
        "ch_test_send_modified_since_and_none_match_values_not_using_headers",
    );
    // Ruby's CGI.escape with `+` turned into `%20`.
    let time = http_date(second).replace(',', "%2C").replace(' ', "%20");
    assert_old(
        &n,
        &format!("{ch}?time={time}&tag=6"),
        &[],
        (0, &expected),
        Some("W/10"),
    );
    n.stop();
}

/// "should receive message published on same second a subscriber connect": `If-Modified-Since`
/// the second before the publish and `If-None-Match: 0` give the message (`Etag: W/1`).
#[test]
fn old_messages_published_on_the_same_second_a_subscriber_connects() {
    let n = old_messages_spec()
        .with("push_stream_message_template", Some("~text~"))
        .start();
    let ch = "ch_test_receiving_messages_on_the_same_second";
    let now = unix_now() as i64;
    publish(n.port, ch, &[], "msg 1");
    let headers = [
        format!("If-Modified-Since: {}", http_date(now)),
        "If-None-Match: 0".to_string(),
    ];
    assert_old(&n, ch, &headers, (1, &["msg 1".to_string()]), Some("W/1"));
    n.stop();
}
