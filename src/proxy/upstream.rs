//! Connecting to a route's backends: in order, each address of each backend,
//! each attempt under the connect timeout; the first that answers wins.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::dns::Dns;
use crate::routing::{Backend, BackendHost};

/// Every backend failed; says how each one did.
#[derive(Debug)]
pub struct ConnectError {
    pub attempts: Vec<(String, String)>,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (backend, why)) in self.attempts.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{backend}: {why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {}

/// Connects to the first backend that accepts, trying them in order.
pub async fn connect(
    backends: &[Backend],
    dns: &Dns,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let mut attempts = Vec::new();
    for b in backends {
        match &b.host {
            BackendHost::Ip(ip) => {
                let addr = SocketAddr::new(*ip, b.port);
                match connect_one(addr, timeout).await {
                    Ok(s) => return Ok((s, addr)),
                    Err(why) => attempts.push((b.to_string(), why)),
                }
            }
            BackendHost::Name(name) => match dns.resolve(name).await {
                Ok(ips) => {
                    for ip in ips {
                        let addr = SocketAddr::new(ip, b.port);
                        match connect_one(addr, timeout).await {
                            Ok(s) => return Ok((s, addr)),
                            Err(why) => attempts.push((format!("{b} ({addr})"), why)),
                        }
                    }
                }
                Err(e) => attempts.push((b.to_string(), e.to_string())),
            },
        }
    }
    Err(ConnectError { attempts })
}

async fn connect_one(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("connect timed out after {timeout:?}")),
    }
}
