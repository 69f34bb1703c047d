//! The C module's `misc/spec/mix/measure_memory_spec.rb`: how much a shared zone holds.
//! The C module holds 2 MiB / 175 B = 11,980 1-byte messages in one channel, about 5,400
//! channels with one 1-byte message each in 2 MiB, and about 250 subscribers each on its own
//! channel in 128 KiB (the spec's "subscriber size" case, in a zone of that size); this module
//! must hold at least as many. The figures are printed (`--nocapture`).
//! ("should check subscriber system size" measures the workers' process memory, not the zone.)

mod common;

use std::io::{BufReader, Write};

use common::*;
use serde_json::Value;

/// The spec's configuration: `message_ttl 60m`, no limit of stored messages, keep-alive, no
/// templates, no ping; `shm` is the zone's size.
fn conf(shm: &str) -> String {
    format!(
        r#"
    push_stream_shared_memory_size {shm};
    push_stream_message_ttl 60m;
    keepalive_timeout 100;
    client_max_body_size 32k;
    client_body_buffer_size 32k;
    server {{
        listen 127.0.0.1:{{PORT}};
        location /channels-stats {{
            push_stream_channels_statistics;
            push_stream_channels_path $arg_id;
        }}
        location /pub {{
            push_stream_publisher admin;
            push_stream_channels_path $arg_id;
            push_stream_store_messages on;
        }}
        location ~ /sub/(.*)? {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_header_template "H";
        }}
    }}"#
    )
}

/// The `[error]` line of a refusal for lack of memory.
const FULL: &str = "push_stream: shared memory zone";

fn stats(port: u16) -> Value {
    let r = get(port, "/channels-stats");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn figure(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// Publishes `1` on keep-alive connections (a new one every 500 requests, below nginx's
/// `keepalive_requests`), to `channel(i)`, until the answer is not 200 (the zone is full).
/// Returns how many were accepted and the refusal.
fn publish_until_refused(port: u16, channel: impl Fn(u64) -> String) -> (u64, Response) {
    let mut n = 0;
    loop {
        let mut s = connect(port);
        let mut r = BufReader::new(s.try_clone().unwrap());
        for _ in 0..500 {
            let req = format!(
                "POST /pub?id={} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\n1",
                channel(n)
            );
            s.write_all(req.as_bytes()).unwrap();
            let resp = read_response(&mut r, false);
            if resp.status != 200 {
                return (n, resp);
            }
            n += 1;
        }
        assert!(n < 1_000_000, "never refused");
    }
}

#[test]
fn should_check_message_size() {
    let mut ng = Nginx::start(&conf("2m"));
    ng.allowed.push(FULL.into());
    let (n, refusal) = publish_until_refused(ng.port, |_| "ch_test_message_size".into());
    assert_eq!(refusal.status, 500, "{}", refusal.text());
    let v = stats(ng.port);
    let published = figure(&v, "published_messages");
    println!("2 MiB zone: {published} 1-byte messages in one channel (C module: 11,980)");
    assert_eq!(published, n);
    assert_eq!(figure(&v, "stored_messages"), n);
    assert!(published >= (2 << 20) / 175, "{published}");
    ng.check_log();
}

#[test]
fn should_check_channel_size() {
    let mut ng = Nginx::start(&conf("2m"));
    ng.allowed.push(FULL.into());
    let (n, refusal) = publish_until_refused(ng.port, |i| (1000 + i).to_string());
    assert_eq!(refusal.status, 500, "{}", refusal.text());
    let v = stats(ng.port);
    let channels = figure(&v, "channels");
    println!("2 MiB zone: {channels} channels with one 1-byte message (C module: about 5,400)");
    // A refused publish creates no channel.
    assert_eq!(channels, n);
    assert_eq!(figure(&v, "published_messages"), n);
    assert!(channels >= 5_400, "{channels}");
    ng.check_log();
}

#[test]
fn should_check_subscriber_size() {
    raise_fd_limit();
    let mut ng = Nginx::start(&conf("128k"));
    ng.allowed.push(FULL.into());
    // Each subscriber on its own new channel, until one is refused (the first chunk of a
    // subscriber that got in is the header template).
    let mut held = Vec::new();
    loop {
        let mut s = connect(ng.port);
        let path = format!("/sub/{}", 1000 + held.len());
        send_request(&mut s, "GET", &path, &[], b"", true);
        let mut r = BufReader::new(s);
        let (status, _) = read_head(&mut r);
        if status != 200 {
            assert_eq!(status, 500);
            break;
        }
        assert_eq!(read_chunk(&mut r).as_deref(), Some(&b"H"[..]));
        held.push(r);
        assert!(held.len() < 100_000, "never refused");
    }
    let v = stats(ng.port);
    let subscribers = figure(&v, "subscribers");
    println!(
        "128 KiB zone: {subscribers} subscribers each on its own channel (C module: about 250)"
    );
    assert_eq!(subscribers, held.len() as u64);
    assert!(subscribers >= 250, "{subscribers}");
    drop(held);
    ng.check_log();
}
