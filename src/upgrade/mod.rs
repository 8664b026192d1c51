//! Upgrades that break nothing: the running process hands its listening
//! sockets, and then each established passthrough connection (sockets,
//! route, bytes in flight), to a new binary over a Unix socket.
//!
//! - `protocol.rs`: the messages and their framing (pure).
//! - `channel.rs`: the SOCK_SEQPACKET socket, SCM_RIGHTS through rustix.
//! - `old.rs`: the running side (trigger, start, hand over, send
//!   connections), and how the state store changes hands.
//! - `successor.rs`: the new side (join, take listeners, ready, adopt).
//! - `trigger.rs`: the `mse-proxy upgrade` command.
//!
//! The data plane's part (pausing a relay at a safe point, offering and
//! adopting a connection) is `crate::proxy::handoff`.

pub mod channel;
pub mod old;
pub mod protocol;
pub mod successor;
pub mod trigger;
