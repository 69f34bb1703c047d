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
                "{{\"pid\": {pid}, \"bridge\": {bridge}, \"ticks\": {ticks}, \"last_tick\": {last}, \"dropped\": {dropped}, \"held\": {held}}}\n"
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
