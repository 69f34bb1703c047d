//! Prometheus text exposition (format 0.0.4) of the module's state.

use std::fmt::Write;

/// A per-worker metric family: name, type, help, and how to read it off `T`.
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> u64);

/// Host-wide figures (from the shared zone).
#[derive(Clone, Debug, Default)]
pub struct Host {
    /// The host's counters (its `created` is not shown: `uptime` is).
    pub counters: crate::store::Counters,
    pub shared_memory_used: u64,
    pub shared_memory_limit: u64,
    pub uptime: u64,
    /// Times the store was rebuilt after a worker died (or panicked) in the middle of a change.
    pub store_recoveries: u64,
}

/// Upper bounds (seconds) of the delivery-latency histogram's buckets (+Inf is implied).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Which bucket (index into LATENCY_BUCKETS, or its length for +Inf) a latency falls in.
pub fn latency_bucket(ms: i64) -> usize {
    let s = ms.max(0) as f64 / 1000.0;
    LATENCY_BUCKETS
        .iter()
        .position(|b| s <= *b)
        .unwrap_or(LATENCY_BUCKETS.len())
}

/// Upper bounds (seconds) of the zone lock-hold histogram's buckets (+Inf is implied).
pub const LOCK_HOLD_BUCKETS: [f64; 6] = [0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0];

/// Which bucket (index into LOCK_HOLD_BUCKETS, or its length for +Inf) a hold of `ns` falls in.
pub fn lock_hold_bucket(ns: u64) -> usize {
    let s = ns as f64 / 1e9;
    LOCK_HOLD_BUCKETS
        .iter()
        .position(|b| s <= *b)
        .unwrap_or(LOCK_HOLD_BUCKETS.len())
}

/// One worker's figures.
#[derive(Clone, Debug, Default)]
pub struct Worker {
    pub pid: u64,
    /// Subscribers by mode: streaming, eventsource, long-polling, websocket.
    pub subscribers: [u64; 4],
    pub delivered: u64,
    pub bytes: u64,
    pub slow_closed: u64,
    /// Subscribers detached from their requests now.
    pub detached: u64,
    pub lost: u64,
    /// Publish-to-write latency of the messages this worker wrote: per-bucket counts (not
    /// cumulative; the last is +Inf), their sum in milliseconds.
    pub latency_buckets: [u64; 13],
    pub latency_sum_ms: u64,
    /// How long this worker held the shared zone's lock per store operation: per-bucket
    /// counts (the last is +Inf), their sum and the longest, in nanoseconds.
    pub lock_hold_buckets: [u64; 7],
    pub lock_hold_sum_ns: u64,
    pub lock_hold_max_ns: u64,
    /// None when the worker has no RabbitMQ bridge.
    pub amqp: Option<Amqp>,
}

#[derive(Clone, Debug, Default)]
pub struct Amqp {
    pub connected: bool,
    pub messages_in: u64,
    pub messages_out: u64,
    pub reconnects: u64,
    pub inbox_depth: u64,
}

pub const MODES: [&str; 4] = ["streaming", "eventsource", "long-polling", "websocket"];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One worker's series of a histogram: cumulative buckets (`counts` per bucket, the last is
/// +Inf), sum and count.
fn histogram(o: &mut String, name: &str, pid: u64, bounds: &[f64], counts: &[u64], sum: f64) {
    let mut cumulative = 0;
    for (i, n) in counts.iter().enumerate() {
        cumulative += n;
        let le = bounds
            .get(i)
            .map(|b| b.to_string())
            .unwrap_or_else(|| "+Inf".into());
        let _ = writeln!(o, "{name}_bucket{{pid=\"{pid}\",le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(o, "{name}_sum{{pid=\"{pid}\"}} {sum}");
    let _ = writeln!(o, "{name}_count{{pid=\"{pid}\"}} {cumulative}");
}

/// Renders every metric; worker series carry a `pid` label.
pub fn render(h: &Host, workers: &[Worker]) -> String {
    let mut o = String::new();
    family(
        &mut o,
        "push_stream_channels",
        "gauge",
        "Live channels (the events channel included), by kind.",
    );
    let _ = writeln!(
        o,
        "push_stream_channels{{kind=\"normal\"}} {}",
        h.counters.channels
    );
    let _ = writeln!(
        o,
        "push_stream_channels{{kind=\"wildcard\"}} {}",
        h.counters.wildcard_channels
    );
    let host: [(&str, &str, &str, u64); 10] = [
        (
            "push_stream_messages_published_total",
            "counter",
            "Messages published since the zone was created (one per channel).",
            h.counters.published_messages,
        ),
        (
            "push_stream_messages_stored",
            "gauge",
            "Messages currently stored.",
            h.counters.stored_messages,
        ),
        (
            "push_stream_messages_in_trash",
            "gauge",
            "Removed messages not yet freed.",
            h.counters.messages_in_trash,
        ),
        (
            "push_stream_channels_in_delete",
            "gauge",
            "Deleted channels whose subscribers are still being told.",
            h.counters.channels_in_delete,
        ),
        (
            "push_stream_channels_in_trash",
            "gauge",
            "Removed channels not yet freed.",
            h.counters.channels_in_trash,
        ),
        (
            "push_stream_subscribers",
            "gauge",
            "Subscriber connections on every worker.",
            h.counters.subscribers,
        ),
        (
            "push_stream_shared_memory_used_bytes",
            "gauge",
            "Bytes of the shared zone in use.",
            h.shared_memory_used,
        ),
        (
            "push_stream_shared_memory_limit_bytes",
            "gauge",
            "Size of the shared zone.",
            h.shared_memory_limit,
        ),
        (
            "push_stream_uptime_seconds",
            "gauge",
            "Seconds since the shared zone was created (survives reloads).",
            h.uptime,
        ),
        (
            "push_stream_store_recoveries_total",
            "counter",
            "Times the shared store was rebuilt because a worker died (or a change panicked) in the middle of changing it.",
            h.store_recoveries,
        ),
    ];
    for (name, kind, help, v) in host {
        family(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {v}");
    }
    family(
        &mut o,
        "push_stream_worker_subscribers",
        "gauge",
        "Subscribers held by a worker, by mode.",
    );
    for w in workers {
        for (i, m) in MODES.iter().enumerate() {
            let _ = writeln!(
                o,
                "push_stream_worker_subscribers{{pid=\"{}\",mode=\"{m}\"}} {}",
                w.pid, w.subscribers[i]
            );
        }
    }
    let per: [Family<Worker>; 5] = [
        (
            "push_stream_worker_messages_delivered_total",
            "counter",
            "Messages written to subscribers.",
            |w| w.delivered,
        ),
        (
            "push_stream_worker_bytes_sent_total",
            "counter",
            "Message bytes written to subscribers.",
            |w| w.bytes,
        ),
        (
            "push_stream_worker_slow_subscribers_closed_total",
            "counter",
            "Subscribers closed because they stopped reading.",
            |w| w.slow_closed,
        ),
        (
            "push_stream_worker_subscribers_detached",
            "gauge",
            "Subscribers held without their request (push_stream_detached_subscribers).",
            |w| w.detached,
        ),
        (
            "push_stream_worker_messages_lost_total",
            "counter",
            "Messages that left the store before this worker could deliver them.",
            |w| w.lost,
        ),
    ];
    for (name, kind, help, get) in per {
        family(&mut o, name, kind, help);
        for w in workers {
            let _ = writeln!(o, "{name}{{pid=\"{}\"}} {}", w.pid, get(w));
        }
    }
    family(&mut o, "push_stream_delivery_latency_seconds", "histogram", "From publish to the write to this worker's subscribers (messages published over HTTP on this host).");
    for w in workers {
        histogram(
            &mut o,
            "push_stream_delivery_latency_seconds",
            w.pid,
            &LATENCY_BUCKETS,
            &w.latency_buckets,
            w.latency_sum_ms as f64 / 1000.0,
        );
    }
    family(
        &mut o,
        "push_stream_zone_lock_hold_seconds",
        "histogram",
        "How long this worker held the shared zone's lock per store operation.",
    );
    for w in workers {
        histogram(
            &mut o,
            "push_stream_zone_lock_hold_seconds",
            w.pid,
            &LOCK_HOLD_BUCKETS,
            &w.lock_hold_buckets,
            w.lock_hold_sum_ns as f64 / 1e9,
        );
    }
    family(
        &mut o,
        "push_stream_zone_lock_hold_max_seconds",
        "gauge",
        "The longest this worker held the shared zone's lock for one store operation.",
    );
    for w in workers {
        let _ = writeln!(
            o,
            "push_stream_zone_lock_hold_max_seconds{{pid=\"{}\"}} {}",
            w.pid,
            w.lock_hold_max_ns as f64 / 1e9
        );
    }
    if workers.iter().any(|w| w.amqp.is_some()) {
        let amqp: [Family<Amqp>; 5] = [
            (
                "push_stream_worker_amqp_connected",
                "gauge",
                "1 when the worker's RabbitMQ connection is up.",
                |a| a.connected as u64,
            ),
            (
                "push_stream_worker_amqp_messages_consumed_total",
                "counter",
                "Messages consumed from RabbitMQ.",
                |a| a.messages_in,
            ),
            (
                "push_stream_worker_amqp_messages_published_total",
                "counter",
                "HTTP publishes confirmed by RabbitMQ.",
                |a| a.messages_out,
            ),
            (
                "push_stream_worker_amqp_reconnects_total",
                "counter",
                "RabbitMQ connection attempts that failed or connections lost.",
                |a| a.reconnects,
            ),
            (
                "push_stream_worker_inbox_depth",
                "gauge",
                "Items waiting in the worker's inbox.",
                |a| a.inbox_depth,
            ),
        ];
        for (name, kind, help, get) in amqp {
            family(&mut o, name, kind, help);
            for w in workers {
                if let Some(a) = &w.amqp {
                    let _ = writeln!(o, "{name}{{pid=\"{}\"}} {}", w.pid, get(a));
                }
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_and_samples_are_well_formed() {
        let w = Worker {
            pid: 42,
            subscribers: [1, 2, 3, 4],
            delivered: 9,
            amqp: Some(Amqp {
                connected: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render(
            &Host {
                counters: crate::store::Counters {
                    channels: 3,
                    ..Default::default()
                },
                shared_memory_limit: 1024,
                ..Default::default()
            },
            &[w],
        );
        let mut families = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families += 1;
                let kind = rest.split(' ').nth(1).unwrap();
                assert!(kind == "gauge" || kind == "counter" || kind == "histogram");
                if kind == "counter" {
                    assert!(
                        rest.split(' ').next().unwrap().ends_with("_total"),
                        "{line}"
                    );
                }
            } else if !line.starts_with('#') {
                let (name, value) = line.rsplit_once(' ').unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
                assert!(name.starts_with("push_stream_"), "{line}");
            }
        }
        assert_eq!(families, 1 + 10 + 1 + 5 + 1 + 2 + 5);
        assert!(text.contains("push_stream_worker_subscribers{pid=\"42\",mode=\"websocket\"} 4\n"));
        assert!(text.contains("push_stream_channels{kind=\"normal\"} 3\n"));
        assert!(text.contains("push_stream_worker_amqp_connected{pid=\"42\"} 1\n"));
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 0);
        assert_eq!(latency_bucket(2), 1);
        assert_eq!(latency_bucket(7_000), 12);
        let mut lw = Worker {
            pid: 7,
            ..Default::default()
        };
        lw.latency_buckets[0] = 2;
        lw.latency_buckets[12] = 1;
        lw.latency_sum_ms = 6003;
        let t = render(&Host::default(), &[lw]);
        assert!(
            t.contains("push_stream_delivery_latency_seconds_bucket{pid=\"7\",le=\"0.001\"} 2\n")
        );
        assert!(t.contains("push_stream_delivery_latency_seconds_bucket{pid=\"7\",le=\"5\"} 2\n"));
        assert!(
            t.contains("push_stream_delivery_latency_seconds_bucket{pid=\"7\",le=\"+Inf\"} 3\n")
        );
        assert!(t.contains("push_stream_delivery_latency_seconds_count{pid=\"7\"} 3\n"));
        assert!(t.contains("push_stream_delivery_latency_seconds_sum{pid=\"7\"} 6.003\n"));
        assert_eq!(lock_hold_bucket(0), 0);
        assert_eq!(lock_hold_bucket(10_000), 0);
        assert_eq!(lock_hold_bucket(10_001), 1);
        assert_eq!(lock_hold_bucket(5_000_000_000), 6);
        let mut hw = Worker {
            pid: 8,
            ..Default::default()
        };
        hw.lock_hold_buckets[1] = 3;
        hw.lock_hold_buckets[6] = 1;
        hw.lock_hold_sum_ns = 2_000_150_000;
        hw.lock_hold_max_ns = 2_000_000_000;
        let t = render(
            &Host {
                store_recoveries: 2,
                ..Default::default()
            },
            &[hw],
        );
        assert!(
            t.contains("push_stream_zone_lock_hold_seconds_bucket{pid=\"8\",le=\"0.00001\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("push_stream_zone_lock_hold_seconds_bucket{pid=\"8\",le=\"0.0001\"} 3\n")
        );
        assert!(t.contains("push_stream_zone_lock_hold_seconds_bucket{pid=\"8\",le=\"+Inf\"} 4\n"));
        assert!(t.contains("push_stream_zone_lock_hold_seconds_sum{pid=\"8\"} 2.00015\n"));
        assert!(t.contains("push_stream_zone_lock_hold_max_seconds{pid=\"8\"} 2\n"));
        assert!(t.contains("push_stream_store_recoveries_total 2\n"));
        let no_amqp = render(&Host::default(), &[Worker::default()]);
        assert!(!no_amqp.contains("amqp"));
    }
}
