//! [`SoleMembership`]: group membership on the embedded log, where the one process that
//! holds the log directory owns every partition.

use std::sync::Arc;
use std::time::Duration;

use super::log::EmbeddedLog;
use crate::{AssignmentListener, Log, LogError, Membership, TopicPartition};

/// The membership of the only process that can open the log: every partition of the
/// group's topics is assigned on the first poll, and revoked on leave.
pub struct SoleMembership {
    partitions: Vec<TopicPartition>,
    listener: Box<dyn AssignmentListener>,
    held: bool,
}

impl SoleMembership {
    pub(crate) fn new(
        log: &Arc<EmbeddedLog>,
        topics: &[String],
        listener: Box<dyn AssignmentListener>,
    ) -> Result<Self, LogError> {
        let mut partitions = Vec::new();
        for topic in topics {
            for partition in 0..log.partitions(topic)? {
                partitions.push(TopicPartition::new(topic.as_str(), partition));
            }
        }
        Ok(Self {
            partitions,
            listener,
            held: false,
        })
    }
}

impl Membership for SoleMembership {
    fn poll(&mut self, timeout: Duration) -> Result<(), LogError> {
        if self.held {
            // Nothing ever changes hands: wait like a broker poll would.
            std::thread::sleep(timeout);
        } else {
            self.held = true;
            self.listener.assigned(&self.partitions);
        }
        Ok(())
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        if self.held {
            self.partitions.clone()
        } else {
            Vec::new()
        }
    }

    fn leave(&mut self) -> Result<(), LogError> {
        if std::mem::take(&mut self.held) {
            self.listener.revoked(&self.partitions);
        }
        Ok(())
    }
}
