//! Serving the router on a listener: an accept loop over hyper's connection builder, so that
//! connections are bounded in number (at most `max_connections`, below the open-file limit;
//! the rest wait in the listen queue) and in time (a client must finish a request's headers
//! within `header_read_timeout` of its first byte, and a connection with no request in
//! progress is closed after `idle_timeout`). Accept errors (e.g. out of file descriptors)
//! back off and are logged at most once a minute. On shutdown the listener closes, idle
//! connections close, and in-flight requests get `drain_timeout` to finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tidewater_config::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// Serves `router` on `listener` until `shutdown` completes, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    warn_if_exposed(local);
    let max_connections = config
        .max_connections
        .unwrap_or_else(default_max_connections)
        .min(Semaphore::MAX_PERMITS);
    info!(
        listen = %local,
        max_connections,
        header_read_timeout = %humantime::format_duration(config.header_read_timeout),
        idle_timeout = %humantime::format_duration(config.idle_timeout),
        "accepting connections"
    );
    let timeouts = Timeouts {
        header: config.header_read_timeout,
        idle: config.idle_timeout,
    };
    let permits = Arc::new(Semaphore::new(max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.succeeded();
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(
                    stream,
                    peer,
                    router.clone(),
                    timeouts,
                    stopped.clone(),
                    permit,
                ));
            }
            Err(error) => {
                drop(permit);
                let delay = match backoff.failed(error.kind(), Instant::now()) {
                    Failure::Connection => {
                        debug!(%error, "a connection failed before it was accepted");
                        continue;
                    }
                    Failure::Report { delay, suppressed } => {
                        warn!(%error, suppressed, "cannot accept connections; retrying (out of file descriptors? lower [server] max_connections or raise the open-file limit)");
                        delay
                    }
                    Failure::Quiet { delay } => delay,
                };
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = &mut shutdown => break,
                }
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    if !connections.is_empty() {
        info!(
            connections = connections.len(),
            "waiting for in-flight requests"
        );
    }
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            connections = connections.len(),
            drain_timeout = %humantime::format_duration(config.drain_timeout),
            "requests still in progress after the drain timeout; closing their connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// A loud warning when the unauthenticated API is reachable from other machines.
fn warn_if_exposed(local: SocketAddr) {
    if !local.ip().is_loopback() {
        warn!(
            listen = %local,
            "the API has no authentication and listens on a non-loopback address: anyone who can reach it can read and change documents, profiles and events; listen on 127.0.0.1 or put an authenticating reverse proxy in front (see docs/security.md)"
        );
    }
}

/// Half the process's open-file limit: the other half stays for the log's segments, the
/// state stores and the sources.
fn default_max_connections() -> usize {
    #[cfg(unix)]
    {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let limit = limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        (limit / 2).clamp(16, 1 << 20)
    }
    #[cfg(not(unix))]
    {
        1024
    }
}

/// The two connection timeouts.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

/// One connection, served until it ends, times out, or shutdown drains it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    timeouts: Timeouts,
    mut stopped: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new(Instant::now()));
    let io = TokioIo::new(Watched {
        stream,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = InFlight::start(&activity);
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(Body::new)).await?;
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: guard,
                }))
            }
        })
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(timeouts);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            changed = stopped.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                if let Some(reason) = activity.expired(timeouts, Instant::now()) {
                    debug!(%peer, reason, "closing connection");
                    return;
                }
            }
        }
    }
}

/// Where a connection is between requests, as its socket and its requests show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in progress and no byte of the next one, since this instant.
    Idle { since: Instant },
    /// The first bytes of a request arrived at this instant; its headers are not complete.
    Head { since: Instant },
    /// This many requests are being answered (HTTP/2 multiplexes).
    Busy { requests: usize },
}

/// A connection's [`Phase`], shared by its socket, its requests and its supervisor.
#[derive(Debug)]
struct Activity(Mutex<Phase>);

impl Activity {
    fn new(now: Instant) -> Self {
        Self(Mutex::new(Phase::Idle { since: now }))
    }

    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *phase = f(*phase);
    }

    fn phase(&self) -> Phase {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: the start of a request's head when none was in progress.
    fn received(&self, now: Instant) {
        self.update(|phase| match phase {
            Phase::Idle { .. } => Phase::Head { since: now },
            other => other,
        });
    }

    /// A request's headers are complete and it is being answered.
    fn request_started(&self) {
        self.update(|phase| match phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        });
    }

    /// A response has been sent (or abandoned).
    fn request_finished(&self, now: Instant) {
        self.update(|phase| match phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle { since: now },
        });
    }

    /// When to look again: when the current timeout would expire, or while requests are in
    /// progress, after the shorter timeout.
    fn deadline(&self, timeouts: Timeouts) -> Instant {
        match self.phase() {
            Phase::Idle { since } => since + timeouts.idle,
            Phase::Head { since } => since + timeouts.header,
            Phase::Busy { .. } => Instant::now() + timeouts.idle.min(timeouts.header),
        }
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, timeouts: Timeouts, now: Instant) -> Option<&'static str> {
        match self.phase() {
            Phase::Idle { since } if now >= since + timeouts.idle => Some("idle timeout"),
            Phase::Head { since } if now >= since + timeouts.header => {
                Some("request headers not received in time")
            }
            _ => None,
        }
    }
}

/// Marks a request in progress on its connection until dropped with its response body.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.request_started();
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished(Instant::now());
    }
}

/// A response body that keeps its request counted as in flight until it is sent.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A TCP stream that reports received bytes to its connection's [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.received(Instant::now());
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Shortest pause after a failed accept.
const FIRST_DELAY: Duration = Duration::from_millis(5);
/// Longest pause after failed accepts.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// At most one accept-error line this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// What to do after a failed accept.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// One connection failed (reset or aborted before it was accepted): accept the next.
    Connection,
    /// Log the error (with the count of errors not logged since the last line), then pause.
    Report { delay: Duration, suppressed: u64 },
    /// Pause without logging.
    Quiet { delay: Duration },
}

/// Pauses after failed accepts (doubling while they fail) and limits how often they are
/// logged, so that running out of file descriptors neither spins nor floods the log.
#[derive(Debug)]
struct AcceptBackoff {
    delay: Duration,
    last_report: Option<Instant>,
    suppressed: u64,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self {
            delay: FIRST_DELAY,
            last_report: None,
            suppressed: 0,
        }
    }
}

impl AcceptBackoff {
    fn failed(&mut self, kind: std::io::ErrorKind, now: Instant) -> Failure {
        use std::io::ErrorKind as K;
        if matches!(
            kind,
            K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused | K::Interrupted
        ) {
            return Failure::Connection;
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        match self.last_report {
            Some(at) if now.duration_since(at) < REPORT_EVERY => {
                self.suppressed += 1;
                Failure::Quiet { delay }
            }
            _ => {
                self.last_report = Some(now);
                Failure::Report {
                    delay,
                    suppressed: std::mem::take(&mut self.suppressed),
                }
            }
        }
    }

    fn succeeded(&mut self) {
        self.delay = FIRST_DELAY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(30),
    };

    #[test]
    fn h05_partial_headers_and_idle_connections_expire() {
        let start = Instant::now();
        let activity = Activity::new(start);
        assert_eq!(
            activity.expired(TIMEOUTS, start + Duration::from_secs(29)),
            None
        );
        assert!(activity
            .expired(TIMEOUTS, start + Duration::from_secs(30))
            .is_some());

        // The first byte starts the header clock.
        let first_byte = start + Duration::from_secs(5);
        activity.received(first_byte);
        assert_eq!(activity.phase(), Phase::Head { since: first_byte });
        activity.received(first_byte + Duration::from_secs(9));
        assert_eq!(
            activity.expired(TIMEOUTS, first_byte + Duration::from_secs(9)),
            None
        );
        assert!(activity
            .expired(TIMEOUTS, first_byte + Duration::from_secs(10))
            .is_some());

        // A request in progress never expires; its end restarts the idle clock.
        activity.request_started();
        activity.request_started();
        assert_eq!(
            activity.expired(TIMEOUTS, start + Duration::from_secs(3600)),
            None
        );
        let done = start + Duration::from_secs(100);
        activity.request_finished(done);
        assert_eq!(activity.phase(), Phase::Busy { requests: 1 });
        activity.request_finished(done);
        assert_eq!(activity.phase(), Phase::Idle { since: done });
        assert_eq!(activity.deadline(TIMEOUTS), done + TIMEOUTS.idle);
    }

    #[test]
    fn h05_accept_errors_back_off_and_are_logged_once_a_minute() {
        use std::io::ErrorKind;
        let mut backoff = AcceptBackoff::default();
        let start = Instant::now();
        assert_eq!(
            backoff.failed(ErrorKind::ConnectionReset, start),
            Failure::Connection
        );
        let emfile = ErrorKind::Other;
        assert_eq!(
            backoff.failed(emfile, start),
            Failure::Report {
                delay: FIRST_DELAY,
                suppressed: 0
            }
        );
        let mut delays = Vec::new();
        for i in 1..=1000 {
            match backoff.failed(emfile, start + Duration::from_millis(i * 50)) {
                Failure::Quiet { delay } => delays.push(delay),
                other => panic!("error {i} was not quiet: {other:?}"),
            }
        }
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(delays.last(), Some(&MAX_DELAY));
        assert_eq!(
            backoff.failed(emfile, start + REPORT_EVERY),
            Failure::Report {
                delay: MAX_DELAY,
                suppressed: 1000
            }
        );
        backoff.succeeded();
        assert_eq!(
            backoff.failed(emfile, start + REPORT_EVERY + Duration::from_secs(1)),
            Failure::Quiet { delay: FIRST_DELAY }
        );
    }
}
