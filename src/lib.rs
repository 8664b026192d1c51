//! mse-proxy: an SNI-routing TLS ingress for confidential-computing platforms.
//!
//! The path of one connection through the components:
//!
//! ```text
//! proxy::listener   accept; take a permit under the connection limit
//!   └ proxy::conn   read the ClientHello under one deadline (tls::detect,
//!                   parsed by the pure tls::client_hello)
//!       └ routing   look the SNI up in the current Snapshot (one ArcSwap load)
//!           ├ proxy::passthrough   connect a backend (proxy::upstream, dns),
//!           │       replay the hello bytes, relay both ways (proxy::relay)
//!           └ proxy::terminate     handshake with the platform's certificate
//!                   (tls::terminate, starting from the hello bytes already
//!                   read, the certificate picked by SNI from tls::certs),
//!                   connect a backend, plain or TLS (tls::upstream,
//!                   tls::verify for pins); both TLS ends are tls::stream
//!                   (rustls unbuffered, pooled record buffers held only
//!                   while in use); relay the plaintext (proxy::stream_relay)
//!   └ access log    one line per connection with its Outcome
//! ```
//!
//! The control plane: `config` turns files into validated values (routes and
//! their terminate settings in `config::routes` and `config::terminate`);
//! `routing::reload` swaps in a new route set and the certificates read with
//! it, atomically, and closes the connections of routes that left;
//! `routing::sources::certificates` watches the certificate files, so a
//! renewal on disk is swapped in the same way, with the routes unchanged;
//! `apps` turns the platform's app records into derived routes under its
//! rules (expiry, trust scenario, status, custom-domain CNAMEs), a third
//! route source of the same reconciler, written through `admin::apps`;
//! `routing::sources::etcd` makes etcd the store several instances share
//! (a follower feeding the same reconciler, transactional writes), over
//! the small gRPC client in `etcd`; without it, `state` keeps what the
//! admin API accepted on disk (redb), committed before the answer and
//! loaded back at start (with etcd, the same store is the local cache of
//! the last set read there); `state_cmd` exports and imports it as JSON;
//! `admin` serves the admin API (roles from tokens or client certificates
//! decided before a body is read, TLS, timeouts and a connection cap, an
//! audit line per write);
//! `server` wires signals (SIGHUP reload, SIGTERM graceful stop) around a
//! running `proxy::ProxyHandle`.

pub mod admin;
pub mod apps;
pub mod config;
pub mod control;
pub mod demo;
pub mod dns;
pub mod etcd;
pub mod file_watch;
pub mod host;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod standin;
pub mod state;
pub mod state_cmd;
pub mod timing;
pub mod tls;
pub mod upgrade;
