//! `mse-proxy-uring-relay LISTEN BACKEND [coop]`: accepts TCP connections
//! on LISTEN and relays each to BACKEND both ways, every read and write an
//! io_uring operation on one current-thread runtime (tokio-uring), with
//! half-close (an EOF read shuts the other side's write half). With
//! `coop`, the ring is set up with `IORING_SETUP_COOP_TASKRUN`: completions
//! are run when the runtime next enters the kernel rather than by
//! interrupting it. (`IORING_SETUP_DEFER_TASKRUN` would defer them further
//! but tokio-uring waits for the ring through epoll, which that flag
//! starves: the probe hangs with it.)
//!
//! A probe for benches/relay_probes/run.sh, not a proxy: no SNI routing,
//! and bytes are copied through a 16 KiB buffer per direction (no splice).

use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;

use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

const BUF: usize = 16 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, backend, coop) = match &args[..] {
        [l, b] => (l, b, false),
        [l, b, c] if c == "coop" => (l, b, true),
        _ => {
            eprintln!("usage: mse-proxy-uring-relay LISTEN BACKEND [coop]");
            std::process::exit(2);
        }
    };
    let parse = |a: &str| -> SocketAddr {
        a.parse().unwrap_or_else(|e| {
            eprintln!("{a}: {e}");
            std::process::exit(2)
        })
    };
    let (listen, backend) = (parse(listen), parse(backend));
    let mut ring = tokio_uring::uring_builder();
    if coop {
        ring.setup_coop_taskrun();
    }
    tokio_uring::builder()
        .uring_builder(&ring)
        .start(async move {
            let listener = TcpListener::bind(listen).unwrap_or_else(|e| {
                eprintln!("cannot listen on {listen}: {e}");
                std::process::exit(1)
            });
            eprintln!("uring-relay: listening on {listen}, backend {backend}, coop {coop}");
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio_uring::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    let (client, upstream) = (Rc::new(client), Rc::new(upstream));
                    let up = tokio_uring::spawn(copy(Rc::clone(&client), Rc::clone(&upstream)));
                    copy(upstream, client).await;
                    let _ = up.await;
                });
            }
        });
}

/// One direction, until EOF or an error; then the other side's write half
/// is shut.
async fn copy(from: Rc<TcpStream>, to: Rc<TcpStream>) {
    let mut buf = vec![0u8; BUF];
    loop {
        let (read, b) = from.read(buf).await;
        buf = b;
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (written, b) = to.write_all(buf.slice(..n)).await;
        buf = b.into_inner();
        if written.is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
