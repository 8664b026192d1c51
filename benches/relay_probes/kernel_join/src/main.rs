//! `mse-proxy-kernel-join LISTEN BACKEND`: accepts TCP connections on
//! LISTEN, reads the client's first bytes (its ClientHello), connects to
//! BACKEND, joins the two sockets in the kernel's sockmap and only then
//! replays those bytes (so that the backend's answer is redirected too),
//! and waits for the ends: an epoll set that asks for hang-ups only, so
//! that relayed segments never wake this process. A FIN from one side is
//! passed on with `shutdown(2)` on the other.
//!
//! A probe for benches/relay_probes/run.sh, not a proxy: no SNI routing,
//! one thread per connection, and a FIN is passed on without waiting for
//! the bytes the kernel may still hold for the peer (see the README).

mod join;
mod program;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::event::epoll;

#[derive(Default)]
struct Totals {
    joined: AtomicU64,
    refused: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, backend] = &args[..] else {
        eprintln!("usage: mse-proxy-kernel-join LISTEN BACKEND");
        std::process::exit(2);
    };
    let joiner = match join::Joiner::load() {
        Ok(j) => Arc::new(j),
        Err(e) => {
            eprintln!("cannot load the sockmap program (root needed): {e}");
            std::process::exit(1);
        }
    };
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("cannot listen on {listen}: {e}");
        std::process::exit(1);
    });
    let totals = Arc::new(Totals::default());
    eprintln!("kernel-join: listening on {listen}, backend {backend}");
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let (joiner, totals, backend) = (joiner.clone(), totals.clone(), backend.clone());
        std::thread::spawn(move || {
            if let Err(e) = serve(client, &backend, &joiner, &totals) {
                eprintln!("kernel-join: connection: {e}");
            }
            report(&totals);
        });
    }
}

fn report(t: &Totals) {
    eprintln!(
        "kernel-join: {} joined, {} refused, {} bytes up and {} down in the kernel",
        t.joined.load(Ordering::Relaxed),
        t.refused.load(Ordering::Relaxed),
        t.up.load(Ordering::Relaxed),
        t.down.load(Ordering::Relaxed)
    );
}

fn serve(
    mut client: TcpStream,
    backend: &str,
    joiner: &join::Joiner,
    totals: &Totals,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut hello = vec![0u8; 16 * 1024];
    let n = client.read(&mut hello)?;
    if n == 0 {
        return Ok(()); // a connect-and-close probe (wrk's first)
    }
    let mut upstream = TcpStream::connect(backend)?;
    upstream.set_nodelay(true)?;
    let cookies = match joiner.join(&client, &upstream) {
        Ok(c) => c,
        Err(e) => {
            totals.refused.fetch_add(1, Ordering::Relaxed);
            return Err(std::io::Error::other(e));
        }
    };
    totals.joined.fetch_add(1, Ordering::Relaxed);
    let result = upstream
        .write_all(&hello[..n])
        .and_then(|()| wait_for_ends(&client, &upstream));
    let moved = joiner.unjoin(cookies);
    totals.up.fetch_add(moved.up, Ordering::Relaxed);
    totals.down.fetch_add(moved.down, Ordering::Relaxed);
    result
}

/// Until both sides sent their FIN (each passed on to the other), or one
/// hung up or failed.
fn wait_for_ends(client: &TcpStream, upstream: &TcpStream) -> std::io::Result<()> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let socks = [client, upstream];
    for (i, s) in socks.iter().enumerate() {
        epoll::add(
            &ep,
            s,
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::RDHUP,
        )?;
    }
    let mut ended = [false; 2];
    let mut events: Vec<epoll::Event> = Vec::with_capacity(2);
    while !(ended[0] && ended[1]) {
        events.clear();
        epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None)?;
        for e in &events {
            let (i, flags) = (e.data.u64() as usize, e.flags);
            if flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP) {
                return Ok(());
            }
            if !ended[i] {
                ended[i] = true;
                let _ = socks[1 - i].shutdown(Shutdown::Write);
            }
        }
    }
    Ok(())
}
