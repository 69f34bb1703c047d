//! Content handlers: the entry points nginx calls for requests to our locations.

use nginx_sys::{ngx_http_request_t, ngx_int_t, NGX_HTTP_INTERNAL_SERVER_ERROR};
use ngx::http::HttpModuleLocationConf;

use crate::glue::conf::LocationRole;
use crate::glue::guard::guard;
use crate::glue::http::Req;
use crate::Module;

/// The content handler of every location the module serves.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    let req = Req::from_raw(r);
    guard(
        req.log(),
        "content handler",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        || {
            let Some(lcf) = Module::location_conf(&*r) else {
                return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
            };
            match lcf.role {
                #[cfg(feature = "test-hooks")]
                Some(LocationRole::TestHook(hook)) => test_hooks::handle(req, hook),
                #[allow(unreachable_patterns)]
                _ => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
            }
        },
    )
}

#[cfg(feature = "test-hooks")]
mod test_hooks {
    use super::*;
    use crate::glue::conf::TestHook;
    use crate::glue::worker;

    pub fn handle(req: Req, hook: TestHook) -> ngx_int_t {
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
                    worker::bridge_running(),
                    worker::inbox_dropped(),
                    worker::held_count(),
                );
                let (ticks, last) = worker::with(|w| (w.ticks, w.last_tick)).unwrap_or((0, 0));
                let body = format!(
                    "{{\"pid\": {pid}, \"bridge\": {bridge}, \"ticks\": {ticks}, \"last_tick\": {last}, \"dropped\": {dropped}, \"held\": {held}}}\n"
                );
                req.respond(200, Some(b"application/json"), &[], body.as_bytes())
            }
            TestHook::Hold => {
                req.set_status(200);
                if !req.set_content_type(Some(b"text/plain")) {
                    return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
                }
                req.set_content_length(None);
                let rc = req.send_header();
                if rc == nginx_sys::NGX_ERROR as ngx_int_t || rc > nginx_sys::NGX_OK as ngx_int_t {
                    return rc;
                }
                let rc = req.send_bytes(format!("held {pid}\n").as_bytes(), true, false);
                if rc == nginx_sys::NGX_ERROR as ngx_int_t {
                    return rc;
                }
                worker::hold(req, b"bye\n".to_vec(), Some(worker::held_write_handler))
            }
        }
    }
}
