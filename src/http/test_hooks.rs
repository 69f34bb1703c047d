//! Test-only handlers (feature `test-hooks`, never in the shipped module): a plain answer
//! with the serving pid, a panic, a held request, the inbox counters.

use crate::conf::TestHook;
use crate::delivery::{self, Mode, Sub};
use crate::ngx::held::Sent;
use crate::ngx::request::Request;
use crate::ngx::Status;
use crate::rabbitmq::thread;
use crate::Module;

pub fn handle(req: Request<'_>, hook: TestHook) -> Status {
    let pid = std::process::id();
    match hook {
        TestHook::DieInLock => die_in_lock(req),
        TestHook::Ok => req.respond(
            200,
            Some(b"text/plain"),
            &[],
            format!("ok {pid}\n").as_bytes(),
        ),
        TestHook::Panic => panic!("test hook panic (pid {pid})"),
        TestHook::Inbox => {
            let (bridge, dropped, held) = (
                thread::running(),
                thread::inbox_dropped(),
                crate::ngx::held::count(),
            );
            let (ticks, last) = delivery::with(|w| (w.ticks, w.last_tick)).unwrap_or((0, 0));
            let body = format!(
                "{{\"pid\": {pid}, \"bridge\": {bridge}, \"ticks\": {ticks}, \"last_tick\": {last}, \"dropped\": {dropped}, \"held\": {held}, \"detached\": {}, \"detached_total\": {}}}\n",
                crate::ngx::held::detached().1,
                crate::ngx::held::detached().0
            );
            req.respond(200, Some(b"application/json"), &[], body.as_bytes())
        }
        TestHook::PauseInbox => {
            let ms = push_stream_core::query::arg(req.args(), b"ms")
                .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(1000);
            crate::rabbitmq::pause_inbox(ms);
            req.respond(
                200,
                Some(b"text/plain"),
                &[],
                format!("paused {ms}\n").as_bytes(),
            )
        }
        TestHook::Hold => {
            req.set_status(200);
            if !req.set_content_type(Some(b"text/plain")) {
                return Status::INTERNAL_SERVER_ERROR;
            }
            req.set_content_length(None);
            let rc = req.send_header();
            if rc.failed() {
                return rc;
            }
            let h = match req.hold::<Module>(false) {
                Ok(h) => h,
                Err(rc) => return rc,
            };
            delivery::hold(Sub::new(
                h,
                vec![],
                None,
                b"bye\n".to_vec(),
                0,
                Mode::Stream,
            ));
            if h.send_first(&[format!("held {pid}\n").as_bytes()]) == Sent::Failed {
                h.close(Status::ERROR);
            }
            Status::DONE
        }
    }
}

/// `?kind=publish|subscribe|delete|cleanup|scribble|panic`: half of a store change under the
/// zone's lock, then this worker dies holding it (or, for `panic`, the change panics). The
/// next locker must rebuild the store. `?kind=slow` (through `Zone::with_store`) and
/// `?kind=slow-commit` (through `delivery::commit`) hold the lock 150 ms and answer 200 (the
/// slow-hold log line and metrics).
fn die_in_lock(req: Request<'_>) -> Status {
    let Some(zone) = req.main_conf::<Module>().and_then(|m| m.zone()) else {
        return Status::INTERNAL_SERVER_ERROR;
    };
    let kind = push_stream_core::query::arg(req.args(), b"kind").unwrap_or_default();
    let limits = delivery::with(|w| w.limits);
    let Some(limits) = limits else {
        return Status::INTERNAL_SERVER_ERROR;
    };
    let now = crate::ngx::event::now();
    let slot = delivery::slot();
    match &kind[..] {
        b"panic" => {
            zone.with_store(|s| {
                let _ = s.publish(b"half", b"first half", None, None, true, now, limits);
                panic!("test hook: panic inside a store change");
            });
            Status::INTERNAL_SERVER_ERROR
        }
        b"publish" => zone.die_inside(false, |s| {
            // The first channel of a two-channel publish.
            let _ = s.publish(b"half", b"first half", None, None, true, now, limits);
        }),
        b"subscribe" => zone.die_inside(false, |s| {
            let _ = s.add_subscriber(b"half", slot, now, limits);
        }),
        b"delete" => zone.die_inside(false, |s| {
            let _ = s.delete(b"keep", b"", now, limits);
        }),
        b"cleanup" => zone.die_inside(false, |s| {
            let _ = s.gc(now + 3600, limits, &|_| false);
        }),
        b"slow" => {
            zone.with_store(|_| std::thread::sleep(std::time::Duration::from_millis(150)));
            req.respond(200, Some(b"text/plain"), &[], b"held\n")
        }
        b"slow-commit" => {
            delivery::commit(zone, |_| {
                std::thread::sleep(std::time::Duration::from_millis(150))
            });
            req.respond(200, Some(b"text/plain"), &[], b"held\n")
        }
        b"scribble" => zone.die_inside(true, |s| {
            let _ = s.publish(b"half", b"first half", None, None, true, now, limits);
        }),
        _ => req.respond(
            400,
            Some(b"text/plain"),
            &[],
            b"kind: publish, subscribe, delete, cleanup, scribble, panic, slow or slow-commit\n",
        ),
    }
}
