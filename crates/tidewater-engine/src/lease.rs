//! [`Lease`]: work that one member of a group does at a time — listing a shared folder,
//! publishing a replicated pipeline's output — held through a consumer group on a topic
//! of one partition. The group hands that partition to one member; when the member dies
//! or leaves, the group hands it to another. On the embedded log the only process holds
//! every lease ([`Lease::sole`]).
//!
//! Where a database the members share is at hand, a lease can be held through a lock of
//! that database instead ([`Lease::locked`], a PostgreSQL advisory lock): the lock goes
//! when its holder's session ends, at once when the process dies, without waiting for a
//! group to rebalance.
//!
//! Work done under the lease takes a [`LeaseGuard`]; a revocation waits for the guards
//! held at that moment before the group may give the lease to someone else, so a
//! revoked holder never overlaps its successor. (A holder that stops answering the
//! group — frozen, cut off — is replaced after the session timeout without being asked;
//! that window is not fenced.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use tidewater_log::{AssignmentListener, Log, TopicConfig, TopicPartition};
use tracing::{info, warn};

use crate::engine::serve_group;
use crate::EngineError;

/// Prefix of a lease's topic and group: the lease `files.docs` is partition 0 of the
/// topic `lease.files.docs`, held through the group of the same name.
const PREFIX: &str = "lease.";

/// How often a [`Lock`] is tried while another member holds it, and checked while held.
const LOCK_POLL: Duration = Duration::from_millis(500);

/// A lock in a service the members share (a PostgreSQL advisory lock): at most one
/// member holds it, and it is freed when its holder's session ends.
pub trait Lock: Send + 'static {
    /// Tries to take the lock without waiting: `Ok(true)` when this member holds it now.
    fn try_lock(&mut self) -> Result<bool, String>;

    /// Whether the lock is still held (the session that holds it is alive). An error or
    /// `false` means it may be someone else's now.
    fn check(&mut self) -> Result<bool, String>;

    /// Gives the lock up (ends the session).
    fn unlock(&mut self);
}

/// Called on a thread of its own each time this member acquires the lease.
type OnAcquire = Box<dyn Fn() + Send + Sync>;

/// What the group thread and the lease's users share.
struct State {
    name: String,
    held: AtomicBool,
    /// Incremented on each acquisition: a user that saw another generation knows the
    /// lease left this member in between.
    generation: AtomicU64,
    /// Read-held by work under the lease; write-taken by a revocation.
    work: RwLock<()>,
    on_acquire: Mutex<Vec<Arc<OnAcquire>>>,
}

impl State {
    fn new(name: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            held: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            work: RwLock::new(()),
            on_acquire: Mutex::new(Vec::new()),
        })
    }

    /// Called by the group's thread only (or once by [`Lease::sole`]).
    fn acquired(self: &Arc<Self>) {
        if self.held.load(Ordering::SeqCst) {
            return;
        }
        // The new generation first: whoever sees the lease held sees its generation.
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.held.store(true, Ordering::SeqCst);
        info!(lease = %self.name, "lease acquired");
        let callbacks = self.on_acquire.lock().clone();
        if callbacks.is_empty() {
            return;
        }
        // Off the group's thread: the callbacks may take a while, and the group must be
        // polled meanwhile (a revocation then waits for the guards they hold).
        let spawned = std::thread::Builder::new()
            .name(format!("lease-{}", self.name))
            .spawn(move || callbacks.iter().for_each(|callback| callback()));
        if let Err(e) = spawned {
            warn!(lease = %self.name, error = %e, "cannot run the lease's acquisition work");
        }
    }

    fn revoked(&self) {
        if !self.held.swap(false, Ordering::SeqCst) {
            return;
        }
        // Wait for the work under way: the next holder must not overlap it.
        drop(self.work.write());
        info!(lease = %self.name, "lease released");
    }
}

/// One member's claim on a piece of work the group does once.
pub struct Lease {
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    member: Mutex<Option<JoinHandle<()>>>,
}

/// Proof that the lease is held, for as long as the guard lives. Holding it across long
/// work delays a revocation (and with it the next holder) until the work ends.
pub struct LeaseGuard<'a> {
    _work: RwLockReadGuard<'a, ()>,
    /// The acquisition this guard belongs to.
    pub generation: u64,
}

impl Lease {
    /// A lease that this process always holds: the log is embedded, or nobody shares
    /// the work.
    pub fn sole(name: impl Into<String>) -> Arc<Self> {
        let lease = Arc::new(Self {
            state: State::new(name),
            stop: Arc::new(AtomicBool::new(true)),
            member: Mutex::new(None),
        });
        lease.state.acquired();
        lease
    }

    /// Joins the group that hands out the lease `name` (creating its one-partition
    /// topic) and serves it on a thread until [`Lease::release`]. Whether this member
    /// holds it is known after the group's first rebalance.
    pub fn join(log: Arc<dyn Log>, name: &str) -> Result<Arc<Self>, EngineError> {
        let topic = format!("{PREFIX}{name}");
        log.ensure_topic(
            &topic,
            &TopicConfig {
                partitions: 1,
                retention_age: None,
                retention_bytes: None,
            },
        )?;
        let state = State::new(name);
        let listener = Listener {
            state: Arc::clone(&state),
        };
        let mut membership =
            log.join_group(&topic, std::slice::from_ref(&topic), Box::new(listener))?;
        membership.poll(Duration::ZERO)?;
        let stop = Arc::new(AtomicBool::new(false));
        let member = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("lease-{name}-member"))
                .spawn(move || serve_group(membership, &topic, &stop))
                .map_err(EngineError::Spawn)?
        };
        Ok(Arc::new(Self {
            state,
            stop,
            member: Mutex::new(Some(member)),
        }))
    }

    /// A lease held through `lock`, tried and checked on a thread until
    /// [`Lease::release`]. A lock found lost (its session broke) revokes the lease, waiting
    /// for the work under way, before it is tried again.
    pub fn locked(name: &str, mut lock: Box<dyn Lock>) -> Result<Arc<Self>, EngineError> {
        let state = State::new(name);
        let stop = Arc::new(AtomicBool::new(false));
        let member = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("lease-{name}-lock"))
                .spawn(move || {
                    let mut complained = false;
                    while !stop.load(Ordering::SeqCst) {
                        let outcome = match state.held.load(Ordering::SeqCst) {
                            true => lock.check(),
                            false => lock.try_lock(),
                        };
                        match outcome {
                            Ok(true) => {
                                state.acquired();
                                complained = false;
                            }
                            Ok(false) => state.revoked(),
                            Err(e) => {
                                state.revoked();
                                if !complained {
                                    warn!(lease = %state.name, error = %e, "cannot reach the lease's lock; retrying");
                                    complained = true;
                                }
                            }
                        }
                        std::thread::sleep(LOCK_POLL);
                    }
                    state.revoked();
                    lock.unlock();
                })
                .map_err(EngineError::Spawn)?
        };
        Ok(Arc::new(Self {
            state,
            stop,
            member: Mutex::new(Some(member)),
        }))
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Whether this member holds the lease now.
    pub fn is_held(&self) -> bool {
        self.state.held.load(Ordering::SeqCst)
    }

    /// A guard for work under the lease, or `None` when this member does not hold it.
    pub fn guard(&self) -> Option<LeaseGuard<'_>> {
        let work = self.state.work.read();
        self.is_held().then(|| LeaseGuard {
            _work: work,
            generation: self.state.generation.load(Ordering::SeqCst),
        })
    }

    /// Runs `callback` on a thread of its own each time this member acquires the lease
    /// from now on; if it holds the lease already, also once now, on this thread.
    pub fn on_acquire(&self, callback: impl Fn() + Send + Sync + 'static) {
        let callback: Arc<OnAcquire> = Arc::new(Box::new(callback));
        self.state.on_acquire.lock().push(Arc::clone(&callback));
        if self.is_held() {
            callback();
        }
    }

    /// Waits up to `timeout` for this member to hold the lease; returns whether it does.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_held() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.is_held()
    }

    /// Leaves the group, handing the lease to another member. Waits for work under the
    /// lease to finish first.
    pub fn release(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(member) = self.member.lock().take() {
            let _ = member.join();
        }
        self.state.revoked();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

/// Turns the group's (re)assignments of the one partition into acquisitions and
/// revocations.
struct Listener {
    state: Arc<State>,
}

impl AssignmentListener for Listener {
    fn assigned(&mut self, partitions: &[TopicPartition]) {
        if !partitions.is_empty() {
            self.state.acquired();
        }
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        if !partitions.is_empty() {
            self.state.revoked();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn a_sole_lease_is_held_and_runs_acquisition_work_at_once() {
        let lease = Lease::sole("files.docs");
        assert!(lease.is_held());
        let guard = lease.guard().expect("held");
        assert_eq!(guard.generation, 1);
        drop(guard);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        lease.on_acquire(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        lease.release();
        assert!(!lease.is_held());
        assert!(lease.guard().is_none());
    }

    #[test]
    fn a_revocation_waits_for_the_work_under_way() {
        let lease = Lease::sole("outbox.kpis");
        let guard = lease.guard().expect("held");
        let state = Arc::clone(&lease.state);
        let revoker = std::thread::spawn(move || {
            let started = Instant::now();
            state.revoked();
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!lease.is_held(), "no new work starts once revocation began");
        drop(guard);
        let waited = revoker.join().unwrap();
        assert!(
            waited >= Duration::from_millis(150),
            "revoked after {waited:?}"
        );
    }

    /// A lock shared by the test's "members": the id of its holder; `lost` ends the
    /// holder's session behind its back.
    #[derive(Clone, Default)]
    struct SharedLock(Arc<Mutex<Option<usize>>>);

    struct MemberLock {
        lock: SharedLock,
        id: usize,
    }

    impl Lock for MemberLock {
        fn try_lock(&mut self) -> Result<bool, String> {
            let mut holder = self.lock.0.lock();
            Ok(*holder.get_or_insert(self.id) == self.id)
        }

        fn check(&mut self) -> Result<bool, String> {
            Ok(*self.lock.0.lock() == Some(self.id))
        }

        fn unlock(&mut self) {
            let mut holder = self.lock.0.lock();
            if *holder == Some(self.id) {
                *holder = None;
            }
        }
    }

    #[test]
    fn a_locked_lease_has_one_holder_and_moves_when_the_lock_is_lost_or_released() {
        let shared = SharedLock::default();
        let member = |id| {
            let lock = MemberLock {
                lock: shared.clone(),
                id,
            };
            Lease::locked("profiles", Box::new(lock)).unwrap()
        };
        let first = member(1);
        assert!(first.wait_held(Duration::from_secs(5)));
        let second = member(2);
        std::thread::sleep(LOCK_POLL * 2);
        assert!(!second.is_held(), "one holder at a time");

        // The first holder's session ends behind its back: it notices at its next check,
        // and the second takes the lock.
        *shared.0.lock() = None;
        assert!(second.wait_held(Duration::from_secs(5)));
        let deadline = Instant::now() + Duration::from_secs(5);
        while first.is_held() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!first.is_held(), "the lost lock revoked the lease");

        // A release unlocks: the first takes it back.
        second.release();
        assert!(!second.is_held());
        assert!(first.wait_held(Duration::from_secs(5)));
        assert_eq!(*shared.0.lock(), Some(1));
        first.release();
        assert_eq!(*shared.0.lock(), None);
    }
}
