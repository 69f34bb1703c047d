//! Statistics asked right after a subscriber received its first bytes count it and its
//! channels. The C module counts a subscriber (the summary's `subscribers`, its worker's in
//! `by_worker`, and its channels' `subscribers`) and creates its channels before it writes to
//! it; its specs subscribe, wait for the first chunk and then ask statistics (for example
//! "should return summarized channels statistics for an existent channel with subscriber").
//!
//! This holds by construction here: a subscribe request is checked, its channels created, the
//! request subscribed and counted in its worker's total in one critical section of the shared
//! store before the response head (WebSocket: the 101) is written. The test asks after the
//! first bytes, on fresh connections that `reuseport` spreads over both workers, many times in
//! a row, with every subscriber kept open so the totals are exact.
//!
//! And the other end: a subscriber that has its last bytes (a footer, a long-poll's answer, a
//! WebSocket close frame) is no longer counted when the client asks next: the C module runs
//! its cleanup right after that last write; here the subscriber is counted out of the store
//! before the last bytes are written.

mod common;

use common::*;
use serde_json::Value;

const ROUNDS: usize = 25;

fn conf() -> &'static str {
    r#"
    push_stream_shared_memory_size 32m;
    server {
        listen 127.0.0.1:{PORT} reuseport;
        location /stats { push_stream_channels_statistics; push_stream_channels_path $arg_id; }
        location /pub {
            push_stream_publisher admin;
            push_stream_channels_path $arg_id;
            push_stream_store_messages on;
        }
        location ~ /sub/(.*) {
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_header_template "H";
        }
        location ~ /ev/(.*) {
            push_stream_subscriber eventsource;
            push_stream_channels_path $1;
            push_stream_header_template "H";
        }
        location ~ /ws/(.*) {
            push_stream_subscriber websocket;
            push_stream_channels_path $1;
            push_stream_header_template "H";
        }
        location ~ /lp/(.*) {
            push_stream_subscriber long-polling;
            push_stream_channels_path $1;
            push_stream_header_template "H";
        }
        location ~ /ttl-sub/(.*) {
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_footer_template "F";
            push_stream_subscriber_connection_ttl 100ms;
        }
        location ~ /ttl-ws/(.*) {
            push_stream_subscriber websocket;
            push_stream_channels_path $1;
            push_stream_footer_template "F";
            push_stream_subscriber_connection_ttl 100ms;
        }
        location ~ /ttl-lp/(.*) {
            push_stream_subscriber long-polling;
            push_stream_channels_path $1;
            push_stream_longpolling_connection_ttl 100ms;
        }
    }"#
}

/// One channel's info from the statistics location.
fn channel(port: u16, ch: &str) -> Value {
    let r = get(port, &format!("/stats?id={ch}"));
    assert_eq!(
        r.status, 200,
        "channel {ch} missing from the statistics: {r:?}"
    );
    json(&r)
}

/// The summary's channels and subscribers, and the sum of `by_worker` subscribers.
fn summary(port: u16) -> (u64, u64, u64) {
    let v = json(&get(port, "/stats"));
    let by_worker: u64 = v["by_worker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["subscribers"].as_u64().unwrap())
        .sum();
    (
        v["channels"].as_u64().unwrap(),
        v["subscribers"].as_u64().unwrap(),
        by_worker,
    )
}

#[test]
fn statistics_count_a_subscriber_and_its_channels_from_its_first_byte() {
    let n = Nginx::start(conf());
    let port = n.port;
    let mut streams = Vec::new();
    let mut sockets = Vec::new();
    let (mut channels, mut held) = (0u64, 0u64);
    for round in 0..ROUNDS {
        // Streaming and EventSource: the response head, then the header template.
        for (prefix, header) in [("sub", "H"), ("ev", ": H\n")] {
            let ch = format!("{prefix}{round}");
            let mut s = Stream::open(port, &format!("/{prefix}/{ch}"), &[]);
            assert_eq!(s.status, 200);
            channels += 1;
            held += 1;
            assert_eq!(channel(port, &ch)["subscribers"], 1, "{ch} after the head");
            assert_eq!(summary(port), (channels, held, held), "{ch} after the head");
            assert_eq!(s.next_chunk().unwrap(), header.as_bytes());
            streams.push(s);
        }
        // WebSocket: the 101 (its first bytes).
        let ch = format!("ws{round}");
        let ws = Ws::connect(port, &format!("/ws/{ch}"));
        assert_eq!(ws.status(), 101, "{}", ws.head);
        channels += 1;
        held += 1;
        assert_eq!(channel(port, &ch)["subscribers"], 1, "{ch} after the 101");
        assert_eq!(summary(port), (channels, held, held), "{ch} after the 101");
        sockets.push(ws);
        // Long-polling with an old message: answered at once, so not held (and not counted,
        // as in the C module), but every channel it named exists, the new one included.
        let (old, new) = (format!("old{round}"), format!("new{round}"));
        assert_eq!(post(port, &format!("/pub?id={old}"), b"m").status, 200);
        let r = get(port, &format!("/lp/{old}.b1/{new}"));
        assert_eq!((r.status, r.text()), (200, "Hm".to_string()));
        channels += 2;
        assert_eq!(channel(port, &new)["subscribers"], 0);
        assert_eq!(summary(port), (channels, held, held), "after {new}");
    }
    drop(streams);
    drop(sockets);
    wait_for(
        "the subscribers to be counted out",
        std::time::Duration::from_secs(10),
        || summary(port).1 == 0,
    );
    assert_eq!(summary(port), (channels, 0, 0));
    n.stop();
}

/// Many subscribers of each kind whose ttl ends together, so that their worker writes the
/// others' last bytes while the client reads the first ones and asks the statistics.
#[test]
fn statistics_no_longer_count_a_subscriber_that_has_its_last_bytes() {
    const BATCH: usize = 20;
    let n = Nginx::start(conf());
    let port = n.port;
    for round in 0..5 {
        let name = |kind: &str, i: usize| format!("{kind}{round}_{i}");
        let mut subs: Vec<(String, Stream)> = (0..BATCH)
            .map(|i| {
                let s = Stream::open(port, &format!("/ttl-sub/{}", name("sub", i)), &[]);
                assert_eq!(s.status, 200);
                (name("sub", i), s)
            })
            .collect();
        let mut wss: Vec<(String, Ws)> = (0..BATCH)
            .map(|i| {
                let w = Ws::connect(port, &format!("/ttl-ws/{}", name("ws", i)));
                assert_eq!(w.status(), 101, "{}", w.head);
                (name("ws", i), w)
            })
            .collect();
        let lps: Vec<(String, std::net::TcpStream)> = (0..BATCH)
            .map(|i| {
                let mut c = connect(port);
                send_request(
                    &mut c,
                    "GET",
                    &format!("/ttl-lp/{}", name("lp", i)),
                    &[],
                    b"",
                    true,
                );
                (name("lp", i), c)
            })
            .collect();
        // The streaming subscribers' footer and the end of their responses.
        for (ch, s) in &mut subs {
            assert_eq!(s.rest(), b"F");
            assert_eq!(channel(port, ch)["subscribers"], 0, "{ch}");
        }
        // The WebSocket subscribers' footer frame, then their close frame.
        for (ch, w) in &mut wss {
            while w.read_frame().expect("a close frame").1 != 8 {}
            assert_eq!(channel(port, ch)["subscribers"], 0, "{ch}");
        }
        // The long-polls' timeout answer.
        for (ch, c) in lps {
            let r = read_response(&mut std::io::BufReader::new(c), false);
            assert_eq!(r.status, 304);
            assert_eq!(channel(port, &ch)["subscribers"], 0, "{ch}");
        }
        assert_eq!(summary(port).1, 0, "round {round}");
    }
    n.stop();
}
