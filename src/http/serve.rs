//! Accepting connections: at most `max_connections` at a time, each closed when its client
//! is too slow to send a request head or stays idle too long.
//!
//! `axum::serve` has neither knob, and without them a client that sends half a request (or
//! opens sockets and sends nothing) holds a file descriptor forever: enough of them and the
//! process cannot accept, open a database connection or answer `/readyz`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long a client may take, and how many may be connected at once.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// From the connection's start, or the first byte of a later request, to the end of the
    /// request head.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request in flight; also a response the client stops
    /// reading.
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1000,
        }
    }
}

/// Accepts until `stop` is cancelled, then asks every connection to finish its request and
/// close, and returns once they all have; `abandon` drops those still open.
pub(super) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    stop: CancellationToken,
    abandon: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Bumped when every slot is taken: idle kept-alive connections close to make room, so a
    // load balancer's health check is not queued behind sockets nobody is using.
    let (pressure, _) = watch::channel(0u64);
    let connections = TaskTracker::new();
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                pressure.send_modify(|n| *n = n.wrapping_add(1));
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.map_err(io::Error::other)?,
                    () = stop.cancelled() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            router: router.clone(),
            limits,
            stop: stop.clone(),
            abandon: abandon.clone(),
            pressure: pressure.subscribe(),
            _slot: slot,
        };
        connections.spawn(connection.serve(stream, peer));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors from `accept` are about one connection (reset before accepted) or about the process
/// (out of file descriptors); neither should end the server. Out of descriptors, accepting
/// again at once would spin, so wait a moment for some to close.
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(%error, "cannot accept connections (out of file descriptors? see README, \"File descriptors\")");
    tokio::time::sleep(Duration::from_millis(250)).await;
}

struct Connection {
    router: Router,
    limits: ServeLimits,
    stop: CancellationToken,
    abandon: CancellationToken,
    pressure: watch::Receiver<u64>,
    /// Frees a place for another connection when this one ends.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream, peer: SocketAddr) {
        let activity = Arc::new(Mutex::new(Activity::new(Instant::now())));
        let io = TokioIo::new(Watched::new(stream, activity.clone(), self.limits));
        let router = self.router.clone();
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = InFlight::start(requests.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                drop(in_flight);
                response
            }
        });
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        let mut connection = std::pin::pin!(connection);
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended");
                    }
                    return;
                }
                () = self.abandon.cancelled() => return,
                () = self.stop.cancelled(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                changed = self.pressure.changed(), if !closing => {
                    if changed.is_err() || lock(&activity).is_idle() {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// Where a connection is in its life, shared by its socket and its requests.
#[derive(Debug)]
struct Activity {
    in_flight: usize,
    /// When the client began a request head not yet complete (a new connection counts as one).
    head_since: Option<Instant>,
    /// When the connection last had nothing to do.
    idle_since: Instant,
    /// When the last byte of a response went out.
    wrote_at: Instant,
    /// A read that found no deadline to wait for because a request was running: woken when
    /// the request ends, so the idle deadline starts to count. Without it a connection whose
    /// last read was polled before its response finished would never time out.
    parked_read: Option<std::task::Waker>,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Activity { in_flight: 0, head_since: Some(now), idle_since: now, wrote_at: now, parked_read: None }
    }

    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.head_since.is_none()
    }

    /// When a client that keeps the socket silent loses it; `None` while a request runs (the
    /// request timeout governs that).
    fn read_deadline(&self, limits: &ServeLimits) -> Option<Instant> {
        if self.in_flight > 0 {
            return None;
        }
        Some(match self.head_since {
            Some(since) => since + limits.header_read_timeout,
            None => self.idle_since + limits.idle_timeout,
        })
    }
}

fn lock(activity: &Mutex<Activity>) -> std::sync::MutexGuard<'_, Activity> {
    activity.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Marks a request as running on its connection until dropped.
struct InFlight(Arc<Mutex<Activity>>);

impl InFlight {
    fn start(activity: Arc<Mutex<Activity>>) -> Self {
        let mut a = lock(&activity);
        a.in_flight += 1;
        a.head_since = None;
        drop(a);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut a = lock(&self.0);
        a.in_flight = a.in_flight.saturating_sub(1);
        a.idle_since = Instant::now();
        let parked = if a.in_flight == 0 { a.parked_read.take() } else { None };
        drop(a);
        if let Some(waker) = parked {
            waker.wake();
        }
    }
}

/// The socket, failing reads and writes that wait past the connection's deadline so hyper
/// closes it.
struct Watched {
    stream: TcpStream,
    activity: Arc<Mutex<Activity>>,
    limits: ServeLimits,
    /// Reads and writes may both wait at once, on different deadlines.
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
}

impl Watched {
    fn new(stream: TcpStream, activity: Arc<Mutex<Activity>>, limits: ServeLimits) -> Self {
        let timer = || Box::pin(tokio::time::sleep(limits.header_read_timeout));
        Watched { stream, activity, limits, read_timer: timer(), write_timer: timer() }
    }

    /// When a client that stops reading a response loses the connection, as if it were idle.
    fn write_deadline(&self) -> Instant {
        lock(&self.activity).wrote_at + self.limits.idle_timeout
    }

    /// Notes a write that went out, or waits on the write deadline for one that could not.
    fn written(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    lock(&self.activity).wrote_at = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let deadline = self.write_deadline();
                expire(&mut self.write_timer, cx, deadline, "response not read").map(Err)
            }
        }
    }
}

/// Pending until `deadline`, then the error hyper closes the connection on.
fn expire(
    timer: &mut Pin<Box<Sleep>>,
    cx: &mut Context<'_>,
    deadline: Instant,
    what: &str,
) -> Poll<io::Error> {
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    match timer.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what.to_owned())),
        Poll::Pending => Poll::Pending,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let mut a = lock(&self.activity);
                    if a.in_flight == 0 && a.head_since.is_none() {
                        a.head_since = Some(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let (deadline, what) = {
                    let mut a = lock(&self.activity);
                    let what = if a.head_since.is_some() { "request head too slow" } else { "idle" };
                    let deadline = a.read_deadline(&self.limits);
                    if deadline.is_none() {
                        a.parked_read = Some(cx.waker().clone());
                    }
                    (deadline, what)
                };
                match deadline {
                    Some(deadline) => expire(&mut self.read_timer, cx, deadline, what).map(Err),
                    None => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        self.written(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
