//! Serving the admin API: an accept loop of our own over hyper's HTTP/1.1
//! connection (not `axum::serve`), because `axum::serve` has no header
//! timeout and no connection cap: a client that opens connections and never
//! finishes a request head would hold them forever.
//!
//! - at most `admin.max_connections` connections: a permit is taken before
//!   `accept` and moved into the connection's task, so the count cannot
//!   drift; beyond it, new connections wait in the kernel's backlog;
//! - `admin.header_read_timeout`: hyper's timer for a request head, which
//!   also bounds the TLS handshake here;
//! - `admin.idle_timeout`: a connection on which no byte moves either way
//!   for this long is closed (a kept-alive one between requests, or one
//!   whose client stalls in a body);
//! - `admin.request_timeout`: enforced around the handler by
//!   [`super::auth::guard`] (408).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::auth::PeerCert;
use super::tls::AdminTlsAcceptor;
use crate::config::admin::AdminHttp;
use crate::proxy::relay::Activity;

/// Serves `router` on `listener` until `stop` is cancelled; connections
/// then finish the request in flight and close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    http: AdminHttp,
    tls: Option<AdminTlsAcceptor>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(http.max_connections));
    let http = Arc::new(http);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off, never die.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let (router, http, tls, stop) =
            (router.clone(), Arc::clone(&http), tls.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            match tls {
                None => connection(tcp, None, router, &http, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(http.header_read_timeout, acceptor.accept(tcp)).await
                    {
                        Ok(Ok((tls, cert))) => connection(tls, cert, router, &http, stop).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "admin TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// One HTTP/1.1 connection, until the client closes it, a timeout, or
/// `stop`.
async fn connection<S>(
    io: S,
    cert: Option<PeerCert>,
    router: Router,
    http: &AdminHttp,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Tracked {
        inner: io,
        activity: Arc::clone(&activity),
    };
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Some(c) = &cert {
            req.extensions_mut().insert(c.clone());
        }
        let mut router = router.clone();
        async move { Ok::<_, Infallible>(router.call(req).await.unwrap_or_else(|e| match e {})) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle = http.idle_timeout;
    tokio::select! {
        _ = conn.as_mut() => return,
        () = idle_for(&activity, idle) => {}
        () = stop.cancelled() => {}
    }
    // Finish the request in flight, if any, within the request timeout.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(http.request_timeout, conn).await;
}

/// Resolves once nothing has moved on `activity` for `idle`.
async fn idle_for(activity: &Activity, idle: Duration) {
    loop {
        let deadline = activity.idle_deadline(idle);
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

pin_project_lite::pin_project! {
    /// An IO that records when bytes move, for the idle timeout.
    struct Tracked<S> {
        #[pin]
        inner: S,
        activity: Arc<Activity>,
    }
}

impl<S: AsyncRead> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
