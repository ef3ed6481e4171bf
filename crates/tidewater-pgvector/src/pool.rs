//! A small pool of blocking PostgreSQL clients: at most `size` open at once, callers wait
//! for a free one, and a client whose connection broke is dropped and replaced by a new
//! connection on the next checkout.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use postgres::Client;
use tidewater_core::redact::redact;

use crate::error::PgVectorError;
use crate::tls::Tls;

/// How long a connection attempt may take when the connection string does not say.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the connections show in `pg_stat_activity` unless the connection string names one.
pub const APPLICATION_NAME: &str = "tidewater-pgvector";

pub(crate) struct Pool {
    config: postgres::Config,
    tls: Tls,
    /// The connection string with its password masked, for error messages.
    dsn: String,
    size: usize,
    state: Mutex<State>,
    returned: Condvar,
}

struct State {
    idle: Vec<Client>,
    /// Clients handed out or idle, plus connections being opened.
    open: usize,
}

/// A client checked out of the pool; goes back when dropped unless its connection is
/// closed or it was [`Conn::discard`]ed.
pub(crate) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    /// Whether the connection was opened for this checkout (rather than reused): an error
    /// on a fresh connection is not a stale one.
    pub(crate) fresh: bool,
}

/// The client settings of a connection string, with this crate's defaults (application
/// name, connect timeout, server notices at debug level), and its TLS.
pub(crate) fn client_config(dsn: &str) -> Result<(postgres::Config, Tls), PgVectorError> {
    let (mut config, tls) = crate::tls::connection(dsn)?;
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    // The driver logs the server's notices ("relation already exists, skipping") at info
    // level; they are expected here.
    config.notice_callback(|notice| {
        tracing::debug!(severity = notice.severity(), "{}", notice.message());
    });
    Ok((config, tls))
}

impl Pool {
    /// Parses the connection string; connects lazily.
    pub(crate) fn new(dsn: &str, size: usize) -> Result<Self, PgVectorError> {
        let (config, tls) = client_config(dsn)?;
        Ok(Self {
            tls,
            config,
            dsn: redact(dsn).into_owned(),
            size: size.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        })
    }

    /// A client: an idle one, a new connection while fewer than `size` are open, or the
    /// next one returned.
    pub(crate) fn get(&self) -> Result<Conn<'_>, PgVectorError> {
        let mut state = self.state.lock();
        loop {
            while let Some(client) = state.idle.pop() {
                if client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(Conn {
                    pool: self,
                    client: Some(client),
                    fresh: false,
                });
            }
            if state.open < self.size {
                state.open += 1;
                break;
            }
            self.returned.wait(&mut state);
        }
        drop(state);
        match self.tls.connect(&self.config) {
            Ok(client) => Ok(Conn {
                pool: self,
                client: Some(client),
                fresh: true,
            }),
            Err(source) => {
                self.release_slot();
                Err(PgVectorError::Connect {
                    dsn: self.dsn.clone(),
                    source,
                })
            }
        }
    }

    /// Closes the idle connections; the next checkouts connect anew.
    pub(crate) fn close_idle(&self) {
        let idle = {
            let mut state = self.state.lock();
            let idle = std::mem::take(&mut state.idle);
            state.open -= idle.len();
            idle
        };
        drop(idle);
        self.returned.notify_all();
    }

    fn release_slot(&self) {
        self.state.lock().open -= 1;
        self.returned.notify_one();
    }
}

impl Conn<'_> {
    /// Closes the connection instead of returning it (after an error that may have left it
    /// broken).
    pub(crate) fn discard(mut self) {
        self.client = None;
        self.pool.release_slot();
    }
}

impl Deref for Conn<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a checked-out client is present until dropped")
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a checked-out client is present until dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if client.is_closed() {
            drop(client);
            self.pool.release_slot();
        } else {
            self.pool.state.lock().idle.push(client);
            self.pool.returned.notify_one();
        }
    }
}
