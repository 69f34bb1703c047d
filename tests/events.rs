//! The events channel (`push_stream_events_channel_id`), as the C module's
//! `misc/spec/mix/events_channel_spec.rb` sees it: which events a channel's life and its
//! subscribers produce, each in a message (and a chunk) of its own, who may subscribe to it,
//! that nobody may publish into or delete it, its tags, and that it keeps working after a
//! reload. The C specs run one worker; so do these. Timings the C specs wait for (30 s of
//! inactivity, a 5 s ttl) are set shorter here.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn conf(http_extra: &str, allow: bool) -> String {
    let allow = if allow { "on" } else { "off" };
    format!(
        r#"
    push_stream_shared_memory_size 10m;
    push_stream_events_channel_id events;
    push_stream_allow_connections_to_events_channel {allow};
    push_stream_message_template "text: ~text~\nchannel: ~channel~";
    {http_extra}
    server {{
        listen 127.0.0.1:{{PORT}};
        location /channels-stats {{ push_stream_channels_statistics; push_stream_channels_path $arg_id; }}
        location /pub {{ push_stream_publisher admin; push_stream_channels_path $arg_id; push_stream_store_messages off; }}
        location /pub-stored {{ push_stream_publisher admin; push_stream_channels_path $arg_id; push_stream_store_messages on; }}
        location ~ /sub/(.*) {{ push_stream_subscriber; push_stream_channels_path $1; }}
        location ~ /lp/(.*) {{ push_stream_subscriber long-polling; push_stream_channels_path $1; }}
        location ~ /wss/(.*) {{ push_stream_subscriber websocket; push_stream_channels_path $1; }}
        location ~ /ws/(.*) {{
            push_stream_subscriber websocket;
            push_stream_channels_path $1;
            push_stream_websocket_allow_publish on;
            push_stream_store_messages on;
        }}
        location ~ /sub_to_events_channel_only_here/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_allow_connections_to_events_channel on;
        }}
        location ~ /ws_to_events_channel_only_here/(.*) {{
            push_stream_subscriber websocket;
            push_stream_channels_path $1;
            push_stream_allow_connections_to_events_channel on;
        }}
        location ~ /ttl/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_subscriber_connection_ttl 2s;
        }}
        location ~ /hdr/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_header_template "H";
            push_stream_subscriber_connection_ttl 3s;
        }}
        location ~ /json/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "{{\"text\": ~text~, \"channel\": \"~channel~\", \"tag\": ~tag~, \"time\": \"~time~\", \"id\": \"~id~\"}}";
        }}
    }}"#
    )
}

fn start_with(http_extra: &str, allow: bool) -> Nginx {
    Nginx::start_with(
        &conf(http_extra, allow),
        Options {
            workers: 1,
            ..Default::default()
        },
    )
}

fn start(http_extra: &str) -> Nginx {
    start_with(http_extra, true)
}

/// What a subscriber of the events channel gets for one event, with the specs' template.
fn event(ty: &str, channel: &str) -> String {
    format!("text: {{\"type\": \"{ty}\", \"channel\": \"{channel}\"}}\nchannel: events")
}

fn publish(port: u16, ch: &str) {
    let r = post(port, &format!("/pub?id={ch}"), b"any content");
    assert_eq!(r.status, 200, "{r:?}");
}

fn info(port: u16, ch: &str) -> (u16, Option<(u64, u64, u64)>) {
    let r = get(port, &format!("/pub?id={ch}"));
    let v = (r.status == 200).then(|| {
        let j = json(&r);
        let n = |f: &str| j[f].as_u64().unwrap();
        (
            n("published_messages"),
            n("stored_messages"),
            n("subscribers"),
        )
    });
    (r.status, v)
}

/// The events channel's subscriber, answered (so subscribed) before the test goes on.
fn events_stream(port: u16) -> Stream {
    let s = Stream::open(port, "/sub/events", &[]);
    assert_eq!(s.status, 200);
    s
}

fn chunk(s: &mut Stream) -> String {
    String::from_utf8(s.next_chunk().expect("a chunk")).unwrap()
}

#[test]
fn an_event_when_a_channel_is_created() {
    let n = start("");
    let mut ev = events_stream(n.port);
    publish(n.port, "ch_created");
    assert_eq!(chunk(&mut ev), event("channel_created", "ch_created"));
    n.stop();
}

/// The deleted channel's `channel_destroyed` comes when it leaves the delete state, in a
/// message of its own.
#[test]
fn an_event_when_a_channel_is_deleted() {
    let n = start("");
    publish(n.port, "ch_deleted");
    let mut ev = events_stream(n.port);
    let r = request(n.port, "DELETE", "/pub?id=ch_deleted", &[], b"");
    assert_eq!((r.status, r.body.len()), (200, 0));
    let t = Instant::now();
    assert_eq!(chunk(&mut ev), event("channel_destroyed", "ch_deleted"));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    n.stop();
}

#[test]
fn an_event_when_a_channel_is_collected_by_inactivity() {
    let n = start("push_stream_channel_inactivity_time 2s;");
    publish(n.port, "ch_collected");
    let mut ev = events_stream(n.port);
    assert_eq!(chunk(&mut ev), event("channel_destroyed", "ch_collected"));
    n.stop();
}

#[test]
fn an_event_when_a_client_subscribes() {
    let n = start("");
    publish(n.port, "ch_subscribed");
    let mut ev = events_stream(n.port);
    let _sub = Stream::open(n.port, "/sub/ch_subscribed", &[]);
    assert_eq!(chunk(&mut ev), event("client_subscribed", "ch_subscribed"));
    n.stop();
}

#[test]
fn an_event_when_a_websocket_client_subscribes() {
    let n = start("");
    publish(n.port, "ch_ws");
    let mut ev = Ws::connect(n.port, "/wss/events");
    assert_eq!(ev.status(), 101);
    let mut ws = Ws::connect(n.port, "/wss/ch_ws");
    assert_eq!(ws.status(), 101);
    assert_eq!(
        String::from_utf8(ev.read_text().unwrap()).unwrap(),
        event("client_subscribed", "ch_ws")
    );
    ws.send_frame(true, 8, b"", true);
    n.stop();
}

#[test]
fn an_event_when_a_long_polling_client_subscribes() {
    let n = start("");
    publish(n.port, "ch_lp");
    let mut c = connect(n.port);
    send_request(&mut c, "GET", "/lp/events", &[], b"", false);
    wait_for(
        "the long-poll of the events channel",
        Duration::from_secs(3),
        || info(n.port, "events").1.unwrap().2 == 1,
    );
    let mut other = connect(n.port);
    send_request(&mut other, "GET", "/lp/ch_lp", &[], b"", false);
    let r = read_response(&mut std::io::BufReader::new(c), false);
    assert_eq!(
        (r.status, r.text()),
        (200, event("client_subscribed", "ch_lp"))
    );
    n.stop();
}

#[test]
fn an_event_when_a_client_unsubscribes_by_timeout() {
    let n = start("");
    let _sub = Stream::open(n.port, "/ttl/ch_timeout", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let mut ev = events_stream(n.port);
    assert_eq!(chunk(&mut ev), event("client_unsubscribed", "ch_timeout"));
    n.stop();
}

/// A delete of a channel with a subscriber: `client_unsubscribed` as the subscriber is told,
/// and `channel_destroyed` later, when the channel leaves the delete state, in a chunk of its
/// own.
#[test]
fn an_event_when_a_client_unsubscribes_by_delete() {
    let n = start("");
    let mut sub = Stream::open(n.port, "/sub/ch_unsub", &[]);
    let mut ev = events_stream(n.port);
    let r = request(n.port, "DELETE", "/pub?id=ch_unsub", &[], b"");
    assert_eq!((r.status, r.body.len()), (200, 0));
    let t = Instant::now();
    assert!(!sub.rest().is_empty());
    assert_eq!(chunk(&mut ev), event("client_unsubscribed", "ch_unsub"));
    assert_eq!(chunk(&mut ev), event("channel_destroyed", "ch_unsub"));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    n.stop();
}

/// "should never collect the events channel by inactivity": the channel goes, the events
/// channel stays (its own messages expire as any other's).
#[test]
fn the_events_channel_is_never_collected_by_inactivity() {
    let n = start("push_stream_message_ttl 3s; push_stream_channel_inactivity_time 1s;");
    let p = n.port;
    let r = post(p, "/pub-stored?id=ch_not_collected", b"any content");
    assert_eq!(r.status, 200);
    assert_eq!(info(p, "ch_not_collected"), (200, Some((1, 1, 0))));
    assert_eq!(info(p, "events"), (200, Some((1, 1, 0))));
    wait_for("the channel's removal", Duration::from_secs(8), || {
        info(p, "ch_not_collected").0 == 404
    });
    // channel_created expired with the channel's message, channel_destroyed is stored.
    assert_eq!(info(p, "events"), (200, Some((2, 1, 0))));
    wait_for("the events' expiry", Duration::from_secs(8), || {
        info(p, "events").1.is_some_and(|i| i.1 == 0)
    });
    assert_eq!(info(p, "events"), (200, Some((2, 0, 0))));
    n.stop();
}

/// "should use a exclusive mutex lock for events channel": twenty subscribers, ten of their
/// channels deleted, the others left to time out and go idle; every event counted, at most
/// `push_stream_max_messages_stored_per_channel` (20) stored.
#[test]
fn every_event_of_twenty_channels_is_counted() {
    let n = start(
        "push_stream_max_messages_stored_per_channel 20; push_stream_channel_inactivity_time 1s;",
    );
    let p = n.port;
    let subs: Vec<Stream> = (1..=20)
        .map(|i| {
            let mut s = Stream::open(p, &format!("/hdr/ch_mutex_{i}"), &[]);
            assert_eq!(s.next_chunk().unwrap(), b"H");
            s
        })
        .collect();
    assert_eq!(info(p, "events"), (200, Some((40, 20, 0))));
    for i in 1..=10 {
        let r = request(p, "DELETE", &format!("/pub?id=ch_mutex_{i}"), &[], b"");
        assert_eq!(r.status, 200);
    }
    wait_for(
        "10 unsubscribed and 10 destroyed",
        Duration::from_secs(5),
        || info(p, "events").1.unwrap().0 == 60,
    );
    assert_eq!(info(p, "events"), (200, Some((60, 20, 0))));
    // The other ten time out (3 s), then go idle (1 s).
    wait_for("the other channels' end", Duration::from_secs(10), || {
        json(&get(p, "/channels-stats?id=ALL"))["infos"]
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    let all = json(&get(p, "/channels-stats?id=ALL"));
    let i = &all["infos"][0];
    assert_eq!(
        (
            &i["channel"],
            &i["published_messages"],
            &i["stored_messages"],
            &i["subscribers"]
        ),
        (
            &Value::from("events"),
            &Value::from(80),
            &Value::from(20),
            &Value::from(0)
        ),
        "{all}"
    );
    drop(subs);
    n.stop();
}

/// "should not accept publish outside messages to events channel": a publisher gets 403, a
/// WebSocket client that publishes on a connection to the events channel and another channel
/// publishes to the other channel only (and gets the event of its own subscription there).
#[test]
fn nobody_publishes_into_the_events_channel() {
    let n = start("");
    let p = n.port;
    let r = post(p, "/pub?id=events", b"any content");
    assert_eq!(r.status, 403);
    assert!(r.body.is_empty());
    assert_eq!(
        explain(&r),
        Some("Only internal routines can change events channel.")
    );
    let mut ws = Ws::connect(p, "/ws/events/other_valid_channel");
    assert_eq!(ws.status(), 101);
    assert_eq!(
        String::from_utf8(ws.read_text().unwrap()).unwrap(),
        event("client_subscribed", "other_valid_channel")
    );
    ws.send_text("any content");
    assert_eq!(
        String::from_utf8(ws.read_text().unwrap()).unwrap(),
        "text: any content\nchannel: other_valid_channel"
    );
    // channel_created (not seen: before the subscription), client_subscribed
    assert_eq!(info(p, "events"), (200, Some((2, 2, 1))));
    assert_eq!(info(p, "other_valid_channel"), (200, Some((1, 1, 1))));
    n.stop();
}

#[test]
fn nobody_deletes_the_events_channel() {
    let n = start("");
    let r = request(n.port, "DELETE", "/pub?id=events", &[], b"");
    assert_eq!(r.status, 403);
    assert!(r.body.is_empty());
    assert_eq!(info(n.port, "events"), (200, Some((0, 0, 0))));
    n.stop();
}

/// "should not accept subscribe to events channel when access is not authorized": 403 (and
/// the WebSocket is closed) where `push_stream_allow_connections_to_events_channel` is off;
/// where it is on, the subscriber gets the event of its own later subscription.
#[test]
fn subscribing_to_the_events_channel_needs_the_location_to_allow_it() {
    let n = start_with("", false);
    let p = n.port;
    let r = get(p, "/sub/events/other_valid_channel");
    assert_eq!(r.status, 403);
    assert!(r.body.is_empty());
    assert_eq!(
        explain(&r),
        Some("Subscription to events channel is not allowed.")
    );
    let mut ws = Ws::connect(p, "/wss/events/other_valid_channel");
    assert_eq!(ws.status(), 101);
    let (_, op, payload) = ws.read_frame().unwrap();
    assert_eq!(op, 8);
    assert!(
        String::from_utf8_lossy(&payload).contains(
            r#""http_status": 403, "explain":"Subscription to events channel is not allowed.""#
        ),
        "{payload:?}"
    );
    assert!(ws.read_frame().is_none(), "closed");
    let mut s = Stream::open(
        p,
        "/sub_to_events_channel_only_here/events/other_valid_channel",
        &[],
    );
    assert_eq!(s.status, 200);
    assert_eq!(
        chunk(&mut s),
        event("client_subscribed", "other_valid_channel")
    );
    let mut ws = Ws::connect(
        p,
        "/ws_to_events_channel_only_here/events/other_valid_channel",
    );
    assert_eq!(ws.status(), 101);
    assert_eq!(
        String::from_utf8(ws.read_text().unwrap()).unwrap(),
        event("client_subscribed", "other_valid_channel")
    );
    n.stop();
}

/// "should change the tag number for messages on the same second": two events in one second
/// get tags n and n + 1, each in a chunk of its own; the next second starts again.
#[test]
fn events_in_the_same_second_get_consecutive_tags() {
    let n = start("");
    let p = n.port;
    publish(p, "ch_same_second");
    let mut ev = Stream::open(p, "/json/events", &[]);
    assert_eq!(ev.status, 200);
    // Both subscriptions early in one second (nginx's clock is whole seconds) that nothing
    // else published in (the publish above took tags in its second).
    std::thread::sleep(Duration::from_millis(1100));
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    };
    while now().subsec_millis() > 100 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _a = Stream::open(p, "/sub/ch_same_second", &[]);
    let _b = Stream::open(p, "/sub/ch_same_second", &[]);
    std::thread::sleep(Duration::from_millis(1100));
    let _c = Stream::open(p, "/sub/ch_same_second", &[]);
    let m: Vec<Value> = (0..3)
        .map(|_| serde_json::from_slice(&ev.next_chunk().unwrap()).expect("one event per chunk"))
        .collect();
    assert_eq!(m[1]["tag"], m[0]["tag"].as_u64().unwrap() + 1, "{m:?}");
    assert_eq!(m[1]["time"], m[0]["time"], "{m:?}");
    assert_eq!(m[0]["tag"], m[2]["tag"], "{m:?}");
    assert_ne!(m[0]["time"], m[2]["time"], "{m:?}");
    n.stop();
}

/// "should keep sending events after a reload".
#[test]
fn events_keep_coming_after_a_reload() {
    let mut n = start("");
    let p = n.port;
    let stats = || json(&get(p, "/channels-stats"));
    let mut ev = events_stream(p);
    publish(p, "ch_reload");
    assert_eq!(chunk(&mut ev), event("channel_created", "ch_reload"));
    let s = stats();
    assert_eq!(s["channels"], 2);
    assert_eq!(s["by_worker"].as_array().unwrap().len(), 1);
    let old = n.reload();
    n.wait_gone(&old, Duration::from_secs(10));
    assert!(ev.rest().is_empty(), "the old worker ended its subscriber");
    wait_for(
        "the new worker alone in the statistics",
        Duration::from_secs(5),
        || {
            let w = stats()["by_worker"].as_array().unwrap().clone();
            w.len() == 1 && !old.contains(&w[0]["pid"].as_str().unwrap().parse().unwrap())
        },
    );
    let mut ev = events_stream(p);
    publish(p, "ch_reload_1");
    assert_eq!(chunk(&mut ev), event("channel_created", "ch_reload_1"));
    let s = stats();
    assert_eq!(
        (&s["channels"], &s["published_messages"]),
        (&Value::from(3), &Value::from(2))
    );
    wait_for("one subscriber", Duration::from_secs(3), || {
        stats()["subscribers"] == 1
    });
    assert!(!n.error_log().contains("open socket"));
    n.stop();
}
