//! Pure logic of ngx-push-stream: everything that can be unit-tested without nginx.
//!
//! Nothing in this crate references an nginx symbol, so `cargo test -p push-stream-core`
//! runs on any machine.

pub mod amqp;
pub mod channel_path;
pub mod conf_values;
pub mod date;
pub mod escape;
pub mod format;
pub mod hash;
pub mod metrics;
pub mod parts;
pub mod query;
pub mod resume;
pub mod store;
pub mod template;
pub mod websocket;
pub mod wire;
