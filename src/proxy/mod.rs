//! The data plane: listeners, the life of a connection, passthrough relay.

mod buffer;
pub mod client_rate;
pub mod conn;
pub mod conn_log;
pub mod fds;
pub mod handoff;
pub mod health;
pub mod limits;
pub mod listener;
pub mod moved;
pub mod outcome;
pub mod passthrough;
pub mod proxy_protocol;
mod refusal;
pub mod relay;
#[cfg(target_os = "linux")]
mod splice;
pub mod stream_relay;
pub mod terminate;
pub mod upstream;
pub mod workers;

mod handle;
mod shared;

pub use handle::ProxyHandle;
pub use outcome::Outcome;
pub use shared::Shared;

/// Bulk chunks the relay copied because no pipe could be had for splice
/// (out of descriptors), since the process started; 0 where there is no
/// splice.
pub fn splice_pipe_failures() -> u64 {
    #[cfg(target_os = "linux")]
    return splice::pipe_failures();
    #[cfg(not(target_os = "linux"))]
    0
}
