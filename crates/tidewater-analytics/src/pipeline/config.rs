//! The `[analytics]` section of the configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidewater_core::{CONVERSATIONS_TOPIC, FEEDBACK_TOPIC};

use crate::WindowConfig;

/// How conversations and feedback become KPIs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Topic of conversation events (written by `/v1/ask`, or by the application).
    pub conversations_topic: String,
    /// Topic of feedback events (written by `/v1/feedback`, or by the application).
    pub feedback_topic: String,
    /// How the conversations and feedback topics are created (partitions, retention).
    pub topic_config: tidewater_log::TopicConfig,
    /// Topic that receives events which arrived after their window closed.
    pub late_topic: String,
    /// Topic that receives the KPIs of each closed window.
    pub kpis_topic: String,
    /// The event-time windows.
    pub window: WindowConfig,
    /// How long (in event time, behind the watermark) a conversation is remembered so that
    /// feedback in a later window is attributed to its model and question.
    #[serde(with = "humantime_serde")]
    pub conversation_retention: Duration,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            conversations_topic: CONVERSATIONS_TOPIC.to_owned(),
            feedback_topic: FEEDBACK_TOPIC.to_owned(),
            topic_config: tidewater_log::TopicConfig::default(),
            late_topic: "late".to_owned(),
            kpis_topic: "kpis".to_owned(),
            window: WindowConfig::default(),
            conversation_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}
