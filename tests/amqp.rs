//! RabbitMQ inside nginx: each worker consumes a RabbitMQ stream itself; HTTP publishing goes
//! through it; nothing is lost or duplicated across broker outages, reloads and a killed
//! worker. Needs RabbitMQ on 127.0.0.1:5672 (guest/guest); ci/test starts it when missing.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};

static N: AtomicUsize = AtomicUsize::new(0);

fn unique_stream() -> String {
    format!(
        "ps-test-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        Instant::now().elapsed().as_nanos()
    )
}

fn conf(url: &str, stream: &str) -> String {
    format!(
        r#"
    push_stream_shared_memory_size 32m;
    push_stream_amqp_url {url};
    push_stream_amqp_stream {stream};
    push_stream_amqp_confirm_timeout 3s;
    server {{
        listen 127.0.0.1:{{PORT}} reuseport;
        location /pub {{ push_stream_publisher admin; push_stream_channels_path $arg_id; }}
        location /stats {{ push_stream_channels_statistics; push_stream_channels_path $arg_id; }}
        location ~ /ev/(.*) {{ push_stream_subscriber eventsource; push_stream_channels_path $1; }}
        location ~ /ws/(.*) {{ push_stream_subscriber websocket; push_stream_channels_path $1; }}
        location ~ /lp/(.*) {{ push_stream_subscriber long-polling; push_stream_channels_path $1; push_stream_message_template "~id~:~text~"; }}
    }}"#
    )
}

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn start(url: &str, stream: &str, workers: usize) -> Nginx {
    assert!(
        rabbitmq_up(),
        "RabbitMQ must answer on 127.0.0.1:5672 (ci/test starts it)"
    );
    Nginx::start_with(
        &conf(url, stream),
        Options {
            workers,
            ..Default::default()
        },
    )
}

/// Waits until `count` "amqp: connected" lines are in the log (one per worker start).
fn wait_connected(n: &Nginx, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while n
        .error_log()
        .matches("push_stream: amqp: connected")
        .count()
        < count
    {
        assert!(
            Instant::now() < deadline,
            "bridges did not connect:\n{}",
            n.error_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An outside AMQP publisher (not nginx): publishes to the stream's queue.
struct Outside {
    rt: tokio::runtime::Runtime,
    ch: lapin::Channel,
    stream: String,
}

impl Outside {
    fn new(stream: &str) -> Outside {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ch = rt.block_on(async {
            let conn = Connection::connect_with_runtime(
                URL,
                ConnectionProperties::default(),
                async_rs::Runtime::tokio_current(),
            )
            .await
            .unwrap();
            let ch = conn.create_channel().await.unwrap();
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from(b"stream".to_vec())),
            );
            ch.queue_declare(
                stream.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .unwrap();
            // Confirms: publish() returns once RabbitMQ has the message.
            ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await
                .unwrap();
            std::mem::forget(conn);
            ch
        });
        Outside {
            rt,
            ch,
            stream: stream.to_string(),
        }
    }

    fn publish(&self, channel: &str, body: &str) {
        let mut h = FieldTable::default();
        h.insert(
            "channel".into(),
            AMQPValue::LongString(LongString::from(channel.as_bytes().to_vec())),
        );
        let confirmation = self.rt.block_on(async {
            self.ch
                .basic_publish(
                    "".into(),
                    self.stream.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_headers(h),
                )
                .await
                .unwrap()
                .await
                .unwrap()
        });
        assert!(
            confirmation.is_ack(),
            "RabbitMQ refused a test message: {confirmation:?}"
        );
    }
}

/// An EventSource client that parses events and reconnects with Last-Event-Id.
struct Es {
    port: u16,
    path: String,
    stream: Stream,
    buf: String,
    pub last_id: Option<String>,
    pub got: Vec<(String, String)>,
    pub pid: u32,
}

impl Es {
    fn open(port: u16, path: &str, last_id: Option<String>) -> Es {
        let h = last_id.as_ref().map(|id| format!("Last-Event-Id: {id}"));
        let hs: Vec<&str> = h.iter().map(|s| s.as_str()).collect();
        let stream = Stream::open(port, path, &hs);
        assert_eq!(stream.status, 200);
        let pid = stream.header("X-Worker-Pid").unwrap().parse().unwrap();
        Es {
            port,
            path: path.into(),
            stream,
            buf: String::new(),
            last_id,
            got: vec![],
            pid,
        }
    }

    /// Reads until `n` events arrived in total; reconnects (with Last-Event-Id) when the
    /// server ends the stream.
    fn read_events(&mut self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.got.len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} events",
                self.got.len()
            );
            match self.stream.try_next_chunk() {
                Some(c) => self.buf.push_str(&String::from_utf8_lossy(&c)),
                None => {
                    *self = Es {
                        got: std::mem::take(&mut self.got),
                        ..Es::open(self.port, &self.path, self.last_id.clone())
                    };
                    continue;
                }
            }
            while let Some(i) = self.buf.find("\n\n") {
                let ev: String = self.buf[..i].to_string();
                self.buf.drain(..i + 2);
                let mut id = None;
                let mut data = String::new();
                for line in ev.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if let Some(id) = id {
                    self.last_id = Some(id.clone());
                    self.got.push((id, data));
                }
            }
        }
    }
}

/// EventSource subscribers until every worker serves one.
fn es_per_worker(n: &Nginx, path: &str) -> Vec<Es> {
    let mut by: HashMap<u32, Es> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while by.len() < n.workers {
        assert!(Instant::now() < deadline);
        let mut e = Es::open(n.port, path, None);
        assert_eq!(e.stream.next_chunk().unwrap(), b": \n".to_vec());
        by.entry(e.pid).or_insert(e);
    }
    by.into_values().collect()
}

fn texts(es: &Es) -> Vec<String> {
    es.got.iter().map(|(_, d)| d.clone()).collect()
}

#[test]
fn stream_messages_reach_every_worker_of_two_instances_with_the_same_ids() {
    let stream = unique_stream();
    let out = Outside::new(&stream);
    let a = start(URL, &stream, 2);
    let b = start(URL, &stream, 2);
    wait_connected(&a, 2);
    wait_connected(&b, 2);
    let mut subs = es_per_worker(&a, "/ev/news");
    subs.extend(es_per_worker(&b, "/ev/news"));
    let mut wss = vec![
        Ws::connect(a.port, "/ws/news"),
        Ws::connect(b.port, "/ws/news"),
    ];
    let (pa, pb) = (a.port, b.port);
    let lps = [pa, pb].map(|p| std::thread::spawn(move || get(p, "/lp/news")));
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..20 {
        out.publish("news", &format!("m{i}"));
    }
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let mut ids: Option<Vec<String>> = None;
    for s in subs.iter_mut() {
        s.read_events(20, Duration::from_secs(20));
        assert_eq!(texts(s), expected, "worker {}", s.pid);
        let these: Vec<String> = s.got.iter().map(|(id, _)| id.clone()).collect();
        assert!(
            these.iter().all(|id| id.parse::<u64>().is_ok()),
            "ids are stream offsets: {these:?}"
        );
        match &ids {
            None => ids = Some(these),
            Some(first) => assert_eq!(&these, first, "the same ids on every worker and instance"),
        }
    }
    for ws in wss.iter_mut() {
        for i in 0..20 {
            assert_eq!(ws.read_text().unwrap(), format!("m{i}").into_bytes());
        }
    }
    let first_id = ids.unwrap()[0].clone();
    for lp in lps {
        let r = lp.join().unwrap();
        assert_eq!((r.status, r.text()), (200, format!("{first_id}:m0")));
    }
    // The store has them too (first worker to see an offset stored it).
    let v: serde_json::Value = serde_json::from_slice(&get(a.port, "/pub?id=news").body).unwrap();
    assert_eq!(v["stored_messages"], 20);
    a.stop();
    b.stop();
}

#[test]
fn an_http_publish_on_one_instance_reaches_the_other_through_rabbitmq() {
    let stream = unique_stream();
    let _out = Outside::new(&stream);
    let a = start(URL, &stream, 2);
    let b = start(URL, &stream, 2);
    wait_connected(&a, 2);
    wait_connected(&b, 2);
    let mut on_b = es_per_worker(&b, "/ev/x");
    let r = request(
        a.port,
        "POST",
        "/pub?id=x",
        &["Event-Type: greeting"],
        b"hello from A",
    );
    assert_eq!(r.status, 200, "{r:?}");
    for s in on_b.iter_mut() {
        s.read_events(1, Duration::from_secs(10));
        assert_eq!(texts(s), vec!["hello from A".to_string()]);
    }
    a.stop();
    b.stop();
}

#[test]
fn a_broker_down_at_start_answers_503_then_connects_and_an_outage_loses_nothing() {
    let stream = unique_stream();
    let out = Outside::new(&stream);
    let proxy = Proxy::start(5672, false);
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    let mut n = start(&url, &stream, 2);
    n.allowed.push("amqp".into());
    // Host-only requests are served meanwhile; publishing through the broker is refused.
    assert_eq!(get(n.port, "/stats").status, 200);
    let r = request(n.port, "POST", "/pub?id=o", &[], b"x");
    assert_eq!(
        (r.status, r.header("X-Nginx-PushStream-Explain")),
        (503, Some("RabbitMQ is unavailable."))
    );
    proxy.up();
    wait_connected(&n, 2);
    let mut subs = es_per_worker(&n, "/ev/o");
    const TOTAL: usize = 300;
    let publisher = std::thread::spawn(move || {
        for i in 0..TOTAL {
            out.publish("o", &format!("n{i}"));
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    std::thread::sleep(Duration::from_millis(400));
    proxy.down();
    std::thread::sleep(Duration::from_millis(1500));
    proxy.up();
    publisher.join().unwrap();
    let expected: Vec<String> = (0..TOTAL).map(|i| format!("n{i}")).collect();
    for s in subs.iter_mut() {
        s.read_events(TOTAL, Duration::from_secs(60));
        assert_eq!(
            texts(s),
            expected,
            "published {TOTAL}, worker {} got a different sequence",
            s.pid
        );
    }
    assert!(
        n.error_log().contains("broker unavailable"),
        "the outage was logged"
    );
    n.stop();
}

#[test]
fn a_reload_during_a_run_loses_nothing_for_clients_that_resume_with_last_event_id() {
    let stream = unique_stream();
    let out = Outside::new(&stream);
    let mut n = start(URL, &stream, 2);
    wait_connected(&n, 2);
    let mut subs = es_per_worker(&n, "/ev/r");
    const TOTAL: usize = 300;
    let publisher = std::thread::spawn(move || {
        for i in 0..TOTAL {
            out.publish("r", &format!("r{i}"));
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let old = n.reload();
    n.wait_gone(&old, Duration::from_secs(3));
    publisher.join().unwrap();
    let expected: Vec<String> = (0..TOTAL).map(|i| format!("r{i}")).collect();
    for s in subs.iter_mut() {
        s.read_events(TOTAL, Duration::from_secs(60));
        assert_eq!(texts(s), expected);
    }
    n.stop();
}

#[test]
fn a_killed_worker_costs_nothing_to_the_others_and_its_clients_resume() {
    let stream = unique_stream();
    let out = Outside::new(&stream);
    let mut n = start(URL, &stream, 2);
    n.allowed.push("exited on signal 9".into());
    // A worker killed while holding the zone's mutex: nginx's master releases it and says so.
    n.allowed.push("was locked by".into());
    wait_connected(&n, 2);
    let mut subs = es_per_worker(&n, "/ev/k");
    const TOTAL: usize = 300;
    let publisher = std::thread::spawn(move || {
        for i in 0..TOTAL {
            out.publish("k", &format!("k{i}"));
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let victim = subs[0].pid;
    // SAFETY: a worker of the nginx this test started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    publisher.join().unwrap();
    let expected: Vec<String> = (0..TOTAL).map(|i| format!("k{i}")).collect();
    for s in subs.iter_mut() {
        s.read_events(TOTAL, Duration::from_secs(60));
        assert_eq!(texts(s), expected, "subscriber first on worker {}", s.pid);
    }
    n.stop();
}

#[test]
fn a_worker_stops_at_once_while_its_bridge_waits_on_a_silent_broker() {
    // A "broker" that accepts connections and never answers: the AMQP handshake hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = vec![];
        silent.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            if let Ok((c, _)) = silent.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        conns.len()
    });
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let n = start(&url, &unique_stream(), 2);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    // The log check in stop() fails on "did not stop within 3s" or "open socket ... left".
    n.stop();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stopping took {:?}",
        t.elapsed()
    );
    assert!(held.join().unwrap() >= 1, "the bridges did try to connect");
}
