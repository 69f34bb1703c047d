//! Publishes handed to the broker, answered on its confirm: an HTTP publisher's request is
//! held until then (with a timer: 504 if no answer comes in time); a WebSocket publisher
//! whose message the broker did not take is told with a close frame.
//!
//! Read-your-writes (stream source): a confirmed publish is answered only once this host's
//! store has consumed it back (the consumer recognises the worker's own message-id and
//! raises that worker's mark in the zone), so a `DELETE`, a channel-info `GET`, a backtrack
//! or a long-poll sent after the `200` to any worker of this nginx finds the message. The
//! wait is bounded by the same timer: past it the publish is answered `200` anyway (it is
//! in the broker) with a `warn` line.

use super::client::{PublishError, PublishReq};
use super::with;
use crate::conf::MainConf;
use crate::ngx::held::HeldRef;
use crate::ngx::request::Request;
use crate::ngx::{Status, Timer};
use crate::ngx_log;

/// Who waits for a publish's confirm.
#[derive(Clone, Copy)]
pub enum Publisher {
    /// An HTTP POST/PUT or DELETE, answered by `answer` (the HTTP role's, registered from
    /// above).
    Http { answer: Answer },
    /// A WebSocket client's text message (told only when it failed).
    WebSocket,
}

/// What became of a publish, for its HTTP answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    Published,
    Deleted,
    /// (HTTP status, explain).
    Failed(u16, &'static str),
}

/// Answers an HTTP publisher: (request, configuration, channels, outcome) → return code.
pub type Answer = fn(&Request<'_>, &'static MainConf, &[Vec<u8>], Outcome) -> Status;

/// A publish waiting for the broker's confirm.
pub(super) struct Pending {
    req: HeldRef,
    who: Publisher,
    main: &'static MainConf,
    channels: Vec<Vec<u8>>,
    delete: bool,
}

/// What a publish asks of the broker.
pub struct Message {
    pub channels: Vec<Vec<u8>>,
    pub body: Vec<u8>,
    pub event_id: Option<Vec<u8>>,
    pub event_type: Option<Vec<u8>>,
    /// A channel DELETE whose body is the channel-deleted text.
    pub delete: bool,
}

/// Why the broker path refused a publish at once: (HTTP status, explain).
pub type Refused = (u16, &'static str);

/// Publishes one worker may have waiting for the broker or for its store (each holds a
/// request and a body until answered): more are refused with 503.
const MAX_WAITING: usize = 4096;

/// Hands a publish to the bridge; `req` is answered when the broker confirms (or not).
pub fn publish(
    req: HeldRef,
    who: Publisher,
    mcf: &'static MainConf,
    m: Message,
) -> Result<(), Refused> {
    let path = m.channels.join(&b'/');
    if mcf.amqp.exchange.is_some() && push_stream_core::amqp::routing_key(&path).is_none() {
        return Err((
            400,
            "Channel path is too long for a RabbitMQ routing key (255 bytes).",
        ));
    }
    let confirm_ms = mcf
        .amqp
        .confirm_timeout_ms
        .unwrap_or(push_stream_core::amqp::DEFAULT_CONFIRM_TIMEOUT_MS);
    let queued = with(|s| {
        if !s.connected {
            return Err((503, "RabbitMQ is unavailable."));
        }
        if s.pending.len() + s.awaiting.len() >= MAX_WAITING {
            return Err((503, "RabbitMQ publish queue is full."));
        }
        let token = s.next_token;
        s.next_token += 1;
        let r = PublishReq {
            token,
            message_id: push_stream_core::amqp::own_message_id(
                s.epoch,
                crate::delivery::slot(),
                token,
            ),
            channel_path: path,
            body: m.body,
            event_id: m.event_id,
            event_type: m.event_type,
            delete: m.delete,
        };
        match s.outbox.try_send(r) {
            Ok(()) => {
                s.pending.insert(
                    token,
                    Pending {
                        req,
                        who,
                        main: mcf,
                        channels: m.channels,
                        delete: m.delete,
                    },
                );
                Ok(())
            }
            Err(_) => Err((503, "RabbitMQ publish queue is full.")),
        }
    })
    .unwrap_or(Err((503, "RabbitMQ is unavailable.")));
    match queued {
        Ok(()) => {
            if let Publisher::Http { .. } = who {
                // The thread answers within the confirm timeout; this bounds the wait for
                // the confirm and for the store (read-your-writes). A graceful shutdown waits
                // for it: every publish is answered before the worker exits.
                req.set_deadline(Timer::Ttl, 2 * confirm_ms + 1000);
            }
            Ok(())
        }
        Err((status, explain)) => {
            ngx_log!(
                warn,
                req.log(),
                "push_stream: amqp: publish refused: {explain}"
            );
            Err((status, explain))
        }
    }
}

/// Answers a held HTTP publisher, then ends its request.
fn answer(p: &Pending, outcome: Outcome) {
    let Publisher::Http { answer } = p.who else {
        return;
    };
    if let Some(rc) = p.req.with(|r| answer(r, p.main, &p.channels, outcome)) {
        p.req.close(rc);
    }
}

/// A held publish request's timer fired: the broker's confirm did not come in time (504),
/// or the confirmed message did not come back into this host's store in time (200 all the
/// same: it is in the broker, and every host that consumes it gets it).
pub fn timed_out(req: HeldRef) {
    let found = with(|s| {
        if let Some(t) = s
            .pending
            .iter()
            .find(|(_, p)| p.req == req)
            .map(|(t, _)| *t)
        {
            return s.pending.remove(&t).map(|p| (p, false));
        }
        let t = s
            .awaiting
            .iter()
            .find(|(_, p)| p.req == req)
            .map(|(t, _)| *t)?;
        s.awaiting.remove(&t).map(|p| (p, true))
    })
    .flatten();
    match found {
        Some((p, false)) => answer(
            &p,
            Outcome::Failed(504, "RabbitMQ did not confirm the message in time."),
        ),
        Some((p, true)) => {
            ngx_log!(
                warn,
                req.log(),
                "push_stream: amqp: a confirmed publish did not come back into this host's store in time; answered without it"
            );
            answer_confirmed(&p);
        }
        None => {}
    }
}

/// An HTTP publisher's request ended before its answer (the client left, the worker is
/// exiting): forget its confirmed publish waiting for the store (one waiting for the
/// broker's confirm is forgotten when the confirm comes).
pub fn forget(key: usize, serial: u64) {
    with(|s| {
        s.awaiting
            .retain(|_, p| !(p.req.key() == key && p.req.serial() == serial))
    });
}

/// Answers the confirmed publishes this host's store has consumed back.
pub(super) fn answer_stored() {
    let ready: Vec<Pending> = with(|s| {
        if s.awaiting.is_empty() {
            return Vec::new();
        }
        let stored = s
            .main
            .zone()
            .map_or(0, |z| z.stored_up_to(crate::delivery::slot()));
        let later = s.awaiting.split_off(&(stored + 1));
        std::mem::replace(&mut s.awaiting, later)
            .into_values()
            .collect()
    })
    .unwrap_or_default();
    for p in &ready {
        answer_confirmed(p);
    }
}

fn answer_confirmed(p: &Pending) {
    if p.delete {
        answer(p, Outcome::Deleted)
    } else {
        answer(p, Outcome::Published)
    }
}

/// The broker's answer to a publish.
pub(super) fn confirmed(token: u64, result: Result<(), PublishError>) {
    let Some(p) = with(|s| s.pending.remove(&token)).flatten() else {
        return;
    };
    let req = p.req;
    let failure = match &result {
        Ok(()) => None,
        Err(PublishError::Timeout) => Some((504, "RabbitMQ did not confirm the message in time.")),
        Err(PublishError::Nacked) => Some((503, "RabbitMQ refused the message.")),
        Err(PublishError::Unroutable) => Some((
            503,
            "RabbitMQ could not route the message: no queue is bound for its routing key.",
        )),
        Err(PublishError::Unavailable(e)) => {
            ngx_log!(warn, req.log(), "push_stream: amqp: publish failed: {e}");
            Some((503, "RabbitMQ is unavailable."))
        }
    };
    match (p.who, failure) {
        (Publisher::WebSocket, None) => {}
        (Publisher::WebSocket, Some((_, explain))) => {
            // The client is told with a close frame (1011: the server could not do what it
            // asked) carrying the reason; its connection ends.
            ngx_log!(
                error,
                req.log(),
                "push_stream: amqp: a WebSocket client's message was not published: {explain}"
            );
            let frame = push_stream_core::websocket::close_frame(1011, explain.as_bytes());
            req.finish(&frame);
        }
        (Publisher::Http { .. }, Some((status, explain))) => {
            answer(&p, Outcome::Failed(status, explain))
        }
        (Publisher::Http { .. }, None) => {
            // Read-your-writes: with a stream, wait until this host's store has it.
            let wait = with(|s| {
                let stored = s
                    .main
                    .zone()
                    .map_or(0, |z| z.stored_up_to(crate::delivery::slot()));
                s.stream && token > stored
            })
            .unwrap_or(false);
            if wait {
                with(|s| s.awaiting.insert(token, p));
            } else {
                answer_confirmed(&p);
            }
        }
    }
}
