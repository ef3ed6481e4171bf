//! Conversation and feedback events.

use serde::{Deserialize, Serialize};

/// A user's rating of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    /// Thumbs up (counts as 5 stars).
    Up,
    /// Thumbs down (counts as 1 star).
    Down,
    /// One to five stars.
    Stars(u8),
}

impl Rating {
    /// Numeric value: Up = 5, Down = 1, Stars = n.
    pub fn value(self) -> u8 {
        match self {
            Rating::Up => 5,
            Rating::Down => 1,
            Rating::Stars(n) => n,
        }
    }

    /// Positive: Up, or four stars or more.
    pub fn is_positive(self) -> bool {
        match self {
            Rating::Up => true,
            Rating::Down => false,
            Rating::Stars(n) => n >= 4,
        }
    }

    /// A down-vote: Down, or two stars or fewer.
    pub fn is_downvote(self) -> bool {
        match self {
            Rating::Up => false,
            Rating::Down => true,
            Rating::Stars(n) => n <= 2,
        }
    }
}

/// An event the analytics operator consumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AnalyticsEvent {
    /// An answered question.
    Conversation {
        /// Identifier of the conversation.
        conversation_id: String,
        /// Event time, milliseconds since the Unix epoch.
        event_time_ms: u64,
        /// Name of the model that answered.
        model: String,
        /// Answer latency in milliseconds.
        latency_ms: u64,
        /// Number of retrieved context chunks (0: answered without context).
        retrieved_chunks: u32,
        /// The question asked.
        question: String,
    },
    /// A rating of a conversation's answer.
    Feedback {
        /// Identifier of the rated conversation.
        conversation_id: String,
        /// Event time, milliseconds since the Unix epoch.
        event_time_ms: u64,
        /// The rating.
        rating: Rating,
        /// Optional free-text comment.
        comment: Option<String>,
    },
}

impl AnalyticsEvent {
    /// The event's time, milliseconds since the Unix epoch.
    pub fn event_time_ms(&self) -> u64 {
        match self {
            AnalyticsEvent::Conversation { event_time_ms, .. }
            | AnalyticsEvent::Feedback { event_time_ms, .. } => *event_time_ms,
        }
    }
}
