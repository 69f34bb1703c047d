//! Publishes handed to the broker, answered on its confirm: an HTTP publisher's request is
//! held until then (with a timer: 504 if no answer comes in time); a WebSocket publisher
//! whose message the broker did not take is told with a close frame.

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
        let token = s.next_token;
        s.next_token += 1;
        let r = PublishReq {
            token,
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
                // The thread answers within the confirm timeout; this bounds the wait even
                // if that answer were lost.
                req.set_timer(Timer::Ttl, confirm_ms + 1000);
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

/// A held publish request's timer fired: the broker's answer did not come in time.
pub fn timed_out(req: HeldRef) {
    let found = with(|s| {
        let token = s
            .pending
            .iter()
            .find(|(_, p)| p.req == req)
            .map(|(t, _)| *t)?;
        s.pending.remove(&token)
    })
    .flatten();
    if let Some(p) = found {
        answer(
            &p,
            Outcome::Failed(504, "RabbitMQ did not confirm the message in time."),
        );
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
        (Publisher::Http { .. }, None) if p.delete => answer(&p, Outcome::Deleted),
        (Publisher::Http { .. }, None) => answer(&p, Outcome::Published),
    }
}
