//! The control plane's interface ([`api`]): what sources send and how.

pub mod api;

pub use api::{Admitted, Control, ControlError, EtcdDelta, Origin, ReconcilerStats};
