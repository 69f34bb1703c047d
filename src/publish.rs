//! The one publish path. Every publisher (an HTTP POST/PUT/DELETE, a WebSocket client's
//! text message) goes through RabbitMQ when a broker is configured (`push_stream_amqp_*`,
//! with `push_stream_amqp_publish` on), and is answered on its confirm; without a broker it
//! goes into the host-wide store, and every worker of the host delivers it from the store's
//! log. The broker's consumer (`rabbitmq::consume`) is that path's other end on every host.

use push_stream_core::store::{ChannelInfo, StoreError};

use crate::conf::MainConf;
use crate::delivery;
use crate::ngx::event;
use crate::ngx::held::HeldRef;
use crate::ngx::request::Request;
use crate::rabbitmq::{self, Publisher};
use crate::Module;

/// Where a publish goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Route {
    Broker,
    Store,
}

/// The route of every publish of this worker.
pub fn route(mcf: &MainConf) -> Route {
    if rabbitmq::publishes(mcf) {
        Route::Broker
    } else {
        Route::Store
    }
}

/// A message for the store.
pub struct Message {
    pub text: Vec<u8>,
    pub event_id: Option<Vec<u8>>,
    pub event_type: Option<Vec<u8>>,
    /// `push_stream_store_messages` of the publisher's location.
    pub store: bool,
}

/// Publishes into the host-wide store (no broker). Whatever was published, also before a
/// failure, is delivered. The channels' info after it. None: no zone.
pub fn into_store(
    mcf: &MainConf,
    channels: &[Vec<u8>],
    msg: &Message,
) -> Option<Result<Vec<ChannelInfo>, StoreError>> {
    let zone = mcf.zone()?;
    let now = event::now();
    let now_ms = event::now_ms();
    // Taken before locking: nothing inside the lock may abort on a failed allocation.
    let mut infos = Vec::with_capacity(channels.len());
    delivery::commit(zone, |s| {
        s.set_clock_ms(now_ms);
        for c in channels {
            s.publish(
                c,
                &msg.text,
                msg.event_id.as_deref(),
                msg.event_type.as_deref(),
                msg.store,
                now,
                &mcf.limits,
            )?;
            infos.extend(s.channel(c));
        }
        Ok(infos)
    })
}

/// Deletes channels in the host-wide store (no broker): how many existed.
pub fn delete_in_store(
    mcf: &MainConf,
    channels: &[Vec<u8>],
    text: &[u8],
) -> Option<Result<usize, StoreError>> {
    let zone = mcf.zone()?;
    let now = event::now();
    delivery::commit(zone, |s| {
        let mut deleted = 0;
        for c in channels {
            if s.delete(c, text, now, &mcf.limits)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    })
}

/// Whether this host knows any of `channels`.
pub fn known_any(mcf: &MainConf, channels: &[Vec<u8>]) -> bool {
    mcf.zone()
        .and_then(|z| z.with_store(|s| channels.iter().any(|c| s.channel(c).is_some())))
        .unwrap_or(false)
}

/// The info of the channels this host knows.
pub fn infos(mcf: &MainConf, channels: &[Vec<u8>]) -> Vec<ChannelInfo> {
    mcf.zone()
        .and_then(|z| z.with_store(|s| channels.iter().filter_map(|c| s.channel(c)).collect()))
        .unwrap_or_default()
}

/// An HTTP publish through the broker: the request is held until the broker answers (or a
/// timer fires), or answered now when the broker path refuses it.
pub fn through_broker(
    req: Request<'_>,
    who: Publisher,
    mcf: &'static MainConf,
    msg: rabbitmq::Message,
) {
    let channels = msg.channels.clone();
    let Some(h) = req.hold_after_body::<Module>() else {
        return;
    };
    if let Err((status, explain)) = rabbitmq::publish(h, who, mcf, msg) {
        let Publisher::Http { answer } = who else {
            return;
        };
        let failed = rabbitmq::Outcome::Failed(status, explain);
        if let Some(rc) = h.with(|r| answer(r, mcf, &channels, failed)) {
            h.close(rc);
        }
    }
}

/// A WebSocket client's publish through the broker; Err: refused now (the caller tells the
/// client).
pub fn through_broker_held(
    h: HeldRef,
    mcf: &'static MainConf,
    msg: rabbitmq::Message,
) -> Result<(), (u16, &'static str)> {
    rabbitmq::publish(h, Publisher::WebSocket, mcf, msg)
}
