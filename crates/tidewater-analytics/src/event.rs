//! Conversation and feedback events.

use serde::{Deserialize, Serialize};
pub use tidewater_core::Rating;

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
        /// The rated conversation's model, when known from an earlier window.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// The rated conversation's question, when known from an earlier window.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        question: Option<String>,
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
