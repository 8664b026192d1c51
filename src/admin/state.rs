//! What every admin handler shares.

use std::sync::Arc;

use super::auth;
use crate::control::Control;
use crate::proxy::Shared;
use crate::routing::reconciler::watchdog::Health;
use crate::routing::sources::etcd::write::EtcdWriter;

/// What the handlers share.
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub control: Control,
    /// Tokens and certificate roles, checked by [`auth::guard`].
    pub auth: auth::Auth,
    /// Body caps of `PUT /routes/..` and `PUT /apps/..`, in bytes.
    pub max_route_body: usize,
    pub max_app_body: usize,
    /// From a request's head to its answer (408 beyond).
    pub request_timeout: std::time::Duration,
    /// With `[etcd]`: route writes go to the shared store.
    pub etcd: Option<Arc<EtcdWriter>>,
    /// The reconciler's watchdog, for `/healthz`.
    pub health: Health,
}
