//! `push_stream_metrics`: Prometheus text exposition of the host and of every worker (each
//! worker copies its counters into its slot of the zone; any worker renders them all).

use std::sync::atomic::Ordering::Relaxed;

use push_stream_core::metrics::{self, Amqp, Host, Worker};

use super::{no_cache, ERR500, GET};
use crate::conf::MainConf;
use crate::ngx::event;
use crate::ngx::request::Request;
use crate::ngx::Status;

pub fn handle(req: &Request<'_>, mcf: &MainConf) -> Status {
    no_cache(req);
    if req.method() != GET {
        return req.respond(405, None, &[("Allow", b"GET")], b"");
    }
    crate::delivery::publish_slot_stats();
    crate::rabbitmq::publish_slot_stats(mcf);
    let Some(zone) = mcf.zone() else {
        return ERR500;
    };
    let Some(c) = zone.with_store(|s| s.counters()) else {
        return ERR500;
    };
    let (used, size) = zone.memory();
    let now = event::now();
    let host = Host {
        counters: c,
        shared_memory_used: used,
        shared_memory_limit: size,
        uptime: (now - c.created).max(0) as u64,
        store_recoveries: zone.recoveries().0,
    };
    let amqp = crate::rabbitmq::configured(mcf);
    let workers: Vec<Worker> = zone
        .all_slot_stats()
        .iter()
        .filter(|s| {
            let pid = s.pid.load(Relaxed);
            pid != 0 && event::pid_alive(pid as u32)
        })
        .map(|s| Worker {
            pid: s.pid.load(Relaxed),
            subscribers: std::array::from_fn(|i| s.subscribers[i].load(Relaxed)),
            delivered: s.delivered.load(Relaxed),
            bytes: s.bytes.load(Relaxed),
            slow_closed: s.slow_closed.load(Relaxed),
            detached: s.detached.load(Relaxed),
            lost: s.lost.load(Relaxed),
            latency_buckets: std::array::from_fn(|i| s.latency[i].load(Relaxed)),
            latency_sum_ms: s.latency_sum_ms.load(Relaxed),
            lock_hold_buckets: std::array::from_fn(|i| s.lock_hold[i].load(Relaxed)),
            lock_hold_sum_ns: s.lock_hold_sum_ns.load(Relaxed),
            lock_hold_max_ns: s.lock_hold_max_ns.load(Relaxed),
            amqp: amqp.then(|| Amqp {
                connected: s.amqp_connected.load(Relaxed) != 0,
                messages_in: s.amqp_in.load(Relaxed),
                messages_out: s.amqp_out.load(Relaxed),
                reconnects: s.amqp_reconnects.load(Relaxed),
                inbox_depth: s.inbox_depth.load(Relaxed),
            }),
        })
        .collect();
    let body = metrics::render(&host, &workers);
    req.respond(
        200,
        Some(b"text/plain; version=0.0.4; charset=utf-8"),
        &[],
        body.as_bytes(),
    )
}
