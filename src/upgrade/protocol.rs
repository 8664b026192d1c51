//! What the old and the new process say to each other on the upgrade
//! socket, and how a message is framed: pure data, no sockets.
//!
//! One record (a SOCK_SEQPACKET message, so records keep their bounds and
//! their descriptors) is a 4-byte big-endian length, that many bytes of
//! JSON ([`Msg`]), then raw bytes the JSON describes (a moved connection's
//! bytes in flight). Descriptors ride on the record as SCM_RIGHTS, in the
//! order the message names them.
//!
//! The exchange (old = the running process, new = the binary it started):
//! ```text
//! cli → old   Trigger{binary}                       (or SIGUSR2)
//! new → old   Hello{format}
//! old → new   Refused{reason}                       format differs: new exits, old serves on
//! old → new   Listeners{format, listeners, admin}   + fds; old has released the state store
//! new → old   Ready{pid}                            new is serving; old stops accepting
//! old → new   Conn{..} + [client, upstream]         each passthrough connection, one by one
//! new → old   ConnAnswer{id, taken, reason}         old forgets it only when taken
//! old → new   Done                                  old owns no passthrough connection
//! old → cli   Result{ok, message, pid, millis}
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The hand-off's format. Old and new must agree exactly: a process
/// refuses a hand-off in any other format rather than guess at it. Bump
/// it on any change to [`Msg`] or the framing.
pub const FORMAT: u32 = 1;

/// The largest record either side accepts (a connection's header and its
/// two directions' bytes in flight, each at most a splice pipe's 64 KiB).
pub const MAX_RECORD: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Msg {
    /// `mse-proxy upgrade`: start this binary (default: the running one's).
    Trigger { binary: Option<PathBuf> },
    /// To the CLI: how the upgrade went.
    Result {
        ok: bool,
        message: String,
        pid: Option<u32>,
        millis: u64,
    },
    /// The new process introduces itself.
    Hello {
        format: u32,
        pid: u32,
        version: String,
    },
    /// No hand-off, and why.
    Refused { reason: String },
    /// The listening sockets, as fds in this order: one per `listeners`
    /// entry (the configured address, which the new config must name to
    /// take it), then the admin listener if `admin` is set.
    Listeners {
        format: u32,
        listeners: Vec<SocketAddr>,
        admin: Option<SocketAddr>,
    },
    /// The new process serves (its routes and state loaded).
    Ready { pid: u32 },
    /// One passthrough connection; fds: client, upstream. The raw tail is
    /// `pending_up` bytes (client → upstream) then `pending_down` bytes.
    Conn(ConnHeader),
    /// Whether the new process took connection `id`.
    ConnAnswer {
        id: u64,
        taken: bool,
        reason: Option<String>,
    },
    /// No more connections: the old process is about to exit.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnHeader {
    pub id: u64,
    pub route: String,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub sni: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub pending_up: usize,
    pub pending_down: usize,
    pub up_done: bool,
    pub down_done: bool,
}

/// How many descriptors a message carries.
pub fn fd_count(msg: &Msg) -> usize {
    match msg {
        Msg::Listeners {
            listeners, admin, ..
        } => listeners.len() + usize::from(admin.is_some()),
        Msg::Conn(_) => 2,
        _ => 0,
    }
}

/// One record's bytes.
pub fn encode(msg: &Msg, tail: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(msg).expect("messages serialise");
    let mut out = Vec::with_capacity(4 + json.len() + tail.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(tail);
    out
}

/// A record back into its message and raw tail.
pub fn decode(record: &[u8]) -> Result<(Msg, &[u8]), String> {
    let Some((len, rest)) = record.split_first_chunk::<4>() else {
        return Err("a record shorter than its length".into());
    };
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return Err(format!("a record of {} bytes names {len}", rest.len()));
    }
    let (json, tail) = rest.split_at(len);
    let msg = serde_json::from_slice(json).map_err(|e| format!("not a message: {e}"))?;
    Ok((msg, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_with_its_tail() {
        let msg = Msg::Conn(ConnHeader {
            id: 7,
            route: "r".into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            sni: Some("a.test".into()),
            bytes_up: 1,
            bytes_down: 2,
            pending_up: 3,
            pending_down: 0,
            up_done: false,
            down_done: true,
        });
        let rec = encode(&msg, b"abc");
        let (back, tail) = decode(&rec).unwrap();
        assert_eq!(back, msg);
        assert_eq!(tail, b"abc");
        assert_eq!(fd_count(&back), 2);
    }

    #[test]
    fn truncated_or_foreign_records_are_errors() {
        assert!(decode(&[0, 0]).is_err());
        assert!(decode(&[0, 0, 0, 9, b'{']).is_err());
        assert!(decode(&encode(&Msg::Done, b"")[..4]).is_err());
        let mut rec = 5u32.to_be_bytes().to_vec();
        rec.extend_from_slice(b"{\"a\"}");
        assert!(decode(&rec).is_err());
    }
}
