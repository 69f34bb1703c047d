//! The publisher and statistics API and the host-wide store, on several workers: status codes
//! and explain strings, formats, limits, deletion, expiry, a full zone, reloads, and delivery
//! of a message published on one worker to subscribers on every worker.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

const WORKERS: usize = 4;

fn conf(main: &str) -> String {
    format!(
        "
    push_stream_shared_memory_size 32m;
    {main}
    server {{
        listen 127.0.0.1:{{PORT}} reuseport;
        client_max_body_size 64k;
        location /pub {{ push_stream_publisher admin; push_stream_channels_path $arg_id; push_stream_store_messages on; }}
        location /pub-normal {{ push_stream_publisher; push_stream_channels_path $arg_id; }}
        location /pub-quiet {{ push_stream_publisher; push_stream_channels_path $arg_id; push_stream_channel_info_on_publish off; }}
        location /stats {{ push_stream_channels_statistics; push_stream_channels_path $arg_id; }}
        location ~ /sub/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_header_template \"HEAD\\n\";
            push_stream_message_template \"~id~|~channel~|~text~\\n\";
            push_stream_footer_template \"FOOT\\n\";
        }}
    }}"
    )
}

fn start(main: &str) -> Nginx {
    Nginx::start_with(
        &conf(main),
        Options {
            workers: WORKERS,
            ..Default::default()
        },
    )
}

/// One streaming subscriber per worker, each past the location's header template.
fn subscriber_per_worker_after_head(n: &Nginx, path: &str) -> Vec<(u32, Stream)> {
    let mut subs = subscriber_per_worker(n, path);
    for (_, s) in &mut subs {
        assert_eq!(s.next_chunk().unwrap(), b"HEAD\n".to_vec());
    }
    subs
}

#[test]
fn publish_then_channel_info_in_json() {
    let n = start("");
    let r = post(n.port, "/pub?id=ch1", b"hello");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(
        r.header("Cache-Control"),
        Some("no-cache, no-store, must-revalidate")
    );
    assert_eq!(r.header("Expires"), Some("Thu, 01 Jan 1970 00:00:01 GMT"));
    let v = json(&r);
    assert_eq!(v["channel"], "ch1");
    assert_eq!(v["published_messages"], 1);
    assert_eq!(v["stored_messages"], 1);
    assert_eq!(v["subscribers"], 0);
    // The same answer from every worker (fresh connections land on any of them).
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let r = get(n.port, "/pub?id=ch1");
        assert_eq!(r.status, 200);
        assert_eq!(json(&r)["published_messages"], 1);
        seen.insert(r.header("X-Worker-Pid").unwrap().to_string());
    }
    assert!(seen.len() > 1, "answers came from more than one worker");
    assert_eq!(get(n.port, "/pub?id=missing").status, 404);
    // Several channels at once: the group format.
    let r = post(n.port, "/pub?id=ch1/ch2", b"both");
    let v = json(&r);
    assert_eq!(v["infos"].as_array().unwrap().len(), 2);
    assert_eq!(v["infos"][0]["published_messages"], 2);
    assert_eq!(v["infos"][1]["channel"], "ch2");
    // PUT publishes like POST; channel_info_on_publish off answers an empty 200.
    assert_eq!(
        request(n.port, "PUT", "/pub?id=ch1", &[], b"put").status,
        200
    );
    let q = post(n.port, "/pub-quiet?id=ch1", b"quiet");
    assert_eq!((q.status, q.body.len()), (200, 0));
    assert_eq!(json(&get(n.port, "/pub?id=ch1"))["published_messages"], 4);
    n.stop();
}

#[test]
fn publisher_status_codes_and_explains() {
    let n = start("push_stream_max_channel_id_length 10;");
    let cases: Vec<(Response, u16, Option<&str>)> = vec![
        (
            post(n.port, "/pub", b"x"),
            400,
            Some("No channel id provided."),
        ),
        (
            post(n.port, "/pub?id=ALL", b"x"),
            403,
            Some("Channel id not authorized for this method."),
        ),
        (
            post(n.port, "/pub?id=ab*", b"x"),
            403,
            Some("Channel id not authorized for this method."),
        ),
        (
            post(n.port, "/pub?id=waytoolongchannel", b"x"),
            400,
            Some("Channel id is too large."),
        ),
        (
            post(n.port, "/pub?id=ok", b""),
            400,
            Some("Empty post requests are not allowed."),
        ),
        (
            request(n.port, "DELETE", "/pub?id=nothere", &[], b""),
            404,
            None,
        ),
    ];
    for (r, status, exp) in cases {
        assert_eq!(r.status, status, "{r:?}");
        assert_eq!(explain(&r), exp, "{r:?}");
        if status != 200 {
            assert_eq!(r.header("Content-Length"), Some("0"));
        }
    }
    let r = request(n.port, "HEAD", "/pub?id=ok", &[], b"");
    assert_eq!(
        (r.status, r.header("Allow")),
        (405, Some("GET, POST, PUT, DELETE"))
    );
    let r = request(n.port, "DELETE", "/pub-normal?id=ok", &[], b"");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, POST, PUT")));
    assert_eq!(
        request(n.port, "OPTIONS", "/pub?id=ok", &[], b"").status,
        200
    );
    // client_max_body_size is nginx's: 413.
    assert_eq!(
        post(n.port, "/pub?id=big", &vec![b'x'; 100 * 1024]).status,
        413
    );
    // A leading '/' (the stock JS client) names no extra channel.
    assert_eq!(json(&post(n.port, "/pub?id=/js", b"x"))["channel"], "js");
    n.stop();
}

#[test]
fn bodies_are_delivered_byte_for_byte_even_from_temp_files() {
    let n = start("");
    let body: Vec<u8> = (0..=255u8).cycle().take(40_000).collect();
    // client_body_buffer_size is smaller than this body: nginx spools it to a temp file.
    let r = post(n.port, "/pub?id=bin", &body);
    assert_eq!(r.status, 200);
    let mut s = Stream::open(n.port, "/sub/bin.b1", &[]);
    let mut got = vec![];
    while got.len() < b"HEAD\n".len() + b"1|bin|".len() + body.len() + 1 {
        got.extend(s.next_chunk().unwrap());
    }
    let expected = [b"HEAD\n1|bin|".to_vec(), body, b"\n".to_vec()].concat();
    assert_eq!(got, expected);
    let tmp = std::fs::read_dir(n.prefix.join("tmp/body"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(tmp, 0, "temp files are removed");
    n.stop();
}

#[test]
fn a_message_published_on_one_worker_reaches_subscribers_on_every_worker() {
    let n = start("");
    let mut subs = subscriber_per_worker_after_head(&n, "/sub/fan");
    assert_eq!(subs.len(), WORKERS);
    for i in 1..=20 {
        assert_eq!(
            post(n.port, "/pub?id=fan", format!("m{i}").as_bytes()).status,
            200
        );
    }
    for (pid, s) in subs.iter_mut() {
        let lines = read_lines(s, 20);
        let expected: Vec<String> = (1..=20).map(|i| format!("{i}|fan|m{i}")).collect();
        assert_eq!(lines, expected, "subscriber on worker {pid}");
    }
    // Subscribers are counted host-wide (the extra connections subscriber_per_worker
    // opened and dropped are released when their worker sees the close).
    wait_for(
        "one subscriber per worker counted",
        Duration::from_secs(5),
        || json(&get(n.port, "/pub?id=fan"))["subscribers"] == WORKERS as u64,
    );
    n.stop();
}

#[test]
fn statistics_in_four_formats() {
    let n = start("");
    post(n.port, "/pub?id=s1", b"a");
    post(n.port, "/pub?id=s2", b"b");
    post(n.port, "/pub?id=other", b"c");
    let r = get(n.port, "/stats");
    assert_eq!(r.status, 200);
    assert!(r.header("X-Nginx-PushStream-Tag").is_some());
    let v = json(&r);
    assert_eq!(v["channels"], 3);
    assert_eq!(v["published_messages"], 3);
    assert_eq!(v["stored_messages"], 3);
    assert!(v["by_worker"].as_array().unwrap().len() == WORKERS, "{v}");
    assert!(v["by_worker"][0]["pid"].is_string());
    assert!(v["shared_memory_used"].as_u64().unwrap() > 0);
    assert_eq!(v["shared_memory_limit"], 32 * 1024 * 1024);
    // The C module's fields in its order, `by_worker` included; this module's own after them.
    let plain = request(n.port, "GET", "/stats", &["Accept: text/plain"], b"").text();
    let keys: Vec<&str> = plain
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(
        keys[..12],
        [
            "hostname",
            "time",
            "channels",
            "wildcard_channels",
            "published_messages",
            "stored_messages",
            "messages_in_trash",
            "channels_in_delete",
            "channels_in_trash",
            "subscribers",
            "uptime",
            "by_worker"
        ],
        "{plain}"
    );
    assert_eq!(keys[12], "shared_memory_used", "{plain}");
    let one = json(&get(n.port, "/stats?id=s1"));
    assert_eq!(one["channel"], "s1");
    let all = json(&get(n.port, "/stats?id=ALL"));
    assert_eq!(all["infos"].as_array().unwrap().len(), 3);
    let pre = json(&get(n.port, "/stats?id=s*"));
    let ids: Vec<&str> = pre["infos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["channel"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["s1", "s2"]);
    assert_eq!(get(n.port, "/stats?id=none").status, 404);
    for (accept, ct, needle) in [
        ("text/plain", "text/plain", "active_subscribers: 0"),
        ("application/yaml", "application/yaml", "  channel: s1"),
        ("application/xml", "application/xml", "<name>s1</name>"),
        ("text/x-json", "text/x-json", "\"channel\": \"s1\""),
    ] {
        let h = format!("Accept: {accept}");
        let r = request(n.port, "GET", "/stats?id=s1", &[h.as_str()], b"");
        assert_eq!(r.header("Content-Type"), Some(ct));
        assert!(r.text().contains(needle), "{accept}: {}", r.text());
    }
    let r = request(n.port, "POST", "/stats", &[], b"x");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET")));
    n.stop();
}

#[test]
fn channel_ids_are_escaped_in_json() {
    let n = start("");
    let r = post(n.port, "/pub?id=q%22uote%5C", b"x");
    assert_eq!(json(&r)["channel"], "q\"uote\\");
    n.stop();
}

#[test]
fn delete_tells_subscribers_on_every_worker_and_frees_the_id() {
    let n = start("");
    post(n.port, "/pub?id=gone", b"first");
    let mut subs = subscriber_per_worker_after_head(&n, "/sub/gone");
    let r = request(n.port, "DELETE", "/pub?id=gone", &[], b"");
    assert_eq!((r.status, explain(&r)), (200, Some("Channel deleted.")));
    for (pid, s) in subs.iter_mut() {
        let rest = String::from_utf8(s.rest()).unwrap();
        assert_eq!(rest, "-2|gone|Channel deleted\nFOOT\n", "worker {pid}");
    }
    assert_eq!(get(n.port, "/pub?id=gone").status, 404);
    // The id is free at once; a DELETE body becomes the deleted message's text.
    let mut s = Stream::open(n.port, "/sub/gone", &[]);
    assert_eq!(s.next_chunk().unwrap(), b"HEAD\n".to_vec());
    assert_eq!(
        request(n.port, "DELETE", "/pub?id=gone", &[], b"bye now").status,
        200
    );
    assert_eq!(
        String::from_utf8(s.rest()).unwrap(),
        "-2|gone|bye now\nFOOT\n"
    );
    n.stop();
}

#[test]
fn store_limits_backtrack_and_ttl_expiry() {
    let n = start("push_stream_max_messages_stored_per_channel 3; push_stream_message_ttl 2s;");
    for i in 1..=5 {
        post(n.port, "/pub?id=lim", format!("m{i}").as_bytes());
    }
    let v = json(&get(n.port, "/pub?id=lim"));
    assert_eq!(
        (
            v["published_messages"].as_u64(),
            v["stored_messages"].as_u64()
        ),
        (Some(5), Some(3))
    );
    let mut s = Stream::open(n.port, "/sub/lim.b2", &[]);
    assert_eq!(read_lines(&mut s, 3), vec!["HEAD", "4|lim|m4", "5|lim|m5"]);
    drop(s);
    wait_for("TTL expiry", Duration::from_secs(15), || {
        json(&get(n.port, "/pub?id=lim"))["stored_messages"] == 0
    });
    let v = json(&get(n.port, "/stats"));
    assert_eq!(v["stored_messages"], 0);
    n.stop();
}

#[test]
fn channel_limits_wildcards_and_the_events_channel() {
    let n = start(
        "push_stream_max_number_of_channels 3; push_stream_events_channel_id events;
         push_stream_wildcard_channel_prefix bd_; push_stream_max_number_of_wildcard_channels 1;",
    );
    // The events channel counts as one of the 3.
    assert_eq!(post(n.port, "/pub?id=c1", b"x").status, 200);
    assert_eq!(post(n.port, "/pub?id=c2", b"x").status, 200);
    let r = post(n.port, "/pub?id=c3", b"x");
    assert_eq!(
        (r.status, explain(&r)),
        (403, Some("Number of channels were exceeded."))
    );
    assert_eq!(post(n.port, "/pub?id=bd_1", b"x").status, 200);
    let r = post(n.port, "/pub?id=bd_2", b"x");
    assert_eq!(
        (r.status, explain(&r)),
        (403, Some("Number of channels were exceeded."))
    );
    let v = json(&get(n.port, "/stats"));
    assert_eq!(
        (v["channels"].as_u64(), v["wildcard_channels"].as_u64()),
        (Some(3), Some(1))
    );
    let r = post(n.port, "/pub?id=events", b"x");
    assert_eq!(
        (r.status, explain(&r)),
        (
            403,
            Some("Only internal routines can change events channel.")
        )
    );
    let r = request(n.port, "DELETE", "/pub?id=events", &[], b"");
    assert_eq!(r.status, 403);
    // channel_created was stored in the events channel for c1, c2 and bd_1.
    let e = json(&get(n.port, "/pub?id=events"));
    assert_eq!(e["stored_messages"], 3);
    let s = Stream::open(n.port, "/sub/events", &[]);
    assert_eq!(
        (s.status, s.header("X-Nginx-PushStream-Explain")),
        (403, Some("Subscription to events channel is not allowed."))
    );
    drop(s.reader);
    n.stop();
}

#[test]
fn a_full_zone_refuses_with_500_and_recovers_after_expiry() {
    let n = Nginx::start_with(
        &conf("").replace(
            "push_stream_shared_memory_size 32m;",
            "push_stream_shared_memory_size 256k; push_stream_message_ttl 2s;",
        ),
        Options {
            workers: 2,
            ..Default::default()
        },
    );
    let body = vec![b'z'; 8 * 1024];
    let fill = || {
        let mut ok = 0;
        loop {
            let r = post(n.port, "/pub?id=full", &body);
            if r.status != 200 {
                assert_eq!(
                    (r.status, explain(&r)),
                    (500, Some("Shared memory exhausted."))
                );
                return ok;
            }
            ok += 1;
            assert!(ok < 1000, "the zone never filled");
        }
    };
    let first = fill();
    assert!(first > 5, "only {first} messages fit");
    // What is stored is intact.
    let mut s = Stream::open(n.port, "/sub/full.b1", &[]);
    let lines = read_lines(&mut s, 2);
    assert_eq!(lines[1], format!("{first}|full|{}", "z".repeat(8 * 1024)));
    drop(s);
    assert!(n.error_log().contains("is full"), "the refusal is logged");
    wait_for("expiry", Duration::from_secs(20), || {
        json(&get(n.port, "/stats"))["stored_messages"] == 0
    });
    // Let the trash drain, then the same number fits again (nothing leaked).
    wait_for("trash", Duration::from_secs(20), || {
        json(&get(n.port, "/stats"))["messages_in_trash"] == 0
    });
    let second = fill();
    assert!(second + 2 >= first, "first fill {first}, second {second}");
    n.stop();
}

#[test]
fn channels_and_stored_messages_survive_three_reloads() {
    let mut n = start("");
    for i in 1..=3 {
        post(n.port, "/pub?id=keep", format!("k{i}").as_bytes());
    }
    let uptime0 = json(&get(n.port, "/stats"))["uptime"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..3 {
        let old = n.reload();
        n.wait_gone(&old, Duration::from_secs(5));
    }
    let v = json(&get(n.port, "/pub?id=keep"));
    assert_eq!(
        (
            v["published_messages"].as_u64(),
            v["stored_messages"].as_u64()
        ),
        (Some(3), Some(3))
    );
    let stats = json(&get(n.port, "/stats"));
    assert!(
        stats["uptime"].as_u64().unwrap() > uptime0,
        "uptime survives reloads"
    );
    assert_eq!(
        stats["by_worker"].as_array().unwrap().len(),
        WORKERS,
        "old workers left the store"
    );
    let mut s = Stream::open(n.port, "/sub/keep.b3", &[]);
    assert_eq!(
        read_lines(&mut s, 4),
        vec!["HEAD", "1|keep|k1", "2|keep|k2", "3|keep|k3"]
    );
    drop(s);
    // And the ids continue.
    assert_eq!(
        json(&post(n.port, "/pub?id=keep", b"k4"))["published_messages"],
        4
    );
    n.stop();
}

#[test]
fn subscribers_get_their_footer_on_reload_and_counts_return_to_zero() {
    let mut n = start("");
    let mut subs = subscriber_per_worker_after_head(&n, "/sub/r");
    let old = n.reload();
    for (_, s) in subs.iter_mut() {
        assert_eq!(s.rest(), b"FOOT\n".to_vec());
    }
    n.wait_gone(&old, Duration::from_secs(5));
    wait_for("subscriber count", Duration::from_secs(5), || {
        json(&get(n.port, "/pub?id=r"))["subscribers"] == 0
    });
    n.stop();
}

#[test]
fn a_killed_worker_leaves_no_lock_and_no_stale_subscriber_counts() {
    let mut n = start("");
    n.allowed.push("exited on signal 9".into());
    // nginx's master releases the zone's mutex if the victim held it, and says so.
    n.allowed.push("was locked by".into());
    let mut subs = subscriber_per_worker_after_head(&n, "/sub/kc");
    // The extra connections subscriber_per_worker dropped are released when their worker
    // sees the close; wait for that before the kill so the count below is the kill's doing.
    wait_for(
        "one subscriber per worker counted",
        Duration::from_secs(5),
        || json(&get(n.port, "/pub?id=kc"))["subscribers"] == WORKERS as u64,
    );
    let (victim, _) = subs.remove(0);
    // SAFETY: a worker of the nginx this test started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    // The respawned worker (same slot) releases the dead one's subscriptions.
    wait_for("stale counts released", Duration::from_secs(10), || {
        json(&get(n.port, "/pub?id=kc"))["subscribers"] == (WORKERS - 1) as u64
    });
    // Every worker still publishes and delivers (no lock was left held).
    for i in 0..10 {
        assert_eq!(
            post(n.port, "/pub?id=kc", format!("after{i}").as_bytes()).status,
            200
        );
    }
    for (pid, s) in subs.iter_mut() {
        let lines = read_lines(s, 10);
        assert_eq!(lines.last().unwrap(), "10|kc|after9", "worker {pid}");
    }
    n.stop();
}
