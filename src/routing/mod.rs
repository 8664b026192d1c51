//! Routing: validated routes ([`route`]), the live, atomically swapped table
//! they form ([`table`]), and applying a new route set to it ([`reload`]).

pub mod claims;
pub mod closer;
pub mod delta;
pub mod load;
pub mod reconciler;
pub mod reload;
pub mod route;
pub mod sources;
pub mod table;
pub mod token_bucket;

pub use route::{Backend, BackendHost, HostPattern, Mode, Route};
pub use table::{RouteEntry, Router, Snapshot, Source};
