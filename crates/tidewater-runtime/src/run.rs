//! `tidewater run`: start an [`App`], serve its API until SIGINT or SIGTERM, then drain
//! within `[server] drain_timeout`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tidewater_config::Config;
use tidewater_metrics::Condition;
use tracing::info;

use crate::{App, RuntimeError};

/// Least time sources and pipelines get to stop, whatever the HTTP drain took.
const MIN_PIPELINE_DRAIN: Duration = Duration::from_secs(1);

/// Loads the configuration, starts the app and serves its API on `listen` until SIGINT
/// (ctrl-c) or SIGTERM, then shuts down. The signal handlers are installed first, so a
/// signal that arrives during start-up (model and index load) is not fatal: the app
/// stops cleanly as soon as it has started.
pub fn run_until_signal<E>(
    load_config: impl FnOnce() -> Result<Config, E>,
) -> Result<(), RuntimeError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RuntimeError::setup("the async runtime"))?;
    let signals = {
        let _context = runtime.enter();
        ShutdownSignals::install()?
    };
    let config = load_config().map_err(|e| RuntimeError::LoadConfig(e.into()))?;
    let listen = config.listen;
    let server = config.server.clone();
    let drain_timeout = server.drain_timeout;
    let app = App::start(config)?;
    let state = app.api_state();
    // One drain budget from the signal on: in-flight requests first, then the rest.
    let signalled = Arc::new(OnceLock::<Instant>::new());
    let shutdown = {
        let signalled = Arc::clone(&signalled);
        async move {
            signals.received().await;
            let _ = signalled.set(Instant::now());
        }
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| RuntimeError::Listen {
                addr: listen,
                source,
            })?;
        info!(%listen, "serving the API");
        tidewater_server::serve(listener, state, &server, shutdown)
            .await
            .map_err(RuntimeError::Serve)
    })?;
    info!("shutting down");
    let spent = signalled.get().map_or(Duration::ZERO, Instant::elapsed);
    // A floor, so that a slow HTTP drain does not leave the pipelines no time at all.
    shutdown_within(
        app,
        drain_timeout.saturating_sub(spent).max(MIN_PIPELINE_DRAIN),
    )
}

/// Stops the app, giving sources and pipelines at most `drain_timeout` (what is left of
/// `[server] drain_timeout` after the HTTP drain) to finish their current work. Past that, gives up with an error naming what is still busy (the
/// process then exits; everything committed so far is safe, and the rest is redone at
/// the next start).
fn shutdown_within(app: App, drain_timeout: Duration) -> Result<(), RuntimeError> {
    let watchdog = app.metrics.watchdog.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            app.shutdown();
            let _ = done_tx.send(());
        })
        .map_err(RuntimeError::setup("the shutdown thread"))?;
    if done_rx.recv_timeout(drain_timeout).is_ok() {
        return Ok(());
    }
    let busy: Vec<String> = watchdog
        .statuses()
        .into_iter()
        .filter(|status| status.condition != Condition::Idle)
        .map(|status| status.component)
        .collect();
    Err(RuntimeError::ShutdownTimeout {
        drain_timeout,
        busy: if busy.is_empty() {
            "unknown".to_owned()
        } else {
            busy.join(", ")
        },
    })
}

/// SIGINT and SIGTERM, registered up front: a signal that arrives before anyone waits for
/// it is kept, not left to the default action (which ends the process at once).
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Registers the handlers; needs a Tokio runtime context.
    fn install() -> Result<Self, RuntimeError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())
                    .map_err(RuntimeError::setup("the SIGINT handler"))?,
                terminate: signal(SignalKind::terminate())
                    .map_err(RuntimeError::setup("the SIGTERM handler"))?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves at the first signal (including one received before this is awaited).
    async fn received(self) {
        #[cfg(unix)]
        {
            let Self {
                mut interrupt,
                mut terminate,
            } = self;
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
