//! `push_stream_metrics`: Prometheus text exposition, parsed with a real parser.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn metrics_expose_the_host_and_every_worker() {
    let n = Nginx::start_with(
        "
    push_stream_shared_memory_size 8m;
    server {
        listen 127.0.0.1:{PORT} reuseport;
        location /pub { push_stream_publisher; push_stream_channels_path $arg_id; push_stream_store_messages on; }
        location /metrics { push_stream_metrics; }
        location ~ /sub/(.*) { push_stream_subscriber; push_stream_channels_path $1; }
        location ~ /ev/(.*) { push_stream_subscriber eventsource; push_stream_channels_path $1; }
    }",
        Options { workers: 2, ..Default::default() },
    );
    let mut s = Stream::open(n.port, "/sub/m1", &[]);
    let mut e = Stream::open(n.port, "/ev/m1", &[]);
    assert_eq!(e.next_chunk().unwrap(), b": \n".to_vec());
    for i in 0..3 {
        request(
            n.port,
            "POST",
            "/pub?id=m1",
            &[],
            format!("x{i}").as_bytes(),
        );
    }
    s.next_chunk();
    // Worker counters are published every second.
    std::thread::sleep(Duration::from_millis(1300));
    let r = get(n.port, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let lines: Vec<std::io::Result<String>> = r.text().lines().map(|l| Ok(l.to_string())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("valid exposition");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("unexpected type for {name}"),
            })
            .sum::<f64>();
        s
    };
    assert_eq!(value("push_stream_channels", &[("kind", "normal")]), 1.0);
    assert_eq!(value("push_stream_messages_published_total", &[]), 3.0);
    assert_eq!(value("push_stream_messages_stored", &[]), 3.0);
    assert_eq!(
        value("push_stream_shared_memory_limit_bytes", &[]),
        (8 << 20) as f64
    );
    assert!(value("push_stream_shared_memory_used_bytes", &[]) > 0.0);
    // Both workers report; the two subscribers are counted by mode, wherever they landed.
    let pids: std::collections::HashSet<String> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "push_stream_worker_messages_delivered_total")
        .map(|s| s.labels.get("pid").unwrap().to_string())
        .collect();
    let workers: std::collections::HashSet<String> =
        n.worker_pids().iter().map(|p| p.to_string()).collect();
    assert_eq!(pids, workers);
    assert_eq!(
        value("push_stream_worker_subscribers", &[("mode", "streaming")]),
        1.0
    );
    assert_eq!(
        value("push_stream_worker_subscribers", &[("mode", "eventsource")]),
        1.0
    );
    assert_eq!(
        value("push_stream_worker_messages_delivered_total", &[]),
        6.0
    );
    assert!(value("push_stream_worker_bytes_sent_total", &[]) >= 6.0);
    assert!(
        scrape.docs.contains_key("push_stream_subscribers"),
        "HELP lines are there"
    );
    // The publish-to-write latency histogram: each worker with a subscriber recorded the 3
    // messages once.
    let hist: Vec<&prometheus_parse::Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "push_stream_delivery_latency_seconds")
        .collect();
    assert_eq!(hist.len(), 2, "one histogram per worker");
    let count: u64 = hist
        .iter()
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                let inf = buckets
                    .iter()
                    .find(|b| b.less_than == f64::INFINITY)
                    .unwrap()
                    .count as u64;
                let fast = buckets.iter().find(|b| b.less_than == 1.0).unwrap().count as u64;
                assert_eq!(
                    fast, inf,
                    "on loopback every message is written within a second"
                );
                inf
            }
            other => panic!("not a histogram: {other:?}"),
        })
        .sum();
    assert!((3..=6).contains(&count), "{count} latency observations");
    // How long each worker held the zone's lock: every store operation is counted (both
    // workers registered, subscribed and were scraped, so each has some), and the longest
    // hold is far below a second on an idle host.
    let holds: Vec<&prometheus_parse::Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "push_stream_zone_lock_hold_seconds")
        .collect();
    assert_eq!(holds.len(), 2, "one lock-hold histogram per worker");
    for h in &holds {
        match &h.value {
            prometheus_parse::Value::Histogram(buckets) => {
                let inf = buckets
                    .iter()
                    .find(|b| b.less_than == f64::INFINITY)
                    .unwrap()
                    .count;
                assert!(inf >= 2.0, "{h:?}");
            }
            other => panic!("not a histogram: {other:?}"),
        }
    }
    let longest = value("push_stream_zone_lock_hold_max_seconds", &[]);
    assert!(longest > 0.0 && longest < 1.0, "{longest}");
    assert_eq!(value("push_stream_store_recoveries_total", &[]), 0.0);
    assert_eq!(request(n.port, "POST", "/metrics", &[], b"x").status, 405);
    drop(e);
    n.stop();
}
