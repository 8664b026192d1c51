//! `mse-proxy upgrade`: asks the running proxy (through its upgrade
//! socket) to start the new binary and hand over, and reports how it went.

use std::path::Path;
use std::time::Duration;

use super::channel::Channel;
use super::protocol::Msg;

/// Asks, waits (at most `wait`) and prints the answer; the exit code: 0
/// when the new process serves, 1 otherwise.
pub fn run(
    socket: &Path,
    binary: Option<&Path>,
    wait: Duration,
    out: &mut dyn std::io::Write,
) -> u8 {
    let ask = || -> std::io::Result<Msg> {
        let chan = Channel::connect(socket)?;
        chan.set_timeout(Some(wait))?;
        chan.send(
            &Msg::Trigger {
                binary: binary.map(Path::to_path_buf),
            },
            &[],
            &[],
        )?;
        Ok(chan.recv()?.0)
    };
    match ask() {
        Ok(Msg::Result {
            ok,
            message,
            millis,
            ..
        }) => {
            let _ = writeln!(
                out,
                "{}: {message} ({millis} ms)",
                if ok { "upgraded" } else { "not upgraded" }
            );
            if ok {
                0
            } else {
                1
            }
        }
        Ok(other) => {
            let _ = writeln!(out, "error: unexpected answer {other:?}");
            1
        }
        Err(e) => {
            let _ = writeln!(out, "error: upgrade socket {}: {e}", socket.display());
            1
        }
    }
}
