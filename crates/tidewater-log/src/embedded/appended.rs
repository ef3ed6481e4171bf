//! One notification for the whole log: raised whenever any partition publishes records,
//! so a consumer reading several partitions can wait for the first of them to grow.

use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// A counter of publications with a condition variable.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    epoch: Mutex<u64>,
    changed: Condvar,
}

impl Appended {
    /// The current count; pass it to [`Self::wait_past`] after reading.
    pub(crate) fn epoch(&self) -> u64 {
        *self.epoch.lock()
    }

    /// Some partition published records.
    pub(crate) fn notify(&self) {
        *self.epoch.lock() += 1;
        self.changed.notify_all();
    }

    /// Waits until something was published after `epoch` was read, or `deadline`.
    pub(crate) fn wait_past(&self, epoch: u64, deadline: Instant) {
        let mut current = self.epoch.lock();
        while *current == epoch {
            if self.changed.wait_until(&mut current, deadline).timed_out() {
                return;
            }
        }
    }
}
