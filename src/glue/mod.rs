//! The thin nginx layer: the only place with `unsafe`. Everything nginx calls enters through
//! [`guard::guard`], so a panic never crosses FFI.

pub mod conf;
pub mod guard;
pub mod http;
pub mod log;
pub mod thread;
pub mod worker;
pub mod zone;
