//! Conversation and feedback events: what `/v1/ask` and `/v1/feedback` write to the
//! `conversations` and `feedback` topics, and what an application running its own model
//! may send there through `/v1/events/{topic}`. Analytics and the lake read them.
//!
//! Times are milliseconds since the Unix epoch. An event without `event_time_ms` takes
//! the time its record was appended to the log.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// The default topic of conversation events.
pub const CONVERSATIONS_TOPIC: &str = "conversations";
/// The default topic of feedback events.
pub const FEEDBACK_TOPIC: &str = "feedback";

/// A user's rating of an answer: thumbs up or down, or one to five stars.
///
/// In JSON: `"up"`, `"down"`, or an integer 1–5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl fmt::Display for Rating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rating::Up => f.write_str("up"),
            Rating::Down => f.write_str("down"),
            Rating::Stars(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Rating {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Rating::Up => s.serialize_str("up"),
            Rating::Down => s.serialize_str("down"),
            Rating::Stars(n) => s.serialize_u8(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Rating {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RatingVisitor;
        impl Visitor<'_> for RatingVisitor {
            type Value = Rating;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""up", "down" or an integer from 1 to 5"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rating, E> {
                match v {
                    "up" => Ok(Rating::Up),
                    "down" => Ok(Rating::Down),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Rating, E> {
                match v {
                    1..=5 => Ok(Rating::Stars(v as u8)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rating, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Rating, E> {
                Err(E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
        d.deserialize_any(RatingVisitor)
    }
}

/// A retrieved chunk an answer was built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Citation {
    /// The chunk's id.
    pub chunk_id: String,
    /// The document it belongs to.
    pub doc_id: String,
    /// Its retrieval score.
    #[serde(default)]
    pub score: f32,
}

/// Where an answer's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Latency {
    /// Retrieval: embedding the question and searching the index.
    pub retrieval_ms: u64,
    /// The language model call (0 for extractive answers).
    pub model_ms: u64,
    /// The whole answer, from request to last token.
    pub total_ms: u64,
}

/// One message of a chat prompt (OpenAI chat-completions form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

/// Whether an answer was produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// Answered.
    #[default]
    Ok,
    /// The language model failed; `error` says why and `answer` is empty.
    Failed,
}

/// An answered (or failed) question: one record of the `conversations` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationEvent {
    /// Identifier, referenced by feedback.
    pub conversation_id: String,
    /// When the question was answered (ms since the Unix epoch); absent: the log time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_ms: Option<u64>,
    /// The question asked.
    pub question: String,
    /// The answer given (empty when the model failed).
    #[serde(default)]
    pub answer: String,
    /// The customer identifier the question was asked for (`namespace:value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// The resolved customer (profile) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The chunks retrieved as context.
    #[serde(default)]
    pub citations: Vec<Citation>,
    /// The profile fields put into the prompt.
    #[serde(default)]
    pub profile_fields: BTreeMap<String, Value>,
    /// The model that answered (`extractive` when no language model is configured).
    #[serde(default = "unknown_model")]
    pub model: String,
    /// Where the time went.
    #[serde(default)]
    pub latency: Latency,
    /// Answered or failed.
    #[serde(default)]
    pub status: ConversationStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The messages sent to the model (empty for extractive answers).
    #[serde(default)]
    pub prompt: Vec<ChatMessage>,
}

fn unknown_model() -> String {
    "unknown".to_owned()
}

/// A rating of an answer: one record of the `feedback` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackEvent {
    /// The conversation rated.
    pub conversation_id: String,
    /// The rating.
    pub rating: Rating,
    /// Optional free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When it was given (ms since the Unix epoch); absent: the log time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rating_accepts_up_down_and_stars_only() {
        for (json, rating) in [
            (r#""up""#, Rating::Up),
            (r#""down""#, Rating::Down),
            ("1", Rating::Stars(1)),
            ("5", Rating::Stars(5)),
        ] {
            let parsed: Rating = serde_json::from_str(json).unwrap();
            assert_eq!(parsed, rating);
            assert_eq!(serde_json::to_string(&parsed).unwrap(), json);
        }
        for bad in ["0", "6", "-1", "4.5", r#""meh""#, "null"] {
            assert!(serde_json::from_str::<Rating>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn minimal_outside_events_parse_with_defaults() {
        let c: ConversationEvent =
            serde_json::from_str(r#"{"conversation_id":"c1","question":"q?","answer":"a"}"#)
                .unwrap();
        assert_eq!(c.model, "unknown");
        assert_eq!(c.status, ConversationStatus::Ok);
        assert_eq!(c.event_time_ms, None);
        let f: FeedbackEvent =
            serde_json::from_str(r#"{"conversation_id":"c1","rating":4,"comment":"ok"}"#).unwrap();
        assert_eq!(f.rating, Rating::Stars(4));
        assert!(serde_json::from_str::<FeedbackEvent>(r#"{"conversation_id":"c1"}"#).is_err());
        assert!(serde_json::from_str::<ConversationEvent>(
            r#"{"conversation_id":"c1","question":"q","typo":1}"#
        )
        .is_err());
    }
}
