//! What every connection task shares: the config, the route table, DNS,
//! metrics, backend health and the connection limits.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{client_rate, health, limits, moved, outcome, relay, Outcome};
use crate::config::Config;
use crate::dns::Dns;
use crate::metrics::Metrics;
use crate::routing::closer::{Closer, Closing};
use crate::routing::Router;

/// State every connection task shares; built once at start.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub router: Router,
    pub dns: Dns,
    pub metrics: Metrics,
    /// Passive health of backend addresses.
    pub health: health::Health,
    /// Per client, connections whose hello is not read yet.
    pub unrouted: limits::PerClientLimit,
    /// Per client, connections in all.
    pub per_client: limits::PerClientLimit,
    /// Per client, the new-connection rate.
    pub client_rate: client_rate::ClientRate,
    /// One permit per open connection, moved into the connection's task.
    pub limit: Arc<Semaphore>,
    /// Cancelled when the shutdown grace runs out: live connections close.
    /// The router's [`Router::closers`], so each route's closer is its child.
    pub kill: Arc<Closer>,
    /// An upgrade's connection hand-off (`crate::upgrade`): idle until one
    /// begins.
    pub handoff: moved::Handoff,
}

impl Shared {
    /// Resolves when a relayed connection on `entry` must stop: the route
    /// left the table (removed, expired, redeployed) or shutdown's grace ran
    /// out. One wait covers both: the route's closer is a child of `kill`.
    /// A wait that costs no lock per poll ([`Closing`]).
    pub fn stop_signal<'a>(&'a self, entry: &'a crate::routing::RouteEntry) -> Closing<'a> {
        Closing::new(entry.closing_closer(), &self.kill)
    }

    /// The outcome of a relay that ran on `route`, logging relay errors.
    pub fn after_relay(&self, end: &relay::RelayEnd, route: &crate::routing::Route) -> Outcome {
        if let relay::RelayEnd::ClientError(e) | relay::RelayEnd::UpstreamError(e) = end {
            tracing::debug!(error = %e, "relay error");
        }
        outcome::after_relay(
            end,
            self.kill.token().is_cancelled(),
            route.expired_at(chrono::Utc::now()),
        )
    }
}
