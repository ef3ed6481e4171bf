//! State that one member at a time owns and every member reads: the identity graph, the
//! analytics windows. The [`Ownership`] of such a state follows a [`Lease`]: the holder
//! takes the [`SharedState`] over (which fences the previous owner's writes), runs the
//! pipeline on it, and stops when the lease moves on; every other member reads a
//! snapshot of what the owner last committed, refreshed once a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redb::Database;
use tracing::{info, warn};

use crate::{empty_state_image, state_db_from_image, EngineError, Lease};

/// How often a member that does not own the state refreshes its snapshot.
const REFRESH: Duration = Duration::from_secs(1);
/// How often ownership is checked against the lease.
const TICK: Duration = Duration::from_millis(100);
/// The wait before trying again after a failed takeover or start.
const RETRY: Duration = Duration::from_secs(2);

/// A pipeline state kept outside the process, owned by one member at a time.
pub trait SharedState: Send + Sync + 'static {
    /// The state's name, for logs.
    fn name(&self) -> &str;

    /// Takes the state over: from now on the previous owner's writes are refused. Returns
    /// the database and a flag the storage sets once a write failed, after which this
    /// database no longer matches what is stored and must be acquired again.
    fn acquire(&self) -> Result<(Database, Arc<AtomicBool>), EngineError>;

    /// The state as its owner last committed it, when it changed since the snapshot of
    /// `version` (0: none yet): the new version and a database over a private copy.
    fn refresh(&self, version: i64) -> Result<Option<(i64, Database)>, EngineError>;
}

/// Stops what [`Ownership::start`]'s `run` started (called before the database is let go).
pub type Stopper = Box<dyn FnOnce() + Send>;

/// The state of one pipeline as this member sees it: owned (and run) while it holds the
/// lease, read from snapshots otherwise.
pub struct Ownership {
    name: String,
    reads: RwLock<Arc<Database>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Ownership {
    /// Follows `lease` on a thread: on each acquisition, takes `state` over and calls
    /// `run` with its database (which starts the pipeline and returns how to stop it);
    /// when the lease is lost or a write fails, stops the pipeline and lets the state go.
    pub fn start(
        state: Arc<dyn SharedState>,
        lease: Arc<Lease>,
        run: impl Fn(Arc<Database>) -> Result<Stopper, EngineError> + Send + 'static,
    ) -> Result<Arc<Self>, EngineError> {
        let (version, first) = match state.refresh(0)? {
            Some((version, db)) => (version, db),
            None => (
                0,
                state_db_from_image(empty_state_image()?, &format!("{} (empty)", state.name()))?,
            ),
        };
        let ownership = Arc::new(Self {
            name: state.name().to_owned(),
            reads: RwLock::new(Arc::new(first)),
            stop: Arc::new(AtomicBool::new(false)),
            thread: Mutex::new(None),
        });
        let follower = Arc::clone(&ownership);
        let thread = std::thread::Builder::new()
            .name(format!("{}-owner", state.name()))
            .spawn(move || follower.follow(state.as_ref(), &lease, &run, version))
            .map_err(EngineError::Spawn)?;
        *ownership.thread.lock() = Some(thread);
        Ok(ownership)
    }

    /// The database reads go to: the owned state on the owner, a snapshot elsewhere.
    pub fn db(&self) -> Arc<Database> {
        Arc::clone(&self.reads.read())
    }

    /// Stops the pipeline if it runs here, and stops following the lease.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }

    fn follow(
        &self,
        state: &dyn SharedState,
        lease: &Lease,
        run: &dyn Fn(Arc<Database>) -> Result<Stopper, EngineError>,
        mut version: i64,
    ) {
        let mut owned: Option<(Stopper, Arc<AtomicBool>)> = None;
        let mut next_try = Instant::now();
        // When the snapshot was last refreshed (`None`: refresh now).
        let mut refreshed = Some(Instant::now());
        while !self.stop.load(Ordering::SeqCst) {
            let held = lease.is_held();
            match owned.take() {
                Some((stopper, failed)) if !held || failed.load(Ordering::SeqCst) => {
                    stopper();
                    match held {
                        true => {
                            warn!(state = %self.name, "a write of the state failed; taking it over again")
                        }
                        false => {
                            info!(state = %self.name, "the lease moved on; this member no longer owns the state")
                        }
                    }
                    // Reads keep the last owned state until the next snapshot.
                    version = 0;
                    refreshed = None;
                }
                kept => owned = kept,
            }
            if owned.is_none() && held && Instant::now() >= next_try {
                match self.take_over(state, run) {
                    Ok(taken) => {
                        owned = Some(taken);
                        info!(state = %self.name, "this member owns the state now");
                    }
                    Err(e) => {
                        warn!(state = %self.name, error = %e, "cannot take the state over yet");
                        next_try = Instant::now() + RETRY;
                    }
                }
            }
            if owned.is_none() && refreshed.is_none_or(|at| at.elapsed() >= REFRESH) {
                refreshed = Some(Instant::now());
                match state.refresh(version) {
                    Ok(Some((new, db))) => {
                        version = new;
                        *self.reads.write() = Arc::new(db);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(state = %self.name, error = %e, "cannot refresh the state's snapshot")
                    }
                }
            }
            std::thread::sleep(TICK);
        }
        if let Some((stopper, _)) = owned {
            stopper();
        }
    }

    fn take_over(
        &self,
        state: &dyn SharedState,
        run: &dyn Fn(Arc<Database>) -> Result<Stopper, EngineError>,
    ) -> Result<(Stopper, Arc<AtomicBool>), EngineError> {
        let (db, failed) = state.acquire()?;
        let db = Arc::new(db);
        let stopper = run(Arc::clone(&db))?;
        *self.reads.write() = db;
        Ok((stopper, failed))
    }
}

impl Drop for Ownership {
    fn drop(&mut self) {
        self.stop();
    }
}
