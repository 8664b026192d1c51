//! mse-proxy: an SNI-routing TLS ingress for confidential-computing platforms.
//!
//! The path of one connection through the components:
//!
//! ```text
//! proxy::listener   accept; take a permit under the connection limit
//!   └ proxy::conn   read the ClientHello under one deadline (tls::detect,
//!                   parsed by the pure tls::client_hello)
//!       └ routing   look the SNI up in the current Snapshot (one ArcSwap load)
//!           └ proxy::passthrough   connect a backend (proxy::upstream, dns),
//!                   replay the hello bytes, relay both ways (proxy::relay)
//!   └ access log    one line per connection with its Outcome
//! ```
//!
//! The control plane: `config` turns files into validated values;
//! `routing::reload` swaps a new route set in atomically and closes the
//! connections of routes that left; `server` wires signals (SIGHUP reload,
//! SIGTERM graceful stop) around a running `proxy::ProxyHandle`.

pub mod admin;
pub mod config;
pub mod demo;
pub mod dns;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod standin;
pub mod tls;
