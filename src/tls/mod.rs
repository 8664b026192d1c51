//! TLS-level pieces of the ingress: reading what a client sends before any TLS handshake.
pub mod alert;
pub mod client_hello;
pub mod detect;
