//! Gathered writes: the messages of one batch (the log records one wake-up finds, or the
//! broker messages one inbox drain holds) reach each subscriber in one write, and at most
//! `WRITES_PER_TURN` subscribers are written per event-loop turn; the rest waits in a FIFO
//! for the next turn.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use push_stream_core::hash::PtrHash;
use push_stream_core::parts::Parts;

use super::subscribers::{rearm_ping, send_n};
use super::with;
use crate::ngx::held::HeldRef;

/// Runs the delivery pass again on the next turn (after nginx has looked for I/O).
pub(super) fn next_turn() {
    with(|w| {
        if let Some(c) = &w.wake {
            c.post_next();
        }
    });
}

/// Nothing waits for a later turn.
pub(super) fn leftover_empty() -> bool {
    LEFTOVER.with(|l| l.borrow().is_empty())
}

/// Writes left from an earlier batch go first: true when none is left, else the caller's
/// new work waits (the log and the bounded inbox are the buffers) and runs on the next turn.
pub fn leftover_first() -> bool {
    write_leftover()
}

/// Streaming writes gathered over one batch of deliveries (the log records one wake-up finds,
/// or the broker messages one inbox drain holds): each subscriber then gets all its messages
/// of the batch in one write. A worker that fell behind catches up with one syscall per
/// subscriber instead of one per message.
#[derive(Default)]
struct Gather {
    order: Vec<usize>,
    by_key: HashMap<usize, Pending, PtrHash>,
}

/// One subscriber's gathered messages: their parts, and where each message ends.
struct Pending {
    req: HeldRef,
    parts: Parts<Rc<[u8]>>,
    ends: Parts<usize>,
}

/// Subscriber writes per event-loop turn: what a batch holds beyond this waits for the next
/// turn (FIFO, so each subscriber's order is kept), and the worker answers publishers and
/// accepts connections in between instead of being held by one long fan-out.
const WRITES_PER_TURN: usize = 400;

thread_local! {
    static GATHER: RefCell<Option<Gather>> = const { RefCell::new(None) };
    static LEFTOVER: RefCell<std::collections::VecDeque<Pending>> =
        const { RefCell::new(std::collections::VecDeque::new()) };
}

/// Ends a gathering: queues what it holds and writes up to a turn's worth, or (unwinding
/// from a panic) drops it.
struct GatherScope;

impl Drop for GatherScope {
    fn drop(&mut self) {
        let g = GATHER.with(|g| g.borrow_mut().take());
        if std::thread::panicking() {
            return;
        }
        if let Some(mut g) = g {
            LEFTOVER.with(|l| {
                let mut l = l.borrow_mut();
                for key in g.order {
                    if let Some(p) = g.by_key.remove(&key) {
                        l.push_back(p);
                    }
                }
            });
        }
        if !write_leftover() {
            // The wake-up handler runs process_log, which writes the rest first.
            next_turn();
        }
    }
}

/// Runs `f` with subscriber writes gathered, then writes them (one write per subscriber).
pub fn gathered<R>(f: impl FnOnce() -> R) -> R {
    if GATHER.with(|g| g.borrow().is_some()) {
        return f(); // nested: the outer scope writes
    }
    GATHER.with(|g| *g.borrow_mut() = Some(Gather::default()));
    let _scope = GatherScope;
    f()
}

/// Writes up to a turn's worth of what waits; true when nothing is left.
pub(super) fn write_leftover() -> bool {
    for _ in 0..WRITES_PER_TURN {
        let Some(p) = LEFTOVER.with(|l| l.borrow_mut().pop_front()) else {
            return true;
        };
        write_pending(p);
    }
    LEFTOVER.with(|l| l.borrow().is_empty())
}

/// Writes everything gathered or waiting now (before what must follow it in order: a
/// channel's delete notice, a subscriber's footer).
pub(super) fn flush_gathered() {
    if let Some(mut g) = GATHER.with(|g| g.borrow_mut().as_mut().map(std::mem::take)) {
        LEFTOVER.with(|l| {
            let mut l = l.borrow_mut();
            for key in g.order {
                if let Some(p) = g.by_key.remove(&key) {
                    l.push_back(p);
                }
            }
        });
    }
    while let Some(p) = LEFTOVER.with(|l| l.borrow_mut().pop_front()) {
        write_pending(p);
    }
}

/// One subscriber's gathered write, if it is still the subscriber it was gathered for.
fn write_pending(p: Pending) {
    if p.req.alive() {
        send_n(p.req, p.parts.as_slice(), p.ends.as_slice());
        rearm_ping(p.req);
    }
}

/// Adds a message's parts to the gathering, when one is open. False: write now.
pub(super) fn gather(req: HeldRef, parts: &[Rc<[u8]>]) -> bool {
    let key = req.key();
    GATHER.with(|g| {
        let mut g = g.borrow_mut();
        let Some(g) = g.as_mut() else {
            return false;
        };
        match g.by_key.get_mut(&key) {
            Some(e) => {
                e.parts.push(parts);
                e.ends.push(&[e.parts.as_slice().len()]);
            }
            None => {
                g.order.push(key);
                g.by_key.insert(
                    key,
                    Pending {
                        req,
                        parts: Parts::new(parts),
                        ends: Parts::new(&[parts.len()]),
                    },
                );
            }
        }
        true
    })
}
