//! The watchdog: one place where every source and pipeline reports whether it has work and
//! when it last made progress, so that `/readyz` and a metric tell the truth when one of
//! them is stuck (blocked in a system call, retrying forever, unable to publish) or has
//! stopped on an internal error.
//!
//! A component holds a [`Heartbeat`]. It says [`Heartbeat::working`] when it has work,
//! [`Heartbeat::progress`] each time it gets something done, and [`Heartbeat::idle`] when
//! it has nothing to do. A component that is working and has not progressed for
//! [`HealthConfig::stall_after`] is *stalled*. [`Heartbeat::fail`] marks it failed at
//! once (an internal error stopped it, or its output cannot be published) until its next
//! progress. The watchdog is read on demand — by `/readyz` and at each metrics scrape —
//! so it needs no thread of its own. It lives in [`crate::Metrics`], which every component
//! already holds.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The `[health]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// A source or pipeline that has work and makes no progress for this long is reported
    /// stalled: `/readyz` answers 503 naming it and `tidewater_component_stalled` is 1.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            stall_after: Duration::from_secs(120),
        }
    }
}

/// Every component's progress reports.
#[derive(Debug, Clone)]
pub struct Watchdog {
    components: Arc<Mutex<Vec<Arc<Component>>>>,
    stall_after: Duration,
}

/// A component's handle for reporting its progress. Cheap to clone. Once every clone is
/// dropped (the component stopped: a worker whose partition moved to another member),
/// the component is no longer watched, unless it failed: a failure stays reported.
#[derive(Debug, Clone)]
pub struct Heartbeat(Arc<Registration>);

/// A component in the watchdog's list, taken out when dropped.
#[derive(Debug)]
struct Registration {
    component: Arc<Component>,
    components: Weak<Mutex<Vec<Arc<Component>>>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if matches!(*lock(&self.component.state), State::Failed { .. }) {
            return;
        }
        if let Some(components) = self.components.upgrade() {
            lock(&components).retain(|c| !Arc::ptr_eq(c, &self.component));
        }
    }
}

#[derive(Debug)]
struct Component {
    name: String,
    state: Mutex<State>,
}

#[derive(Debug, Clone)]
enum State {
    /// Nothing to do.
    Idle,
    /// Has work; progressed last at this instant.
    Working { last_progress: Instant },
    /// Stopped or unable to go on, until its next progress.
    Failed { reason: String, since: Instant },
}

/// How a component is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Nothing to do.
    Idle,
    /// Has work and is making progress.
    Working,
    /// Has work and made no progress for longer than `stall_after`.
    Stalled,
    /// Reported a failure (see the reason).
    Failed,
}

/// One component's state, as `/readyz`, `/v1/stats` and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    /// The component, e.g. `pipeline knowledge/0` or `source files:docs`.
    pub component: String,
    /// How it is doing.
    pub condition: Condition,
    /// Milliseconds since it last progressed (0 while idle).
    pub since_progress_ms: u64,
    /// Why it failed or stalled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ComponentStatus {
    /// Whether this component keeps the process from being ready.
    pub fn is_unhealthy(&self) -> bool {
        matches!(self.condition, Condition::Stalled | Condition::Failed)
    }
}

impl Default for Watchdog {
    fn default() -> Self {
        Self::new(&HealthConfig::default())
    }
}

impl Watchdog {
    /// A watchdog with no components yet.
    pub fn new(config: &HealthConfig) -> Self {
        Self {
            components: Arc::default(),
            stall_after: config.stall_after,
        }
    }

    /// Registers a component (initially idle) and returns its heartbeat. Names should be
    /// unique; a second registration under a name adds a second entry.
    pub fn register(&self, component: impl Into<String>) -> Heartbeat {
        let component = Arc::new(Component {
            name: component.into(),
            state: Mutex::new(State::Idle),
        });
        lock(&self.components).push(Arc::clone(&component));
        Heartbeat(Arc::new(Registration {
            component,
            components: Arc::downgrade(&self.components),
        }))
    }

    /// Every component's status, in registration order.
    pub fn statuses(&self) -> Vec<ComponentStatus> {
        let now = Instant::now();
        lock(&self.components)
            .iter()
            .map(|component| {
                let state = lock(&component.state).clone();
                let (condition, since, reason) = match state {
                    State::Idle => (Condition::Idle, Duration::ZERO, None),
                    State::Working { last_progress } => {
                        let since = now.saturating_duration_since(last_progress);
                        if since > self.stall_after {
                            let reason = format!("no progress for {}s", since.as_secs());
                            (Condition::Stalled, since, Some(reason))
                        } else {
                            (Condition::Working, since, None)
                        }
                    }
                    State::Failed { reason, since } => (
                        Condition::Failed,
                        now.saturating_duration_since(since),
                        Some(reason),
                    ),
                };
                ComponentStatus {
                    component: component.name.clone(),
                    condition,
                    since_progress_ms: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
                    reason,
                }
            })
            .collect()
    }

    /// The components that keep the process from being ready (stalled or failed).
    pub fn unhealthy(&self) -> Vec<ComponentStatus> {
        self.statuses()
            .into_iter()
            .filter(ComponentStatus::is_unhealthy)
            .collect()
    }
}

impl Heartbeat {
    /// The component's name.
    pub fn component(&self) -> &str {
        &self.0.component.name
    }

    /// The component has work. Starts the stall clock if it was idle; leaves a running
    /// clock (and a failure) as it is.
    pub fn working(&self) {
        let mut state = lock(&self.0.component.state);
        if matches!(*state, State::Idle) {
            *state = State::Working {
                last_progress: Instant::now(),
            };
        }
    }

    /// The component got something done (and may have more to do). Clears a failure.
    pub fn progress(&self) {
        *lock(&self.0.component.state) = State::Working {
            last_progress: Instant::now(),
        };
    }

    /// The component has nothing to do. Clears a failure.
    pub fn idle(&self) {
        *lock(&self.0.component.state) = State::Idle;
    }

    /// The component cannot go on: unhealthy at once, with `reason`, until it progresses
    /// again. A repeated call keeps the time of the first failure.
    pub fn fail(&self, reason: impl std::fmt::Display) {
        let mut state = lock(&self.0.component.state);
        let since = match &*state {
            State::Failed { since, .. } => *since,
            _ => Instant::now(),
        };
        *state = State::Failed {
            reason: reason.to_string(),
            since,
        };
    }
}

/// Locks a mutex, ignoring poisoning: the guarded state is always valid on its own.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watchdog(stall_after: Duration) -> Watchdog {
        Watchdog::new(&HealthConfig { stall_after })
    }

    #[test]
    fn idle_components_never_stall() {
        let dog = watchdog(Duration::ZERO);
        let beat = dog.register("source files:docs");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(dog.statuses()[0].condition, Condition::Idle);
        assert!(dog.unhealthy().is_empty());
        beat.working();
        std::thread::sleep(Duration::from_millis(5));
        let unhealthy = dog.unhealthy();
        assert_eq!(unhealthy.len(), 1);
        assert_eq!(unhealthy[0].component, "source files:docs");
        assert_eq!(unhealthy[0].condition, Condition::Stalled);
        beat.idle();
        assert!(dog.unhealthy().is_empty());
    }

    #[test]
    fn progress_keeps_a_working_component_healthy() {
        let dog = watchdog(Duration::from_secs(60));
        let beat = dog.register("pipeline knowledge/0");
        beat.working();
        beat.progress();
        assert_eq!(dog.statuses()[0].condition, Condition::Working);
        assert!(dog.unhealthy().is_empty());
    }

    #[test]
    fn working_does_not_reset_the_stall_clock() {
        let dog = watchdog(Duration::from_millis(1));
        let beat = dog.register("pipeline knowledge/0");
        beat.working();
        std::thread::sleep(Duration::from_millis(5));
        beat.working();
        assert_eq!(dog.statuses()[0].condition, Condition::Stalled);
    }

    #[test]
    fn a_failure_lasts_until_the_next_progress() {
        let dog = watchdog(Duration::from_secs(60));
        let beat = dog.register("outbox profiles");
        beat.fail("record too large");
        beat.working();
        let status = &dog.unhealthy()[0];
        assert_eq!(status.condition, Condition::Failed);
        assert_eq!(status.reason.as_deref(), Some("record too large"));
        beat.progress();
        assert!(dog.unhealthy().is_empty());
    }

    #[test]
    fn a_stopped_component_leaves_the_list_unless_it_failed() {
        let dog = watchdog(Duration::ZERO);
        let stalled = dog.register("pipeline profiles conversations/0");
        stalled.working();
        let clone = stalled.clone();
        drop(stalled);
        assert_eq!(dog.statuses().len(), 1, "a clone keeps it watched");
        drop(clone);
        assert!(dog.statuses().is_empty(), "stopped: no longer watched");

        let failed = dog.register("pipeline profiles conversations/1");
        failed.fail("cannot decode the stored offset");
        drop(failed);
        let unhealthy = dog.unhealthy();
        assert_eq!(unhealthy.len(), 1, "a failure stays reported");
        assert_eq!(unhealthy[0].condition, Condition::Failed);
    }
}
