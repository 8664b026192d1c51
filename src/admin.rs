//! The admin HTTP listener (axum): health, readiness, metrics and the
//! routes API. Who may do what is decided from the request's head before
//! any handler runs ([`auth`]); every write leaves an audit line
//! ([`audit`]); bearer tokens come from files re-read as they change
//! ([`tokens`]).

pub mod apps;
pub mod audit;
pub mod auth;
mod error;
mod guard;
mod router;
mod routes;
pub mod serve;
mod state;
mod status;
pub mod tls;
pub mod tokens;

pub use error::ApiError;
pub use router::{router, serve};
pub use state::AdminState;
