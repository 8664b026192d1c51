//! Refusing a client with a fatal TLS alert so that it reads it: the alert,
//! then the write side shut, then what the client still sends drained for
//! a moment, so that our close does not turn into a reset that destroys
//! the alert before the client reads it. One copy for every refusal (an
//! unknown SNI, no protocol the route and its backend take).

use std::net::Shutdown;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::tls::alert;

/// How long a refused client is given to read our alert and close first.
const LINGER: Duration = Duration::from_secs(1);

/// Most bytes drained from a refused client before it is dropped anyway.
const DRAIN_MAX: usize = 64 * 1024;

/// Sends the fatal alert `description` and closes as the module says.
pub async fn with_alert(mut client: TcpStream, description: u8) {
    if super::relay::write_all(&client, &alert::fatal(description))
        .await
        .is_err()
    {
        return;
    }
    let _ = socket2::SockRef::from(&client).shutdown(Shutdown::Write);
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(LINGER, async {
        let mut drained = 0usize;
        while drained < DRAIN_MAX {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}
